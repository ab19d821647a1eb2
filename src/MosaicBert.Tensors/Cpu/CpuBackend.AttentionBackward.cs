using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace MosaicBert.Tensors.Cpu;

public sealed partial class CpuBackend
{
    private float[] _attentionDelta = [];
    [ThreadStatic] private static float[]? t_dScores;

    /// <inheritdoc/>
    /// <remarks>
    /// FlashAttention-2's backward on the CPU, never storing S×S. First D_i = dO_i·O_i per query and head (a scratch of
    /// N×H floats). Then each (sequence, head) pair is owned by one thread, which zeroes its slices of dQ, dK, dV and,
    /// for each tile of 64 keys and each block of 64 queries, recomputes P = exp(scale·Q·Kᵀ − slope·|Δpos| − lse) and
    /// accumulates with the GEMM: dV += Pᵀ·dO, dP = dO·Vᵀ, dS = scale·P ⊙ (dP − D), dQ += dS·K, dK += dSᵀ·Q, straight
    /// into dQkv. Nothing is shared between pairs and every sum runs in a fixed order, so the result is bitwise the
    /// same on any thread count. Working set per thread: two 64×64 tiles.
    /// </remarks>
    public override unsafe void AttentionBackward(Tensor qkv, Tensor cuSeqlens, Tensor positions, Tensor slopes, float scale,
        Tensor context, Tensor logSumExp, Tensor dContext, Tensor dQkv)
    {
        Check(qkv, nameof(qkv), DType.Float32);
        Check(slopes, nameof(slopes), DType.Float32);
        if (qkv.Rank != 2 || slopes.Rank != 1)
            throw new ArgumentException($"qkv must be [N, 3d] and slopes [H], not {qkv.ShapeString} and {slopes.ShapeString}.");
        int n = qkv.Dim(0), threeD = qkv.Dim(1), d = threeD / 3;
        int heads = slopes.Dim(0);
        if (heads == 0 || threeD % 3 != 0 || d % heads != 0 || d == 0)
            throw new ArgumentException($"qkv width {threeD} is not 3·d with d a positive multiple of {heads} heads.", nameof(qkv));
        int dh = d / heads;
        Check(context, nameof(context), DType.Float32, n, d);
        Check(logSumExp, nameof(logSumExp), DType.Float32, n, heads);
        Check(dContext, nameof(dContext), DType.Float32, n, d);
        Check(dQkv, nameof(dQkv), DType.Float32, n, threeD);
        Check(positions, nameof(positions), DType.Int32, n);
        Check(cuSeqlens, nameof(cuSeqlens), DType.Int32);
        if (Overlaps(dQkv, qkv) || Overlaps(dQkv, context) || Overlaps(dQkv, dContext) || Overlaps(dQkv, logSumExp))
            throw new ArgumentException("dQkv must not overlap qkv, context, logSumExp or dContext.", nameof(dQkv));
        var cuSpan = IntSpan(cuSeqlens);
        if (cuSpan.Length < 1 || cuSpan[0] != 0 || cuSpan[^1] != n)
            throw new ArgumentException($"cuSeqlens must run from 0 to N = {n}.", nameof(cuSeqlens));
        long work = 0;
        for (int b = 0; b + 1 < cuSpan.Length; b++)
        {
            long length = cuSpan[b + 1] - cuSpan[b];
            if (length < 0) throw new ArgumentException("cuSeqlens must not decrease.", nameof(cuSeqlens));
            work += length * length;
        }
        work *= 12L * d;

        var q = Floats(qkv); int qo = (int)qkv.Offset;
        var o = Floats(context); int oo = (int)context.Offset;
        var go = Floats(dContext); int goo = (int)dContext.Offset;
        var lse = Floats(logSumExp); int lo = (int)logSumExp.Offset;
        var dq = Floats(dQkv); int dqo = (int)dQkv.Offset;
        var sl = Floats(slopes); int slo = (int)slopes.Offset;
        var pos = Ints(positions); int po = (int)positions.Offset;
        var cu = Ints(cuSeqlens); int cuo = (int)cuSeqlens.Offset;
        int sequences = cuSpan.Length - 1;

        // D_i = dO_i·O_i for every query and head. Scratch reused across calls (one model step at a time).
        if (_attentionDelta.Length < n * heads) _attentionDelta = new float[n * heads];
        var delta = _attentionDelta;
        ParallelRows(n, 2L * d, (start, end) =>
        {
            for (int i = start; i < end; i++)
                for (int h = 0; h < heads; h++)
                    delta[i * heads + h] = Dot(ref o[oo + i * d + h * dh], ref go[goo + i * d + h * dh], dh);
        });

        void Pair(int pair)
        {
            int b = pair / heads, h = pair - b * heads;
            int s0 = cu[cuo + b], s1 = cu[cuo + b + 1];
            if (s1 <= s0) return;
            float slope = sl[slo + h];
            int qOff = h * dh, kOff = d + h * dh, vOff = 2 * d + h * dh;
            for (int t = s0; t < s1; t++)
            {
                int row = dqo + t * threeD;
                Array.Clear(dq, row + qOff, dh);
                Array.Clear(dq, row + kOff, dh);
                Array.Clear(dq, row + vOff, dh);
            }
            var probs = t_scores ??= new float[QueryBlock * KeyTile];
            var dScores = t_dScores ??= new float[QueryBlock * KeyTile];
            fixed (float* qp = q, gp = go, dqp = dq, pp = probs, dsp = dScores)
            {
                for (int j0 = s0; j0 < s1; j0 += KeyTile)
                {
                    int nk = Math.Min(KeyTile, s1 - j0);
                    float* kBase = qp + qo + (long)j0 * threeD + kOff, vBase = qp + qo + (long)j0 * threeD + vOff;
                    float* dkBase = dqp + dqo + (long)j0 * threeD + kOff, dvBase = dqp + dqo + (long)j0 * threeD + vOff;
                    for (int i0 = s0; i0 < s1; i0 += QueryBlock)
                    {
                        int mq = Math.Min(QueryBlock, s1 - i0);
                        float* qBase = qp + qo + (long)i0 * threeD + qOff, dqBase = dqp + dqo + (long)i0 * threeD + qOff;
                        float* doBase = gp + goo + (long)i0 * d + h * dh;
                        // P = exp(scale·Q·Kᵀ − slope·|Δpos| − lse)
                        Gemm.Sgemm(false, true, mq, nk, dh, scale, qBase, threeD, kBase, threeD, 0, pp, KeyTile, 1);
                        for (int r = 0; r < mq; r++)
                        {
                            var row = probs.AsSpan(r * KeyTile, nk);
                            int pi = pos[po + i0 + r];
                            if (slope != 0)
                                for (int j = 0; j < nk; j++) row[j] -= slope * Math.Abs(pi - pos[po + j0 + j]);
                            System.Numerics.Tensors.TensorPrimitives.Subtract(row, lse[lo + (i0 + r) * heads + h], row);
                            System.Numerics.Tensors.TensorPrimitives.Exp(row, row);
                        }
                        // dV += Pᵀ·dO;  dP = dO·Vᵀ
                        Gemm.Sgemm(true, false, nk, dh, mq, 1, pp, KeyTile, doBase, d, 1, dvBase, threeD, 1);
                        Gemm.Sgemm(false, true, mq, nk, dh, 1, doBase, d, vBase, threeD, 0, dsp, KeyTile, 1);
                        // dS = scale·P ⊙ (dP − D)
                        for (int r = 0; r < mq; r++)
                        {
                            var ds = dScores.AsSpan(r * KeyTile, nk);
                            System.Numerics.Tensors.TensorPrimitives.Subtract(ds, delta[(i0 + r) * heads + h], ds);
                            System.Numerics.Tensors.TensorPrimitives.Multiply(ds, probs.AsSpan(r * KeyTile, nk), ds);
                            System.Numerics.Tensors.TensorPrimitives.Multiply(ds, scale, ds);
                        }
                        // dQ += dS·K;  dK += dSᵀ·Q
                        Gemm.Sgemm(false, false, mq, dh, nk, 1, dsp, KeyTile, kBase, threeD, 1, dqBase, threeD, 1);
                        Gemm.Sgemm(true, false, nk, dh, mq, 1, dsp, KeyTile, qBase, threeD, 1, dkBase, threeD, 1);
                    }
                }
            }
        }

        int pairs = sequences * heads;
        if (Threads == 1 || work < 200_000)
        {
            for (int pair = 0; pair < pairs; pair++) Pair(pair);
        }
        else
        {
            // Dynamic scheduling: pairs differ in cost (L²), so no static split.
            Parallel.For(0, pairs, _parallel, Pair);
        }
    }

    private static bool Overlaps(Tensor a, Tensor b) =>
        ReferenceEquals(a.Storage, b.Storage) && a.Length > 0 && b.Length > 0
        && a.Offset < b.Offset + b.Length && b.Offset < a.Offset + a.Length;

    /// <summary>Σ a·b over n elements with a fixed lane layout (independent of alignment).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(ref float a, ref float b, int n)
    {
        int e = 0;
        float sum = 0;
        if (Vector256.IsHardwareAccelerated && n >= Vector256<float>.Count)
        {
            var acc = Vector256<float>.Zero;
            for (; e <= n - Vector256<float>.Count; e += Vector256<float>.Count)
                acc = Vector256.MultiplyAddEstimate(Vector256.LoadUnsafe(ref a, (nuint)e), Vector256.LoadUnsafe(ref b, (nuint)e), acc);
            sum = Vector256.Sum(acc);
        }
        for (; e < n; e++) sum += Unsafe.Add(ref a, e) * Unsafe.Add(ref b, e);
        return sum;
    }

    /// <summary>Returns q·k and sets <paramref name="dov"/> = dO·v, both over n elements, in one pass.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot2(ref float q, ref float k, ref float dO, ref float v, int n, out float dov)
    {
        int e = 0;
        float qk = 0, gv = 0;
        if (Vector256.IsHardwareAccelerated && n >= Vector256<float>.Count)
        {
            var a = Vector256<float>.Zero;
            var c = Vector256<float>.Zero;
            for (; e <= n - Vector256<float>.Count; e += Vector256<float>.Count)
            {
                a = Vector256.MultiplyAddEstimate(Vector256.LoadUnsafe(ref q, (nuint)e), Vector256.LoadUnsafe(ref k, (nuint)e), a);
                c = Vector256.MultiplyAddEstimate(Vector256.LoadUnsafe(ref dO, (nuint)e), Vector256.LoadUnsafe(ref v, (nuint)e), c);
            }
            qk = Vector256.Sum(a);
            gv = Vector256.Sum(c);
        }
        for (; e < n; e++)
        {
            qk += Unsafe.Add(ref q, e) * Unsafe.Add(ref k, e);
            gv += Unsafe.Add(ref dO, e) * Unsafe.Add(ref v, e);
        }
        dov = gv;
        return qk;
    }

    /// <summary>dv += p·dO, dk += ds·q, dq += ds·k over n elements.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PairUpdate(ref float dO, ref float q, ref float k, ref float dv, ref float dk, ref float dq,
        float p, float ds, int n)
    {
        int e = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var vp = Vector256.Create(p);
            var vds = Vector256.Create(ds);
            for (; e <= n - Vector256<float>.Count; e += Vector256<float>.Count)
            {
                nuint at = (nuint)e;
                Vector256.MultiplyAddEstimate(vp, Vector256.LoadUnsafe(ref dO, at), Vector256.LoadUnsafe(ref dv, at)).StoreUnsafe(ref dv, at);
                Vector256.MultiplyAddEstimate(vds, Vector256.LoadUnsafe(ref q, at), Vector256.LoadUnsafe(ref dk, at)).StoreUnsafe(ref dk, at);
                Vector256.MultiplyAddEstimate(vds, Vector256.LoadUnsafe(ref k, at), Vector256.LoadUnsafe(ref dq, at)).StoreUnsafe(ref dq, at);
            }
        }
        for (; e < n; e++)
        {
            Unsafe.Add(ref dv, e) += p * Unsafe.Add(ref dO, e);
            Unsafe.Add(ref dk, e) += ds * Unsafe.Add(ref q, e);
            Unsafe.Add(ref dq, e) += ds * Unsafe.Add(ref k, e);
        }
    }
}
