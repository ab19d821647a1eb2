using System.Runtime.InteropServices;

namespace MosaicBert.Tensors;

/// <summary>
/// <c>cblas_sgemm</c> from a system OpenBLAS, loaded at run time through <see cref="NativeLibrary"/> (never required:
/// <see cref="TryLoad()"/> returns null when no library is found). Debian/Ubuntu: <c>apt-get install libopenblas0</c>.
/// </summary>
/// <remarks>
/// Uses the LP64 interface (32-bit blasint, as in Debian's libopenblas0; the ILP64 build is libopenblas64). OpenBLAS
/// runs its own thread pool, sized process-wide by <see cref="NumThreads"/> (default: OPENBLAS_NUM_THREADS or all
/// cores). Arguments are validated here first, with the same rules and messages as <see cref="Gemm"/>, because
/// cblas would only print an error and return.
/// </remarks>
public sealed unsafe class OpenBlasGemm : IGemmProvider
{
    private const int CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112;

    /// <summary>Names tried in order by <see cref="TryLoad()"/>.</summary>
    public static IReadOnlyList<string> LibraryNames { get; } = ["libopenblas.so.0", "libopenblas.so", "openblas"];

    private static readonly Lazy<OpenBlasGemm?> s_default = new(() =>
        Environment.GetEnvironmentVariable("MOSAICBERT_OPENBLAS") switch
        {
            null or "" => Load(LibraryNames),
            "none" => null,
            var library => Load([library]),
        });

    private readonly delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> _sgemm;
    private readonly delegate* unmanaged<int, void> _setNumThreads;
    private readonly delegate* unmanaged<int> _getNumThreads;

    private OpenBlasGemm(string library, nint handle)
    {
        Library = library;
        _sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)
            NativeLibrary.GetExport(handle, "cblas_sgemm");
        _setNumThreads = NativeLibrary.TryGetExport(handle, "openblas_set_num_threads", out var set)
            ? (delegate* unmanaged<int, void>)set : null;
        _getNumThreads = NativeLibrary.TryGetExport(handle, "openblas_get_num_threads", out var get)
            ? (delegate* unmanaged<int>)get : null;
        CoreName = NativeLibrary.TryGetExport(handle, "openblas_get_corename", out var core)
            ? Marshal.PtrToStringUTF8((nint)((delegate* unmanaged<byte*>)core)()) : null;
        Config = NativeLibrary.TryGetExport(handle, "openblas_get_config", out var config)
            ? Marshal.PtrToStringUTF8((nint)((delegate* unmanaged<byte*>)config)())?.Trim() : null;
    }

    /// <summary>
    /// The process-wide OpenBLAS provider, or null when none of <see cref="LibraryNames"/> loads or it lacks
    /// cblas_sgemm. Loaded once; later calls return the same instance. The environment variable MOSAICBERT_OPENBLAS
    /// replaces the names with one library name or path (e.g. a newer OpenBLAS build), or "none" to not load any.
    /// </summary>
    public static OpenBlasGemm? TryLoad() => s_default.Value;

    /// <summary>Loads a specific library (path or name); null when it cannot be loaded or lacks cblas_sgemm.</summary>
    public static OpenBlasGemm? TryLoad(string library) => Load([library]);

    private static OpenBlasGemm? Load(IEnumerable<string> names)
    {
        foreach (var name in names)
        {
            if (!NativeLibrary.TryLoad(name, typeof(OpenBlasGemm).Assembly, null, out var handle)) continue;
            if (NativeLibrary.TryGetExport(handle, "cblas_sgemm", out _)) return new OpenBlasGemm(name, handle);
            NativeLibrary.Free(handle);
        }
        return null;
    }

    /// <summary>The name the library was loaded by.</summary>
    public string Library { get; }

    /// <summary>The kernel family OpenBLAS selected for this CPU (openblas_get_corename), when exported.</summary>
    public string? CoreName { get; }

    /// <summary>openblas_get_config(): version and build options, when exported.</summary>
    public string? Config { get; }

    /// <summary>OpenBLAS' thread count. Process-wide: setting it affects every caller of this library.</summary>
    public int NumThreads
    {
        get => _getNumThreads is null ? -1 : _getNumThreads();
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            if (_setNumThreads is not null) _setNumThreads(value);
        }
    }

    /// <inheritdoc />
    public string Name => CoreName is null ? "openblas" : $"openblas ({CoreName})";

    /// <inheritdoc />
    public void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc)
    {
        GemmArguments.Validate(transA, transB, m, n, k, lda, ldb, ldc);
        GemmArguments.ValidateLengths(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc);
        fixed (float* pa = a, pb = b, pc = c)
            Call(transA, transB, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);
    }

    /// <inheritdoc />
    public void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
    {
        GemmArguments.Validate(transA, transB, m, n, k, lda, ldb, ldc);
        GemmArguments.ValidatePointers(m, n, k, a, b, c);
        Call(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }

    private void Call(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
    {
        if (m == 0 || n == 0) return;
        if (k == 0 || alpha == 0f)
        {
            // Same BLAS semantics without handing possibly-null A/B pointers to native code.
            GemmDriver.ScaleC(m, n, beta, c, ldc);
            return;
        }
        _sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
}
