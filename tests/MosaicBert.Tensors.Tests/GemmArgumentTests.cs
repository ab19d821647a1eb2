namespace MosaicBert.Tensors.Tests;

/// <summary>Argument validation: every bad argument is an ArgumentException naming it, for every provider.</summary>
public sealed class GemmArgumentTests
{
    public static TheoryData<string> Providers => new() { "gemm", "managed", "reference", "openblas" };

    private static void Call(string provider, bool transA, bool transB, int m, int n, int k, float[] a, int lda, float[] b, int ldb, float[] c, int ldc)
    {
        switch (provider)
        {
            case "gemm": Gemm.Sgemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, c, ldc); break;
            case "managed": new ManagedGemm(1).Sgemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, c, ldc); break;
            case "reference": ReferenceGemm.Sgemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, c, ldc); break;
            case "openblas":
                var blas = OpenBlasGemm.TryLoad() ?? throw new SkipException();
                blas.Sgemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, c, ldc);
                break;
        }
    }

    private sealed class SkipException : Exception;

    private static void Expect<T>(string provider, string param, string messagePart, Action call) where T : ArgumentException
    {
        try
        {
            call();
        }
        catch (SkipException)
        {
            Assert.Skip("OpenBLAS is not installed (libopenblas.so.0 / libopenblas.so / openblas did not load); the native path is optional.");
        }
        catch (T e)
        {
            Assert.Equal(param, e.ParamName);
            Assert.Contains(messagePart, e.Message, StringComparison.Ordinal);
            return;
        }
        Assert.Fail($"{provider}: expected {typeof(T).Name} for '{param}'");
    }

    [Theory]
    [MemberData(nameof(Providers))]
    public void BadArgumentsAreNamed(string provider)
    {
        float[] a = new float[12], b = new float[12], c = new float[12];
        Expect<ArgumentOutOfRangeException>(provider, "m", "must not be negative", () => Call(provider, false, false, -1, 3, 4, a, 4, b, 3, c, 3));
        Expect<ArgumentOutOfRangeException>(provider, "n", "must not be negative", () => Call(provider, false, false, 3, -1, 4, a, 4, b, 3, c, 3));
        Expect<ArgumentOutOfRangeException>(provider, "k", "must not be negative", () => Call(provider, false, false, 3, 3, -4, a, 4, b, 3, c, 3));
        // A is m×k = 3×4: lda ≥ 4; transposed it is stored k×m = 4×3: lda ≥ 3.
        Expect<ArgumentOutOfRangeException>(provider, "lda", "at least max(1, k) = 4", () => Call(provider, false, false, 3, 3, 4, a, 3, b, 3, c, 3));
        Expect<ArgumentOutOfRangeException>(provider, "lda", "at least max(1, m) = 3", () => Call(provider, true, false, 3, 3, 4, a, 2, b, 3, c, 3));
        Expect<ArgumentOutOfRangeException>(provider, "ldb", "at least max(1, n) = 3", () => Call(provider, false, false, 3, 3, 4, a, 4, b, 2, c, 3));
        Expect<ArgumentOutOfRangeException>(provider, "ldb", "at least max(1, k) = 4", () => Call(provider, false, true, 3, 3, 4, a, 4, b, 3, c, 3));
        Expect<ArgumentOutOfRangeException>(provider, "ldc", "at least max(1, n) = 3", () => Call(provider, false, false, 3, 3, 4, a, 4, b, 3, c, 2));
        Expect<ArgumentOutOfRangeException>(provider, "lda", "max(1, k) = 1", () => Call(provider, false, false, 3, 3, 0, a, 0, b, 3, c, 3));
        // Lengths: (rows − 1)·ld + cols.
        Expect<ArgumentException>(provider, "a", "needs 12", () => Call(provider, false, false, 3, 3, 4, new float[11], 4, b, 3, c, 3));
        Expect<ArgumentException>(provider, "a", "needs 14", () => Call(provider, false, false, 3, 3, 4, a, 5, b, 3, c, 3));
        Expect<ArgumentException>(provider, "b", "needs 12", () => Call(provider, false, true, 3, 3, 4, a, 4, new float[11], 4, c, 3));
        Expect<ArgumentException>(provider, "c", "needs 9", () => Call(provider, false, false, 3, 3, 4, a, 4, b, 3, new float[8], 3));
        Expect<ArgumentException>(provider, "c", "needs 13", () => Call(provider, false, false, 3, 3, 4, a, 4, b, 3, c, 5));
    }

    [Fact]
    public unsafe void PointerOverloadValidates()
    {
        nint buffer = (nint)System.Runtime.InteropServices.NativeMemory.AllocZeroed(64 * sizeof(float));
        try
        {
            float* nil = null;
            var e = Assert.Throws<ArgumentNullException>(() => Gemm.Sgemm(false, false, 2, 2, 2, 1f, (float*)0, 2, (float*)buffer, 2, 0f, (float*)buffer, 2));
            Assert.Equal("a", e.ParamName);
            e = Assert.Throws<ArgumentNullException>(() => Gemm.Sgemm(false, false, 2, 2, 2, 1f, (float*)buffer, 2, (float*)0, 2, 0f, (float*)buffer, 2));
            Assert.Equal("b", e.ParamName);
            e = Assert.Throws<ArgumentNullException>(() => Gemm.Sgemm(false, false, 2, 2, 2, 1f, (float*)buffer, 2, (float*)buffer, 2, 0f, (float*)0, 2));
            Assert.Equal("c", e.ParamName);
            var r = Assert.Throws<ArgumentOutOfRangeException>(() => Gemm.Sgemm(false, true, 2, 2, 5, 1f, (float*)buffer, 5, (float*)buffer, 4, 0f, (float*)buffer, 2));
            Assert.Equal("ldb", r.ParamName);
            // Empty products accept null.
            Gemm.Sgemm(false, false, 0, 0, 0, 1f, nil, 1, nil, 1, 0f, nil, 1);
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.Free((void*)buffer);
        }
    }

    [Fact]
    public void DegreeOfParallelismIsValidated()
    {
        float[] a = new float[4];
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Gemm.Sgemm(false, false, 2, 2, 2, 1f, a, 2, a, 2, 0f, a, 2, maxDegreeOfParallelism: 0));
        Assert.Equal("maxDegreeOfParallelism", e.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => new ManagedGemm(-2));
    }
}
