using MosaicBert.Tensors;
using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Tensors.Tests;

/// <summary>
/// Every CPU kernel of the backend against a plain scalar reference in double precision. Tolerances: fp32 results
/// of O(1) values after reductions over at most a few hundred terms agree with double to ~1e-6 relative; each test
/// states its bound.
/// </summary>
public sealed class CpuBackendTests
{
    private static readonly CpuBackend s_cpu = new(threads: 2);

    private static float[] Random(int n, int seed, float scale = 1)
    {
        var r = new Random(seed);
        return [.. Enumerable.Range(0, n).Select(_ => (float)(scale * (r.NextDouble() * 2 - 1)))];
    }

    private static Tensor Upload(float[] values, params int[] shape)
    {
        var t = s_cpu.Allocate(shape);
        s_cpu.Upload(values, t);
        return t;
    }

    private static Tensor UploadInts(int[] values)
    {
        var t = s_cpu.Allocate(DType.Int32, values.Length);
        s_cpu.Upload(values, t);
        return t;
    }

    private static void Near(double expected, float actual, double tolerance, string what)
    {
        Assert.True(Math.Abs(expected - actual) <= tolerance * Math.Max(1, Math.Abs(expected)),
            $"{what}: expected {expected}, got {actual} (tolerance {tolerance}, relative above 1)");
    }

    /// <summary>Φ(x) in double: erfc by its continued fraction for |x| ≥ 2.5/√2, by the Taylor series of erf otherwise.</summary>
    internal static double Phi(double x) => 0.5 * Erfc(-x / Math.Sqrt(2));

    internal static double Erfc(double z)
    {
        if (z < 0) return 2 - Erfc(-z);
        if (z < 2.5)
        {
            // erf(z) = 2/√π Σ (−1)^n z^(2n+1) / (n! (2n+1))
            double term = z, sum = z;
            for (int n = 1; n < 80; n++)
            {
                term *= -z * z / n;
                sum += term / (2 * n + 1);
            }
            return 1 - 2 / Math.Sqrt(Math.PI) * sum;
        }
        // erfc(z) = exp(−z²)/√π · 1/(z + 1/2/(z + 1/(z + 3/2/(z + ...)))), evaluated from the tail.
        double f = z;
        for (int k = 60; k >= 1; k--) f = z + k / 2.0 / f;
        return Math.Exp(-z * z) / Math.Sqrt(Math.PI) / f;
    }

    [Fact]
    public void ReferenceErfcIsAccurate()
    {
        // Known values: erfc(0.5) = 0.4795001221869535, erfc(1) = 0.15729920705028513, erfc(3) = 2.209049699858544e-5.
        Assert.Equal(0.4795001221869535, Erfc(0.5), 1e-14);
        Assert.Equal(0.15729920705028513, Erfc(1), 1e-14);
        Assert.Equal(2.209049699858544e-5, Erfc(3), 1e-18);
    }

    [Fact]
    public void GeluMatchesTheExactFormulaWithSmallRelativeError()
    {
        // Every length 0..40 exercises the vector body and the scalar tail; values cover the deep negative tail
        // where GELU is tiny, so the bound is relative. The erfc fit is good to 1.2e-7, but exp(−z² + ...) is
        // evaluated in fp32, where −z² = −x²/2 carries a rounding of about x²/2·6e-8 that becomes relative error
        // of the result: bound 1e-6 + 1e-7·x². (PyTorch's fp32 1 + erf(x/√2) loses far more out there.)
        for (int n = 0; n <= 40; n++)
        {
            var x = Random(n, n, scale: 9);
            var y = new float[n];
            Activations.Gelu(x, y);
            for (int i = 0; i < n; i++)
            {
                double exact = x[i] * Phi(x[i]);
                double bound = (1e-6 + 1e-7 * x[i] * x[i]) * Math.Abs(exact) + 1e-30;
                Assert.True(Math.Abs(exact - y[i]) <= bound, $"GELU({x[i]}) = {exact}, got {y[i]}");
            }
        }
    }

    [Fact]
    public void GatedGeluAppliesGeluToTheFirstHalf()
    {
        int n = 3, inner = 11;
        var g = Random(n * 2 * inner, 5, 3);
        using var gt = Upload(g, n, 2 * inner);
        using var h = s_cpu.Allocate(n, inner);
        s_cpu.GatedGelu(gt, h);
        var hs = s_cpu.Span(h);
        for (int r = 0; r < n; r++)
            for (int i = 0; i < inner; i++)
            {
                double u = g[r * 2 * inner + i], v = g[r * 2 * inner + inner + i];
                Near(u * Phi(u) * v, hs[r * inner + i], 1e-6, $"h[{r},{i}]");
            }
    }

    [Fact]
    public void LayerNormWithResidualMatchesReference()
    {
        int n = 5, d = 37;
        var x = Random(n * d, 1, 4);
        var res = Random(n * d, 2, 4);
        var gamma = Random(d, 3);
        var beta = Random(d, 4);
        using var xt = Upload(x, n, d);
        using var rt = Upload(res, n, d);
        using var gt = Upload(gamma, d);
        using var bt = Upload(beta, d);
        using var sum = s_cpu.Allocate(n, d);
        using var y = s_cpu.Allocate(n, d);
        using var mean = s_cpu.Allocate(n);
        using var rstd = s_cpu.Allocate(n);
        s_cpu.LayerNorm(xt, rt, gt, bt, 1e-12f, sum, y, mean, rstd);
        for (int r = 0; r < n; r++)
        {
            var row = Enumerable.Range(0, d).Select(i => (double)x[r * d + i] + res[r * d + i]).ToArray();
            double mu = row.Average(), variance = row.Select(v => (v - mu) * (v - mu)).Average(), inv = 1 / Math.Sqrt(variance + 1e-12);
            Near(mu, s_cpu.Span(mean)[r], 1e-6, "mean");
            Near(inv, s_cpu.Span(rstd)[r], 1e-5, "rstd");
            for (int i = 0; i < d; i++)
            {
                Near(row[i], s_cpu.Span(sum)[r * d + i], 1e-6, "sum");
                Near((row[i] - mu) * inv * gamma[i] + beta[i], s_cpu.Span(y)[r * d + i], 1e-5, $"y[{r},{i}]");
            }
        }
    }

    [Theory]
    [InlineData(new[] { 5, 3 }, 3, 4)]      // two sequences, non-power-of-two heads
    [InlineData(new[] { 1, 70, 130 }, 2, 8)] // a single token, and sequences longer than one key tile (64)
    public void AttentionMatchesExplicitSoftmaxWithAlibi(int[] lengths, int heads, int dh)
    {
        int d = heads * dh, n = lengths.Sum();
        var qkv = Random(n * 3 * d, 7, 2);
        var cu = new int[lengths.Length + 1];
        for (int b = 0; b < lengths.Length; b++) cu[b + 1] = cu[b] + lengths[b];
        // Padded columns with a hole in the second sequence, so distances are not just token index differences.
        var pos = new int[n];
        for (int b = 0; b < lengths.Length; b++)
            for (int t = 0; t < lengths[b]; t++) pos[cu[b] + t] = t + (b == 1 && t > 0 ? 1 : 0);
        var slopes = Enumerable.Range(0, heads).Select(h => (float)Math.Pow(2, -(h + 1))).ToArray();
        float scale = 1f / MathF.Sqrt(dh);
        using var qt = Upload(qkv, n, 3 * d);
        using var ct = UploadInts(cu);
        using var pt = UploadInts(pos);
        using var st = Upload(slopes, heads);
        using var ctx = s_cpu.Allocate(n, d);
        using var lse = s_cpu.Allocate(n, heads);
        s_cpu.Attention(qt, ct, pt, st, scale, ctx, lse);
        for (int b = 0; b < lengths.Length; b++)
            for (int i = cu[b]; i < cu[b + 1]; i++)
                for (int h = 0; h < heads; h++)
                {
                    var scores = new double[lengths[b]];
                    for (int j = cu[b]; j < cu[b + 1]; j++)
                    {
                        double dot = 0;
                        for (int e = 0; e < dh; e++) dot += (double)qkv[i * 3 * d + h * dh + e] * qkv[j * 3 * d + d + h * dh + e];
                        scores[j - cu[b]] = dot * scale - slopes[h] * Math.Abs(pos[i] - pos[j]);
                    }
                    double max = scores.Max(), z = scores.Sum(s => Math.Exp(s - max));
                    Near(max + Math.Log(z), s_cpu.Span(lse)[i * heads + h], 1e-5, $"lse[{i},{h}]");
                    for (int e = 0; e < dh; e++)
                    {
                        double o = 0;
                        for (int j = cu[b]; j < cu[b + 1]; j++) o += Math.Exp(scores[j - cu[b]] - max) / z * qkv[j * 3 * d + 2 * d + h * dh + e];
                        Near(o, s_cpu.Span(ctx)[i * d + h * dh + e], 1e-5, $"ctx[{i},{h},{e}]");
                    }
                }
    }

    [Fact]
    public void CrossEntropyLossAndGradient()
    {
        int k = 4, v = 50;
        var logits = Random(k * v, 9, 6);
        int[] labels = [0, 49, 17, 3];
        using var lt = Upload(logits, k, v);
        using var yt = UploadInts(labels);
        using var loss = s_cpu.Allocate(k);
        using var grad = s_cpu.Allocate(k, v);
        s_cpu.CrossEntropy(lt, yt, loss, grad, gradientScale: 0.25f);
        for (int r = 0; r < k; r++)
        {
            var row = logits.AsSpan(r * v, v).ToArray().Select(x => (double)x).ToArray();
            double max = row.Max(), lse = max + Math.Log(row.Sum(x => Math.Exp(x - max)));
            Near(lse - row[labels[r]], s_cpu.Span(loss)[r], 1e-6, $"loss[{r}]");
            for (int c = 0; c < v; c++)
                Near(0.25 * (Math.Exp(row[c] - lse) - (c == labels[r] ? 1 : 0)), s_cpu.Span(grad)[r * v + c], 1e-6, $"grad[{r},{c}]");
        }
        using var bad = UploadInts([0, 50, 1, 2]);
        Assert.Throws<ArgumentOutOfRangeException>(() => s_cpu.CrossEntropy(lt, bad, loss));
    }

    [Fact]
    public void EmbeddingSumGatherScatterAndLinear()
    {
        using var w = Upload(Random(10 * 4, 1), 10, 4);
        using var t = Upload(Random(2 * 4, 2), 2, 4);
        using var ids = UploadInts([3, 9, 0]);
        using var types = UploadInts([1, 0, 1]);
        using var o = s_cpu.Allocate(3, 4);
        s_cpu.EmbeddingSum(ids, types, null, w, t, null, o);
        Assert.Equal(s_cpu.Span(w)[9 * 4 + 2] + s_cpu.Span(t)[0 * 4 + 2], s_cpu.Span(o)[1 * 4 + 2]);
        using var badIds = UploadInts([3, 10, 0]);
        Assert.Throws<ArgumentOutOfRangeException>(() => s_cpu.EmbeddingSum(badIds, types, null, w, t, null, o));

        using var rows = UploadInts([2, 0]);
        using var g = s_cpu.Allocate(2, 4);
        s_cpu.GatherRows(o, rows, g);
        Assert.Equal(s_cpu.Span(o).Slice(8, 4).ToArray(), s_cpu.Span(g).Slice(0, 4).ToArray());
        using var back = s_cpu.Allocate(3, 4);
        s_cpu.ScatterRows(g, rows, back);
        Assert.Equal(s_cpu.Span(o).Slice(0, 4).ToArray(), s_cpu.Span(back).Slice(0, 4).ToArray());
        Assert.All(s_cpu.Span(back).Slice(4, 4).ToArray(), x => Assert.Equal(0f, x));

        // Linear: y = x·Wᵀ + b
        var xs = Random(3 * 5, 3);
        var ws = Random(2 * 5, 4);
        var bs = Random(2, 5);
        using var x = Upload(xs, 3, 5);
        using var wt = Upload(ws, 2, 5);
        using var bt = Upload(bs, 2);
        using var y = s_cpu.Allocate(3, 2);
        s_cpu.Linear(x, wt, bt, y);
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 2; c++)
                Near(Enumerable.Range(0, 5).Sum(e => (double)xs[r * 5 + e] * ws[c * 5 + e]) + bs[c], s_cpu.Span(y)[r * 2 + c], 1e-6, "linear");
    }
}
