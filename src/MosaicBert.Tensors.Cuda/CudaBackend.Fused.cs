using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Tensors.Cuda;

// Fused kernels that save passes over large tensors in a training step (measured on MosaicBERT-base, B = 256, S = 128,
// bf16, H100: the unfused gated GELU + dropout pair cost 13.3 ms forward+backward per step over 12 layers, plus 9.9 ms
// of dropout kernels, most of it on the [N, 3072] MLP activation).
public sealed partial class CudaBackend
{
    /// <inheritdoc/>
    /// <remarks>One kernel: reads g once, writes h once; 16-byte vector accesses for bf16 when I % 8 == 0. In fp32 the
    /// result equals GatedGelu then Dropout bit for bit; in bf16 it rounds once instead of twice. With keepBits the
    /// mask is also recorded there (1 bit per element), which the backward pass reads instead of hashing again.</remarks>
    public override void GatedGeluDropout(Tensor gated, Tensor h, float p, ulong seed, long offset, Tensor? keepBits = null)
    {
        var (t, n, inner) = CheckGated(gated);
        Check(h, nameof(h), t, n, inner);
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), $"Dropout probability {p} is not in [0, 1).");
        CheckKeepBits(keepBits, n, inner);
        LaunchGated("gated_gelu_dropout_forward", t, n, inner, Ptr(gated), Ptr(h), 0, p, seed, offset, Ptr(keepBits));
    }

    /// <inheritdoc/>
    /// <remarks>One kernel; dh is not modified. The mask is read from keepBits when given (the forward pass wrote it).</remarks>
    public override void GatedGeluDropoutBackward(Tensor gated, Tensor dh, Tensor dGated, float p, ulong seed, long offset, Tensor? keepBits = null)
    {
        var (t, n, inner) = CheckGated(gated);
        Check(dh, nameof(dh), t, n, inner);
        Check(dGated, nameof(dGated), t, n, 2 * inner);
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), $"Dropout probability {p} is not in [0, 1).");
        CheckKeepBits(keepBits, n, inner);
        LaunchGated("gated_gelu_dropout_backward", t, n, inner, Ptr(gated), Ptr(dh), Ptr(dGated), p, seed, offset, Ptr(keepBits));
    }

    /// <inheritdoc/>
    /// <remarks>Fused into the vectorized LayerNorm kernel where it applies: dropout(x) is rounded to x's type before
    /// the residual is added, exactly as the unfused pair.</remarks>
    public override void DropoutResidualLayerNorm(Tensor x, float p, ulong seed, long offset, Tensor residual, Tensor gamma, Tensor beta,
        float eps, Tensor sum, Tensor y, Tensor mean, Tensor rstd)
    {
        var (t, n, d) = CheckLayerNorm(x, residual, gamma, beta, sum, y, mean, rstd);
        string? suffix = LayerNormVectorSuffix(t, d, x, residual, gamma, beta, sum, y);
        if (p <= 0 || suffix is null)
        {
            base.DropoutResidualLayerNorm(x, p, seed, offset, residual, gamma, beta, eps, sum, y, mean, rstd);
            return;
        }
        if (!(p < 1)) throw new ArgumentOutOfRangeException(nameof(p), $"Dropout probability {p} is not in [0, 1).");
        if (n == 0 || d == 0) return;
        Launch(Kernel(LayerNormFile, "layernorm_dropout_forward" + suffix), CeilDiv(n, 8), 1, 256, 0,
            Ptr(x), Ptr(residual), Ptr(gamma), Ptr(beta), eps, Ptr(sum), Ptr(y), Ptr(mean), Ptr(rstd), n, d,
            DropoutRandom.Key(seed), DropoutRandom.Threshold(p), 1f / (1f - p), offset);
    }

    private void CheckKeepBits(Tensor? keepBits, int rows, int inner)
    {
        if (keepBits is null) return;
        Check(keepBits, nameof(keepBits), DType.Int32);
        long words = ((long)rows * inner + 31) / 32;
        if (keepBits.Length < words)
            throw new ArgumentException($"keepBits holds {keepBits.Length} words; {rows}×{inner} elements need {words} (one bit each).", nameof(keepBits));
    }

    private (DType Type, int Rows, int Inner) CheckGated(Tensor gated)
    {
        var t = CheckFloat(gated, nameof(gated));
        if (gated.Rank != 2 || gated.Dim(1) % 2 != 0)
            throw new ArgumentException($"gated must be [N, 2I] with an even width, not {gated.ShapeString}.", nameof(gated));
        return (t, gated.Dim(0), gated.Dim(1) / 2);
    }

    /// <summary>Grid: x over column groups (8 bf16 per thread when every row start stays 16-byte aligned), y over rows.</summary>
    private void LaunchGated(string name, DType t, int rows, int inner, ulong a, ulong b, ulong c, float p, ulong seed, long offset, ulong keepBits)
    {
        if (rows == 0 || inner == 0) return;
        bool vector = t == DType.BFloat16 && inner % 8 == 0 && (a | b | c) % 16 == 0;
        int perThread = vector ? 8 : 1;
        string kernel = vector ? name + "_bf16x8" : Variant(name, t);
        int groups = (inner + perThread - 1) / perThread;
        uint block = (uint)Math.Min(128, (groups + 31) / 32 * 32);
        uint gridY = (uint)Math.Min(rows, 8192);   // a few rows per block
        float keepScale = 1f / (1f - p);
        if (c == 0)
            Launch(Kernel(ActivationsFile, kernel), CeilDiv(groups, block), gridY, block, 0, a, b, rows, inner,
                DropoutRandom.Key(seed), DropoutRandom.Threshold(p), keepScale, offset, keepBits);
        else
            Launch(Kernel(ActivationsFile, kernel), CeilDiv(groups, block), gridY, block, 0, a, b, c, rows, inner,
                DropoutRandom.Key(seed), DropoutRandom.Threshold(p), keepScale, offset, keepBits);
    }
}
