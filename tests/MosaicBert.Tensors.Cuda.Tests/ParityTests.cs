using static MosaicBert.Tensors.Cuda.Tests.Both;

namespace MosaicBert.Tensors.Cuda.Tests;

/// <summary>
/// Every op of the backend on the same random inputs on the CPU backend (the reference behaviour) and on the GPU.
/// Tolerances: fp32 GEMM, whose summation order differs, 1e-5 of Σ_k |a||b| per element; element-wise ops 1e-6
/// relative (4e-6 for GELU, whose CPU Φ is a 1.2e-7 fit); row reductions (LayerNorm, softmax) 1e-5; column sums over
/// many rows 1e-5 of Σ|terms|; attention 2e-5 (forward) and 3e-5 (backward) of each tensor's scale. Dropout, AdamW,
/// the row scatters and the embedding backward are specified to be bitwise equal to the CPU and are checked so.
/// </summary>
public sealed class ParityTests
{
    private static CudaBackend G => Gpu.Backend;

    public static TheoryData<int, int, int> GemmShapes => new() { { 1, 1, 1 }, { 37, 53, 71 }, { 128, 96, 768 }, { 300, 1000, 64 }, { 5, 3072, 768 } };

    [Theory]
    [MemberData(nameof(GemmShapes))]
    public void MatMulMatchesTheCpuForEveryTransposeAndScaling(int m, int n, int k)
    {
        _ = G;
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                foreach (var (alpha, beta) in new[] { (1f, 0f), (0.5f, -0.25f) })
                {
                    float[] av = Random(m * k, 1), bv = Random(k * n, 2), cv = Random(m * n, 3);
                    using var a = Floats(av, ta ? [k, m] : [m, k]);
                    using var b = Floats(bv, tb ? [n, k] : [k, n]);
                    using var c = Floats(cv, m, n);
                    Ref.MatMul(a.C, ta, b.C, tb, c.C, alpha, beta);
                    G.MatMul(a.G, ta, b.G, tb, c.G, alpha, beta);
                    // Scale of element (i, j): Σ_e |a_ie·b_ej| + |beta·c_ij|, the size of what was summed.
                    var scale = new double[m * n];
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++)
                        {
                            double s = Math.Abs(beta * cv[i * n + j]);
                            for (int e = 0; e < k; e++)
                                s += Math.Abs(alpha * (ta ? av[e * m + i] : av[i * k + e]) * (tb ? bv[j * k + e] : bv[e * n + j]));
                            scale[i * n + j] = Math.Max(s, 1e-30);
                        }
                    var gpu = Host(c.G);
                    Close(Host(c.C), gpu, 1e-5, i => scale[i], $"MatMul {m}×{n}×{k} ta={ta} tb={tb} α={alpha} β={beta}");
                    G.Upload(cv, c.G);
                    G.MatMul(a.G, ta, b.G, tb, c.G, alpha, beta);
                    Close(gpu, Host(c.G), 0, _ => 1, "MatMul run twice (deterministic)");
                }
    }

    [Fact]
    public void MatMulOnMisalignedViewsAndLinearWithBias()
    {
        _ = G;
        // Row views at odd offsets give pointers aligned to 4 bytes only: the GEMM must ask cuBLASLt for such algorithms.
        int m = 33, n = 17, k = 45;
        using var big = Floats(Random((m + 1) * k, 4), m + 1, k);
        using var w = Floats(Random((n + 1) * k, 5), n + 1, k);
        using var bias = Floats(Random(n + 1, 6), n + 1);
        using var y = Zeros(m + 1, n);
        foreach (var (x, wt, bt, yt) in new[] { (big.C, w.C, bias.C, y.C), (big.G, w.G, bias.G, y.G) })
        {
            var xv = x.Rows(1, m);
            var wv = wt.Rows(1, n);
            var bv = bt.Rows(1, n);
            xv.Backend.Linear(xv, wv, bv, yt.Rows(1, m));            // bias epilogue, 4-byte-aligned operands
            xv.Backend.Linear(x.Rows(0, 1), wv, null, yt.Rows(0, 1));   // no bias
        }
        Close(y, 1e-5, OfMax, "Linear on views (with and without bias)");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(1000)]
    [InlineData(100_003)]
    public void ActivationsMatch(int n)
    {
        _ = G;
        var xv = Random(n, 10, 5);
        using var x = Floats(xv, n);
        using var dy = Floats(Random(n, 11), n);
        using var y = Zeros(n);
        using var dx = Zeros(n);
        Ref.Gelu(x.C, y.C); G.Gelu(x.G, y.G);
        // GELU tends to 0 in the far negative tail, where the CPU's fp32 exp(−x²/2) carries ~1e-7·x² relative error:
        // relative check, widened by x².
        var yc = Host(y.C);
        Close(yc, Host(y.G), 2e-6, i => Math.Abs(yc[i]) * (1 + 0.1 * xv[i] * xv[i]) + 1e-30, "GELU");
        Ref.GeluBackward(x.C, dy.C, dx.C); G.GeluBackward(x.G, dy.G, dx.G);
        var dyv = Host(dy.C);
        Close(Host(dx.C), Host(dx.G), 4e-6, i => Math.Max(Math.Abs(dyv[i]), 1e-30), "GELU backward (of |dy|)");
        Ref.Tanh(x.C, y.C); G.Tanh(x.G, y.G);
        Close(y, 1e-6, Relative(1e-6), "tanh");
        // The backward from the same y on both sides: 1 − y² amplifies a last-bit difference of y near |y| = 1.
        using var yy = Floats(Host(y.C), n);
        Ref.TanhBackward(yy.C, dy.C, dx.C); G.TanhBackward(yy.G, dy.G, dx.G);
        Close(dx, 1e-6, Relative(1e-6), "tanh backward");
    }

    [Theory]
    [InlineData(3, 11)]
    [InlineData(257, 1536)]
    public void GatedGeluMatches(int rows, int inner)
    {
        _ = G;
        using var g = Floats(Random(rows * 2 * inner, 12, 4), rows, 2 * inner);
        using var dh = Floats(Random(rows * inner, 13), rows, inner);
        using var h = Zeros(rows, inner);
        using var dg = Zeros(rows, 2 * inner);
        float[] gv = Host(g.C), dhv = Host(dh.C);
        Ref.GatedGelu(g.C, h.C); G.GatedGelu(g.G, h.G);
        var hc = Host(h.C);
        Close(hc, Host(h.G), 2e-6, i =>
        {
            double u = gv[i / inner * 2 * inner + i % inner];
            return Math.Abs(hc[i]) * (1 + 0.1 * u * u) + 1e-30;
        }, "gated GELU");
        Ref.GatedGeluBackward(g.C, dh.C, dg.C); G.GatedGeluBackward(g.G, dh.G, dg.G);
        // du = dh·v·GELU′(u) and dv = dh·GELU(u): scale |dh|·max(1, |v|, |u|) per element.
        Close(Host(dg.C), Host(dg.G), 4e-6, i =>
        {
            int r = i / (2 * inner), c = i % inner;
            return Math.Max(1e-30, Math.Abs(dhv[r * inner + c]) * Math.Max(1, Math.Max(Math.Abs(gv[r * 2 * inner + c]), Math.Abs(gv[r * 2 * inner + inner + c]))));
        }, "gated GELU backward");
    }

    [Theory]
    [InlineData(5, 37, true)]
    [InlineData(300, 768, true)]
    [InlineData(64, 1024, false)]
    public void LayerNormForwardAndBackwardMatch(int n, int d, bool withResidual)
    {
        _ = G;
        using var x = Floats(Random(n * d, 20, 4), n, d);
        using var res = Floats(Random(n * d, 21, 4), n, d);
        using var gamma = Floats(Random(d, 22), d);
        using var beta = Floats(Random(d, 23), d);
        using var sum = Zeros(n, d);
        using var y = Zeros(n, d);
        using var mean = Zeros(n);
        using var rstd = Zeros(n);
        Ref.LayerNorm(x.C, withResidual ? res.C : null, gamma.C, beta.C, 1e-12f, sum.C, y.C, mean.C, rstd.C);
        G.LayerNorm(x.G, withResidual ? res.G : null, gamma.G, beta.G, 1e-12f, sum.G, y.G, mean.G, rstd.G);
        Same(sum, "LayerNorm sum (one fp32 addition)");
        Close(mean, 1e-5, OfMax, "LayerNorm mean");
        Close(rstd, 1e-5, Relative(), "LayerNorm rstd");
        Close(y, 1e-5, Relative(1), "LayerNorm y");

        using var dy = Floats(Random(n * d, 24), n, d);
        using var dx = Floats(Random(n * d, 25), n, d);
        using var dGamma = Floats(Random(d, 26), d);
        using var dBeta = Floats(Random(d, 27), d);
        foreach (bool accumulate in new[] { true, false })
        {
            Ref.LayerNormBackward(dy.C, sum.C, mean.C, rstd.C, gamma.C, dx.C, dGamma.C, dBeta.C, accumulate);
            G.LayerNormBackward(dy.G, sum.G, mean.G, rstd.G, gamma.G, dx.G, dGamma.G, dBeta.G, accumulate);
            Close(dx, 1e-5, Relative(1), $"LayerNorm dx (accumulate {accumulate})");
            // Column sums over n rows of terms of size ≤ max|x̂|: scale n·max|x̂| (the Σ|terms| bound).
            Close(dGamma, 1e-5, _ => _ => Math.Max(1, n * 4.0), "LayerNorm dγ");
            Close(dBeta, 1e-5, _ => _ => Math.Max(1, n), "LayerNorm dβ");
        }
    }

    [Theory]
    [InlineData(1, 5)]
    [InlineData(150, 37)]
    [InlineData(70, 200)]
    [InlineData(4096, 768)]
    public void SumRowsIntoMatches(int rows, int width)
    {
        _ = G;
        using var dy = Floats(Random(rows * width, 30), rows, width);
        using var db = Floats(Random(width, 31), width);
        Ref.SumRowsInto(dy.C, db.C);
        G.SumRowsInto(dy.G, db.G);
        Close(db, 1e-5, _ => _ => Math.Max(1, rows), "SumRowsInto (of Σ|dy| ≤ rows)");
    }

    [Theory]
    [InlineData(4, 50)]
    [InlineData(77, 30528)]
    public void CrossEntropyMatches(int k, int v)
    {
        _ = G;
        using var logits = Floats(Random(k * v, 40, 6), k, v);
        using var labels = Ints(RandomInts(k, 41, v));
        using var loss = Zeros(k);
        using var grad = Zeros(k, v);
        Ref.CrossEntropy(logits.C, labels.C, loss.C, grad.C, 0.25f);
        G.CrossEntropy(logits.G, labels.G, loss.G, grad.G, 0.25f);
        Close(loss, 1e-5, Relative(1), "cross-entropy loss");
        Close(grad, 1e-6, _ => _ => 0.25, "cross-entropy gradient (of the scale 0.25)");
        using var lossOnly = Zeros(k);
        G.CrossEntropy(logits.G, labels.G, lossOnly.G);
        Close(Host(loss.G), Host(lossOnly.G), 0, _ => 1, "loss without gradient");
        using var bad = Ints([.. Enumerable.Repeat(0, k - 1), v]);
        Assert.Throws<ArgumentOutOfRangeException>(() => G.CrossEntropy(logits.G, bad.G, loss.G));
    }

    [Fact]
    public void SquaredErrorMatches()
    {
        _ = G;
        using var p = Floats(Random(33, 50, 3), 33, 1);
        using var t = Floats(Random(33, 51, 3), 33);
        using var l = Zeros(33);
        using var g = Zeros(33, 1);
        Ref.SquaredError(p.C, t.C, l.C, g.C, 0.5f);
        G.SquaredError(p.G, t.G, l.G, g.G, 0.5f);
        Same(l, "squared error");
        Same(g, "squared error gradient");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EmbeddingsMatchBitwiseIncludingRepeatedRowsInTheBackward(bool withPositions)
    {
        _ = G;
        int n = 300, d = 48, vocab = 40, types = 2, maxPos = 64;
        using var word = Floats(Random(vocab * d, 60), vocab, d);
        using var type = Floats(Random(types * d, 61), types, d);
        using var pos = Floats(Random(maxPos * d, 62), maxPos, d);
        using var ids = Ints(RandomInts(n, 63, vocab));          // many repeats
        using var typeIds = Ints(RandomInts(n, 64, types));
        using var positions = Ints(RandomInts(n, 65, maxPos));
        using var output = Zeros(n, d);
        Ref.EmbeddingSum(ids.C, typeIds.C, withPositions ? positions.C : null, word.C, type.C, withPositions ? pos.C : null, output.C);
        G.EmbeddingSum(ids.G, typeIds.G, withPositions ? positions.G : null, word.G, type.G, withPositions ? pos.G : null, output.G);
        Same(output, "EmbeddingSum");

        using var dOut = Floats(Random(n * d, 66), n, d);
        using var dWord = Floats(Random(vocab * d, 67), vocab, d);
        using var dType = Floats(Random(types * d, 68), types, d);
        using var dPos = Floats(Random(maxPos * d, 69), maxPos, d);
        Ref.EmbeddingBackward(ids.C, typeIds.C, withPositions ? positions.C : null, dOut.C, dWord.C, dType.C, withPositions ? dPos.C : null);
        G.EmbeddingBackward(ids.G, typeIds.G, withPositions ? positions.G : null, dOut.G, dWord.G, dType.G, withPositions ? dPos.G : null);
        Same(dWord, "EmbeddingBackward dWord");
        Same(dType, "EmbeddingBackward dType");
        Same(dPos, "EmbeddingBackward dPosition");

        using var badIds = Ints([.. Enumerable.Repeat(1, n - 1), vocab]);
        Assert.Throws<ArgumentOutOfRangeException>(() => G.EmbeddingSum(badIds.G, typeIds.G, null, word.G, type.G, null, output.G));
        Assert.Throws<ArgumentOutOfRangeException>(() => G.EmbeddingBackward(badIds.G, typeIds.G, null, dOut.G, dWord.G, dType.G, null));
        Same(dWord, "dWord untouched by a rejected call");
    }

    [Fact]
    public void GatherScatterAndScatterAddMatchBitwise()
    {
        _ = G;
        int rows = 50, width = 37, k = 120;
        using var src = Floats(Random(rows * width, 70), rows, width);
        using var idx = Ints(RandomInts(k, 71, rows));           // repeats: scatter's last write wins, scatter-add sums in order
        using var gathered = Zeros(k, width);
        Ref.GatherRows(src.C, idx.C, gathered.C);
        G.GatherRows(src.G, idx.G, gathered.G);
        Same(gathered, "GatherRows");
        using var values = Floats(Random(k * width, 72), k, width);
        using var scattered = Floats(Random(rows * width, 73), rows, width);
        Ref.ScatterRows(values.C, idx.C, scattered.C);
        G.ScatterRows(values.G, idx.G, scattered.G);
        Same(scattered, "ScatterRows");
        using var summed = Floats(Random(rows * width, 74), rows, width);
        Ref.ScatterAddRows(values.C, idx.C, summed.C);
        G.ScatterAddRows(values.G, idx.G, summed.G);
        Same(summed, "ScatterAddRows");
        using var bad = Ints([0, rows]);
        using var two = Zeros(2, width);
        Assert.Throws<ArgumentOutOfRangeException>(() => G.GatherRows(src.G, bad.G, two.G));
    }

    [Fact]
    public void DropoutIsTheCpuMaskBitForBitInAnySplit()
    {
        _ = G;
        int n = 100_000;
        using var x = Floats(Random(n, 80), n);
        using var y = Zeros(n);
        using var mask = Zeros(n);
        foreach (var (p, seed, offset) in new[] { (0.1f, 42UL, 0L), (0.3f, ulong.MaxValue, 1L << 40), (0f, 7UL, 5L) })
        {
            Ref.Dropout(x.C, y.C, mask.C, p, seed, offset);
            G.Dropout(x.G, y.G, mask.G, p, seed, offset);
            Same(mask, $"dropout mask p={p}");
            Same(y, $"dropout output p={p}");
        }
        // Two pieces [0, 40000) and [40000, n) with matching offsets give the whole call's mask; in place (y = x) too.
        using var piecewise = Floats(Host(x.C), n);
        var m2 = G.Allocate(n);
        G.Dropout(piecewise.G.Rows(0, 40_000), piecewise.G.Rows(0, 40_000), m2.Rows(0, 40_000), 0.3f, ulong.MaxValue, 1L << 40);
        G.Dropout(piecewise.G.Rows(40_000, n - 40_000), piecewise.G.Rows(40_000, n - 40_000), m2.Rows(40_000, n - 40_000), 0.3f, ulong.MaxValue, (1L << 40) + 40_000);
        Ref.Dropout(x.C, y.C, mask.C, 0.3f, ulong.MaxValue, 1L << 40);
        Close(Host(y.C), Host(piecewise.G), 0, _ => 1, "dropout in two pieces, in place");
        Close(Host(mask.C), Host(m2), 0, _ => 1, "dropout mask in two pieces");
        m2.Dispose();
        Assert.Throws<ArgumentOutOfRangeException>(() => G.Dropout(x.G, y.G, mask.G, 1f, 1, 0));
    }

    [Fact]
    public void MultiplyAddScaledAndScaleMatch()
    {
        _ = G;
        int n = 70_001;
        float[] xv = Random(n, 90), yv = Random(n, 91);
        using var x = Floats(xv, n);
        using var y = Floats(yv, n);
        using var z = Zeros(n);
        Ref.Multiply(x.C, y.C, z.C); G.Multiply(x.G, y.G, z.G);
        Same(z, "Multiply (one IEEE product)");
        Ref.AddScaled(x.C, -0.75f, y.C); G.AddScaled(x.G, -0.75f, y.G);
        // y + αx may cancel: scale |y| + |αx| of the inputs; the CPU may or may not fuse, so 1 ulp of that.
        Close(Host(y.C), Host(y.G), 3e-7, i => Math.Abs(yv[i]) + 0.75 * Math.Abs(xv[i]) + 1e-30, "AddScaled");
        Ref.Scale(x.C, 3.5f); G.Scale(x.G, 3.5f);
        Same(x, "Scale");
    }

    [Theory]
    [InlineData(37)]
    [InlineData(40_000)]
    [InlineData(4_194_307)]
    public void SumOfSquaresMatches(int n)
    {
        _ = G;
        using var x = Floats(Random(n, 100, 3), n);
        double c = Ref.SumOfSquares(x.C), g = G.SumOfSquares(x.G);
        Assert.True(Math.Abs(c - g) <= 1e-12 * c, $"SumOfSquares: CPU {c:R}, GPU {g:R}");
        Assert.Equal(g, G.SumOfSquares(x.G));   // deterministic
    }

    [Theory]
    [InlineData(37)]
    [InlineData(100_000)]
    public void AdamWMatchesTheCpuBitForBitOverSeveralSteps(int n)
    {
        _ = G;
        using var theta = Floats(Random(n, 110), n);
        using var m = Zeros(n);
        using var v = Zeros(n);
        for (int step = 1; step <= 5; step++)
        {
            using var grad = Floats(Random(n, 120 + step, 0.1f), n);
            float decay = 0.01f * (1 - 0.1f * step);
            Ref.AdamW(theta.C, grad.C, m.C, v.C, 1e-3f, 0.9f, 0.98f, 1e-6f, decay, step);
            G.AdamW(theta.G, grad.G, m.G, v.G, 1e-3f, 0.9f, 0.98f, 1e-6f, decay, step);
        }
        Same(theta, "AdamW parameters");
        Same(m, "AdamW m");
        Same(v, "AdamW v");
    }

    [Fact]
    public void FillCopyViewsAndRoundTrips()
    {
        var g = G;
        using var t = g.Allocate(5, 7);
        Assert.All(Host(t), x => Assert.Equal(0f, x));
        g.Fill(t, 2.5f);
        Assert.All(Host(t), x => Assert.Equal(2.5f, x));
        var values = Random(14, 130);
        g.Upload(values, t.Rows(3, 2));
        Assert.Equal(values, Host(t.Rows(3, 2)));
        using var u = g.Allocate(14);
        g.Copy(t.Rows(3, 2).Reshape(14), u);
        Assert.Equal(values, Host(u));
        using var ints = g.Allocate(DType.Int32, 3);
        g.Fill(ints, 7);
        var back = new int[3];
        g.Download(ints, back);
        Assert.Equal([7, 7, 7], back);
        Assert.Throws<ArgumentException>(() => g.Upload(new float[3], u));
        Assert.Throws<ArgumentException>(() => g.Copy(t, u));
    }
}
