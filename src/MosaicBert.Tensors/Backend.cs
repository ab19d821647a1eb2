namespace MosaicBert.Tensors;

/// <summary>
/// The operations the model needs, on tensors in the backend's memory. The model code is written once against this
/// class; CPU and CUDA differ only here. Shapes are documented per operation; N counts the real (unpadded) tokens of
/// a batch, d the hidden size.
/// </summary>
public abstract class Backend : IDisposable
{
    /// <summary>Short name for messages ("cpu", "cuda:0").</summary>
    public abstract string Name { get; }

    // ---- memory ----

    /// <summary>A zero-filled tensor.</summary>
    public abstract Tensor Allocate(DType dtype, params int[] shape);
    /// <summary>A zero-filled float tensor.</summary>
    public Tensor Allocate(params int[] shape) => Allocate(DType.Float32, shape);
    /// <summary>Releases the storage of a tensor that owns it (called by <see cref="Tensor.Dispose"/>).</summary>
    protected internal abstract void Free(Tensor tensor);
    /// <summary>Host → tensor.</summary>
    public abstract void Upload(ReadOnlySpan<float> source, Tensor destination);
    /// <summary>Host → tensor.</summary>
    public abstract void Upload(ReadOnlySpan<int> source, Tensor destination);
    /// <summary>Tensor → host.</summary>
    public abstract void Download(Tensor source, Span<float> destination);
    /// <summary>Tensor → host.</summary>
    public abstract void Download(Tensor source, Span<int> destination);
    /// <summary>Sets every element to <paramref name="value"/>.</summary>
    public abstract void Fill(Tensor tensor, float value);
    /// <summary>Element-wise copy between tensors of equal length.</summary>
    public abstract void Copy(Tensor source, Tensor destination);
    /// <summary>
    /// Element-wise type conversion between tensors of equal length (Float32 ↔ BFloat16; equal types copy).
    /// Float32 → BFloat16 rounds to nearest even (NaN stays NaN); BFloat16 → Float32 is exact.
    /// </summary>
    public abstract void Convert(Tensor source, Tensor destination);

    // ---- dense algebra ----

    /// <summary>
    /// <c>C = alpha·op(A)·op(B) + beta·C</c> on 2-D tensors; op transposes when asked. With beta = 0, C is
    /// overwritten.
    /// </summary>
    public abstract void MatMul(Tensor a, bool transposeA, Tensor b, bool transposeB, Tensor c, float alpha = 1, float beta = 0);

    /// <summary><c>Y[n, out] = X[n, in]·W[out, in]ᵀ + b[out]</c> (PyTorch's Linear; no bias when null).</summary>
    public abstract void Linear(Tensor x, Tensor weight, Tensor? bias, Tensor y);

    // ---- token-wise layers ----

    /// <summary>
    /// <c>out[t] = word[ids[t]] + type[types[t]] (+ position[positions[t]])</c> for each token t: the embedding
    /// sum before its LayerNorm. <paramref name="positionEmbeddings"/> is null for MosaicBERT.
    /// </summary>
    public abstract void EmbeddingSum(Tensor ids, Tensor typeIds, Tensor? positions, Tensor wordEmbeddings,
        Tensor typeEmbeddings, Tensor? positionEmbeddings, Tensor output);

    /// <summary>
    /// <c>sum = x + residual</c> (kept for the backward pass) and <c>y = (sum − μ)·rstd·γ + β</c> per row, with
    /// μ and rstd = 1/√(var + eps) (biased variance) stored per row. <paramref name="residual"/> may be null
    /// (then sum = x; <paramref name="sum"/> may be x itself).
    /// </summary>
    public abstract void LayerNorm(Tensor x, Tensor? residual, Tensor gamma, Tensor beta, float eps,
        Tensor sum, Tensor y, Tensor mean, Tensor rstd);

    /// <summary>
    /// The encoder's input: <c>sum = EmbeddingSum(...)</c>, <c>y = Dropout(LayerNorm(sum))</c> (p = 0: no dropout), with
    /// the masks and arithmetic of <see cref="EmbeddingSum"/>, <see cref="LayerNorm"/> and <see cref="Dropout"/> over
    /// y's elements. Backends may fuse the three into one pass; the results are the same.
    /// </summary>
    public virtual void EmbeddingLayerNorm(Tensor ids, Tensor typeIds, Tensor? positions, Tensor wordEmbeddings, Tensor typeEmbeddings,
        Tensor? positionEmbeddings, Tensor gamma, Tensor beta, float eps, Tensor sum, Tensor y, Tensor mean, Tensor rstd,
        float p, ulong seed, long offset)
    {
        EmbeddingSum(ids, typeIds, positions, wordEmbeddings, typeEmbeddings, positionEmbeddings, sum);
        LayerNorm(sum, null, gamma, beta, eps, sum, y, mean, rstd);
        if (p > 0) Dropout(y, y, null, p, seed, offset);
    }

    /// <summary>
    /// <c>LayerNorm(Dropout(x) + residual)</c> — the attention output path of a BERT layer — with the mask of
    /// <see cref="Dropout"/> (p, seed, offset over x's elements); x is left as it is (sum = dropout(x) + residual).
    /// Backends may fuse the two into one pass; the results are the same.
    /// </summary>
    public virtual void DropoutResidualLayerNorm(Tensor x, float p, ulong seed, long offset, Tensor residual, Tensor gamma, Tensor beta,
        float eps, Tensor sum, Tensor y, Tensor mean, Tensor rstd)
    {
        if (p <= 0)
        {
            LayerNorm(x, residual, gamma, beta, eps, sum, y, mean, rstd);
            return;
        }
        Dropout(x, sum, null, p, seed, offset);
        LayerNorm(sum, residual, gamma, beta, eps, sum, y, mean, rstd);   // sum may alias x: sum ← sum + residual
    }

    /// <summary><c>y = GELU(x) = x·Φ(x)</c>, the exact (erf) form.</summary>
    public abstract void Gelu(Tensor x, Tensor y);

    /// <summary>
    /// Gated GELU of MosaicBERT's MLP: for g = [u | v] (each half I wide), <c>h = GELU(u) ⊙ v</c>.
    /// g is [N, 2I], h is [N, I].
    /// </summary>
    public abstract void GatedGelu(Tensor gated, Tensor h);

    /// <summary>
    /// <see cref="GatedGelu"/> followed by <see cref="Dropout"/> of h (p = 0: none), as MosaicBERT's MLP does. Backends
    /// may fuse the two (one pass over the [N, 2I] input); the mask is the same either way. <paramref name="keepBits"/>
    /// (optional, Int32, at least ⌈N·I/32⌉ words) is scratch in which a backend may record the mask, one bit per
    /// element, for <see cref="GatedGeluDropoutBackward"/> given the same tensor unchanged; backends that regenerate
    /// the mask instead leave it alone.
    /// </summary>
    public virtual void GatedGeluDropout(Tensor gated, Tensor h, float p, ulong seed, long offset, Tensor? keepBits = null)
    {
        GatedGelu(gated, h);
        if (p > 0) Dropout(h, h, null, p, seed, offset);
    }

    /// <summary>
    /// Backward of <see cref="GatedGeluDropout"/>: <c>dh ← dh·mask</c>, then <see cref="GatedGeluBackward"/>.
    /// <paramref name="dh"/> may be overwritten (the unfused version masks it in place). <paramref name="keepBits"/>: the
    /// tensor given to the forward pass, if any.
    /// </summary>
    public virtual void GatedGeluDropoutBackward(Tensor gated, Tensor dh, Tensor dGated, float p, ulong seed, long offset, Tensor? keepBits = null)
    {
        if (p > 0) DropoutBackward(dh, dh, p, seed, offset);
        GatedGeluBackward(gated, dh, dGated);
    }

    /// <summary><c>y = tanh(x)</c>.</summary>
    public abstract void Tanh(Tensor x, Tensor y);

    // ---- attention ----

    /// <summary>
    /// Bidirectional multi-head attention over unpadded variable-length sequences, with an ALiBi bias, computed with
    /// an online softmax (no score matrix is stored).
    /// </summary>
    /// <param name="qkv">[N, 3d]: Q, K, V blocks; head h owns channels h·Dh..h·Dh+Dh−1 of each block.</param>
    /// <param name="cuSeqlens">[B+1] int: sequence b is tokens cuSeqlens[b]..cuSeqlens[b+1]−1.</param>
    /// <param name="positions">[N] int: each token's column in the padded batch; ALiBi distances use these.</param>
    /// <param name="slopes">[H]: score(i, j) += −slope_h·|pos_i − pos_j| (zeros for classic BERT).</param>
    /// <param name="scale">Multiplies q·k before the bias (1/√Dh).</param>
    /// <param name="context">[N, d] output: softmax(scores)·V, heads concatenated.</param>
    /// <param name="logSumExp">[N, H] output: log Σ_j exp(score) per query and head, for the backward pass.</param>
    public abstract void Attention(Tensor qkv, Tensor cuSeqlens, Tensor positions, Tensor slopes, float scale,
        Tensor context, Tensor logSumExp);

    // ---- rows ----

    /// <summary><c>dst[k] = src[indices[k]]</c> (rows).</summary>
    public abstract void GatherRows(Tensor source, Tensor indices, Tensor destination);
    /// <summary><c>dst[indices[k]] = src[k]</c> (rows); other rows of dst are left as they are.</summary>
    public abstract void ScatterRows(Tensor source, Tensor indices, Tensor destination);

    // ---- losses ----

    /// <summary>
    /// Softmax cross-entropy per row: <c>loss[k] = logsumexp(logits[k]) − logits[k, labels[k]]</c>; when
    /// <paramref name="gradient"/> is given it receives <c>(softmax(logits[k]) − onehot)·gradientScale</c>.
    /// </summary>
    public abstract void CrossEntropy(Tensor logits, Tensor labels, Tensor losses, Tensor? gradient = null, float gradientScale = 1);

    // ---- backward passes and training ----
    // Conventions: "accumulate" adds into the destination (gradients of shared or tied inputs); otherwise the
    // destination is overwritten. Parameter gradients (dW, dγ, dβ, db) always accumulate, so a step starts by zeroing
    // the gradient block once.

    /// <summary><c>db[m] += Σ_rows dy[r, m]</c> (bias gradient of a Linear).</summary>
    public abstract void SumRowsInto(Tensor dy, Tensor db);

    /// <summary>
    /// Backward of <see cref="LayerNorm"/>: with x̂ = (sum − μ)·rstd and g = dy·γ (per row),
    /// <c>dγ += Σ_rows dy·x̂</c>, <c>dβ += Σ_rows dy</c>, <c>dx = rstd·(g − mean(g) − x̂·mean(g·x̂))</c>
    /// (written, or added when <paramref name="accumulateDx"/>).
    /// </summary>
    public abstract void LayerNormBackward(Tensor dy, Tensor sum, Tensor mean, Tensor rstd, Tensor gamma,
        Tensor dx, Tensor dGamma, Tensor dBeta, bool accumulateDx = false);

    /// <summary>Backward of <see cref="Gelu"/>: <c>dx = dy·(Φ(x) + x·φ(x))</c>.</summary>
    public abstract void GeluBackward(Tensor x, Tensor dy, Tensor dx);

    /// <summary>
    /// Backward of <see cref="GatedGelu"/> for g = [u | v]: <c>du = dh·v·GELU′(u)</c>, <c>dv = dh·GELU(u)</c>,
    /// written to <paramref name="dGated"/> [N, 2I].
    /// </summary>
    public abstract void GatedGeluBackward(Tensor gated, Tensor dh, Tensor dGated);

    /// <summary>Backward of <see cref="Tanh"/> from its output: <c>dx = dy·(1 − y²)</c>.</summary>
    public abstract void TanhBackward(Tensor y, Tensor dy, Tensor dx);

    /// <summary>
    /// Backward of <see cref="Attention"/> (FlashAttention-2's recurrence, recomputing probabilities from the stored
    /// log-sum-exp): with P_ij = exp(s_ij − lse_i), D_i = dO_i·O_i, dS_ij = P_ij·(dO_i·V_j − D_i):
    /// <c>dV_j = Σ_i P_ij·dO_i</c>, <c>dQ_i = scale·Σ_j dS_ij·K_j</c>, <c>dK_j = scale·Σ_i dS_ij·Q_i</c>,
    /// written into the Q, K, V blocks of <paramref name="dQkv"/> [N, 3d].
    /// </summary>
    public abstract void AttentionBackward(Tensor qkv, Tensor cuSeqlens, Tensor positions, Tensor slopes, float scale,
        Tensor context, Tensor logSumExp, Tensor dContext, Tensor dQkv);

    /// <summary>
    /// Backward of <see cref="EmbeddingSum"/>: adds each row of <paramref name="dOutput"/> into the rows of the
    /// embedding gradients its token used (<c>dWord[ids[t]] += dOut[t]</c>, same for types and positions).
    /// </summary>
    public abstract void EmbeddingBackward(Tensor ids, Tensor typeIds, Tensor? positions, Tensor dOutput,
        Tensor dWordEmbeddings, Tensor dTypeEmbeddings, Tensor? dPositionEmbeddings);

    /// <summary><c>dst[indices[k]] += src[k]</c> (rows): backward of <see cref="GatherRows"/>.</summary>
    public abstract void ScatterAddRows(Tensor source, Tensor indices, Tensor destination);

    /// <summary>
    /// Mean-squared error per row of a [B, 1] prediction: <c>loss[b] = (pred[b] − target[b])²</c>; when
    /// <paramref name="gradient"/> is given it receives <c>2·(pred − target)·gradientScale</c>.
    /// </summary>
    public abstract void SquaredError(Tensor predictions, Tensor targets, Tensor losses, Tensor? gradient = null, float gradientScale = 1);

    /// <summary>
    /// Inverted dropout with a counter-based generator: element i is kept when u(seed, offset + i) ≥ p, where u is a
    /// uniform in [0, 1) computed from a hash of (seed, index) — the same mask on every backend and thread count.
    /// Kept elements are scaled by 1/(1 − p); <paramref name="mask"/> receives that factor or 0 (for the backward
    /// pass, which is <c>dx = dy·mask</c> via <see cref="Multiply"/>), or is null when the backward pass regenerates
    /// the mask with <see cref="DropoutBackward"/>. x and y may be the same tensor.
    /// </summary>
    public abstract void Dropout(Tensor x, Tensor y, Tensor? mask, float p, ulong seed, long offset);

    /// <summary>
    /// Backward of <see cref="Dropout"/> without a stored mask: <c>dx = dy·mask</c> with the mask regenerated from
    /// (seed, offset) — the same values, bit for bit, as the forward pass drew. dx may be dy.
    /// </summary>
    public abstract void DropoutBackward(Tensor dy, Tensor dx, float p, ulong seed, long offset);

    /// <summary><c>z = x ⊙ y</c> element-wise (z may alias x or y).</summary>
    public abstract void Multiply(Tensor x, Tensor y, Tensor z);

    /// <summary><c>y += alpha·x</c> element-wise.</summary>
    public abstract void AddScaled(Tensor x, float alpha, Tensor y);

    /// <summary>Σ x² over all elements, accumulated in double (for gradient-norm clipping).</summary>
    public abstract double SumOfSquares(Tensor x);

    /// <summary><c>x ← x·factor</c>.</summary>
    public abstract void Scale(Tensor x, float factor);

    /// <summary>
    /// Gradient-norm clipping: ‖x‖ = √(Σ x²) (in double); when ‖x‖ &gt; <paramref name="maxNorm"/>, x ← x·(float)(maxNorm/‖x‖).
    /// Returns ‖x‖ before clipping. A GPU backend decides on the device, so nothing waits until the norm is read; the
    /// arithmetic is that of <see cref="SumOfSquares"/> then <see cref="Scale"/>, bit for bit.
    /// </summary>
    public virtual DeferredScalar ClipByGlobalNorm(Tensor x, double maxNorm)
    {
        double norm = Math.Sqrt(SumOfSquares(x));
        if (norm > maxNorm && norm > 0) Scale(x, (float)(maxNorm / norm));
        return new DeferredScalar(norm);
    }

    /// <summary>
    /// The mean of a Float32 tensor's elements, summed in double. A GPU backend reduces on the device and the value
    /// stays readable after later work overwrites <paramref name="x"/>; the default reads x now.
    /// </summary>
    public virtual DeferredScalar Mean(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        var host = new float[x.Length];
        Download(x, host);
        double sum = 0;
        foreach (float v in host) sum += v;
        return new DeferredScalar(host.Length == 0 ? double.NaN : sum / host.Length);
    }

    /// <summary>
    /// One decoupled AdamW step over whole blocks (Composer's DecoupledAdamW): per element,
    /// θ ← θ·(1 − <paramref name="decayFactor"/>); m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²;
    /// θ ← θ − lr·(m / (1 − β1ᵗ)) / (√(v / (1 − β2ᵗ)) + ε), with t = <paramref name="step"/> (from 1).
    /// The caller passes decayFactor = (lr_t/lr_0)·weight_decay: the decay is not multiplied by lr itself.
    /// </summary>
    public abstract void AdamW(Tensor parameters, Tensor gradients, Tensor m, Tensor v, float lr, float beta1, float beta2,
        float eps, float decayFactor, int step);

    /// <summary>
    /// <see cref="AdamW(Tensor, Tensor, Tensor, Tensor, float, float, float, float, float, int)"/>, then
    /// <c>computeCopy = Convert(parameters)</c>: the low-precision copy of the fp32 master weights that mixed-precision
    /// compute reads. Backends may fuse the two (one pass over the block).
    /// </summary>
    public virtual void AdamW(Tensor parameters, Tensor gradients, Tensor m, Tensor v, float lr, float beta1, float beta2,
        float eps, float decayFactor, int step, Tensor computeCopy)
    {
        AdamW(parameters, gradients, m, v, lr, beta1, beta2, eps, decayFactor, step);
        Convert(parameters, computeCopy);
    }

    /// <summary>Frees backend resources (not the tensors, which their owners dispose).</summary>
    public virtual void Dispose() => GC.SuppressFinalize(this);

    /// <summary>Throws when a tensor is not of this backend or has the wrong type or shape.</summary>
    protected void Check(Tensor t, string name, DType dtype, params int[] shape)
    {
        if (!ReferenceEquals(t.Backend, this))
            throw new ArgumentException($"{name} lives on {t.Backend.Name}, not on {Name}.", name);
        if (t.DType != dtype)
            throw new ArgumentException($"{name} must be {dtype}, not {t.DType}.", name);
        if (shape.Length > 0 && !t.Shape.SequenceEqual(shape))
            throw new ArgumentException($"{name} must have shape [{string.Join(", ", shape)}], not {t.ShapeString}.", name);
    }
}
