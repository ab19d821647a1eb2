using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MosaicBert.Tensors;

/// <summary>
/// Register-blocked micro-kernels: C[MR×NR] (=|+=) alpha · Ap · Bp over kc steps, where Ap is a packed MR-wide
/// micro-panel of op(A) (kc groups of MR floats) and Bp a packed NR-wide micro-panel of op(B) (kc rows of NR floats).
/// Each step broadcasts the MR values of A and multiplies them into NR/lanes vectors of B (outer-product update),
/// so every loaded B vector is used MR times and every broadcast NR/lanes times.
/// </summary>
/// <remarks>
/// Shape choice: the accumulators must fit in the register file with room for the B vectors and one broadcast, and
/// there must be enough independent FMA chains to cover FMA latency × FMA ports (4 cycles × 2 ports = 8 on current
/// x86 cores).
/// <list type="bullet">
/// <item>AVX-512, 8×48: 8 rows × 3 zmm = 24 accumulators + 3 B + 1 broadcast = 28 of 32 zmm; the JIT keeps all of
/// them in registers (no spills in the loop: 3 loads, 8 broadcasts, 24 FMAs). Per k step 11 loads feed 24 FMAs; a 12×32
/// shape (24 accumulators too) needs 14. Both reach ≈ 225 GFLOP/s in registers on Zen 5, so 8×48 wins on the load
/// ratio and because MR = 8 matches the 8×8 register transposes that pack A. 48 divides every BERT-base width
/// (768, 2304, 3072, 6144, 30528), so those shapes have no edge micro-tiles in n.</item>
/// <item>AVX2, 6×16: 6 rows × 2 ymm = 12 accumulators + 2 B + 1 broadcast = 15 of 16 ymm (the classic Haswell
/// shape; 8 loads per 12 FMAs); ≈ 113 GFLOP/s in registers on the same core, i.e. its 256-bit peak.</item>
/// <item>Portable (Vector128, any ISA): 4×8, 8 accumulators; the fallback where neither of the above is available.</item>
/// </list>
/// C's rows are prefetched before the k loop: C tiles are rarely cache-resident by the time the loop ends (each is
/// revisited only once per k block), and without the prefetch the final loads stall on L3 — measured +20 % on the
/// BERT shapes (≈ 170 → 205 GFLOP/s single-threaded).
/// When <c>loadC</c> is false C is written without being read (beta == 0: NaNs in C are ignored, as in BLAS);
/// otherwise C = alpha·acc + beta·C.
/// </remarks>
internal static unsafe class MicroKernels
{
    // ---------------------------------------------------------------- AVX-512: 8 × 48

    public const int Mr512 = 8, Nr512 = 48;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Kernel8x48(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta, bool loadC)
    {
        Vector512<float> c00 = default, c01 = default, c02 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default;
        Vector512<float> c40 = default, c41 = default, c42 = default;
        Vector512<float> c50 = default, c51 = default, c52 = default;
        Vector512<float> c60 = default, c61 = default, c62 = default;
        Vector512<float> c70 = default, c71 = default, c72 = default;
        if (Sse.IsSupported)
        {
            // C's 8 rows (3-4 lines each, row stride ldc) are usually out of L1/L2: start fetching them now so the
            // loads and stores after the k loop do not wait on L3.
            float* pc = c;
            for (int r = 0; r < 8; r++, pc += ldc)
            {
                Sse.Prefetch0(pc);
                Sse.Prefetch0(pc + 16);
                Sse.Prefetch0(pc + 32);
                Sse.Prefetch0(pc + 47);
            }
        }
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            var b2 = Vector512.Load(b + 32);
            var av = Vector512.Create(a[0]);
            c00 = Vector512.FusedMultiplyAdd(av, b0, c00); c01 = Vector512.FusedMultiplyAdd(av, b1, c01); c02 = Vector512.FusedMultiplyAdd(av, b2, c02);
            av = Vector512.Create(a[1]);
            c10 = Vector512.FusedMultiplyAdd(av, b0, c10); c11 = Vector512.FusedMultiplyAdd(av, b1, c11); c12 = Vector512.FusedMultiplyAdd(av, b2, c12);
            av = Vector512.Create(a[2]);
            c20 = Vector512.FusedMultiplyAdd(av, b0, c20); c21 = Vector512.FusedMultiplyAdd(av, b1, c21); c22 = Vector512.FusedMultiplyAdd(av, b2, c22);
            av = Vector512.Create(a[3]);
            c30 = Vector512.FusedMultiplyAdd(av, b0, c30); c31 = Vector512.FusedMultiplyAdd(av, b1, c31); c32 = Vector512.FusedMultiplyAdd(av, b2, c32);
            av = Vector512.Create(a[4]);
            c40 = Vector512.FusedMultiplyAdd(av, b0, c40); c41 = Vector512.FusedMultiplyAdd(av, b1, c41); c42 = Vector512.FusedMultiplyAdd(av, b2, c42);
            av = Vector512.Create(a[5]);
            c50 = Vector512.FusedMultiplyAdd(av, b0, c50); c51 = Vector512.FusedMultiplyAdd(av, b1, c51); c52 = Vector512.FusedMultiplyAdd(av, b2, c52);
            av = Vector512.Create(a[6]);
            c60 = Vector512.FusedMultiplyAdd(av, b0, c60); c61 = Vector512.FusedMultiplyAdd(av, b1, c61); c62 = Vector512.FusedMultiplyAdd(av, b2, c62);
            av = Vector512.Create(a[7]);
            c70 = Vector512.FusedMultiplyAdd(av, b0, c70); c71 = Vector512.FusedMultiplyAdd(av, b1, c71); c72 = Vector512.FusedMultiplyAdd(av, b2, c72);
            a += 8;
            b += 48;
        }
        var al = Vector512.Create(alpha);
        var be = Vector512.Create(beta);
        Store3(c, c00, c01, c02, al, be, loadC); c += ldc;
        Store3(c, c10, c11, c12, al, be, loadC); c += ldc;
        Store3(c, c20, c21, c22, al, be, loadC); c += ldc;
        Store3(c, c30, c31, c32, al, be, loadC); c += ldc;
        Store3(c, c40, c41, c42, al, be, loadC); c += ldc;
        Store3(c, c50, c51, c52, al, be, loadC); c += ldc;
        Store3(c, c60, c61, c62, al, be, loadC); c += ldc;
        Store3(c, c70, c71, c72, al, be, loadC);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store3(float* c, Vector512<float> v0, Vector512<float> v1, Vector512<float> v2,
        Vector512<float> alpha, Vector512<float> beta, bool loadC)
    {
        v0 *= alpha; v1 *= alpha; v2 *= alpha;
        if (loadC)
        {
            v0 = Vector512.FusedMultiplyAdd(Vector512.Load(c), beta, v0);
            v1 = Vector512.FusedMultiplyAdd(Vector512.Load(c + 16), beta, v1);
            v2 = Vector512.FusedMultiplyAdd(Vector512.Load(c + 32), beta, v2);
        }
        Vector512.Store(v0, c);
        Vector512.Store(v1, c + 16);
        Vector512.Store(v2, c + 32);
    }

    // ---------------------------------------------------------------- AVX2 + FMA: 6 × 16

    public const int Mr256 = 6, Nr256 = 16;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Kernel6x16(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta, bool loadC)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        if (Sse.IsSupported)
        {
            float* pc = c; // as in Kernel8x48 (neutral on Zen 5, where this kernel is compute-bound)
            for (int r = 0; r < 6; r++, pc += ldc)
            {
                Sse.Prefetch0(pc);
                Sse.Prefetch0(pc + 15);
            }
        }
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            var av = Vector256.Create(a[0]);
            c00 = Vector256.FusedMultiplyAdd(av, b0, c00); c01 = Vector256.FusedMultiplyAdd(av, b1, c01);
            av = Vector256.Create(a[1]);
            c10 = Vector256.FusedMultiplyAdd(av, b0, c10); c11 = Vector256.FusedMultiplyAdd(av, b1, c11);
            av = Vector256.Create(a[2]);
            c20 = Vector256.FusedMultiplyAdd(av, b0, c20); c21 = Vector256.FusedMultiplyAdd(av, b1, c21);
            av = Vector256.Create(a[3]);
            c30 = Vector256.FusedMultiplyAdd(av, b0, c30); c31 = Vector256.FusedMultiplyAdd(av, b1, c31);
            av = Vector256.Create(a[4]);
            c40 = Vector256.FusedMultiplyAdd(av, b0, c40); c41 = Vector256.FusedMultiplyAdd(av, b1, c41);
            av = Vector256.Create(a[5]);
            c50 = Vector256.FusedMultiplyAdd(av, b0, c50); c51 = Vector256.FusedMultiplyAdd(av, b1, c51);
            a += 6;
            b += 16;
        }
        var al = Vector256.Create(alpha);
        var be = Vector256.Create(beta);
        Store2(c, c00, c01, al, be, loadC); c += ldc;
        Store2(c, c10, c11, al, be, loadC); c += ldc;
        Store2(c, c20, c21, al, be, loadC); c += ldc;
        Store2(c, c30, c31, al, be, loadC); c += ldc;
        Store2(c, c40, c41, al, be, loadC); c += ldc;
        Store2(c, c50, c51, al, be, loadC);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store2(float* c, Vector256<float> v0, Vector256<float> v1, Vector256<float> alpha, Vector256<float> beta, bool loadC)
    {
        v0 *= alpha; v1 *= alpha;
        if (loadC)
        {
            v0 = Vector256.FusedMultiplyAdd(Vector256.Load(c), beta, v0);
            v1 = Vector256.FusedMultiplyAdd(Vector256.Load(c + 8), beta, v1);
        }
        Vector256.Store(v0, c);
        Vector256.Store(v1, c + 8);
    }

    // ---------------------------------------------------------------- portable Vector128: 4 × 8

    public const int Mr128 = 4, Nr128 = 8;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Kernel4x8(int kc, float* a, float* b, float* c, nint ldc, float alpha, float beta, bool loadC)
    {
        Vector128<float> c00 = default, c01 = default, c10 = default, c11 = default;
        Vector128<float> c20 = default, c21 = default, c30 = default, c31 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector128.Load(b);
            var b1 = Vector128.Load(b + 4);
            var av = Vector128.Create(a[0]);
            c00 = Vector128.FusedMultiplyAdd(av, b0, c00); c01 = Vector128.FusedMultiplyAdd(av, b1, c01);
            av = Vector128.Create(a[1]);
            c10 = Vector128.FusedMultiplyAdd(av, b0, c10); c11 = Vector128.FusedMultiplyAdd(av, b1, c11);
            av = Vector128.Create(a[2]);
            c20 = Vector128.FusedMultiplyAdd(av, b0, c20); c21 = Vector128.FusedMultiplyAdd(av, b1, c21);
            av = Vector128.Create(a[3]);
            c30 = Vector128.FusedMultiplyAdd(av, b0, c30); c31 = Vector128.FusedMultiplyAdd(av, b1, c31);
            a += 4;
            b += 8;
        }
        var al = Vector128.Create(alpha);
        var be = Vector128.Create(beta);
        Store2(c, c00, c01, al, be, loadC); c += ldc;
        Store2(c, c10, c11, al, be, loadC); c += ldc;
        Store2(c, c20, c21, al, be, loadC); c += ldc;
        Store2(c, c30, c31, al, be, loadC);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store2(float* c, Vector128<float> v0, Vector128<float> v1, Vector128<float> alpha, Vector128<float> beta, bool loadC)
    {
        v0 *= alpha; v1 *= alpha;
        if (loadC)
        {
            v0 = Vector128.FusedMultiplyAdd(Vector128.Load(c), beta, v0);
            v1 = Vector128.FusedMultiplyAdd(Vector128.Load(c + 4), beta, v1);
        }
        Vector128.Store(v0, c);
        Vector128.Store(v1, c + 4);
    }
}
