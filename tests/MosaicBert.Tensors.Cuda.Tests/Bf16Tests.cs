using static MosaicBert.Tensors.Cuda.Tests.Both;

namespace MosaicBert.Tensors.Cuda.Tests;

/// <summary>
/// The bf16 variants of the ops against the CPU's fp32 ops on the same inputs rounded to bf16 (so both sides start from
/// identical values). The GPU computes in fp32 and rounds each stored bf16 result once, so tolerances are set by that
/// rounding: half an ulp, up to 2⁻⁸ relative per stored value (bf16 has 8 significant bits; just above a power of two
/// the ulp is 2⁻⁷ of the value), twice that where one intermediate result is stored in bf16 too (the sum of a
/// residual LayerNorm), of the element or of the tensor's scale where an op cancels.
/// fp32 outputs of bf16 inputs (GEMMs with fp32 D, column sums, losses) keep fp32 tolerances, since bf16·bf16
/// products are exact in fp32. Conversions, dropout and AdamW's copy are checked bit for bit.
/// </summary>
public sealed class Bf16Tests
{
    private const double Bf16Relative = 1.0 / 256;   // 2⁻⁸
    private static CudaBackend G => Gpu.Backend;

    /// <summary>CPU fp32 tensor of the bf16-rounded values and the GPU bf16 tensor of the same values.</summary>
    private static Pair Bf16(float[] values, params int[] shape)
    {
        var rounded = (float[])values.Clone();
        BFloat16.Round(rounded);
        var c = Ref.Allocate(shape);
        Ref.Upload(rounded, c);
        var g = G.Allocate(DType.BFloat16, shape);
        G.Upload(values, g);   // rounded on the device
        return new Pair(c, g);
    }

    /// <summary>Values on the GPU only, as a <paramref name="dt"/> tensor (rounded to bf16 for BFloat16).</summary>
    private static Tensor OnGpu(DType dt, float[] values, params int[] shape)
    {
        var t = G.Allocate(dt, shape);
        G.Upload(values, t);
        return t;
    }

    private static Pair Bf16Zeros(params int[] shape) => new(Ref.Allocate(shape), G.Allocate(DType.BFloat16, shape));

    /// <summary>Scale max(|e_i|, floor·max|e|): relative, except where the values are tiny next to the tensor's largest.</summary>
    private static Func<float[], Func<int, double>> RelativeOrMax(double floor) => e =>
    {
        double max = Math.Max(1e-30, e.Length == 0 ? 0 : e.Max(x => Math.Abs((double)x)));
        return i => Math.Max(Math.Abs(e[i]), floor * max);
    };

    [Fact]
    public void ConversionRoundsToNearestEvenLikeTheHost()
    {
        _ = G;
        var special = new[]
        {
            0f, -0f, 1f, -1f, 1.00390625f /* a tie: 1 + 2⁻⁸ rounds to even (1) */, 1.01171875f /* tie, rounds up to 1.015625 */,
            float.Epsilon, 1e-39f, float.MaxValue, float.PositiveInfinity, float.NegativeInfinity, float.NaN, 3.3895314e38f,
        };
        var values = special.Concat(Random(10_000, 1, 1000)).ToArray();
        using var b = G.Allocate(DType.BFloat16, values.Length);
        G.Upload(values, b);
        var back = new float[values.Length];
        G.Download(b, back);
        for (int i = 0; i < values.Length; i++)
        {
            float expected = BFloat16.Round(values[i]);
            if (float.IsNaN(expected)) Assert.True(float.IsNaN(back[i]), $"element {i}: NaN must stay NaN, got {back[i]}");
            else Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(back[i]),
                $"element {i}: {values[i]:R} → GPU {back[i]:R}, host {expected:R}");
        }
        Assert.Equal(1f, BFloat16.Round(1.00390625f));
        Assert.Equal(1.015625f, BFloat16.Round(1.01171875f));

        // Convert between tensors both ways; bf16 → fp32 is exact.
        using var f = G.Allocate(values.Length);
        G.Convert(b, f);
        Assert.Equal(back.Select(BitConverter.SingleToInt32Bits), Host(f).Select(BitConverter.SingleToInt32Bits));
        using var b2 = G.Allocate(DType.BFloat16, values.Length);
        G.Upload(values, f);
        G.Convert(f, b2);
        Assert.Equal(back.Select(BitConverter.SingleToInt32Bits), Host(b2).Select(BitConverter.SingleToInt32Bits));
        G.Fill(b2, 1.01171875f);
        Assert.All(Host(b2), v => Assert.Equal(1.015625f, v));
        Assert.Throws<NotSupportedException>(() => Ref.Allocate(DType.BFloat16, 4));
    }

    [Theory]
    [InlineData(37, 53, 71)]
    [InlineData(128, 96, 768)]
    [InlineData(300, 1000, 64)]
    public void GemmsWithBf16InputsAccumulateInFp32(int m, int n, int k)
    {
        _ = G;
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
            {
                float[] av = Random(m * k, 1), bv = Random(k * n, 2), cv = Random(m * n, 3);
                using var a = Bf16(av, ta ? [k, m] : [m, k]);
                using var b = Bf16(bv, tb ? [n, k] : [k, n]);
                float[] ar = Host(a.C), br = Host(b.C);
                var scale = new double[m * n];
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++)
                    {
                        double s = 0.5 * Math.Abs(cv[i * n + j]);
                        for (int e = 0; e < k; e++)
                            s += Math.Abs((ta ? ar[e * m + i] : ar[i * k + e]) * (tb ? br[j * k + e] : br[e * n + j]));
                        scale[i * n + j] = Math.Max(s, 1e-30);
                    }
                // fp32 C with beta: the weight-gradient case (accumulate into the fp32 block).
                using var c32 = Floats(cv, m, n);
                Ref.MatMul(a.C, ta, b.C, tb, c32.C, 1, 0.5f);
                G.MatMul(a.G, ta, b.G, tb, c32.G, 1, 0.5f);
                Close(Host(c32.C), Host(c32.G), 1e-5, i => scale[i], $"bf16 GEMM → fp32 {m}×{n}×{k} ta={ta} tb={tb}");
                // bf16 C: the same, rounded once.
                using var c16 = Bf16Zeros(m, n);
                Ref.MatMul(a.C, ta, b.C, tb, c16.C);
                G.MatMul(a.G, ta, b.G, tb, c16.G);
                var expected = Host(c16.C);
                Close(expected, Host(c16.G), 1, i => 1e-5 * scale[i] + Bf16Relative * Math.Abs(expected[i]) + 1e-30,
                    $"bf16 GEMM → bf16 {m}×{n}×{k} ta={ta} tb={tb}");
            }
        using var x = Bf16(Random(64 * 96, 4), 64, 96);
        using var w = Bf16(Random(48 * 96, 5), 48, 96);
        using var bias16 = Bf16(Random(48, 6), 48);
        using var y16 = Bf16Zeros(64, 48);
        Ref.Linear(x.C, w.C, bias16.C, y16.C);
        G.Linear(x.G, w.G, bias16.G, y16.G);
        Close(y16, 2e-5 + Bf16Relative, OfMax, "bf16 Linear with a bf16 bias");
        using var bias32 = Floats(Random(48, 7), 48);
        using var y32 = Zeros(64, 48);
        Ref.Linear(x.C, w.C, bias32.C, y32.C);
        G.Linear(x.G, w.G, bias32.G, y32.G);
        Close(y32, 2e-5, OfMax, "bf16 Linear into fp32 with an fp32 bias (the logits)");
        using var wrong = Floats(Random(48 * 96, 5), 48, 96);
        Assert.Throws<ArgumentException>(() => G.MatMul(x.G, false, wrong.G, true, y32.G));   // mixed inputs
        Assert.Throws<ArgumentException>(() => G.Linear(x.G, w.G, bias32.G, y16.G));          // bias type ≠ Y type
    }

    [Fact]
    public void ElementwiseAndActivationsMatchTheCpuOnRoundedInputs()
    {
        _ = G;
        int n = 50_003;
        using var x = Bf16(Random(n, 10, 5), n);
        using var y = Bf16(Random(n, 11, 2), n);
        using var z = Bf16Zeros(n);
        Ref.Gelu(x.C, z.C); G.Gelu(x.G, z.G);
        Close(z, Bf16Relative, RelativeOrMax(1e-3), "bf16 GELU");
        Ref.Tanh(x.C, z.C); G.Tanh(x.G, z.G);
        Close(z, Bf16Relative, RelativeOrMax(1e-3), "bf16 tanh");
        Ref.GeluBackward(x.C, y.C, z.C); G.GeluBackward(x.G, y.G, z.G);
        Close(z, Bf16Relative, RelativeOrMax(1e-3), "bf16 GELU backward");
        Ref.TanhBackward(x.C, y.C, z.C); G.TanhBackward(x.G, y.G, z.G);
        Close(z, Bf16Relative, RelativeOrMax(1e-3), "bf16 tanh backward");
        Ref.Multiply(x.C, y.C, z.C); G.Multiply(x.G, y.G, z.G);
        Close(z, Bf16Relative, Relative(1e-30), "bf16 multiply (one rounding)");
        Ref.Copy(y.C, z.C); G.Copy(y.G, z.G);
        Ref.AddScaled(x.C, 0.75f, z.C); G.AddScaled(x.G, 0.75f, z.G);
        Close(z, Bf16Relative, RelativeOrMax(1e-6), "bf16 add_scaled (one rounding)");

        int rows = 37, inner = 300;
        using var g = Bf16(Random(rows * 2 * inner, 12, 4), rows, 2 * inner);
        using var h = Bf16Zeros(rows, inner);
        using var dh = Bf16(Random(rows * inner, 13), rows, inner);
        using var dg = Bf16Zeros(rows, 2 * inner);
        Ref.GatedGelu(g.C, h.C); G.GatedGelu(g.G, h.G);
        Close(h, Bf16Relative, RelativeOrMax(1e-3), "bf16 gated GELU");
        Ref.GatedGeluBackward(g.C, dh.C, dg.C); G.GatedGeluBackward(g.G, dh.G, dg.G);
        Close(dg, Bf16Relative, RelativeOrMax(1e-3), "bf16 gated GELU backward");
    }

    [Fact]
    public void DropoutInBf16AndTheRegeneratedBackwardEqualTheStoredMask()
    {
        _ = G;
        int n = 10_007;
        using var x = Bf16(Random(n, 20, 3), n);
        using var y = Bf16Zeros(n);
        using var mask = Zeros(n);
        Ref.Dropout(x.C, y.C, mask.C, 0.1f, 42, 1000);
        G.Dropout(x.G, y.G, null, 0.1f, 42, 1000);
        var expected = Host(y.C);
        BFloat16.Round(expected);
        Assert.Equal(expected, Host(y.G));
        using var dy = Floats(Random(n, 21), n);
        using var dx = Zeros(n);
        Ref.Multiply(dy.C, mask.C, dx.C);
        G.DropoutBackward(dy.G, dx.G, 0.1f, 42, 1000);
        Same(dx, "fp32 dropout backward (regenerated mask) vs the CPU's stored mask");
        using var dx2 = Zeros(n);
        Ref.DropoutBackward(dy.C, dx2.C, 0.1f, 42, 1000);
        Assert.Equal(Host(dx.C), Host(dx2.C));   // the CPU's regeneration agrees with its own stored mask
    }

    [Theory]
    [InlineData(37, 300)]    // bf16 scalar path (300 % 8 ≠ 0)
    [InlineData(64, 3072)]   // bf16 16-byte vector path
    public void FusedGatedGeluDropoutEqualsTheUnfusedPair(int rows, int inner)
    {
        _ = G;
        var gv = Random(rows * 2 * inner, 80, 4);
        var dhv = Random(rows * inner, 81);
        // fp32: bit for bit the CPU's GatedGelu then Dropout, and its backward.
        using var g = Floats(gv, rows, 2 * inner);
        using var h = Zeros(rows, inner);
        using var dh = Floats(dhv, rows, inner);
        using var dg = Zeros(rows, 2 * inner);
        Ref.GatedGeluDropout(g.C, h.C, 0.1f, 9, 0);
        G.GatedGeluDropout(g.G, h.G, 0.1f, 9, 0);
        Close(h, 4e-6, Relative(1e-30), "fused gated GELU + dropout (fp32)");
        Ref.GatedGeluDropoutBackward(g.C, dh.C, dg.C, 0.1f, 9, 0);
        G.GatedGeluDropoutBackward(g.G, dh.G, dg.G, 0.1f, 9, 0);
        // du = dh·m·v·GELU′(u), dv = dh·m·GELU(u): scale |dh|·max(1, |u|, |v|)·1.12 per element, as the unfused test.
        Close(Host(dg.C), Host(dg.G), 4e-6, i =>
        {
            int r = i / (2 * inner), c = i % (2 * inner) % inner;
            double u = gv[r * 2 * inner + c], v = gv[r * 2 * inner + inner + c];
            return Math.Abs(dhv[r * inner + c]) * 1.12 * Math.Max(1, Math.Max(Math.Abs(u), Math.Abs(v))) + 1e-30;
        }, "fused gated GELU + dropout backward (fp32)");
        // bf16: one rounding of the fp32 result; the CPU reference works on the rounded inputs.
        using var g16 = Bf16(gv, rows, 2 * inner);
        using var h16 = Bf16Zeros(rows, inner);
        using var dh16 = Bf16(dhv, rows, inner);
        using var dg16 = Bf16Zeros(rows, 2 * inner);
        Ref.GatedGeluDropout(g16.C, h16.C, 0.1f, 9, 0);
        G.GatedGeluDropout(g16.G, h16.G, 0.1f, 9, 0);
        Close(h16, Bf16Relative, RelativeOrMax(1e-3), "fused gated GELU + dropout (bf16)");
        Ref.GatedGeluDropoutBackward(g16.C, dh16.C, dg16.C, 0.1f, 9, 0);
        G.GatedGeluDropoutBackward(g16.G, dh16.G, dg16.G, 0.1f, 9, 0);
        Close(dg16, Bf16Relative, RelativeOrMax(1e-3), "fused gated GELU + dropout backward (bf16)");

        // The mask recorded as bits (a byte per thread on the vector path, atomics on the scalar ones) gives the same
        // forward and backward as the regenerated one, bit for bit, in fp32 and bf16; the bits are the keep decisions.
        int words = (rows * inner + 31) / 32;
        using var bits = G.Allocate(DType.Int32, words);
        foreach (var (gg, hh, dd, out1, make) in new (Tensor, Tensor, Tensor, Tensor, Func<Tensor>)[]
                 {
                     (g.G, h.G, dh.G, dg.G, () => G.Allocate(rows, 2 * inner)),
                     (g16.G, h16.G, dh16.G, dg16.G, () => G.Allocate(DType.BFloat16, rows, 2 * inner)),
                 })
        {
            using var hb = gg.DType == DType.BFloat16 ? G.Allocate(DType.BFloat16, rows, inner) : G.Allocate(rows, inner);
            using var dgb = make();
            G.GatedGeluDropout(gg, hb, 0.1f, 9, 0, bits);
            G.GatedGeluDropoutBackward(gg, dd, dgb, 0.1f, 9, 0, bits);
            Assert.Equal(Host(hh), Host(hb));
            Assert.Equal(Host(out1), Host(dgb));
        }
        var words32 = new int[words];
        G.Download(bits, words32);
        var mask = new float[rows * inner];
        using (var ones = G.Allocate(rows * inner))
        using (var m = G.Allocate(rows * inner))
        {
            G.Fill(ones, 1);
            G.Dropout(ones, ones, m, 0.1f, 9, 0);
            G.Download(m, mask);
        }
        for (int e = 0; e < mask.Length; e++)
            Assert.True(((words32[e >> 5] >> (e & 31)) & 1) == (mask[e] != 0 ? 1 : 0), $"keep bit of element {e}");
    }

    [Theory]
    [InlineData(200, 768, true, false, 0.1f)]    // fused bf16 with dropout (MosaicBERT)
    [InlineData(70, 128, false, true, 0.1f)]     // fused fp32 with positions (classic BERT)
    [InlineData(70, 768, true, false, 0f)]       // fused, no dropout (inference)
    [InlineData(33, 100, true, true, 0.1f)]      // not vectorizable: the three ops
    public void EmbeddingLayerNormEqualsTheThreeOps(int n, int d, bool bf16, bool withPositions, float p)
    {
        _ = G;
        var dt = bf16 ? DType.BFloat16 : DType.Float32;
        Tensor Make(float[] v, params int[] shape) => OnGpu(dt, v, shape);
        Tensor Ints(int[] v)
        {
            var t = G.Allocate(DType.Int32, v.Length);
            G.Upload(v, t);
            return t;
        }
        using var word = Make(Random(500 * d, 70, 2), 500, d);
        using var type = Make(Random(2 * d, 71), 2, d);
        using var pos = Make(Random(64 * d, 72), 64, d);
        using var gamma = Make(Random(d, 73, 2), d);
        using var beta = Make(Random(d, 74), d);
        using var ids = Ints(RandomInts(n, 75, 500));
        using var types = Ints(RandomInts(n, 76, 2));
        using var positions = Ints(RandomInts(n, 77, 64));
        Tensor[] Run(bool fused)
        {
            var sum = G.Allocate(dt, n, d);
            var y = G.Allocate(dt, n, d);
            var mean = G.Allocate(n);
            var rstd = G.Allocate(n);
            if (fused)
                G.EmbeddingLayerNorm(ids, types, withPositions ? positions : null, word, type, withPositions ? pos : null, gamma, beta, 1e-12f,
                    sum, y, mean, rstd, p, 91, 3);
            else
            {
                G.EmbeddingSum(ids, types, withPositions ? positions : null, word, type, withPositions ? pos : null, sum);
                G.LayerNorm(sum, null, gamma, beta, 1e-12f, sum, y, mean, rstd);
                if (p > 0) G.Dropout(y, y, null, p, 91, 3);
            }
            return [sum, y, mean, rstd];
        }
        var fusedOut = Run(true);
        var threeOps = Run(false);
        string[] names = ["sum", "y", "mean", "rstd"];
        for (int i = 0; i < 4; i++)
        {
            Assert.True(Host(threeOps[i]).SequenceEqual(Host(fusedOut[i])), $"{names[i]} differs from the three ops");
            fusedOut[i].Dispose();
            threeOps[i].Dispose();
        }
    }

    [Theory]
    [InlineData(300, 768, true)]    // fused (vectorized) bf16
    [InlineData(300, 768, false)]   // fused fp32
    [InlineData(33, 100, true)]     // not vectorizable: the unfused pair
    public void DropoutResidualLayerNormEqualsDropoutThenLayerNorm(int n, int d, bool bf16)
    {
        _ = G;
        var dt = bf16 ? DType.BFloat16 : DType.Float32;
        Tensor Make(float[] v, params int[] shape) => OnGpu(dt, v, shape);
        var xv = Random(n * d, 60, 3);
        using var x = Make(xv, n, d);
        using var res = Make(Random(n * d, 61, 3), n, d);
        using var gamma = Make(Random(d, 62, 2), d);
        using var beta = Make(Random(d, 63), d);
        using var sum = G.Allocate(dt, n, d);
        using var y = G.Allocate(dt, n, d);
        using var mean = G.Allocate(n);
        using var rstd = G.Allocate(n);
        G.DropoutResidualLayerNorm(x, 0.1f, 77, 5, res, gamma, beta, 1e-12f, sum, y, mean, rstd);
        using (var original = Make(xv, n, d)) Assert.Equal(Host(original), Host(x));   // x is left as it is
        using var dropped = G.Allocate(dt, n, d);
        using var sum2 = G.Allocate(dt, n, d);
        using var y2 = G.Allocate(dt, n, d);
        using var mean2 = G.Allocate(n);
        using var rstd2 = G.Allocate(n);
        G.Dropout(x, dropped, null, 0.1f, 77, 5);
        G.LayerNorm(dropped, res, gamma, beta, 1e-12f, sum2, y2, mean2, rstd2);
        // The same kernel arithmetic after the same rounding of dropout(x): equal bit for bit.
        Assert.Equal(Host(sum2), Host(sum));
        Assert.Equal(Host(mean2), Host(mean));
        Assert.Equal(Host(rstd2), Host(rstd));
        Assert.Equal(Host(y2), Host(y));
    }

    [Theory]
    [InlineData(1, 768)]
    [InlineData(100, 768)]
    [InlineData(33, 100)]
    [InlineData(5000, 512)]
    [InlineData(700, 2304)]
    public void LayerNormInBf16HasFp32Statistics(int n, int d)
    {
        _ = G;
        using var x = Bf16(Random(n * d, 30, 3), n, d);
        using var gamma = Bf16(Random(d, 31, 2), d);
        using var beta = Bf16(Random(d, 32), d);
        using var sum = Bf16Zeros(n, d);
        using var y = Bf16Zeros(n, d);
        using var mean = Zeros(n);
        using var rstd = Zeros(n);
        Ref.LayerNorm(x.C, null, gamma.C, beta.C, 1e-12f, sum.C, y.C, mean.C, rstd.C);
        G.LayerNorm(x.G, null, gamma.G, beta.G, 1e-12f, sum.G, y.G, mean.G, rstd.G);
        Close(mean, 1e-5, OfMax, "bf16 LayerNorm mean (fp32)");
        Close(rstd, 1e-5, Relative(), "bf16 LayerNorm rstd (fp32)");
        Close(y, Bf16Relative, RelativeOrMax(1e-2), "bf16 LayerNorm output");

        // With a residual the stored sum is rounded to bf16 first; the CPU gets that rounded sum as its input.
        using var res = Bf16(Random(n * d, 33, 3), n, d);
        using var sumG = G.Allocate(DType.BFloat16, n, d);
        G.LayerNorm(x.G, res.G, gamma.G, beta.G, 1e-12f, sumG, y.G, mean.G, rstd.G);
        var roundedSum = Host(sumG);
        var exactSum = Host(x.C).Zip(Host(res.C), (a, b) => a + b).ToArray();
        Close(exactSum, roundedSum, Bf16Relative, i => Math.Abs(exactSum[i]) + 1e-30, "bf16 residual sum (one rounding)");
        Ref.Upload(roundedSum, sum.C);
        Ref.LayerNorm(sum.C, null, gamma.C, beta.C, 1e-12f, sum.C, y.C, mean.C, rstd.C);
        Close(y, 2 * Bf16Relative, RelativeOrMax(1e-2), "bf16 residual LayerNorm output");

        using var dy = Bf16(Random(n * d, 34), n, d);
        using var dx = Bf16Zeros(n, d);
        using var dGamma = Zeros(d);
        using var dBeta = Zeros(d);
        Ref.LayerNormBackward(dy.C, sum.C, mean.C, rstd.C, gamma.C, dx.C, dGamma.C, dBeta.C);
        G.LayerNormBackward(dy.G, sumG, mean.G, rstd.G, gamma.G, dx.G, dGamma.G, dBeta.G);
        Close(dx, 2 * Bf16Relative, OfMax, "bf16 LayerNorm dx");
        Close(dGamma, 1e-4, OfMax, "bf16 LayerNorm dγ (fp32)");
        Close(dBeta, 1e-5, OfMax, "bf16 LayerNorm dβ (fp32)");
        using var db = Zeros(d);
        Ref.SumRowsInto(dy.C, db.C);
        G.SumRowsInto(dy.G, db.G);
        Close(db, 1e-5, OfMax, "bf16 SumRowsInto (fp32)");
    }

    [Fact]
    public void RowOpsLossesAndEmbeddingsInBf16()
    {
        _ = G;
        int vocab = 50, d = 64, n = 300;
        var idv = RandomInts(n, 40, vocab);
        var typev = RandomInts(n, 41, 2);
        using var ids = Ints(idv);
        using var types = Ints(typev);
        using var word = Bf16(Random(vocab * d, 42), vocab, d);
        using var type = Bf16(Random(2 * d, 43), 2, d);
        using var emb = Bf16Zeros(n, d);
        Ref.EmbeddingSum(ids.C, types.C, null, word.C, type.C, null, emb.C);
        G.EmbeddingSum(ids.G, types.G, null, word.G, type.G, null, emb.G);
        Close(emb, Bf16Relative, RelativeOrMax(1e-6), "bf16 embedding sum");

        using var gathered = Bf16Zeros(40, d);
        var rowsv = RandomInts(40, 44, n);
        using var rows = Ints(rowsv);
        Ref.GatherRows(emb.C, rows.C, gathered.C);
        G.GatherRows(emb.G, rows.G, gathered.G);
        Close(gathered, Bf16Relative, RelativeOrMax(1e-6), "bf16 gather");
        using var into = Bf16(Random(n * d, 45), n, d);
        Ref.ScatterAddRows(gathered.C, rows.C, into.C);
        G.ScatterAddRows(gathered.G, rows.G, into.G);
        Close(into, Bf16Relative, OfMax, "bf16 scatter-add (repeated rows summed in fp32, rounded once)");

        // Long segments (one token type holds ~150 rows; id 7 repeated 200 times) take the split-piece scatter.
        for (int i = 0; i < 200; i++) idv[i] = 7;
        G.Upload(idv, ids.G);
        Ref.Upload(idv, ids.C);
        using var dOut = Bf16(Random(n * d, 46), n, d);
        using var dWord = Zeros(vocab, d);
        using var dType = Zeros(2, d);
        Ref.EmbeddingBackward(ids.C, types.C, null, dOut.C, dWord.C, dType.C, null);
        G.EmbeddingBackward(ids.G, types.G, null, dOut.G, dWord.G, dType.G, null);
        Close(dWord, 1e-5, OfMax, "embedding backward, bf16 rows into fp32 tables");
        Close(dType, 1e-5, OfMax, "embedding backward (types)");

        int k = 17, v = 1000;
        using var logits = Floats(Random(k * v, 47, 8), k, v);
        using var labels = Ints(RandomInts(k, 48, v));
        using var losses = Zeros(k);
        using var grad = new Pair(Ref.Allocate(k, v), G.Allocate(DType.BFloat16, k, v));
        Ref.CrossEntropy(logits.C, labels.C, losses.C, grad.C, 1f / k);
        G.CrossEntropy(logits.G, labels.G, losses.G, grad.G, 1f / k);
        Close(losses, 1e-5, Relative(1), "cross-entropy losses (fp32)");
        Close(grad, Bf16Relative + 1e-5, Relative(1e-9), "cross-entropy gradient in bf16");
    }

    [Fact]
    public void AdamWWritesTheBf16CopyFromTheSameUpdate()
    {
        _ = G;
        int n = 100_001;
        using var p = Floats(Random(n, 50), n);
        using var g = Floats(Random(n, 51, 0.1f), n);
        using var m = Zeros(n);
        using var v = Zeros(n);
        using var copy = G.Allocate(DType.BFloat16, n);
        for (int step = 1; step <= 3; step++)
        {
            Ref.AdamW(p.C, g.C, m.C, v.C, 1e-3f, 0.9f, 0.98f, 1e-6f, 1e-5f, step);
            G.AdamW(p.G, g.G, m.G, v.G, 1e-3f, 0.9f, 0.98f, 1e-6f, 1e-5f, step, copy);
        }
        Same(p, "AdamW parameters (fused bf16 copy)");
        Same(m, "AdamW m");
        Same(v, "AdamW v");
        var expected = Host(p.G);
        BFloat16.Round(expected);
        Assert.Equal(expected, Host(copy));
    }

    [Fact]
    public void AttentionAcceptsBf16()
    {
        _ = G;
        int[] lengths = [70, 5, 128];
        int heads = 4, dh = 64, d = heads * dh, n = lengths.Sum();
        var cu = new int[lengths.Length + 1];
        for (int b = 0; b < lengths.Length; b++) cu[b + 1] = cu[b] + lengths[b];
        var pos = new int[n];
        for (int b = 0; b < lengths.Length; b++)
            for (int t = 0; t < lengths[b]; t++) pos[cu[b] + t] = t;
        float scale = 1f / MathF.Sqrt(dh);
        using var qkv = Bf16(Random(n * 3 * d, 60, 2), n, 3 * d);
        using var cuT = Ints(cu);
        using var posT = Ints(pos);
        using var slopes = Floats(Enumerable.Range(0, heads).Select(h => (float)Math.Pow(2, -(h + 1))).ToArray(), heads);
        using var ctx = Bf16Zeros(n, d);
        using var lse = Zeros(n, heads);
        Ref.Attention(qkv.C, cuT.C, posT.C, slopes.C, scale, ctx.C, lse.C);
        G.Attention(qkv.G, cuT.G, posT.G, slopes.G, scale, ctx.G, lse.G);
        Close(ctx, Bf16Relative, OfMax, "bf16 attention context");
        Close(lse, 2e-5, Relative(1), "bf16 attention log-sum-exp (fp32)");
        using var dCtx = Bf16(Random(n * d, 61), n, d);
        using var dQkv = Bf16Zeros(n, 3 * d);
        // The CPU reference gets the context the GPU stored (rounded), as the backward pass of a bf16 model would.
        Ref.Upload(Host(ctx.G), ctx.C);
        Ref.AttentionBackward(qkv.C, cuT.C, posT.C, slopes.C, scale, ctx.C, lse.C, dCtx.C, dQkv.C);
        G.AttentionBackward(qkv.G, cuT.G, posT.G, slopes.G, scale, ctx.G, lse.G, dCtx.G, dQkv.G);
        Close(dQkv, 2 * Bf16Relative, OfMax, "bf16 attention dQkv");
    }

    [Fact]
    public void IndexOpsUseTheUploadedValuesAndStillRejectBadIndices()
    {
        _ = G;
        int d = 8;
        using var table = Floats(Random(10 * d, 70), 10, d);
        using var idx = G.Allocate(DType.Int32, 6);
        using var outG = G.Allocate(4, d);
        G.Upload([1, 2, 3, 4, 5, 6], idx);
        G.GatherRows(table.G, idx.Rows(2, 4), outG);        // a view inside the uploaded range
        var t = Host(table.G);
        var got = Host(outG);
        for (int r = 0; r < 4; r++) Assert.Equal(t.AsSpan((3 + r) * d, d).ToArray(), got.AsSpan(r * d, d).ToArray());
        G.Upload([9, 8, 7, 6, 5, 4], idx);                  // a new upload replaces the host copy
        G.GatherRows(table.G, idx.Rows(0, 4), outG);
        got = Host(outG);
        for (int r = 0; r < 4; r++) Assert.Equal(t.AsSpan((9 - r) * d, d).ToArray(), got.AsSpan(r * d, d).ToArray());
        using var other = G.Allocate(DType.Int32, 6);
        G.Upload([0, 0, 0, 0, 0, 0], other);
        G.Copy(other, idx);                                  // written on the device: read back, not the stale host copy
        G.GatherRows(table.G, idx.Rows(0, 4), outG);
        got = Host(outG);
        for (int r = 0; r < 4; r++) Assert.Equal(t.AsSpan(0, d).ToArray(), got.AsSpan(r * d, d).ToArray());
        G.Upload([0, 1, 2, 10, 3, 4], idx);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => G.GatherRows(table.G, idx.Rows(0, 4), outG));
        Assert.Contains("10", e.Message);
    }
}
