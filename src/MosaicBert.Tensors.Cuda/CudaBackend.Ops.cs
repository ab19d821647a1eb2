using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Tensors.Cuda;

// Token-wise layers, their backward passes, losses and the training ops: thin launchers over the element-wise,
// activation, layernorm, reduce, loss, dropout and optimizer kernel files. Argument checks mirror the CPU backend's.
public sealed partial class CudaBackend
{
    private const string Elementwise = "elementwise.cu", ActivationsFile = "activations.cu", LayerNormFile = "layernorm.cu",
        ReduceFile = "reduce.cu", LossFile = "loss.cu", DropoutFile = "dropout.cu", OptimizerFile = "optimizer.cu";

    // ---- activations ----

    /// <inheritdoc/>
    public override void Gelu(Tensor x, Tensor y)
    {
        var t = CheckFloat(x, nameof(x));
        Check(y, nameof(y), t, x.Shape.ToArray());
        LaunchElements(ActivationsFile, Variant("gelu_forward", t), x.Length, Ptr(x), Ptr(y), x.Length);
    }

    /// <inheritdoc/>
    public override void GatedGelu(Tensor gated, Tensor h)
    {
        var t = CheckFloat(gated, nameof(gated));
        if (gated.Rank != 2 || gated.Dim(1) % 2 != 0)
            throw new ArgumentException($"gated must be [N, 2I] with an even width, not {gated.ShapeString}.", nameof(gated));
        int n = gated.Dim(0), inner = gated.Dim(1) / 2;
        Check(h, nameof(h), t, n, inner);
        LaunchElements(ActivationsFile, Variant("gated_gelu_forward", t), (long)n * inner, Ptr(gated), Ptr(h), (long)n, inner);
    }

    /// <inheritdoc/>
    public override void Tanh(Tensor x, Tensor y)
    {
        var t = CheckFloat(x, nameof(x));
        Check(y, nameof(y), t, x.Shape.ToArray());
        LaunchElements(Elementwise, Variant("tanh_forward", t), x.Length, Ptr(x), Ptr(y), x.Length);
    }

    /// <inheritdoc/>
    public override void GeluBackward(Tensor x, Tensor dy, Tensor dx)
    {
        var t = CheckFloat(x, nameof(x));
        CheckSameShape(dy, nameof(dy), x, nameof(x));
        CheckSameShape(dx, nameof(dx), x, nameof(x));
        LaunchElements(ActivationsFile, Variant("gelu_backward", t), x.Length, Ptr(x), Ptr(dy), Ptr(dx), x.Length);
    }

    /// <inheritdoc/>
    public override void GatedGeluBackward(Tensor gated, Tensor dh, Tensor dGated)
    {
        var t = CheckFloat(gated, nameof(gated));
        if (gated.Rank != 2 || gated.Dim(1) % 2 != 0)
            throw new ArgumentException($"gated must be [N, 2I] with an even width, not {gated.ShapeString}.", nameof(gated));
        int n = gated.Dim(0), inner = gated.Dim(1) / 2;
        Check(dh, nameof(dh), t, n, inner);
        Check(dGated, nameof(dGated), t, n, 2 * inner);
        LaunchElements(ActivationsFile, Variant("gated_gelu_backward", t), (long)n * inner, Ptr(gated), Ptr(dh), Ptr(dGated), (long)n, inner);
    }

    /// <inheritdoc/>
    public override void TanhBackward(Tensor y, Tensor dy, Tensor dx)
    {
        var t = CheckFloat(y, nameof(y));
        CheckSameShape(dy, nameof(dy), y, nameof(y));
        CheckSameShape(dx, nameof(dx), y, nameof(y));
        LaunchElements(Elementwise, Variant("tanh_backward", t), y.Length, Ptr(y), Ptr(dy), Ptr(dx), y.Length);
    }

    // ---- LayerNorm ----

    /// <inheritdoc/>
    /// <remarks>One warp per row, eight rows per block of 256 threads.</remarks>
    public override void LayerNorm(Tensor x, Tensor? residual, Tensor gamma, Tensor beta, float eps,
        Tensor sum, Tensor y, Tensor mean, Tensor rstd)
    {
        var (t, n, d) = CheckLayerNorm(x, residual, gamma, beta, sum, y, mean, rstd);
        if (n == 0 || d == 0) return;
        Launch(Kernel(LayerNormFile, LayerNormVariant("layernorm_forward", t, d, x, residual, gamma, beta, sum, y)), CeilDiv(n, 8), 1, 256, 0,
            Ptr(x), Ptr(residual), Ptr(gamma), Ptr(beta), eps, Ptr(sum), Ptr(y), Ptr(mean), Ptr(rstd), n, d);
    }

    /// <summary>The LayerNorm forward's argument checks; returns x's type, rows and width.</summary>
    private (DType Type, int Rows, int Width) CheckLayerNorm(Tensor x, Tensor? residual, Tensor gamma, Tensor beta, Tensor sum, Tensor y,
        Tensor mean, Tensor rstd)
    {
        var t = CheckFloat(x, nameof(x));
        int n = x.Dim(0), d = (int)x.RowLength;
        if (residual is not null) Check(residual, nameof(residual), t, x.Shape.ToArray());
        Check(gamma, nameof(gamma), t, d);
        Check(beta, nameof(beta), t, d);
        Check(sum, nameof(sum), t, x.Shape.ToArray());
        Check(y, nameof(y), t, x.Shape.ToArray());
        Check(mean, nameof(mean), DType.Float32, n);
        Check(rstd, nameof(rstd), DType.Float32, n);
        return (t, n, d);
    }

    /// <inheritdoc/>
    /// <remarks>dγ and dβ first (deterministic two-level column sums, before dx is written, so dx may be dy), then dx
    /// with one warp per row.</remarks>
    public override void LayerNormBackward(Tensor dy, Tensor sum, Tensor mean, Tensor rstd, Tensor gamma,
        Tensor dx, Tensor dGamma, Tensor dBeta, bool accumulateDx = false)
    {
        var t = CheckFloat(dy, nameof(dy));
        if (dy.Rank < 1) throw new ArgumentException("dy must have at least one dimension.", nameof(dy));
        int n = dy.Dim(0), d = (int)dy.RowLength;
        CheckSameShape(sum, nameof(sum), dy, nameof(dy));
        CheckSameShape(dx, nameof(dx), dy, nameof(dy));
        Check(mean, nameof(mean), DType.Float32, n);
        Check(rstd, nameof(rstd), DType.Float32, n);
        Check(gamma, nameof(gamma), t, d);
        Check(dGamma, nameof(dGamma), DType.Float32, d);
        Check(dBeta, nameof(dBeta), DType.Float32, d);
        if (n == 0 || d == 0) return;
        ColumnSums(dy, sum, mean, rstd, dGamma, dBeta, n, d);
        Launch(Kernel(LayerNormFile, LayerNormVariant("layernorm_backward_dx", t, d, dy, sum, gamma, dx)), CeilDiv(n, 8), 1, 256, 0,
            Ptr(dy), Ptr(sum), Ptr(mean), Ptr(rstd), Ptr(gamma), Ptr(dx), n, d, accumulateDx ? 1 : 0);
    }

    /// <inheritdoc/>
    public override void SumRowsInto(Tensor dy, Tensor db)
    {
        CheckFloat(dy, nameof(dy));
        Check(db, nameof(db), DType.Float32);
        if (dy.Rank < 1) throw new ArgumentException("dy must have at least one dimension.", nameof(dy));
        int rows = dy.Dim(0), width = (int)dy.RowLength;
        if (db.Length != width)
            throw new ArgumentException($"db must hold {width} elements (one per column of dy {dy.ShapeString}), not {db.Length}.", nameof(db));
        if (rows == 0 || width == 0) return;
        ColumnSums(dy, null, null, null, null, db, rows, width);
    }

    /// <summary>
    /// outB[c] += Σ_r dy[r, c] and, with sum/mean/rstd, outG[c] += Σ_r dy[r, c]·x̂[r, c]: chunks of rows summed in row
    /// order into a scratch of partial sums, then the partials in chunk order. The chunk size depends only on the row
    /// count (not on the GPU), so the result is the same on every device and run.
    /// </summary>
    private void ColumnSums(Tensor dy, Tensor? sum, Tensor? mean, Tensor? rstd, Tensor? outG, Tensor outB, int rows, int width)
    {
        int v = Vector16(dy.DType);
        if (width % v == 0 && Aligned16(dy, sum))
        {
            // Vectorized: 128-row chunks (8 row lanes of 16 rows), so a BERT-base step's 32,768 tokens give 256 chunks
            // per column block and enough loads in flight; then a two-level finish in chunk order.
            int vchunk = Math.Max(64, (int)Math.Min(2048, CeilDiv(rows, 256)));
            int vchunks = (int)CeilDiv(rows, vchunk);
            using var pB = Scratch(DType.Float32, (long)vchunks * width);
            using var pG = sum is null ? null : Scratch(DType.Float32, (long)vchunks * width);
            string partial = dy.DType == DType.BFloat16 ? "column_sums_partial_bf16x8" : "column_sums_partial_v4";
            Launch(Kernel(ReduceFile, partial), CeilDiv(width, 32L * v), (uint)vchunks, 32, 8, 0,
                Ptr(dy), Ptr(sum), Ptr(mean), Ptr(rstd), Ptr(pG), Ptr(pB), rows, width, vchunk);
            Launch(Kernel(ReduceFile, "column_sums_finish_v"), CeilDiv(width, 32), 1, 32, 8, 0,
                Ptr(pB), Ptr(pG), vchunks, width, Ptr(outB), Ptr(outG));
            return;
        }
        int chunk = Math.Max(32, (int)CeilDiv(rows, 512));
        int chunks = (int)CeilDiv(rows, chunk);
        using var partialB = Scratch(DType.Float32, (long)chunks * width);
        using var partialG = sum is null ? null : Scratch(DType.Float32, (long)chunks * width);
        Launch(Kernel(ReduceFile, Variant("column_sums_partial", dy.DType)), CeilDiv(width, 256), (uint)chunks, 256, 0,
            Ptr(dy), Ptr(sum), Ptr(mean), Ptr(rstd), Ptr(partialG), Ptr(partialB), rows, width, chunk);
        var finish = Kernel(ReduceFile, "column_sums_finish");
        if (outG is not null) Launch(finish, CeilDiv(width, 256), 1, 256, 0, Ptr(partialG), chunks, width, Ptr(outG));
        Launch(finish, CeilDiv(width, 256), 1, 256, 0, Ptr(partialB), chunks, width, Ptr(outB));
    }

    /// <summary>Elements per 16-byte access: 8 bf16 or 4 float.</summary>
    private static int Vector16(DType t) => t == DType.BFloat16 ? 8 : 4;

    /// <summary>Whether every given tensor starts on a 16-byte boundary (vector loads need it).</summary>
    private bool Aligned16(params ReadOnlySpan<Tensor?> tensors)
    {
        foreach (var t in tensors)
            if (t is not null && Ptr(t) % 16 != 0) return false;
        return true;
    }

    /// <summary>
    /// The LayerNorm kernel for width d: the vectorized one (lanes own 16-byte groups kept in registers) when d is a
    /// multiple of 32 lanes × one vector, at most 1,024 wide, and the tensors are 16-byte aligned; else the scalar one.
    /// </summary>
    private string LayerNormVariant(string name, DType t, int d, params ReadOnlySpan<Tensor?> tensors) =>
        LayerNormVectorSuffix(t, d, tensors) is { } suffix ? name + suffix : Variant(name, t);

    /// <summary>"_bf16x8" or "_v4" when the vectorized LayerNorm kernels (and those built on them) apply; else null.</summary>
    private string? LayerNormVectorSuffix(DType t, int d, params ReadOnlySpan<Tensor?> tensors) =>
        d % (32 * Vector16(t)) == 0 && d <= 1024 && Aligned16(tensors) ? (t == DType.BFloat16 ? "_bf16x8" : "_v4") : null;

    // ---- losses ----

    /// <inheritdoc/>
    /// <remarks>One block per row; labels are checked on the host first (one small download).</remarks>
    public override void CrossEntropy(Tensor logits, Tensor labels, Tensor losses, Tensor? gradient = null, float gradientScale = 1)
    {
        Check(logits, nameof(logits), DType.Float32);
        if (logits.Rank != 2) throw new ArgumentException($"logits must be [K, V], not {logits.ShapeString}.", nameof(logits));
        int k = logits.Dim(0), v = logits.Dim(1);
        Check(labels, nameof(labels), DType.Int32, k);
        Check(losses, nameof(losses), DType.Float32, k);
        if (gradient is not null) Check(gradient, nameof(gradient), CheckFloat(gradient, nameof(gradient)), k, v);
        if (k == 0) return;
        var host = HostInts(labels);
        for (int r = 0; r < k; r++)
            if ((uint)host[r] >= (uint)v) throw new ArgumentOutOfRangeException(nameof(labels), $"Label {host[r]} at row {r} is outside 0..{v - 1}.");
        // Two passes with 16-byte loads where rows allow (v a multiple of 4, aligned rows), else the three-pass kernel.
        string name = v % 4 == 0 && Aligned16(logits, gradient) ? "cross_entropy_v4" : "cross_entropy";
        if (gradient?.DType == DType.BFloat16) name += "_bf16grad";
        Launch(Kernel(LossFile, name), (uint)k, 1, v >= 4096 ? 512u : 128u, 0,
            Ptr(logits), Ptr(labels), Ptr(losses), Ptr(gradient), gradientScale, k, v);
    }

    /// <inheritdoc/>
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
        if (gradient is not null)
        {
            CheckFloat(gradient, nameof(gradient));
            if (!gradient.Shape.SequenceEqual(predictions.Shape))
                throw new ArgumentException($"gradient must have the shape of predictions {predictions.ShapeString}, not {gradient.ShapeString}.", nameof(gradient));
        }
        LaunchElements(Elementwise, gradient?.DType == DType.BFloat16 ? "squared_error_bf16grad" : "squared_error", b, Ptr(predictions), Ptr(targets), Ptr(losses), Ptr(gradient), 2 * gradientScale, (long)b);
    }

    // ---- training ----

    /// <inheritdoc/>
    /// <remarks>The CPU's generator bit for bit (<see cref="DropoutRandom"/>): key, threshold and keep scale are computed
    /// here exactly as the CPU computes them, and the kernel evaluates the same 64-bit hash per element.</remarks>
    public override void Dropout(Tensor x, Tensor y, Tensor? mask, float p, ulong seed, long offset)
    {
        var t = CheckFloat(x, nameof(x));
        CheckSameShape(y, nameof(y), x, nameof(x));
        if (mask is not null)
        {
            Check(mask, nameof(mask), DType.Float32);
            if (!mask.Shape.SequenceEqual(x.Shape))
                throw new ArgumentException($"mask must have the shape of x {x.ShapeString}, not {mask.ShapeString}.", nameof(mask));
        }
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), $"Dropout probability {p} is not in [0, 1).");
        float keepScale = 1f / (1f - p);
        LaunchElements(DropoutFile, Variant("dropout", t), x.Length, Ptr(x), Ptr(y), Ptr(mask), x.Length,
            DropoutRandom.Key(seed), DropoutRandom.Threshold(p), keepScale, offset);
    }

    /// <inheritdoc/>
    public override void DropoutBackward(Tensor dy, Tensor dx, float p, ulong seed, long offset)
    {
        var t = CheckFloat(dy, nameof(dy));
        CheckSameShape(dx, nameof(dx), dy, nameof(dy));
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), $"Dropout probability {p} is not in [0, 1).");
        float keepScale = 1f / (1f - p);
        LaunchElements(DropoutFile, Variant("dropout_backward", t), dy.Length, Ptr(dy), Ptr(dx), dy.Length,
            DropoutRandom.Key(seed), DropoutRandom.Threshold(p), keepScale, offset);
    }

    /// <inheritdoc/>
    public override void Multiply(Tensor x, Tensor y, Tensor z)
    {
        var t = CheckFloat(x, nameof(x));
        CheckSameLength(y, nameof(y), x);
        CheckSameLength(z, nameof(z), x);
        LaunchElements(Elementwise, Variant("multiply", t), x.Length, Ptr(x), Ptr(y), Ptr(z), x.Length);
    }

    /// <inheritdoc/>
    public override void AddScaled(Tensor x, float alpha, Tensor y)
    {
        var t = CheckFloat(x, nameof(x));
        CheckSameLength(y, nameof(y), x);
        LaunchElements(Elementwise, Variant("add_scaled", t), x.Length, Ptr(x), alpha, Ptr(y), x.Length);
    }

    /// <inheritdoc/>
    public override void Scale(Tensor x, float factor)
    {
        Check(x, nameof(x), DType.Float32);
        LaunchElements(Elementwise, "scale", x.Length, Ptr(x), factor, x.Length);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Blocks of 8192 elements summed in double (each x² exact), then the block sums in a fixed tree: deterministic, and
    /// within about (8192/256 + log₂ blocks)·2⁻⁵³ relative of the exact sum. Waits for the GPU (the result is a host value).
    /// </remarks>
    public override double SumOfSquares(Tensor x)
    {
        Check(x, nameof(x), DType.Float32);
        if (x.Length == 0) return 0;
        using var total = Scratch(DType.Float32, 2);   // one double
        QueueSumOfSquares(x, Ptr(total));
        double result = 0;
        ReadBack(Ptr(total), System.Runtime.InteropServices.MemoryMarshal.AsBytes(new Span<double>(ref result)));
        return result;
    }

    /// <summary>Queues Σx² (x non-empty, Float32) into the double at device address <paramref name="total"/>.</summary>
    private void QueueSumOfSquares(Tensor x, ulong total)
    {
        uint blocks = CeilDiv(x.Length, 8192);
        using var partial = Scratch(DType.Float32, 2L * blocks);   // one double per block
        Launch(Kernel(ReduceFile, "sum_of_squares_partial"), blocks, 1, 256, 0, Ptr(x), x.Length, Ptr(partial));
        Launch(Kernel(ReduceFile, "sum_of_squares_finish"), 1, 1, 256, 0, Ptr(partial), (int)blocks, total);
    }

    /// <inheritdoc/>
    /// <remarks>The CPU's unfused fp32 operations with the same constants (bias corrections in double), so parameters and
    /// moments equal the CPU's bit for bit.</remarks>
    public override void AdamW(Tensor parameters, Tensor gradients, Tensor m, Tensor v, float lr, float beta1, float beta2,
        float eps, float decayFactor, int step) => AdamWStep(parameters, gradients, m, v, lr, beta1, beta2, eps, decayFactor, step, null);

    /// <inheritdoc/>
    /// <remarks>One pass: the bf16 copy is written by the same kernel (adamw_bf16copy) from the updated fp32 value.</remarks>
    public override void AdamW(Tensor parameters, Tensor gradients, Tensor m, Tensor v, float lr, float beta1, float beta2,
        float eps, float decayFactor, int step, Tensor computeCopy)
    {
        if (computeCopy.DType != DType.BFloat16)
        {
            base.AdamW(parameters, gradients, m, v, lr, beta1, beta2, eps, decayFactor, step, computeCopy);
            return;
        }
        Check(computeCopy, nameof(computeCopy), DType.BFloat16);
        if (computeCopy.Length != parameters.Length)
            throw new ArgumentException($"computeCopy {computeCopy.ShapeString} must have as many elements as parameters {parameters.ShapeString}.", nameof(computeCopy));
        AdamWStep(parameters, gradients, m, v, lr, beta1, beta2, eps, decayFactor, step, computeCopy);
    }

    private void AdamWStep(Tensor parameters, Tensor gradients, Tensor m, Tensor v, float lr, float beta1, float beta2,
        float eps, float decayFactor, int step, Tensor? copy)
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
        // Four elements per thread with 16-byte accesses when every block is aligned (the model's are: pool allocations).
        bool v4 = Aligned16(parameters, gradients, m, v) && Ptr(copy) % 8 == 0;
        string name = (copy is null ? "adamw" : "adamw_bf16copy") + (v4 ? "_v4" : "");
        LaunchElements(OptimizerFile, name, v4 ? Math.Max(1, parameters.Length / 4) : parameters.Length, Ptr(parameters), Ptr(gradients),
            Ptr(m), Ptr(v), parameters.Length, 1f - decayFactor, beta1, (float)(1 - (double)beta1), beta2, (float)(1 - (double)beta2),
            (float)(lr / bc1), (float)Math.Sqrt(bc2), eps, Ptr(copy));
    }

    // ---- checks ----

    /// <summary>Kernel name for a tensor type: the fp32 kernel keeps its name, the bf16 one has the suffix _bf16.</summary>
    private static string Variant(string name, DType dtype) => dtype == DType.BFloat16 ? name + "_bf16" : name;

    /// <summary>Checks that a tensor is of this backend and Float32 or BFloat16; returns its type.</summary>
    private DType CheckFloat(Tensor t, string name)
    {
        Check(t, name, t.DType);
        if (!t.DType.IsFloat()) throw new ArgumentException($"{name} must be Float32 or BFloat16, not {t.DType}.", name);
        return t.DType;
    }

    private void CheckSameShape(Tensor t, string name, Tensor like, string likeName)
    {
        Check(t, name, like.DType);
        if (!t.Shape.SequenceEqual(like.Shape))
            throw new ArgumentException($"{name} must have the shape of {likeName} {like.ShapeString}, not {t.ShapeString}.", name);
    }

    private void CheckSameLength(Tensor t, string name, Tensor like)
    {
        Check(t, name, like.DType);
        if (t.Length != like.Length)
            throw new ArgumentException($"{name} {t.ShapeString} must have as many elements as {like.ShapeString}.", name);
    }
}
