namespace MosaicBert.Tensors;

/// <summary>
/// Managed single-precision GEMM on row-major matrices: <c>C[m×n] = alpha · op(A) · op(B) + beta · C</c>.
/// </summary>
/// <remarks>
/// <para>op(A) is m×k: A is stored m×k (row stride <c>lda</c> ≥ k) when <c>transA</c> is false and k×m (lda ≥ m) when
/// it is true; op(B) is k×n: B is stored k×n (ldb ≥ n) or, transposed, n×k (ldb ≥ k); C is m×n with ldc ≥ n.
/// In a transformer: y = x·Wᵀ is (false, true); dX = dY·W is (false, false); dW = dYᵀ·X is (true, false).</para>
/// <para>BLAS conventions: beta == 0 overwrites C without reading it (NaN/Inf in C are ignored); alpha == 0 or k == 0
/// only scales C by beta and does not read A or B; m == 0 or n == 0 is a no-op. C must not overlap A or B.</para>
/// <para>Threads: work is cut into tiles of C run by the caller and thread-pool threads, up to
/// <c>maxDegreeOfParallelism</c> (-1: <see cref="Environment.ProcessorCount"/>); small products run on the calling
/// thread. Results are bitwise identical for every degree of parallelism.</para>
/// </remarks>
public static class Gemm
{
    /// <summary>Computes <c>C = alpha · op(A) · op(B) + beta · C</c> on spans (see <see cref="Gemm"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A dimension is negative, a leading dimension is too small, or
    /// <paramref name="maxDegreeOfParallelism"/> is 0 or below -1.</exception>
    /// <exception cref="ArgumentException">A span is shorter than its matrix requires.</exception>
    public static unsafe void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc,
        int maxDegreeOfParallelism = -1)
    {
        GemmArguments.Validate(transA, transB, m, n, k, lda, ldb, ldc);
        GemmArguments.ValidateLengths(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc);
        int threads = GemmArguments.Threads(maxDegreeOfParallelism);
        fixed (float* pa = a, pb = b, pc = c)
            Core(GemmKernel.Best, transA, transB, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc, threads);
    }

    /// <summary>
    /// Computes <c>C = alpha · op(A) · op(B) + beta · C</c> on memory the caller keeps pinned or native for the
    /// duration of the call. Lengths cannot be checked: A must hold (rows−1)·lda + cols floats of its stored shape,
    /// likewise B and C.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">As for the span overload.</exception>
    /// <exception cref="ArgumentNullException">A pointer is null while its matrix is not empty.</exception>
    public static unsafe void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, int maxDegreeOfParallelism = -1)
    {
        GemmArguments.Validate(transA, transB, m, n, k, lda, ldb, ldc);
        GemmArguments.ValidatePointers(m, n, k, a, b, c);
        Core(GemmKernel.Best, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
            GemmArguments.Threads(maxDegreeOfParallelism));
    }

    /// <summary>The micro-kernel in use, e.g. "avx512-8x48" (for logs and benchmarks).</summary>
    public static string KernelName => GemmKernel.Best.Name;

    /// <summary>Span overload with an explicit kernel/blocking (benchmarks' blocking sweeps; validated).</summary>
    internal static unsafe void Sgemm(GemmKernel kernel, bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc, int threads)
    {
        GemmArguments.Validate(transA, transB, m, n, k, lda, ldb, ldc);
        GemmArguments.ValidateLengths(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc);
        fixed (float* pa = a, pb = b, pc = c)
            Core(kernel, transA, transB, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc, threads);
    }

    /// <summary>Validated entry point shared by the public overloads and the tests (which pick other kernels).</summary>
    internal static unsafe void Core(GemmKernel kernel, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, int threads,
        long minFlopsPerThread = GemmDriver.MinFlopsPerThread)
    {
        if (m == 0 || n == 0) return;
        if (k == 0 || alpha == 0f)
        {
            GemmDriver.ScaleC(m, n, beta, c, ldc);
            return;
        }
        var problem = new GemmProblem
        {
            TransA = transA, TransB = transB, M = m, N = n, K = k, Alpha = alpha, Beta = beta,
            A = a, B = b, C = c, Lda = lda, Ldb = ldb, Ldc = ldc,
        };
        GemmDriver.Run(problem, kernel, threads, minFlopsPerThread);
    }
}

/// <summary>Argument checks shared by every provider (the native path relies on them: cblas would only print).</summary>
internal static class GemmArguments
{
    public static void Validate(bool transA, bool transB, int m, int n, int k, int lda, int ldb, int ldc)
    {
        if (m < 0) throw new ArgumentOutOfRangeException(nameof(m), m, "m (rows of op(A) and of C) must not be negative.");
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n), n, "n (columns of op(B) and of C) must not be negative.");
        if (k < 0) throw new ArgumentOutOfRangeException(nameof(k), k, "k (columns of op(A), rows of op(B)) must not be negative.");
        int aCols = transA ? m : k, bCols = transB ? k : n;
        if (lda < Math.Max(1, aCols))
            throw new ArgumentOutOfRangeException(nameof(lda), lda,
                $"lda must be at least max(1, {(transA ? "m" : "k")}) = {Math.Max(1, aCols)}: A is stored row-major as {(transA ? "k×m (transA)" : "m×k")} = {(transA ? k : m)}×{aCols}.");
        if (ldb < Math.Max(1, bCols))
            throw new ArgumentOutOfRangeException(nameof(ldb), ldb,
                $"ldb must be at least max(1, {(transB ? "k" : "n")}) = {Math.Max(1, bCols)}: B is stored row-major as {(transB ? "n×k (transB)" : "k×n")} = {(transB ? n : k)}×{bCols}.");
        if (ldc < Math.Max(1, n))
            throw new ArgumentOutOfRangeException(nameof(ldc), ldc, $"ldc must be at least max(1, n) = {Math.Max(1, n)}: C is stored row-major as m×n = {m}×{n}.");
    }

    /// <summary>Elements a row-major rows×cols matrix with row stride ld spans: (rows−1)·ld + cols, 0 when empty.</summary>
    public static long Required(int rows, int cols, int ld) => rows == 0 || cols == 0 ? 0 : (long)(rows - 1) * ld + cols;

    public static void ValidateLengths(bool transA, bool transB, int m, int n, int k, int aLength, int lda, int bLength, int ldb, int cLength, int ldc)
    {
        long needA = transA ? Required(k, m, lda) : Required(m, k, lda);
        if (aLength < needA)
            throw new ArgumentException($"a has {aLength} elements but A ({(transA ? $"{k}×{m}, transA" : $"{m}×{k}")}, lda = {lda}) needs {needA}.", "a");
        long needB = transB ? Required(n, k, ldb) : Required(k, n, ldb);
        if (bLength < needB)
            throw new ArgumentException($"b has {bLength} elements but B ({(transB ? $"{n}×{k}, transB" : $"{k}×{n}")}, ldb = {ldb}) needs {needB}.", "b");
        long needC = Required(m, n, ldc);
        if (cLength < needC)
            throw new ArgumentException($"c has {cLength} elements but C ({m}×{n}, ldc = {ldc}) needs {needC}.", "c");
    }

    public static unsafe void ValidatePointers(int m, int n, int k, float* a, float* b, float* c)
    {
        if (a == null && m > 0 && k > 0) throw new ArgumentNullException(nameof(a), $"a is null but A has {m}·{k} elements.");
        if (b == null && k > 0 && n > 0) throw new ArgumentNullException(nameof(b), $"b is null but B has {k}·{n} elements.");
        if (c == null && m > 0 && n > 0) throw new ArgumentNullException(nameof(c), $"c is null but C has {m}·{n} elements.");
    }

    /// <summary>-1 → all cores; otherwise at least 1.</summary>
    public static int Threads(int maxDegreeOfParallelism) => maxDegreeOfParallelism switch
    {
        -1 => Environment.ProcessorCount,
        >= 1 => maxDegreeOfParallelism,
        _ => throw new ArgumentOutOfRangeException(nameof(maxDegreeOfParallelism), maxDegreeOfParallelism,
            "maxDegreeOfParallelism must be -1 (all cores) or at least 1."),
    };
}
