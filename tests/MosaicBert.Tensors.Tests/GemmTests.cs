namespace MosaicBert.Tensors.Tests;

/// <summary>
/// The managed GEMM against <see cref="ReferenceGemm"/> (double accumulation). Tolerances are the per-element
/// rounding-error bounds of <see cref="GemmTestCase.Bounds"/>, computed from the operands, never picked by eye.
/// </summary>
public sealed class GemmTests
{
    /// <summary>Every micro-kernel this machine can run (the AVX-512 one runs the AVX2 and portable ones too).</summary>
    internal static IEnumerable<GemmKernel> Kernels()
    {
        yield return GemmKernel.Portable;
        if (System.Runtime.Intrinsics.X86.Fma.IsSupported && System.Runtime.Intrinsics.X86.Avx2.IsSupported) yield return GemmKernel.Avx2;
        if (System.Runtime.Intrinsics.X86.Avx512F.IsSupported) yield return GemmKernel.Avx512;
    }

    /// <summary>
    /// Tiny blocking (kc = 16, mc = 2·MR, ncMax = 2·NR, tiles of at most 4·MR rows) so that matrices of a few dozen
    /// rows already run several k blocks, A blocks per tile, row tiles, column tiles and edge micro-tiles.
    /// </summary>
    internal static GemmKernel Tiny(GemmKernel kernel) => kernel.WithBlocking(16, 2 * kernel.Mr, 2 * kernel.Nr, 4 * kernel.Mr);

    public static TheoryData<bool, bool> Transpositions => new() { { false, false }, { false, true }, { true, false }, { true, true } };

    // m, n, k: empty, ones, odd, primes, just below/above multiples of 4, 6, 8, 16, 48 and of the tiny blocking.
    private static readonly (int M, int N, int K)[] s_shapes =
    [
        (0, 0, 0), (0, 5, 3), (5, 0, 3), (4, 5, 0), (1, 1, 1), (1, 7, 3), (7, 1, 5), (2, 3, 1), (3, 5, 7),
        (8, 48, 16), (6, 16, 8), (9, 49, 17), (5, 47, 33), (17, 33, 65), (31, 97, 15), (13, 130, 47),
        (50, 100, 70), (23, 11, 129), (97, 17, 31),
    ];

    [Theory]
    [MemberData(nameof(Transpositions))]
    public unsafe void AllKernelsMatchReferenceOverManyShapes(bool transA, bool transB)
    {
        int seed = 0;
        foreach (var (m, n, k) in s_shapes)
        {
            // Tight leading dimensions and padded ones (lda > cols etc.).
            foreach (var (padA, padB, padC) in new[] { (0, 0, 0), (3, 5, 2) })
            {
                var t = new GemmTestCase(transA, transB, m, n, k, seed++, padA, padB, padC);
                foreach (var kernel in Kernels())
                {
                    foreach (var kn in new[] { kernel, Tiny(kernel) })
                    {
                        const float alpha = 0.75f, beta = -1.25f;
                        var expected = t.Reference(alpha, beta);
                        var bounds = t.Bounds(alpha, beta, t.ManagedRoundings(kn.Kc));
                        var c = (float[])t.C0.Clone();
                        Run(kn, t, alpha, beta, c, threads: 1);
                        t.AssertClose(expected, c, bounds, $"{kn.Name} kc={kn.Kc} mc={kn.Mc}");
                    }
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Transpositions))]
    public void AlphaBetaVariants(bool transA, bool transB)
    {
        // beta = 0 on a NaN-filled C must overwrite (BLAS); beta = 1 accumulates; others scale. alpha = 0 skips A·B.
        var cases = new (float Alpha, float Beta, bool NanC)[]
        {
            (1f, 0f, true), (-2.5f, 0f, true), (1f, 1f, false), (0.5f, -1f, false), (-1f, 3f, false), (0f, 0f, true), (0f, 2f, false),
        };
        int seed = 100;
        foreach (var (m, n, k) in new[] { (19, 53, 37), (8, 48, 64), (1, 50, 3) })
        {
            foreach (var (alpha, beta, nanC) in cases)
            {
                var t = new GemmTestCase(transA, transB, m, n, k, seed++, padA: 1, padB: 2, padC: 3, nanC: nanC);
                foreach (var kn in Kernels().Select(Tiny))
                {
                    var expected = t.Reference(alpha, beta);
                    var bounds = t.Bounds(alpha, beta, t.ManagedRoundings(kn.Kc));
                    var c = (float[])t.C0.Clone();
                    Run(kn, t, alpha, beta, c, threads: 1);
                    t.AssertClose(expected, c, bounds, $"{kn.Name} alpha={alpha} beta={beta} nanC={nanC}");
                    Assert.DoesNotContain(c.Where((_, i) => i % t.Ldc < n), float.IsNaN);
                }
            }
        }
    }

    [Fact]
    public void AlphaZeroAndKZeroDoNotReadAOrB()
    {
        // Reference BLAS does not touch A or B then: NaNs there must not reach C.
        float[] nanA = Enumerable.Repeat(float.NaN, 12).ToArray(), nanB = Enumerable.Repeat(float.NaN, 12).ToArray();
        var c = new float[] { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
        Gemm.Sgemm(false, false, 3, 3, 4, 0f, nanA, 4, nanB, 3, 2f, c, 3);
        Assert.Equal(new float[] { 2, 4, 6, 8, 10, 12, 14, 16, 18 }, c);
        Gemm.Sgemm(false, false, 3, 3, 0, 1f, [], 1, [], 3, 0.5f, c, 3);
        Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6, 7, 8, 9 }, c);
        c.AsSpan().Fill(float.NaN);
        Gemm.Sgemm(true, true, 3, 3, 4, 0f, nanA, 3, nanB, 4, 0f, c, 3);
        Assert.All(c, x => Assert.Equal(0f, x));
    }

    [Theory]
    [InlineData(200)]
    [InlineData(600)]
    public void BetaOneAccumulatesAcrossCalls(int k)
    {
        // once = A·B, then twice = A·B + once. With one k block (k ≤ kc) the second call adds the identical rounded
        // block sum to once: exactly 2·once. With several blocks the partial sums round differently: |twice − 2·once|
        // ≤ (error of once) + (error of the second call) ≤ R·u·S + R·u·(S + |once|) ≤ 3.01·R·u·S, S = Σ|a||b|.
        var t = new GemmTestCase(false, true, 37, 61, k, seed: 7);
        var once = new float[t.C0.Length];
        Gemm.Sgemm(false, true, t.M, t.N, t.K, 1f, t.A, t.Lda, t.B, t.Ldb, 0f, once, t.Ldc);
        var twice = (float[])once.Clone();
        Gemm.Sgemm(false, true, t.M, t.N, t.K, 1f, t.A, t.Lda, t.B, t.Ldb, 1f, twice, t.Ldc);
        if (k <= GemmKernel.Best.Kc)
        {
            for (int i = 0; i < once.Length; i++) Assert.Equal(2 * once[i], twice[i]);
            return;
        }
        var bounds = t.Bounds(1f, 0f, t.ManagedRoundings(GemmKernel.Best.Kc)).Select(b => 3.01 * b).ToArray();
        t.AssertClose(once.Select(x => 2 * x).ToArray(), twice, bounds, "beta = 1 accumulation");
    }

    [Theory]
    [MemberData(nameof(Transpositions))]
    public void MultiThreadedIsBitwiseEqualToSingleThreaded(bool transA, bool transB)
    {
        // The k loop is blocked the same way whatever the tiling, so every element sees the same fp32 operations.
        foreach (var (m, n, k) in new[] { (203, 171, 301), (64, 400, 257), (300, 50, 129) })
        {
            var t = new GemmTestCase(transA, transB, m, n, k, seed: m + n + k, padA: 2, padB: 1, padC: 4);
            foreach (var kernel in Kernels())
            {
                var single = (float[])t.C0.Clone();
                Run(kernel, t, 1.5f, 0.5f, single, threads: 1);
                foreach (int threads in new[] { 2, 3, 4, 8 })
                {
                    Assert.True(GemmDriver.Plan(m, n, kernel, threads).Count > 1, "the shape must split into several tiles");
                    var multi = (float[])t.C0.Clone();
                    Run(kernel, t, 1.5f, 0.5f, multi, threads);
                    Assert.Equal(single, multi);
                }
                var expected = t.Reference(1.5f, 0.5f);
                t.AssertClose(expected, single, t.Bounds(1.5f, 0.5f, t.ManagedRoundings(kernel.Kc)), kernel.Name);
            }
        }
    }

    [Fact]
    public void ConcurrentCallersGetTheirOwnResults()
    {
        // Many multi-threaded calls at once from pool threads: pooled jobs, per-thread buffers and helpers that start
        // late (after their call finished) must not mix problems. Results must equal the single-threaded ones bitwise.
        var cases = Enumerable.Range(0, 24).Select(i => new GemmTestCase(i % 2 == 0, i % 3 == 0, 60 + i, 70 + 2 * i, 90 + 3 * i, seed: 1000 + i)).ToArray();
        var expected = cases.Select(t => { var c = (float[])t.C0.Clone(); Run(GemmKernel.Best, t, 1f, 1f, c, 1); return c; }).ToArray();
        for (int round = 0; round < 3; round++)
        {
            var results = new float[cases.Length][];
            Parallel.For(0, cases.Length, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
            {
                var t = cases[i];
                var c = (float[])t.C0.Clone();
                Run(GemmKernel.Best, t, 1f, 1f, c, threads: 3);
                results[i] = c;
            });
            for (int i = 0; i < cases.Length; i++) Assert.Equal(expected[i], results[i]);
        }
    }

    /// <summary>
    /// BERT-base layer shapes scaled down (tokens 1024 → 48, d 768 → 96, I 3072 → 192, vocab 30528 → 500, masked
    /// tokens ~300 → 15) through the public API, all cores, forward and backward transpositions.
    /// </summary>
    [Fact]
    public void ReducedBertShapes()
    {
        const int tokens = 48, d = 96, inter = 192, vocab = 500, masked = 15;
        var shapes = new (string Name, bool TransA, bool TransB, int M, int N, int K)[]
        {
            ("qkv y=x·Wᵀ", false, true, tokens, 3 * d, d),
            ("attn out", false, true, tokens, d, d),
            ("glu up", false, true, tokens, 2 * inter, d),
            ("glu down", false, true, tokens, d, inter),
            ("mlm decoder", false, true, masked, vocab, d),
            ("qkv dX=dY·W", false, false, tokens, d, 3 * d),
            ("qkv dW=dYᵀ·X", true, false, 3 * d, d, tokens),
            ("glu down dW", true, false, d, inter, tokens),
            ("decoder dW", true, false, vocab, d, masked),
            ("decoder dX", false, false, masked, d, vocab),
        };
        int seed = 5000;
        foreach (var s in shapes)
        {
            var t = new GemmTestCase(s.TransA, s.TransB, s.M, s.N, s.K, seed++);
            foreach (float beta in new[] { 0f, 1f })
            {
                var expected = t.Reference(1f, beta);
                var c = (float[])t.C0.Clone();
                Gemm.Sgemm(t.TransA, t.TransB, t.M, t.N, t.K, 1f, t.A, t.Lda, t.B, t.Ldb, beta, c, t.Ldc);
                t.AssertClose(expected, c, t.Bounds(1f, beta, t.ManagedRoundings(GemmKernel.Best.Kc)), s.Name);
            }
        }
    }

    [Fact]
    public unsafe void PointerOverloadMatchesSpanOverload()
    {
        var t = new GemmTestCase(true, false, 45, 67, 89, seed: 11, padA: 1, padB: 2, padC: 3);
        var viaSpan = (float[])t.C0.Clone();
        Gemm.Sgemm(t.TransA, t.TransB, t.M, t.N, t.K, 2f, t.A, t.Lda, t.B, t.Ldb, -1f, viaSpan, t.Ldc);
        var viaPointer = (float[])t.C0.Clone();
        fixed (float* a = t.A, b = t.B, c = viaPointer)
            Gemm.Sgemm(t.TransA, t.TransB, t.M, t.N, t.K, 2f, a, t.Lda, b, t.Ldb, -1f, c, t.Ldc);
        Assert.Equal(viaSpan, viaPointer);
        var managed = (float[])t.C0.Clone();
        new ManagedGemm(1).Sgemm(t.TransA, t.TransB, t.M, t.N, t.K, 2f, t.A, t.Lda, t.B, t.Ldb, -1f, managed, t.Ldc);
        Assert.Equal(viaSpan, managed);
    }

    [Fact]
    public void TilePlansCoverCExactly()
    {
        foreach (var kernel in Kernels())
        {
            foreach (var (m, n) in new[] { (1, 1), (1024, 768), (1024, 2304), (300, 30528), (768, 3072), (2048, 2048), (7, 1000), (1000, 7) })
            {
                foreach (int threads in new[] { 1, 2, 16, 64 })
                {
                    var plan = GemmDriver.Plan(m, n, kernel, threads);
                    Assert.True(plan.Tm % kernel.Mr == 0 && plan.Tn % kernel.Nr == 0, $"{plan}: tiles are whole micro-tiles");
                    Assert.True(plan.Tm <= Math.Max(kernel.MaxTileRows, kernel.Mr) && plan.Tn <= Math.Max(kernel.NcMax, kernel.Nr), $"{plan}: within the blocking");
                    Assert.True((long)plan.RowTiles * plan.Tm >= m && (long)(plan.RowTiles - 1) * plan.Tm < m, $"{plan} rows vs m={m}");
                    Assert.True((long)plan.ColTiles * plan.Tn >= n && (long)(plan.ColTiles - 1) * plan.Tn < n, $"{plan} cols vs n={n}");
                }
            }
        }
    }

    /// <summary>The driver with an explicit kernel; threads are used even for small products (no work threshold).</summary>
    internal static unsafe void Run(GemmKernel kernel, GemmTestCase t, float alpha, float beta, float[] c, int threads)
    {
        fixed (float* a = t.A, b = t.B, pc = c)
            Gemm.Core(kernel, t.TransA, t.TransB, t.M, t.N, t.K, alpha, a, t.Lda, b, t.Ldb, beta, pc, t.Ldc, threads, minFlopsPerThread: 0);
    }
}
