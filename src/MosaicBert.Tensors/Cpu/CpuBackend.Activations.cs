using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace MosaicBert.Tensors.Cpu;

public sealed partial class CpuBackend
{
    /// <inheritdoc/>
    public override void Gelu(Tensor x, Tensor y)
    {
        Check(y, nameof(y), DType.Float32, x.Shape.ToArray());
        var xs = Floats(x); int xo = (int)x.Offset;
        var ys = Floats(y); int yo = (int)y.Offset;
        int width = (int)x.RowLength;
        ParallelRows(x.Dim(0), width * 20, (start, end) =>
            Activations.Gelu(xs.AsSpan(xo + start * width, (end - start) * width), ys.AsSpan(yo + start * width, (end - start) * width)));
    }

    /// <inheritdoc/>
    public override void GatedGelu(Tensor gated, Tensor h)
    {
        int n = gated.Dim(0), twoI = gated.Dim(1), inner = twoI / 2;
        if (twoI % 2 != 0) throw new ArgumentException($"gated must have an even width, not {twoI}.", nameof(gated));
        Check(h, nameof(h), DType.Float32, n, inner);
        var g = Floats(gated); int go = (int)gated.Offset;
        var hs = Floats(h); int ho = (int)h.Offset;
        ParallelRows(n, inner * 20, (start, end) =>
        {
            for (int r = start; r < end; r++)
            {
                var u = g.AsSpan(go + r * twoI, inner);
                var v = g.AsSpan(go + r * twoI + inner, inner);
                var dst = hs.AsSpan(ho + r * inner, inner);
                Activations.Gelu(u, dst);
                TensorPrimitives.Multiply(dst, v, dst);
            }
        });
    }

    /// <inheritdoc/>
    public override void Tanh(Tensor x, Tensor y)
    {
        Check(y, nameof(y), DType.Float32, x.Shape.ToArray());
        // Scalar MathF.Tanh on purpose: TensorPrimitives.Tanh goes through exp and loses up to ~0.4% relative accuracy
        // near zero (cancellation in e^2x − 1), which the CUDA parity test caught. Tanh only runs in the pooler (B×H).
        ReadOnlySpan<float> src = Span(x);
        Span<float> dst = Span(y);
        for (int i = 0; i < src.Length; i++) dst[i] = MathF.Tanh(src[i]);
    }
}

/// <summary>
/// Element-wise activations in fp32, vectorised. The exact GELU needs the normal CDF Φ(x) = ½·erfc(−x/√2); .NET has
/// no erf, so erfc uses the Chebyshev-fitted formula of Numerical Recipes (erfcc), whose relative error is below
/// 1.2e-7 for every x ≥ 0. Using erfc (not 1 − erf) on the negative side keeps GELU's relative error ~2e-7 also
/// where GELU(x) is tiny.
/// </summary>
public static class Activations
{
    private const float InvSqrt2 = 0.70710678118654752f;

    /// <summary>GELU(x) = x·Φ(x).</summary>
    public static void Gelu(ReadOnlySpan<float> x, Span<float> y)
    {
        if (y.Length != x.Length) throw new ArgumentException("x and y differ in length.");
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= x.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var v = Vector256.Create(x.Slice(i, Vector256<float>.Count));
                (v * Phi(v)).CopyTo(y.Slice(i, Vector256<float>.Count));
            }
        }
        for (; i < x.Length; i++) y[i] = x[i] * Phi(x[i]);
    }

    /// <summary>Φ(x), the standard normal CDF, scalar.</summary>
    public static float Phi(float x)
    {
        float e = Erfcc(MathF.Abs(x) * InvSqrt2);
        return x >= 0 ? 1 - 0.5f * e : 0.5f * e;
    }

    /// <summary>Φ(x), vectorised.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Phi(Vector256<float> x)
    {
        var e = Erfcc(Vector256.Abs(x) * Vector256.Create(InvSqrt2));
        var half = Vector256.Create(0.5f) * e;
        return Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(x, Vector256<float>.Zero), Vector256<float>.One - half, half);
    }

    /// <summary>φ(x) = exp(−x²/2)/√(2π), the normal density (GELU′(x) = Φ(x) + x·φ(x)).</summary>
    public static float NormalDensity(float x) => 0.3989422804014327f * MathF.Exp(-0.5f * x * x);

    // erfc(z) for z ≥ 0: t·exp(−z² − 1.26551223 + t·P(t)), t = 1/(1 + z/2).
    private static float Erfcc(float z)
    {
        float t = 1f / (1f + 0.5f * z);
        float p = -0.82215223f + t * 0.17087277f;
        p = 1.48851587f + t * p;
        p = -1.13520398f + t * p;
        p = 0.27886807f + t * p;
        p = -0.18628806f + t * p;
        p = 0.09678418f + t * p;
        p = 0.37409196f + t * p;
        p = 1.00002368f + t * p;
        p = -1.26551223f + t * p;
        return t * MathF.Exp(-z * z + p);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Erfcc(Vector256<float> z)
    {
        var t = Vector256<float>.One / (Vector256<float>.One + Vector256.Create(0.5f) * z);
        var p = Vector256.MultiplyAddEstimate(t, Vector256.Create(0.17087277f), Vector256.Create(-0.82215223f));
        p = Vector256.MultiplyAddEstimate(t, p, Vector256.Create(1.48851587f));
        p = Vector256.MultiplyAddEstimate(t, p, Vector256.Create(-1.13520398f));
        p = Vector256.MultiplyAddEstimate(t, p, Vector256.Create(0.27886807f));
        p = Vector256.MultiplyAddEstimate(t, p, Vector256.Create(-0.18628806f));
        p = Vector256.MultiplyAddEstimate(t, p, Vector256.Create(0.09678418f));
        p = Vector256.MultiplyAddEstimate(t, p, Vector256.Create(0.37409196f));
        p = Vector256.MultiplyAddEstimate(t, p, Vector256.Create(1.00002368f));
        p = Vector256.MultiplyAddEstimate(t, p, Vector256.Create(-1.26551223f));
        return t * Vector256.Exp(p - z * z);
    }
}
