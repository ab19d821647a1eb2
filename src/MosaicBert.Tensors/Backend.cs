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

    /// <summary><c>y = GELU(x) = x·Φ(x)</c>, the exact (erf) form.</summary>
    public abstract void Gelu(Tensor x, Tensor y);

    /// <summary>
    /// Gated GELU of MosaicBERT's MLP: for g = [u | v] (each half I wide), <c>h = GELU(u) ⊙ v</c>.
    /// g is [N, 2I], h is [N, I].
    /// </summary>
    public abstract void GatedGelu(Tensor gated, Tensor h);

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
