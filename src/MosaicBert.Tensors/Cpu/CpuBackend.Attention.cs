using System.Numerics.Tensors;

namespace MosaicBert.Tensors.Cpu;

public sealed partial class CpuBackend
{
    private const int QueryBlock = 64;
    private const int KeyTile = 64;

    [ThreadStatic] private static float[]? t_scores;
    [ThreadStatic] private static float[]? t_rowMax;
    [ThreadStatic] private static float[]? t_rowSum;

    /// <inheritdoc/>
    /// <remarks>
    /// FlashAttention's recurrence on the CPU, with the two products of each tile done by the GEMM. Work items are
    /// (sequence, head, block of 64 queries); for each tile of 64 keys of the same sequence:
    /// S = scale·Q_blk·K_tileᵀ (GEMM), s_ij −= slope_h·|pos_i − pos_j|, then per query row with running max m and sum
    /// l: m' = max(m, max_j s_ij), O ← O·e^(m−m'), l ← l·e^(m−m') + Σ_j e^(s_ij−m'), and O += P·V_tile (GEMM, into the
    /// context rows themselves). Finally O ← O/l and lse = m + log l. Memory per thread is one 64×64 score tile,
    /// never S×S; every item is computed the same way whatever the thread count, so results are deterministic.
    /// </remarks>
    public override unsafe void Attention(Tensor qkv, Tensor cuSeqlens, Tensor positions, Tensor slopes, float scale,
        Tensor context, Tensor logSumExp)
    {
        int n = qkv.Dim(0), threeD = qkv.Dim(1), d = threeD / 3;
        int heads = slopes.Dim(0);
        if (heads == 0 || threeD % 3 != 0 || d % heads != 0)
            throw new ArgumentException($"qkv width {threeD} is not 3·d with d a multiple of {heads} heads.", nameof(qkv));
        int dh = d / heads;
        Check(qkv, nameof(qkv), DType.Float32);
        Check(context, nameof(context), DType.Float32, n, d);
        Check(logSumExp, nameof(logSumExp), DType.Float32, n, heads);
        Check(positions, nameof(positions), DType.Int32, n);
        var cu = IntSpan(cuSeqlens);
        if (cu.Length < 1 || cu[0] != 0 || cu[^1] != n)
            throw new ArgumentException($"cuSeqlens must run from 0 to N = {n}.", nameof(cuSeqlens));
        // Work items: (sequence, query block) × heads, numbered so that a flat index decodes without a list.
        int sequences = cu.Length - 1;
        var blockStart = _attentionBlocks.Length >= sequences + 1 ? _attentionBlocks : _attentionBlocks = new int[sequences + 1];
        blockStart[0] = 0;
        for (int b = 0; b < sequences; b++)
        {
            int len = cu[b + 1] - cu[b];
            if (len < 0) throw new ArgumentException("cuSeqlens must not decrease.", nameof(cuSeqlens));
            blockStart[b + 1] = blockStart[b] + (len + QueryBlock - 1) / QueryBlock;
        }
        int blocks = blockStart[sequences];
        var cuArr = Ints(cuSeqlens); int cuo = (int)cuSeqlens.Offset;
        var q = Floats(qkv); int qo = (int)qkv.Offset;
        var pos = Ints(positions); int po = (int)positions.Offset;
        var m = Floats(slopes); int mo = (int)slopes.Offset;
        var ctx = Floats(context); int co = (int)context.Offset;
        var lse = Floats(logSumExp); int lo = (int)logSumExp.Offset;

        void Item(int item)
        {
            int h = item % heads, block = item / heads;
            int b = Array.BinarySearch(blockStart, 0, sequences + 1, block);
            if (b < 0) b = ~b - 1;
            while (b + 1 <= sequences && blockStart[b + 1] <= block) b++;
            int s0 = cuArr[cuo + b], s1 = cuArr[cuo + b + 1];
            int q0 = s0 + (block - blockStart[b]) * QueryBlock, q1 = Math.Min(s1, q0 + QueryBlock), mq = q1 - q0;
            var scores = t_scores ??= new float[QueryBlock * KeyTile];
            var rowMax = t_rowMax ??= new float[QueryBlock];
            var rowSum = t_rowSum ??= new float[QueryBlock];
            float slope = m[mo + h];
            fixed (float* qp = q, cp = ctx, sp = scores)
            {
                float* qBase = qp + qo + (long)q0 * threeD + h * dh;
                float* oBase = cp + co + (long)q0 * d + h * dh;
                for (int j0 = s0; j0 < s1; j0 += KeyTile)
                {
                    int nk = Math.Min(KeyTile, s1 - j0);
                    float* kBase = qp + qo + (long)j0 * threeD + d + h * dh;
                    float* vBase = kBase + d;
                    Gemm.Sgemm(false, true, mq, nk, dh, scale, qBase, threeD, kBase, threeD, 0, sp, KeyTile, 1);
                    bool first = j0 == s0;
                    for (int r = 0; r < mq; r++)
                    {
                        var row = scores.AsSpan(r * KeyTile, nk);
                        int pi = pos[po + q0 + r];
                        if (slope != 0)
                            for (int j = 0; j < nk; j++) row[j] -= slope * Math.Abs(pi - pos[po + j0 + j]);
                        float tileMax = TensorPrimitives.Max<float>(row);
                        float max = first ? tileMax : Math.Max(rowMax[r], tileMax);
                        if (!first && max > rowMax[r])
                        {
                            float c = MathF.Exp(rowMax[r] - max);
                            TensorPrimitives.Multiply(new Span<float>(oBase + (long)r * d, dh), c, new Span<float>(oBase + (long)r * d, dh));
                            rowSum[r] *= c;
                        }
                        rowMax[r] = max;
                        TensorPrimitives.Subtract(row, max, row);
                        TensorPrimitives.Exp(row, row);
                        rowSum[r] = (first ? 0 : rowSum[r]) + TensorPrimitives.Sum<float>(row);
                    }
                    Gemm.Sgemm(false, false, mq, dh, nk, 1, sp, KeyTile, vBase, threeD, first ? 0 : 1, oBase, d, 1);
                }
                for (int r = 0; r < mq; r++)
                {
                    var o = new Span<float>(oBase + (long)r * d, dh);
                    TensorPrimitives.Multiply(o, 1f / rowSum[r], o);
                    lse[lo + (q0 + r) * heads + h] = rowMax[r] + MathF.Log(rowSum[r]);
                }
            }
        }

        int items = blocks * heads;
        long workPerItem = 4L * QueryBlock * dh * (n / Math.Max(1, sequences) + 1);
        ParallelRows(items, workPerItem, (start, end) =>
        {
            for (int item = start; item < end; item++) Item(item);
        });
    }

    private int[] _attentionBlocks = [];
}
