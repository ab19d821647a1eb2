using MosaicBert.Tensors;

namespace MosaicBert.Model;

/// <summary>The number format a model computes in (chosen at construction).</summary>
public enum ComputePrecision
{
    /// <summary>Everything in fp32 (every backend).</summary>
    Float32,
    /// <summary>
    /// Mixed precision (backends with bfloat16 tensors, i.e. CUDA): the fp32 parameter block stays the master copy
    /// (optimizer, gradients, checkpoints); forward and backward read a bf16 copy of it in the same layout, refreshed
    /// after loads and by the optimizer step. Activations and activation gradients are bf16; LayerNorm statistics,
    /// the attention log-sum-exp, MLM and classifier logits, losses and all parameter gradients stay fp32 (GEMMs
    /// accumulate in fp32 and write weight gradients straight into the fp32 block).
    /// </summary>
    BFloat16,
}

internal static class ComputePrecisionExtensions
{
    /// <summary>The tensor type of activations.</summary>
    public static DType ActivationType(this ComputePrecision p) => p == ComputePrecision.BFloat16 ? DType.BFloat16 : DType.Float32;
}
