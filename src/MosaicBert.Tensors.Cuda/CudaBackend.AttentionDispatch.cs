namespace MosaicBert.Tensors.Cuda;

// bf16 attention for mixed-precision training: head dimension 64 (every preset) runs the tensor-core FlashAttention-2
// kernels of attention_bf16.cu (CudaBackend.AttentionBf16.cs). Any other head dimension is widened into fp32 scratch
// (exact), runs the fp32 kernels and is rounded back to bf16: correct, slower.
public sealed partial class CudaBackend
{
    /// <summary>bf16 forward: qkv [N, 3d] bf16 → context [N, d] bf16, logSumExp [N, H] fp32.</summary>
    private void AttentionBf16Dispatch(Tensor qkv, Tensor cuSeqlens, Tensor positions, Tensor slopes, float scale,
        Tensor context, Tensor logSumExp)
    {
        CheckBf16Attention(qkv, context, nameof(context));
        if (TensorCoreAttention(qkv, cuSeqlens, positions, slopes, logSumExp) is var (n, b, maxLen, heads))
        {
            AttentionBf16Forward(Ptr(qkv), Ptr(cuSeqlens), Ptr(positions), Ptr(slopes), n, b, maxLen, heads, scale, Ptr(context), Ptr(logSumExp));
            return;
        }
        using var qkv32 = Scratch(DType.Float32, qkv.Length);
        using var context32 = Scratch(DType.Float32, context.Length);
        var q = qkv32.Reshape(qkv.Shape.ToArray());
        var c = context32.Reshape(context.Shape.ToArray());
        Convert(qkv, q);
        Attention(q, cuSeqlens, positions, slopes, scale, c, logSumExp);
        Convert(c, context);
    }

    /// <summary>bf16 backward: dQkv [N, 3d] bf16 from dContext [N, d] bf16 (and the forward's bf16 qkv, context).</summary>
    private void AttentionBackwardBf16Dispatch(Tensor qkv, Tensor cuSeqlens, Tensor positions, Tensor slopes, float scale,
        Tensor context, Tensor logSumExp, Tensor dContext, Tensor dQkv)
    {
        CheckBf16Attention(qkv, context, nameof(context));
        Check(dContext, nameof(dContext), DType.BFloat16, context.Shape.ToArray());
        Check(dQkv, nameof(dQkv), DType.BFloat16, qkv.Shape.ToArray());
        if (TensorCoreAttention(qkv, cuSeqlens, positions, slopes, logSumExp) is var (n, b, maxLen, heads))
        {
            if (Overlaps(dQkv, qkv) || Overlaps(dQkv, context) || Overlaps(dQkv, dContext) || Overlaps(dQkv, logSumExp))
                throw new ArgumentException("dQkv must not overlap qkv, context, logSumExp or dContext.", nameof(dQkv));
            using var scratch = Scratch(DType.Float32, (long)n * heads);
            AttentionBf16Backward(Ptr(qkv), Ptr(cuSeqlens), Ptr(positions), Ptr(slopes), n, b, maxLen, heads, scale,
                Ptr(context), Ptr(logSumExp), Ptr(dContext), Ptr(dQkv), Ptr(scratch));
            return;
        }
        using var qkv32 = Scratch(DType.Float32, qkv.Length);
        using var context32 = Scratch(DType.Float32, context.Length);
        using var dContext32 = Scratch(DType.Float32, dContext.Length);
        using var dQkv32 = Scratch(DType.Float32, dQkv.Length);
        var q = qkv32.Reshape(qkv.Shape.ToArray());
        var c = context32.Reshape(context.Shape.ToArray());
        var dc = dContext32.Reshape(dContext.Shape.ToArray());
        var dq = dQkv32.Reshape(dQkv.Shape.ToArray());
        Convert(qkv, q);
        Convert(context, c);
        Convert(dContext, dc);
        AttentionBackward(q, cuSeqlens, positions, slopes, scale, c, logSumExp, dc, dq);
        Convert(dq, dQkv);
    }

    /// <summary>
    /// The shapes for the tensor-core kernels (attention_bf16.cu) when they apply — head dimension 64, which every preset
    /// has — else null (other head dimensions take the fp32 kernels through conversions). cuSeqlens is validated here on
    /// its host copy (kept by Upload, so no wait), which also gives the longest sequence the kernels' grid needs.
    /// </summary>
    private (int Tokens, int Sequences, int MaxSeqlen, int Heads)? TensorCoreAttention(Tensor qkv, Tensor cuSeqlens,
        Tensor positions, Tensor slopes, Tensor logSumExp)
    {
        Check(slopes, nameof(slopes), DType.Float32);
        int n = qkv.Dim(0), d = qkv.Dim(1) / 3, heads = slopes.Dim(0);
        if (heads == 0 || d % heads != 0 || d / heads != AttentionBf16HeadDim) return null;
        Check(positions, nameof(positions), DType.Int32, n);
        Check(logSumExp, nameof(logSumExp), DType.Float32, n, heads);
        Check(cuSeqlens, nameof(cuSeqlens), DType.Int32);
        var cu = HostInts(cuSeqlens);
        if (cu.Length < 1 || cu[0] != 0 || cu[^1] != n)
            throw new ArgumentException($"cuSeqlens must run from 0 to N = {n}.", nameof(cuSeqlens));
        int maxLen = 0;
        for (int i = 1; i < cu.Length; i++)
        {
            if (cu[i] < cu[i - 1]) throw new ArgumentException("cuSeqlens must not decrease.", nameof(cuSeqlens));
            maxLen = Math.Max(maxLen, cu[i] - cu[i - 1]);
        }
        return (n, cu.Length - 1, maxLen, heads);
    }

    private void CheckBf16Attention(Tensor qkv, Tensor context, string contextName)
    {
        Check(qkv, nameof(qkv), DType.BFloat16);
        if (qkv.Rank != 2 || qkv.Dim(1) % 3 != 0)
            throw new ArgumentException($"qkv must be [N, 3d], not {qkv.ShapeString}.", nameof(qkv));
        Check(context, contextName, DType.BFloat16, qkv.Dim(0), qkv.Dim(1) / 3);
    }
}
