using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace MosaicBert.Tensors.Cpu;

// Training-side kernels: the regression loss, dropout, element-wise algebra on gradient blocks, the squared norm for
// clipping and the optimizer step. All element-wise work is split into fixed blocks, so no result depends on the
// thread count.
public sealed partial class CpuBackend
{
    private double[] _sumOfSquaresPartials = [];

    /// <inheritdoc/>
    /// <remarks>
    /// <paramref name="predictions"/> is [B, 1] (or [B]); <paramref name="targets"/> and <paramref name="losses"/>
    /// hold B elements; <paramref name="gradient"/> has the shape of the predictions. All in fp32:
    /// loss = (p − t)², gradient = 2·(p − t)·gradientScale.
    /// </remarks>
    public override void SquaredError(Tensor predictions, Tensor targets, Tensor losses, Tensor? gradient = null, float gradientScale = 1)
    {
        Check(predictions, nameof(predictions), DType.Float32);
        if (predictions.Rank < 1 || predictions.RowLength != 1)
            throw new ArgumentException($"predictions must be [B, 1], not {predictions.ShapeString}.", nameof(predictions));
        int b = predictions.Dim(0);
        Check(targets, nameof(targets), DType.Float32);
        if (targets.Length != b)
            throw new ArgumentException($"targets must hold {b} elements (one per prediction), not {targets.ShapeString}.", nameof(targets));
        Check(losses, nameof(losses), DType.Float32);
        if (losses.Length != b)
            throw new ArgumentException($"losses must hold {b} elements (one per prediction), not {losses.ShapeString}.", nameof(losses));
        if (gradient is not null) CheckSameShape(gradient, nameof(gradient), predictions, nameof(predictions));
        var p = Span(predictions);
        var t = Span(targets);
        var l = Span(losses);
        var g = gradient is null ? default : Span(gradient);
        float twiceScale = 2 * gradientScale;
        for (int i = 0; i < b; i++)
        {
            float diff = p[i] - t[i];
            l[i] = diff * diff;
            if (gradient is not null) g[i] = twiceScale * diff;
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The mask is <see cref="DropoutRandom"/>'s, element i using counter c = offset + i; in fp32,
    /// mask = keep ? 1f / (1f − p) : 0f and y = x·mask. Any split of a tensor into [offset, offset + n) pieces gives
    /// the same mask as one call over the whole.
    /// </remarks>
    public override void Dropout(Tensor x, Tensor y, Tensor? mask, float p, ulong seed, long offset)
    {
        Check(x, nameof(x), DType.Float32);
        CheckSameShape(y, nameof(y), x, nameof(x));
        if (mask is not null) CheckSameShape(mask, nameof(mask), x, nameof(x));
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), $"Dropout probability {p} is not in [0, 1).");
        var xs = Floats(x); int xo = (int)x.Offset;
        var ys = Floats(y); int yo = (int)y.Offset;
        var ms = mask is null ? null : Floats(mask); int mo = (int)(mask?.Offset ?? 0);
        ulong key = DropoutRandom.Key(seed);
        uint threshold = DropoutRandom.Threshold(p);
        float keepScale = 1f / (1f - p);
        ParallelElements(x.Length, 8, (start, end) =>
        {
            for (int i = start; i < end; i++)
            {
                float v = xs[xo + i];
                float m = DropoutRandom.Bits24(key, unchecked((ulong)(offset + i))) >= threshold ? keepScale : 0f;
                if (ms is not null) ms[mo + i] = m;
                ys[yo + i] = v * m;
            }
        });
    }

    /// <inheritdoc/>
    public override void Multiply(Tensor x, Tensor y, Tensor z)
    {
        Check(x, nameof(x), DType.Float32);
        CheckSameLength(y, nameof(y), x);
        CheckSameLength(z, nameof(z), x);
        var xs = Floats(x); int xo = (int)x.Offset;
        var ys = Floats(y); int yo = (int)y.Offset;
        var zs = Floats(z); int zo = (int)z.Offset;
        ParallelElements(x.Length, 1, (start, end) =>
            TensorPrimitives.Multiply(xs.AsSpan(xo + start, end - start), ys.AsSpan(yo + start, end - start), zs.AsSpan(zo + start, end - start)));
    }

    /// <inheritdoc/>
    public override void AddScaled(Tensor x, float alpha, Tensor y)
    {
        Check(x, nameof(x), DType.Float32);
        CheckSameLength(y, nameof(y), x);
        var xs = Floats(x); int xo = (int)x.Offset;
        var ys = Floats(y); int yo = (int)y.Offset;
        ParallelElements(x.Length, 2, (start, end) =>
        {
            var dst = ys.AsSpan(yo + start, end - start);
            TensorPrimitives.MultiplyAdd(xs.AsSpan(xo + start, end - start), alpha, dst, dst);
        });
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Every x² is exact in double (a 24-bit significand squared fits in 53 bits). Fixed blocks of 8192 elements are
    /// summed in double over 8 lanes (two 4-wide accumulators), and the block sums are added in block order, so the
    /// result does not depend on the thread count. All terms are non-negative, so the relative error is at most
    /// (1024 + 3 + blocks)·2⁻⁵³ ≈ (1027 + n/8192)·1.1e-16 — about 1e-13 for a 110M-parameter model.
    /// </remarks>
    public override double SumOfSquares(Tensor x)
    {
        Check(x, nameof(x), DType.Float32);
        const int Block = 8192;
        long length = x.Length;
        int blocks = (int)((length + Block - 1) / Block);
        if (_sumOfSquaresPartials.Length < blocks) _sumOfSquaresPartials = new double[blocks];
        var partials = _sumOfSquaresPartials;
        var xs = Floats(x); int xo = (int)x.Offset;
        ParallelRows(blocks, Block, (b0, b1) =>
        {
            for (int b = b0; b < b1; b++)
            {
                int start = b * Block;
                int count = (int)Math.Min(Block, length - start);
                partials[b] = SumOfSquaresDouble(xs.AsSpan(xo + start, count));
            }
        });
        double total = 0;
        for (int b = 0; b < blocks; b++) total += partials[b];
        return total;
    }

    private static double SumOfSquaresDouble(ReadOnlySpan<float> x)
    {
        int i = 0;
        double sum = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var lo = Vector256<double>.Zero;
            var hi = Vector256<double>.Zero;
            for (; i <= x.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var (a, b) = Vector256.Widen(Simd8.Load(x, i));
                lo += a * a;
                hi += b * b;
            }
            sum = Vector256.Sum(lo + hi);
        }
        for (; i < x.Length; i++)
        {
            double v = x[i];
            sum += v * v;
        }
        return sum;
    }

    /// <inheritdoc/>
    public override void Scale(Tensor x, float factor)
    {
        Check(x, nameof(x), DType.Float32);
        var xs = Floats(x); int xo = (int)x.Offset;
        ParallelElements(x.Length, 1, (start, end) =>
        {
            var s = xs.AsSpan(xo + start, end - start);
            TensorPrimitives.Multiply(s, factor, s);
        });
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The operations of Composer's DecoupledAdamW (PyTorch's Adam kernel) in fp32, with the bias corrections in
    /// double: θ ← θ·(1 − decayFactor); m ← m·β1 + g·(1 − β1); v ← v·β2 + g·g·(1 − β2);
    /// θ ← θ − stepSize·m / (√v / √bc2 + ε) with bc1 = 1 − β1ᵗ, bc2 = 1 − β2ᵗ, stepSize = (float)(lr / bc1) and
    /// √bc2 = (float)√bc2 computed in double.
    /// </remarks>
    public override void AdamW(Tensor parameters, Tensor gradients, Tensor m, Tensor v, float lr, float beta1, float beta2,
        float eps, float decayFactor, int step)
    {
        Check(parameters, nameof(parameters), DType.Float32);
        CheckSameLength(gradients, nameof(gradients), parameters);
        CheckSameLength(m, nameof(m), parameters);
        CheckSameLength(v, nameof(v), parameters);
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), $"The AdamW step count starts at 1, not {step}.");
        if (!(beta1 >= 0 && beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(beta1), $"beta1 = {beta1} is not in [0, 1).");
        if (!(beta2 >= 0 && beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(beta2), $"beta2 = {beta2} is not in [0, 1).");
        double bc1 = 1 - Math.Pow(beta1, step);
        double bc2 = 1 - Math.Pow(beta2, step);
        var k = new AdamConstants
        {
            Keep = 1f - decayFactor,
            Beta1 = beta1,
            OneMinusBeta1 = (float)(1 - (double)beta1),
            Beta2 = beta2,
            OneMinusBeta2 = (float)(1 - (double)beta2),
            StepSize = (float)(lr / bc1),
            SqrtBc2 = (float)Math.Sqrt(bc2),
            Eps = eps,
        };
        var th = Floats(parameters); int tho = (int)parameters.Offset;
        var gs = Floats(gradients); int gso = (int)gradients.Offset;
        var ms = Floats(m); int mso = (int)m.Offset;
        var vs = Floats(v); int vso = (int)v.Offset;
        ParallelElements(parameters.Length, 12, (start, end) =>
        {
            int n = end - start;
            AdamWBlock(th.AsSpan(tho + start, n), gs.AsSpan(gso + start, n), ms.AsSpan(mso + start, n), vs.AsSpan(vso + start, n), k);
        });
    }

    private readonly struct AdamConstants
    {
        public float Keep { get; init; }
        public float Beta1 { get; init; }
        public float OneMinusBeta1 { get; init; }
        public float Beta2 { get; init; }
        public float OneMinusBeta2 { get; init; }
        public float StepSize { get; init; }
        public float SqrtBc2 { get; init; }
        public float Eps { get; init; }
    }

    // The vector body and the scalar tail perform the same unfused fp32 operations, so both round identically.
    private static void AdamWBlock(Span<float> theta, ReadOnlySpan<float> g, Span<float> m, Span<float> v, in AdamConstants k)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var keep = Vector256.Create(k.Keep);
            var b1 = Vector256.Create(k.Beta1);
            var c1 = Vector256.Create(k.OneMinusBeta1);
            var b2 = Vector256.Create(k.Beta2);
            var c2 = Vector256.Create(k.OneMinusBeta2);
            var stepSize = Vector256.Create(k.StepSize);
            var sqrtBc2 = Vector256.Create(k.SqrtBc2);
            var eps = Vector256.Create(k.Eps);
            for (; i <= theta.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var t = Simd8.Load(theta, i) * keep;
                var gv = Simd8.Load(g, i);
                var mv = Simd8.Load(m, i) * b1 + gv * c1;
                var vv = Simd8.Load(v, i) * b2 + gv * gv * c2;
                var denom = Vector256.Sqrt(vv) / sqrtBc2 + eps;
                t -= stepSize * (mv / denom);
                t.CopyTo(theta.Slice(i, Vector256<float>.Count));
                mv.CopyTo(m.Slice(i, Vector256<float>.Count));
                vv.CopyTo(v.Slice(i, Vector256<float>.Count));
            }
        }
        for (; i < theta.Length; i++)
        {
            float t = theta[i] * k.Keep;
            float gv = g[i];
            float mv = m[i] * k.Beta1 + gv * k.OneMinusBeta1;
            float vv = v[i] * k.Beta2 + gv * gv * k.OneMinusBeta2;
            float denom = MathF.Sqrt(vv) / k.SqrtBc2 + k.Eps;
            theta[i] = t - k.StepSize * (mv / denom);
            m[i] = mv;
            v[i] = vv;
        }
    }

    /// <summary>Throws unless <paramref name="t"/> is a float tensor of this backend as long as <paramref name="like"/>.</summary>
    private void CheckSameLength(Tensor t, string name, Tensor like)
    {
        Check(t, name, DType.Float32);
        if (t.Length != like.Length)
            throw new ArgumentException($"{name} {t.ShapeString} must have as many elements as {like.ShapeString}.", name);
    }
}

/// <summary>
/// The counter-based generator of <see cref="Backend.Dropout"/>, specified bit for bit so that every backend (and
/// any thread count, and any split of a tensor into pieces) draws the same mask. With all arithmetic on unsigned
/// 64-bit integers modulo 2⁶⁴:
/// <code>
/// mix(z)          = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^ (z >> 31)
///                   (the SplitMix64 finaliser)
/// key(seed)       = mix(seed)
/// hash(seed, c)   = mix(key(seed) + (c + 1)·0x9E3779B97F4A7C15)
///                   (output number c + 1 of a SplitMix64 generator whose state starts at key(seed))
/// u(seed, c)      = (hash(seed, c) >> 40)·2⁻²⁴, a 24-bit uniform in [0, 1)
/// keep(seed, c)   ⟺ u(seed, c) ≥ p ⟺ (hash(seed, c) >> 40) ≥ ceil(p·2²⁴)
/// </code>
/// where c = (ulong)(offset + i) for element i of a call. The mask value of a kept element is the fp32 quotient
/// 1f / (1f − p), of a dropped one 0; y = x·mask in fp32.
/// </summary>
public static class DropoutRandom
{
    /// <summary>The golden-ratio increment of SplitMix64.</summary>
    public const ulong Gamma = 0x9E3779B97F4A7C15;

    /// <summary>The SplitMix64 finaliser.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Mix(ulong z)
    {
        unchecked
        {
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
            return z ^ (z >> 31);
        }
    }

    /// <summary>key(seed) = mix(seed), computed once per call.</summary>
    public static ulong Key(ulong seed) => Mix(seed);

    /// <summary>hash(seed, c) = mix(mix(seed) + (c + 1)·γ).</summary>
    public static ulong Hash(ulong seed, ulong counter) => Mix(unchecked(Key(seed) + (counter + 1) * Gamma));

    /// <summary>The top 24 bits of hash(seed, c), from a precomputed <see cref="Key"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Bits24(ulong key, ulong counter) => (uint)(Mix(unchecked(key + (counter + 1) * Gamma)) >> 40);

    /// <summary>u(seed, c) = (hash(seed, c) >> 40)·2⁻²⁴ in [0, 1) (exact in fp32).</summary>
    public static float Uniform(ulong seed, ulong counter) => (Hash(seed, counter) >> 40) * (1f / 16777216f);

    /// <summary>ceil(p·2²⁴): an element is kept when its 24 bits are at least this (the same as u ≥ p).</summary>
    public static uint Threshold(float p) => (uint)Math.Ceiling(p * 16777216.0);
}
