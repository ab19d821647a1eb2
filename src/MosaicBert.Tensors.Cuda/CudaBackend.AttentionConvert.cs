namespace MosaicBert.Tensors.Cuda;

// bf16 attention for mixed-precision training, for now through the fp32 kernels: the bf16 tensors are widened into
// fp32 scratch (exact), the fp32 kernels run, and the outputs are rounded back to bf16. Correct but slow (extra
// traffic and the fp32 kernels' CUDA-core arithmetic); the tensor-core bf16 FlashAttention kernels
// (CudaBackend.AttentionBf16.cs, attention_bf16.cu) replace it at the two marked places below.
public sealed partial class CudaBackend
{
    /// <summary>bf16 forward: qkv [N, 3d] bf16 → context [N, d] bf16, logSumExp [N, H] fp32.</summary>
    private void AttentionBf16Dispatch(Tensor qkv, Tensor cuSeqlens, Tensor positions, Tensor slopes, float scale,
        Tensor context, Tensor logSumExp)
    {
        CheckBf16Attention(qkv, context, nameof(context));
        // SWITCH POINT (lead, after merging the bf16 attention kernels): replace the rest of this method with
        //   AttentionBf16Forward(qkv, cuSeqlens, positions, slopes, scale, context, logSumExp);
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
        // SWITCH POINT (lead, after merging the bf16 attention kernels): replace the rest of this method with
        //   AttentionBf16Backward(qkv, cuSeqlens, positions, slopes, scale, context, logSumExp, dContext, dQkv);
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

    private void CheckBf16Attention(Tensor qkv, Tensor context, string contextName)
    {
        Check(qkv, nameof(qkv), DType.BFloat16);
        if (qkv.Rank != 2 || qkv.Dim(1) % 3 != 0)
            throw new ArgumentException($"qkv must be [N, 3d], not {qkv.ShapeString}.", nameof(qkv));
        Check(context, contextName, DType.BFloat16, qkv.Dim(0), qkv.Dim(1) / 3);
    }
}
