namespace MosaicBert.Tensors.Tests;

/// <summary>The optional native path agrees with the reference and with the managed kernel (skipped without OpenBLAS).</summary>
public sealed class OpenBlasTests
{
    private static OpenBlasGemm Blas()
    {
        var blas = OpenBlasGemm.TryLoad();
        if (blas is null)
            Assert.Skip("OpenBLAS is not installed (libopenblas.so.0 / libopenblas.so / openblas did not load); the native path is " +
                "optional (Debian/Ubuntu: apt-get install libopenblas0).");
        return blas;
    }

    [Theory]
    [MemberData(nameof(GemmTests.Transpositions), MemberType = typeof(GemmTests))]
    public void AgreesWithReferenceAndManaged(bool transA, bool transB)
    {
        var blas = Blas();
        int seed = 300;
        foreach (var (m, n, k) in new[] { (1, 1, 1), (7, 5, 3), (33, 65, 129), (100, 300, 64), (64, 100, 300) })
        {
            foreach (var (alpha, beta, nanC) in new[] { (1f, 0f, true), (-0.5f, 1f, false), (2f, -1.5f, false) })
            {
                var t = new GemmTestCase(transA, transB, m, n, k, seed++, padA: 2, padB: 1, padC: 3, nanC: nanC);
                var expected = t.Reference(alpha, beta);
                var native = (float[])t.C0.Clone();
                blas.Sgemm(transA, transB, m, n, k, alpha, t.A, t.Lda, t.B, t.Ldb, beta, native, t.Ldc);
                // OpenBLAS' summation order is unknown: the any-order bound (2k + 4 roundings).
                var blasBounds = t.Bounds(alpha, beta, t.AnyOrderRoundings);
                t.AssertClose(expected, native, blasBounds, blas.Name);

                // Managed vs native directly: each is within its bound of the exact value, so their difference is
                // within the sum of the two bounds.
                var managed = (float[])t.C0.Clone();
                Gemm.Sgemm(transA, transB, m, n, k, alpha, t.A, t.Lda, t.B, t.Ldb, beta, managed, t.Ldc);
                var managedBounds = t.Bounds(alpha, beta, t.ManagedRoundings(GemmKernel.Best.Kc));
                t.AssertClose(native, managed, blasBounds.Zip(managedBounds, (x, y) => x + y).ToArray(), "managed vs " + blas.Name);
            }
        }
    }

    [Fact]
    public void ProviderChoiceHonoursTheSetting()
    {
        Assert.Same(GemmProviders.Managed, GemmProviders.ChooseDefault("managed"));
        Assert.Same((IGemmProvider?)OpenBlasGemm.TryLoad() ?? GemmProviders.Managed, GemmProviders.ChooseDefault("openblas"));
        Assert.NotNull(GemmProviders.ChooseDefault(null));
    }
}
