namespace MosaicBert.Tensors;

/// <summary>
/// A single-precision row-major GEMM implementation: <c>C[m×n] = alpha · op(A) · op(B) + beta · C</c> with the
/// argument conventions of <see cref="Gemm"/> (leading dimensions in elements, BLAS semantics for beta == 0).
/// </summary>
public interface IGemmProvider
{
    /// <summary>Short name for logs, e.g. "managed (avx512-8x48)" or "openblas".</summary>
    string Name { get; }

    /// <summary>C = alpha · op(A) · op(B) + beta · C on spans; lengths are validated.</summary>
    void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc);

    /// <summary>C = alpha · op(A) · op(B) + beta · C on pinned or native memory; dimensions are validated.</summary>
    unsafe void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc);
}

/// <summary>The managed, blocked GEMM (<see cref="Gemm"/>) as a provider with a fixed degree of parallelism.</summary>
public sealed class ManagedGemm : IGemmProvider
{
    /// <summary>A provider using all cores.</summary>
    public static ManagedGemm Shared { get; } = new();

    /// <param name="maxDegreeOfParallelism">-1 (default): all cores; 1: the calling thread only.</param>
    public ManagedGemm(int maxDegreeOfParallelism = -1)
    {
        GemmArguments.Threads(maxDegreeOfParallelism);
        MaxDegreeOfParallelism = maxDegreeOfParallelism;
    }

    /// <summary>-1: all cores; otherwise the most threads one call uses (the caller's included).</summary>
    public int MaxDegreeOfParallelism { get; }

    /// <inheritdoc />
    public string Name => $"managed ({Gemm.KernelName})";

    /// <inheritdoc />
    public void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc) =>
        Gemm.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, MaxDegreeOfParallelism);

    /// <inheritdoc />
    public unsafe void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc) =>
        Gemm.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, MaxDegreeOfParallelism);
}
