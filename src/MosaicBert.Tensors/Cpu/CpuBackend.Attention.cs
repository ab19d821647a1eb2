using System.Numerics.Tensors;

namespace MosaicBert.Tensors.Cpu;

public sealed partial class CpuBackend
{
    private const int KeyTile = 64;
    private int[] _sequenceStart = [];
    private int[] _sequenceEnd = [];

    /// <inheritdoc/>
    /// <remarks>
    /// FlashAttention's recurrence on the CPU. For query i and head h, keys are visited in tiles of 64; with the
    /// running max m, running sum l and accumulator o:
    /// s_j = scale·q_i·k_j − slope_h·|pos_i − pos_j|, m' = max(m, max_j s_j),
    /// o ← o·e^(m−m') + Σ_j e^(s_j−m')·v_j, l ← l·e^(m−m') + Σ_j e^(s_j−m'); finally ctx_i = o/l and
    /// lse_i = m + log l. Memory per thread is one tile of scores and one head of output, never S×S.
    /// </remarks>
    public override void Attention(Tensor qkv, Tensor cuSeqlens, Tensor positions, Tensor slopes, float scale,
        Tensor context, Tensor logSumExp)
    {
        int n = qkv.Dim(0), threeD = qkv.Dim(1), d = threeD / 3;
        int heads = slopes.Dim(0);
        if (threeD % 3 != 0 || d % heads != 0)
            throw new ArgumentException($"qkv width {threeD} is not 3·d with d a multiple of {heads} heads.", nameof(qkv));
        int dh = d / heads;
        Check(context, nameof(context), DType.Float32, n, d);
        Check(logSumExp, nameof(logSumExp), DType.Float32, n, heads);
        Check(positions, nameof(positions), DType.Int32, n);
        var cu = IntSpan(cuSeqlens);
        if (cu.Length < 1 || cu[0] != 0 || cu[^1] != n)
            throw new ArgumentException($"cuSeqlens must run from 0 to N = {n}.", nameof(cuSeqlens));
        // Sequence of each token, so that work can be split over queries.
        // Scratch reused across calls: the backend is driven by one model step at a time.
        if (_sequenceStart.Length < n)
        {
            _sequenceStart = new int[n];
            _sequenceEnd = new int[n];
        }
        var sequenceStart = _sequenceStart;
        var sequenceEnd = _sequenceEnd;
        for (int b = 0; b + 1 < cu.Length; b++)
        {
            if (cu[b + 1] < cu[b]) throw new ArgumentException("cuSeqlens must not decrease.", nameof(cuSeqlens));
            for (int t = cu[b]; t < cu[b + 1]; t++)
            {
                sequenceStart[t] = cu[b];
                sequenceEnd[t] = cu[b + 1];
            }
        }
        var q = Floats(qkv); int qo = (int)qkv.Offset;
        var pos = Ints(positions); int po = (int)positions.Offset;
        var m = Floats(slopes); int mo = (int)slopes.Offset;
        var ctx = Floats(context); int co = (int)context.Offset;
        var lse = Floats(logSumExp); int lo = (int)logSumExp.Offset;
        long workPerQuery = 4L * d * (n / Math.Max(1, cu.Length - 1) + 1);
        ParallelRows(n, workPerQuery, (start, end) =>
        {
            Span<float> scores = stackalloc float[KeyTile];
            for (int i = start; i < end; i++)
            {
                int s0 = sequenceStart[i], s1 = sequenceEnd[i];
                for (int h = 0; h < heads; h++)
                {
                    var qi = q.AsSpan(qo + i * threeD + h * dh, dh);
                    var o = ctx.AsSpan(co + i * d + h * dh, dh);
                    o.Clear();
                    float slope = m[mo + h];
                    float max = float.NegativeInfinity, sum = 0;
                    for (int j0 = s0; j0 < s1; j0 += KeyTile)
                    {
                        int tile = Math.Min(KeyTile, s1 - j0);
                        float tileMax = float.NegativeInfinity;
                        for (int j = 0; j < tile; j++)
                        {
                            var kj = q.AsSpan(qo + (j0 + j) * threeD + d + h * dh, dh);
                            float s = scale * TensorPrimitives.Dot(qi, kj) - slope * Math.Abs(pos[po + i] - pos[po + j0 + j]);
                            scores[j] = s;
                            if (s > tileMax) tileMax = s;
                        }
                        float newMax = Math.Max(max, tileMax);
                        if (newMax > max && sum > 0)
                        {
                            float c = MathF.Exp(max - newMax);
                            TensorPrimitives.Multiply(o, c, o);
                            sum *= c;
                        }
                        max = newMax;
                        for (int j = 0; j < tile; j++)
                        {
                            float p = MathF.Exp(scores[j] - max);
                            sum += p;
                            TensorPrimitives.MultiplyAdd(q.AsSpan(qo + (j0 + j) * threeD + 2 * d + h * dh, dh), p, o, o);
                        }
                    }
                    TensorPrimitives.Multiply(o, 1f / sum, o);
                    lse[lo + i * heads + h] = max + MathF.Log(sum);
                }
            }
        });
    }
}
