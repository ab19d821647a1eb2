using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MosaicBert.Tensors;

/// <summary>
/// Copies blocks of op(A) and op(B) into the contiguous layouts the micro-kernels stream through:
/// A as micro-panels of MR rows stored k-major ([p][MR]), B as micro-panels of NR columns stored k-major ([p][NR]),
/// zero-padded to full MR/NR at the matrix edges so the kernels never branch on edges.
/// </summary>
/// <remarks>
/// All four transposition cases reduce to two access patterns: "contiguous along the panel width" (A transposed,
/// B not transposed: one vector copy per k step) and "contiguous along k" (A not transposed, B transposed — the
/// forward pass's x·Wᵀ): those are transposed in 8×8 register blocks (AVX: 24 shuffles per 64 floats instead of 64
/// scalar strided stores). Measured on Zen 5: 5-9 G floats/s, which keeps packing at 0-7 % of the run time depending on
/// the tile shape (see GemmDriver.PackWeight).
/// </remarks>
internal static unsafe class Packing
{
    /// <summary>Extra floats a packing buffer needs past its nominal size (overlapping 8-wide stores when MR &lt; 8).</summary>
    public const int Slack = 16;

    /// <summary>Software prefetch distance along a source row in the transposing packs (4 cache lines).</summary>
    private const int PrefetchAhead = 64;

    /// <summary>
    /// Packs op(A)[i0 .. i0+mc, p0 .. p0+kc] into ceil(mc/mr) micro-panels of mr×kc (panel q at dst + q·mr·kc).
    /// op(A)(i, p) = transA ? a[p·lda + i] : a[i·lda + p].
    /// </summary>
    public static void PackA(bool transA, float* a, nint lda, int i0, int mc, int p0, int kc, int mr, float* dst)
    {
        if (transA)
            PackContiguousWidth(a + (nint)p0 * lda + i0, lda, kc, mc, mr, dst);
        else
            for (int r0 = 0; r0 < mc; r0 += mr, dst += mr * kc)
                PackTransposed(a + (nint)(i0 + r0) * lda + p0, lda, kc, Math.Min(mr, mc - r0), mr, dst);
    }

    /// <summary>
    /// Packs op(B)[p0 .. p0+kc, j0 .. j0+nc] into ceil(nc/nr) micro-panels of kc×nr (panel q at dst + q·nr·kc),
    /// the last zero-padded to nr columns. op(B)(p, j) = transB ? b[j·ldb + p] : b[p·ldb + j].
    /// </summary>
    public static void PackB(bool transB, float* b, nint ldb, int p0, int kc, int j0, int nc, int nr, float* dst)
    {
        if (transB)
            for (int c0 = 0; c0 < nc; c0 += nr, dst += nr * kc)
                PackTransposed(b + (nint)(j0 + c0) * ldb + p0, ldb, kc, Math.Min(nr, nc - c0), nr, dst);
        else
            PackContiguousWidth(b + (nint)p0 * ldb + j0, ldb, kc, nc, nr, dst);
    }

    /// <summary>
    /// src[p·ld + w] for p &lt; kc, w &lt; width → micro-panels of `panel` columns: dst[(w / panel)·panel·kc + p·panel +
    /// w % panel]; the last panel zero-padded. Works on groups of 8 source rows: the 8 rows are read left to right
    /// (8 sequential streams the prefetchers follow) and each micro-panel receives 8·panel contiguous floats. Walking
    /// one panel down all kc rows instead reads panel-wide slivers at stride ld, and walking one row across all panels
    /// writes to addresses panel·kc·4 bytes apart, which for kc = 256 alias to the same L1 set (8 KiB / 48 KiB
    /// strides): both were several times slower in development; this version packs a transposed 1024×2304 A at
    /// ≈ 8 G floats/s on Zen 5.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackContiguousWidth(float* src, nint ld, int kc, int width, int panel, float* dst)
    {
        int full = width / panel, rest = width - full * panel;
        nint panelStride = (nint)panel * kc;
        int p0 = 0;
        if (Vector256.IsHardwareAccelerated && (panel & 7) == 0)
        {
            // Straight-line copies of 8 rows × 8 floats: a generic per-row copy loop costs about one instruction per
            // float and was measured 3-4× slower.
            for (; p0 + 8 <= kc; p0 += 8)
            {
                float* s0 = src + p0 * ld, s1 = s0 + ld, s2 = s1 + ld, s3 = s2 + ld, s4 = s3 + ld, s5 = s4 + ld, s6 = s5 + ld, s7 = s6 + ld;
                float* d = dst + p0 * panel;
                nint o = 0;
                for (int q = 0; q < full; q++, d += panelStride)
                {
                    for (int w = 0; w < panel; w += 8, o += 8)
                    {
                        Vector256.Store(Vector256.Load(s0 + o), d + w);
                        Vector256.Store(Vector256.Load(s1 + o), d + panel + w);
                        Vector256.Store(Vector256.Load(s2 + o), d + 2 * panel + w);
                        Vector256.Store(Vector256.Load(s3 + o), d + 3 * panel + w);
                        Vector256.Store(Vector256.Load(s4 + o), d + 4 * panel + w);
                        Vector256.Store(Vector256.Load(s5 + o), d + 5 * panel + w);
                        Vector256.Store(Vector256.Load(s6 + o), d + 6 * panel + w);
                        Vector256.Store(Vector256.Load(s7 + o), d + 7 * panel + w);
                    }
                }
                if (rest > 0)
                    for (int p = 0; p < 8; p++) CopyRowPadded(src + (p0 + p) * ld + full * panel, d + p * panel, rest, panel);
            }
        }
        for (; p0 < kc; p0 += 8)
        {
            int rows = Math.Min(8, kc - p0);
            float* s = src + p0 * ld, d = dst + p0 * panel;
            for (int q = 0; q < full; q++, s += panel, d += panelStride)
                for (int p = 0; p < rows; p++) CopyRowPadded(s + p * ld, d + p * panel, panel, panel);
            if (rest > 0)
                for (int p = 0; p < rows; p++) CopyRowPadded(s + p * ld, d + p * panel, rest, panel);
        }
    }

    /// <summary>d[0..n) = s[0..n), d[n..panel) = 0.</summary>
    private static void CopyRowPadded(float* s, float* d, int n, int panel)
    {
        int w = 0;
        for (; w + 4 <= n; w += 4) Vector128.Store(Vector128.Load(s + w), d + w);
        for (; w < n; w++) d[w] = s[w];
        for (; w < panel; w++) d[w] = 0f;
    }

    /// <summary>src[w·ld + p] for w &lt; width, p &lt; kc → dst[p·panel + w]; columns width..panel zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackTransposed(float* src, nint ld, int kc, int width, int panel, float* dst)
    {
        int kc8 = 0;
        if (Avx.IsSupported && width == panel && panel > 1 && (panel <= 8 || (panel & 7) == 0))
        {
            kc8 = kc & ~7;
            if (panel <= 8)
            {
                // Rows past `panel` read row 0 (valid memory); their values land in the next k step's slots, which the
                // next (ascending) store overwrites. The last store spills at most 8 − panel floats past the panel:
                // covered by Slack, or overwritten by the following panel or the scalar tail below.
                TransposeRows8(src, ld, panel, kc8, dst, panel);
            }
            else
            {
                // Blocks of 8 rows, each walked along k: 8 sequential streams at a time.
                for (int w = 0; w < panel; w += 8)
                    TransposeRows8(src + w * ld, ld, 8, kc8, dst + w, panel);
            }
        }
        for (int w = 0; w < width; w++)
        {
            float* s = src + w * ld;
            for (int q = kc8; q < kc; q++) dst[q * panel + w] = s[q];
        }
        for (int w = width; w < panel; w++)
            for (int q = kc8; q < kc; q++) dst[q * panel + w] = 0f;
    }

    /// <summary>
    /// Rows src + r·ld (r &lt; rows ≤ 8; missing rows repeat row 0), k = 0 .. kc8 (a multiple of 8) → dst + p·stride.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TransposeRows8(float* src, nint ld, int rows, int kc8, float* dst, nint stride)
    {
        float* r0 = src, r1 = rows > 1 ? src + ld : src, r2 = rows > 2 ? src + 2 * ld : src, r3 = rows > 3 ? src + 3 * ld : src;
        float* r4 = rows > 4 ? src + 4 * ld : src, r5 = rows > 5 ? src + 5 * ld : src;
        float* r6 = rows > 6 ? src + 6 * ld : src, r7 = rows > 7 ? src + 7 * ld : src;
        for (int p = 0; p < kc8; p += 8)
        {
            if ((p & 15) == 0 && Sse.IsSupported)
            {
                // Each row is read for only kc floats, too short for the hardware prefetchers to ramp up: fetch
                // PrefetchAhead floats ahead along each row (one line per row per two 8×8 blocks).
                Sse.Prefetch0(r0 + p + PrefetchAhead); Sse.Prefetch0(r1 + p + PrefetchAhead);
                Sse.Prefetch0(r2 + p + PrefetchAhead); Sse.Prefetch0(r3 + p + PrefetchAhead);
                Sse.Prefetch0(r4 + p + PrefetchAhead); Sse.Prefetch0(r5 + p + PrefetchAhead);
                Sse.Prefetch0(r6 + p + PrefetchAhead); Sse.Prefetch0(r7 + p + PrefetchAhead);
            }
            Transpose8x8Store(r0 + p, r1 + p, r2 + p, r3 + p, r4 + p, r5 + p, r6 + p, r7 + p, dst + p * stride, stride);
        }
    }

    /// <summary>Transposes the 8×8 block whose rows start at r0..r7 and stores column j at dst + j·stride.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8Store(float* r0, float* r1, float* r2, float* r3, float* r4, float* r5, float* r6, float* r7,
        float* dst, nint stride)
    {
        var a0 = Avx.LoadVector256(r0); var a1 = Avx.LoadVector256(r1);
        var a2 = Avx.LoadVector256(r2); var a3 = Avx.LoadVector256(r3);
        var a4 = Avx.LoadVector256(r4); var a5 = Avx.LoadVector256(r5);
        var a6 = Avx.LoadVector256(r6); var a7 = Avx.LoadVector256(r7);
        // Interleave pairs of rows, then pairs of pairs, then swap 128-bit halves.
        var t0 = Avx.UnpackLow(a0, a1); var t1 = Avx.UnpackHigh(a0, a1);
        var t2 = Avx.UnpackLow(a2, a3); var t3 = Avx.UnpackHigh(a2, a3);
        var t4 = Avx.UnpackLow(a4, a5); var t5 = Avx.UnpackHigh(a4, a5);
        var t6 = Avx.UnpackLow(a6, a7); var t7 = Avx.UnpackHigh(a6, a7);
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(dst, Avx.Permute2x128(u0, u4, 0x20));
        Avx.Store(dst + stride, Avx.Permute2x128(u1, u5, 0x20));
        Avx.Store(dst + 2 * stride, Avx.Permute2x128(u2, u6, 0x20));
        Avx.Store(dst + 3 * stride, Avx.Permute2x128(u3, u7, 0x20));
        Avx.Store(dst + 4 * stride, Avx.Permute2x128(u0, u4, 0x31));
        Avx.Store(dst + 5 * stride, Avx.Permute2x128(u1, u5, 0x31));
        Avx.Store(dst + 6 * stride, Avx.Permute2x128(u2, u6, 0x31));
        Avx.Store(dst + 7 * stride, Avx.Permute2x128(u3, u7, 0x31));
    }
}
