using MosaicBert.Tensors;
using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Tensors.Tests;

/// <summary>
/// The CPU backward and training kernels, each checked two ways: against a scalar double-precision evaluation of the
/// formula documented in <see cref="Backend"/> (tight tolerances, stated per test), and, for the backward passes,
/// against central finite differences of small double-precision forward references written here. For the latter,
/// the finite difference (x ± h with h = 1e-5 on O(1) inputs, in double) is exact to ~1e-9 (truncation h²·f‴ ~ 1e-10,
/// cancellation 1e-16·|L|/h ≲ 1e-8), while the fp32 kernels, whose reductions run over at most a few hundred terms,
/// are good to ~1e-6 relative (measured: ≤ 4e-7 on these cases); <see cref="FdTolerance"/> = 1e-5 (relative above 1)
/// leaves a margin of more than ten and catches any wrong term of the math.
/// </summary>
public sealed class CpuBackwardTests
{
    private const double FdTolerance = 1e-5;
    private const double FdStep = 1e-5;

    private static readonly CpuBackend s_cpu = new(threads: 2);

    // ---- helpers ----

    private static float[] Random(int n, int seed, float scale = 1)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(scale * (r.NextDouble() * 2 - 1));
        return a;
    }

    private static Tensor Upload(float[] values, params int[] shape) => Upload(s_cpu, values, shape);

    private static Tensor Upload(CpuBackend backend, float[] values, params int[] shape)
    {
        var t = backend.Allocate(shape);
        backend.Upload(values, t);
        return t;
    }

    private static Tensor UploadInts(int[] values) => UploadInts(s_cpu, values);

    private static Tensor UploadInts(CpuBackend backend, int[] values)
    {
        var t = backend.Allocate(DType.Int32, values.Length);
        backend.Upload(values, t);
        return t;
    }

    private static float[] Get(Tensor t) => ((CpuBackend)t.Backend).Span(t).ToArray();

    private static double[] ToDouble(float[] a) => Array.ConvertAll(a, x => (double)x);

    /// <summary>|expected − actual| ≤ tolerance·max(1, |expected|).</summary>
    private static void Near(double expected, double actual, double tolerance, string what)
    {
        Assert.True(Math.Abs(expected - actual) <= tolerance * Math.Max(1, Math.Abs(expected)),
            $"{what}: expected {expected}, got {actual} (tolerance {tolerance}, relative above 1)");
    }

    private static void AllNear(double[] expected, float[] actual, double tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Near(expected[i], actual[i], tolerance, $"{what}[{i}]");
    }

    /// <summary>∂loss/∂x[k] by central differences in double.</summary>
    private static double CentralDifference(Func<double> loss, double[] x, int k, double h = FdStep)
    {
        double saved = x[k];
        x[k] = saved + h;
        double plus = loss();
        x[k] = saved - h;
        double minus = loss();
        x[k] = saved;
        return (plus - minus) / (2 * h);
    }

    private static void AssertBitwiseEqual(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]),
                $"{what}[{i}]: {expected[i]} vs {actual[i]}");
    }

    private static double Phi(double x) => CpuBackendTests.Phi(x);
    private static double Gelu(double x) => x * Phi(x);
    private static double GeluPrime(double x) => Phi(x) + x * Math.Exp(-0.5 * x * x) / Math.Sqrt(2 * Math.PI);

    // ---- SumRowsInto ----

    [Theory]
    [InlineData(1, 5)]
    [InlineData(150, 37)]   // more rows than one 64-row tile; a width with a scalar tail
    [InlineData(70, 200)]   // several column tiles
    public void SumRowsIntoAddsColumnSums(int rows, int width)
    {
        var dy = Random(rows * width, 11, 3);
        var db0 = Random(width, 12);
        using var dyt = Upload(dy, rows, width);
        using var dbt = Upload(db0, width);
        s_cpu.SumRowsInto(dyt, dbt);
        var db = Get(dbt);
        // Two-level float summation: error ≤ (64 + rows/64)·6e-8·(|db0| + Σ|dy|) ≤ 1e-5 of it here.
        for (int c = 0; c < width; c++)
        {
            double sum = db0[c], abs = Math.Abs(db0[c]);
            for (int r = 0; r < rows; r++) { sum += dy[r * width + c]; abs += Math.Abs(dy[r * width + c]); }
            Assert.True(Math.Abs(sum - db[c]) <= 1e-5 * abs, $"db[{c}]: expected {sum}, got {db[c]}");
        }
    }

    [Fact]
    public void SumRowsIntoIsTheSameOnAnyThreadCount()
    {
        int rows = 300, width = 1003;
        var dy = Random(rows * width, 13);
        float[]? first = null;
        foreach (int threads in new[] { 1, 2, 3 })
        {
            using var cpu = new CpuBackend(threads);
            using var dyt = Upload(cpu, dy, rows, width);
            using var db = cpu.Allocate(width);
            cpu.SumRowsInto(dyt, db);
            var result = Get(db);
            if (first is null) first = result;
            else AssertBitwiseEqual(first, result, $"db with {threads} threads");
        }
    }

    // ---- LayerNorm ----

    /// <summary>y = LayerNorm(x + residual)·γ + β in double (biased variance).</summary>
    private static double[] LayerNormRef(double[] x, double[] res, double[] gamma, double[] beta, int n, int d, double eps)
    {
        var y = new double[n * d];
        for (int r = 0; r < n; r++)
        {
            double mu = 0;
            for (int i = 0; i < d; i++) mu += x[r * d + i] + res[r * d + i];
            mu /= d;
            double var = 0;
            for (int i = 0; i < d; i++) { double c = x[r * d + i] + res[r * d + i] - mu; var += c * c; }
            double inv = 1 / Math.Sqrt(var / d + eps);
            for (int i = 0; i < d; i++) y[r * d + i] = (x[r * d + i] + res[r * d + i] - mu) * inv * gamma[i] + beta[i];
        }
        return y;
    }

    private sealed class LayerNormCase : IDisposable
    {
        public readonly int N, D;
        public readonly float[] X, Res, Gamma, Beta, Dy;
        public readonly Tensor Sum, Mean, Rstd, GammaT, DyT;
        public const float Eps = 1e-5f;

        public LayerNormCase(int n, int d, int seed)
        {
            N = n; D = d;
            X = Random(n * d, seed, 2);
            Res = Random(n * d, seed + 1, 2);
            Gamma = Random(d, seed + 2, 1.5f);
            Beta = Random(d, seed + 3);
            Dy = Random(n * d, seed + 4);
            using var xt = Upload(X, n, d);
            using var rt = Upload(Res, n, d);
            GammaT = Upload(Gamma, d);
            using var bt = Upload(Beta, d);
            using var y = s_cpu.Allocate(n, d);
            Sum = s_cpu.Allocate(n, d);
            Mean = s_cpu.Allocate(n);
            Rstd = s_cpu.Allocate(n);
            s_cpu.LayerNorm(xt, rt, GammaT, bt, Eps, Sum, y, Mean, Rstd);
            DyT = Upload(Dy, n, d);
        }

        public (float[] dx, float[] dGamma, float[] dBeta) Backward(float[]? dx0 = null, float[]? dg0 = null, float[]? db0 = null, bool accumulate = false)
        {
            using var dx = Upload(dx0 ?? new float[N * D], N, D);
            using var dg = Upload(dg0 ?? new float[D], D);
            using var db = Upload(db0 ?? new float[D], D);
            s_cpu.LayerNormBackward(DyT, Sum, Mean, Rstd, GammaT, dx, dg, db, accumulate);
            return (Get(dx), Get(dg), Get(db));
        }

        public void Dispose()
        {
            Sum.Dispose(); Mean.Dispose(); Rstd.Dispose(); GammaT.Dispose(); DyT.Dispose();
        }
    }

    [Theory]
    [InlineData(3, 8)]
    [InlineData(70, 37)]  // more rows than one 64-row tile, a scalar tail
    [InlineData(5, 160)]  // several column tiles
    public void LayerNormBackwardMatchesTheFormula(int n, int d)
    {
        using var c = new LayerNormCase(n, d, 21);
        var (dx, dg, db) = c.Backward();
        var sum = Get(c.Sum);
        var mean = Get(c.Mean);
        var rstd = Get(c.Rstd);
        var edg = new double[d];
        var edb = new double[d];
        // The formula in double from the kernel's own (fp32) sum, μ and rstd: only the backward's rounding differs,
        // ~1e-6 relative after sums of ≤ 160 terms; bound 1e-5 (relative above 1).
        for (int r = 0; r < n; r++)
        {
            var xh = new double[d];
            var g = new double[d];
            double meanG = 0, meanGX = 0;
            for (int i = 0; i < d; i++)
            {
                xh[i] = ((double)sum[r * d + i] - mean[r]) * rstd[r];
                g[i] = (double)c.Dy[r * d + i] * c.Gamma[i];
                meanG += g[i] / d;
                meanGX += g[i] * xh[i] / d;
                edg[i] += c.Dy[r * d + i] * xh[i];
                edb[i] += c.Dy[r * d + i];
            }
            for (int i = 0; i < d; i++)
                Near(rstd[r] * (g[i] - meanG - xh[i] * meanGX), dx[r * d + i], 1e-5, $"dx[{r},{i}]");
        }
        AllNear(edg, dg, 1e-5, "dGamma");
        AllNear(edb, db, 1e-5, "dBeta");
    }

    [Fact]
    public void LayerNormBackwardMatchesFiniteDifferences()
    {
        int n = 5, d = 13;
        using var c = new LayerNormCase(n, d, 31);
        var (dx, dg, db) = c.Backward();
        var x = ToDouble(c.X);
        var res = ToDouble(c.Res);
        var gamma = ToDouble(c.Gamma);
        var beta = ToDouble(c.Beta);
        var w = ToDouble(c.Dy);
        double Loss()
        {
            var y = LayerNormRef(x, res, gamma, beta, n, d, LayerNormCase.Eps);
            double l = 0;
            for (int i = 0; i < y.Length; i++) l += w[i] * y[i];
            return l;
        }
        for (int k = 0; k < n * d; k++)
        {
            Near(CentralDifference(Loss, x, k), dx[k], FdTolerance, $"dx[{k}]");
            Near(CentralDifference(Loss, res, k), dx[k], FdTolerance, $"dresidual[{k}]");
        }
        for (int i = 0; i < d; i++)
        {
            Near(CentralDifference(Loss, gamma, i), dg[i], FdTolerance, $"dGamma[{i}]");
            Near(CentralDifference(Loss, beta, i), db[i], FdTolerance, $"dBeta[{i}]");
        }
    }

    [Fact]
    public void LayerNormBackwardOverwritesOrAccumulatesDxAndAlwaysAccumulatesParameters()
    {
        int n = 4, d = 29;
        using var c = new LayerNormCase(n, d, 41);
        var (dx, dg, db) = c.Backward();
        var dx0 = Random(n * d, 42, 5);
        var dg0 = Random(d, 43, 5);
        var db0 = Random(d, 44, 5);

        var (ox, og, ob) = c.Backward(dx0, dg0, db0, accumulate: false);
        AssertBitwiseEqual(dx, ox, "overwritten dx");
        AssertBitwiseEqual([.. dg0.Select((v, i) => v + dg[i])], og, "dGamma (accumulated)");
        AssertBitwiseEqual([.. db0.Select((v, i) => v + db[i])], ob, "dBeta (accumulated)");

        var (ax, _, _) = c.Backward(dx0, dg0, db0, accumulate: true);
        AssertBitwiseEqual([.. dx0.Select((v, i) => v + dx[i])], ax, "accumulated dx");

        // dx may be dy itself.
        using var inPlace = Upload(c.Dy, n, d);
        using var dgt = s_cpu.Allocate(d);
        using var dbt = s_cpu.Allocate(d);
        s_cpu.LayerNormBackward(inPlace, c.Sum, c.Mean, c.Rstd, c.GammaT, inPlace, dgt, dbt);
        AssertBitwiseEqual(dx, Get(inPlace), "dx written over dy");
        AssertBitwiseEqual(dg, Get(dgt), "dGamma with dx over dy");

        using var wrong = s_cpu.Allocate(n, d + 1);
        Assert.Throws<ArgumentException>(() => s_cpu.LayerNormBackward(c.DyT, c.Sum, c.Mean, c.Rstd, c.GammaT, wrong, dgt, dbt));
    }

    // ---- GELU, gated GELU, tanh ----

    [Fact]
    public void GeluBackwardMatchesTheExactDerivative()
    {
        // Lengths 0..40 cover the vector body and the scalar tail. Φ is good to ~2e-7 relative and
        // φ = exp(−x²/2) carries the fp32 rounding of x²/2 (~x²·3e-8 relative): bound (1e-6 + 1e-7·x²) on the
        // scale Φ(x) + |x|·φ(x) of the two terms (GELU′ crosses zero near x = −0.75, so not relative to GELU′).
        for (int n = 0; n <= 40; n++)
        {
            var x = Random(n, 100 + n, 7);
            var dy = Random(n, 200 + n, 2);
            using var xt = Upload(x, n);
            using var dyt = Upload(dy, n);
            using var dxt = s_cpu.Allocate(n);
            s_cpu.GeluBackward(xt, dyt, dxt);
            var dx = Get(dxt);
            for (int i = 0; i < n; i++)
            {
                double xi = x[i];
                double scale = Phi(xi) + Math.Abs(xi) * Math.Exp(-0.5 * xi * xi) / Math.Sqrt(2 * Math.PI);
                double bound = (1e-6 + 1e-7 * xi * xi) * scale * Math.Abs(dy[i]) + 1e-30;
                Assert.True(Math.Abs(dy[i] * GeluPrime(xi) - dx[i]) <= bound, $"dGELU({xi}): expected {dy[i] * GeluPrime(xi)}, got {dx[i]}");
            }
        }
    }

    [Fact]
    public void GeluBackwardMatchesFiniteDifferences()
    {
        int n = 3, m = 21;
        var x = Random(n * m, 51, 4);
        var dy = Random(n * m, 52, 2);
        using var xt = Upload(x, n, m);
        using var dyt = Upload(dy, n, m);
        using var dxt = s_cpu.Allocate(n, m);
        s_cpu.GeluBackward(xt, dyt, dxt);
        var dx = Get(dxt);
        var xd = ToDouble(x);
        // The loss Σ dy·GELU(x) separates, so its derivative in x_k only involves GELU(x_k).
        for (int k = 0; k < n * m; k++)
        {
            int kk = k;
            Near(CentralDifference(() => dy[kk] * Gelu(xd[kk]), xd, k), dx[k], FdTolerance, $"dx[{k}]");
        }
    }

    [Fact]
    public void GatedGeluBackwardMatchesTheFormulaAndFiniteDifferences()
    {
        int n = 3, inner = 19;
        var g = Random(n * 2 * inner, 61, 3);
        var dh = Random(n * inner, 62, 2);
        using var gt = Upload(g, n, 2 * inner);
        using var dht = Upload(dh, n, inner);
        using var dgt = s_cpu.Allocate(n, 2 * inner);
        s_cpu.GatedGeluBackward(gt, dht, dgt);
        var dg = Get(dgt);
        var gd = ToDouble(g);
        double Loss()
        {
            double l = 0;
            for (int r = 0; r < n; r++)
                for (int i = 0; i < inner; i++) l += dh[r * inner + i] * Gelu(gd[r * 2 * inner + i]) * gd[r * 2 * inner + inner + i];
            return l;
        }
        for (int r = 0; r < n; r++)
            for (int i = 0; i < inner; i++)
            {
                double u = g[r * 2 * inner + i], v = g[r * 2 * inner + inner + i], gh = dh[r * inner + i];
                // Same error sources as GELU′ (|u| ≤ 3 here): 2e-6 relative above 1.
                Near(gh * v * GeluPrime(u), dg[r * 2 * inner + i], 2e-6, $"du[{r},{i}]");
                Near(gh * Gelu(u), dg[r * 2 * inner + inner + i], 2e-6, $"dv[{r},{i}]");
            }
        for (int k = 0; k < gd.Length; k++) Near(CentralDifference(Loss, gd, k), dg[k], FdTolerance, $"dgated[{k}]");

        // In place: dGated may be gated itself.
        using var inPlace = Upload(g, n, 2 * inner);
        s_cpu.GatedGeluBackward(inPlace, dht, inPlace);
        AssertBitwiseEqual(dg, Get(inPlace), "in-place dGated");
        using var wrong = s_cpu.Allocate(n, inner + 1);
        Assert.Throws<ArgumentException>(() => s_cpu.GatedGeluBackward(gt, wrong, dgt));
    }

    [Fact]
    public void TanhBackwardMatchesTheFormulaAndFiniteDifferences()
    {
        int n = 37;
        var x = Random(n, 71, 4);
        var dy = Random(n, 72, 2);
        using var xt = Upload(x, n);
        using var yt = s_cpu.Allocate(n);
        s_cpu.Tanh(xt, yt);
        using var dyt = Upload(dy, n);
        using var dxt = s_cpu.Allocate(n);
        s_cpu.TanhBackward(yt, dyt, dxt);
        var y = Get(yt);
        var dx = Get(dxt);
        var xd = ToDouble(x);
        for (int i = 0; i < n; i++)
        {
            // From the same fp32 y: (1 − y)(1 + y) rounds twice, the product once: 4e-7 relative.
            Near(dy[i] * (1 - (double)y[i] * y[i]), dx[i], 4e-7, $"dx[{i}]");
            // From the exact tanh: the fp32 y adds 2|y|·|δy| ≤ 2.4e-7 to 1 − y².
            int ii = i;
            Near(CentralDifference(() => dy[ii] * Math.Tanh(xd[ii]), xd, i), dx[i], FdTolerance, $"fd dx[{i}]");
        }
    }

    // ---- attention ----

    private sealed class AttentionCase
    {
        public readonly int[] Cu, Pos;
        public readonly int Heads, Dh, D, N;
        public readonly float[] Qkv, Slopes, DContext;
        public readonly float Scale;

        public AttentionCase(int[] lengths, int heads, int dh, int seed)
        {
            Heads = heads; Dh = dh; D = heads * dh; N = lengths.Sum();
            Cu = new int[lengths.Length + 1];
            for (int b = 0; b < lengths.Length; b++) Cu[b + 1] = Cu[b] + lengths[b];
            // Padded columns with holes: sequence b skips a column after every (b + 2)-th token, and odd sequences
            // start at column 1, so |pos_i − pos_j| is not the token distance.
            Pos = new int[N];
            for (int b = 0; b < lengths.Length; b++)
                for (int t = 0; t < lengths[b]; t++) Pos[Cu[b] + t] = (b % 2) + t + t / (b + 2);
            Qkv = Random(N * 3 * D, seed, 1.5f);
            // ALiBi-like slopes, one of them zero (classic attention), one steep.
            Slopes = [.. Enumerable.Range(0, heads).Select(h => h == 1 ? 0f : (float)Math.Pow(2, -(h + 1)))];
            DContext = Random(N * D, seed + 1);
            Scale = 1f / MathF.Sqrt(dh);
        }

        /// <summary>Forward and backward on <paramref name="cpu"/>; dQkv starts as NaN to prove it is overwritten.</summary>
        public (float[] context, float[] dQkv) Run(CpuBackend cpu)
        {
            using var qt = Upload(cpu, Qkv, N, 3 * D);
            using var ct = UploadInts(cpu, Cu);
            using var pt = UploadInts(cpu, Pos);
            using var st = Upload(cpu, Slopes, Heads);
            using var ctx = cpu.Allocate(N, D);
            using var lse = cpu.Allocate(N, Heads);
            cpu.Attention(qt, ct, pt, st, Scale, ctx, lse);
            using var dctx = Upload(cpu, DContext, N, D);
            using var dq = cpu.Allocate(N, 3 * D);
            cpu.Fill(dq, float.NaN);
            cpu.AttentionBackward(qt, ct, pt, st, Scale, ctx, lse, dctx, dq);
            return (Get(ctx), Get(dq));
        }

        private double Score(double[] qkv, int i, int j, int h)
        {
            double dot = 0;
            for (int e = 0; e < Dh; e++) dot += qkv[i * 3 * D + h * Dh + e] * qkv[j * 3 * D + D + h * Dh + e];
            return dot * Scale - Slopes[h] * Math.Abs(Pos[i] - Pos[j]);
        }

        /// <summary>softmax probabilities of sequence b, head h: P[i − s0][j − s0].</summary>
        private double[,] Probabilities(double[] qkv, int b, int h)
        {
            int s0 = Cu[b], len = Cu[b + 1] - s0;
            var p = new double[len, len];
            for (int i = 0; i < len; i++)
            {
                double max = double.NegativeInfinity;
                for (int j = 0; j < len; j++) { p[i, j] = Score(qkv, s0 + i, s0 + j, h); max = Math.Max(max, p[i, j]); }
                double z = 0;
                for (int j = 0; j < len; j++) { p[i, j] = Math.Exp(p[i, j] - max); z += p[i, j]; }
                for (int j = 0; j < len; j++) p[i, j] /= z;
            }
            return p;
        }

        /// <summary>Σ dContext·context over the tokens of sequence b, in double: the loss whose gradient is checked.</summary>
        public double Loss(double[] qkv, int b)
        {
            double l = 0;
            int s0 = Cu[b], len = Cu[b + 1] - s0;
            for (int h = 0; h < Heads; h++)
            {
                var p = Probabilities(qkv, b, h);
                for (int i = 0; i < len; i++)
                    for (int e = 0; e < Dh; e++)
                    {
                        double o = 0;
                        for (int j = 0; j < len; j++) o += p[i, j] * qkv[(s0 + j) * 3 * D + 2 * D + h * Dh + e];
                        l += DContext[(s0 + i) * D + h * Dh + e] * o;
                    }
            }
            return l;
        }

        /// <summary>The backward with explicit S×S matrices, in double.</summary>
        public double[] ReferenceBackward()
        {
            var qkv = ToDouble(Qkv);
            var dq = new double[N * 3 * D];
            for (int b = 0; b + 1 < Cu.Length; b++)
            {
                int s0 = Cu[b], len = Cu[b + 1] - s0;
                for (int h = 0; h < Heads; h++)
                {
                    var p = Probabilities(qkv, b, h);
                    double V(int j, int e) => qkv[(s0 + j) * 3 * D + 2 * D + h * Dh + e];
                    double GO(int i, int e) => DContext[(s0 + i) * D + h * Dh + e];
                    for (int i = 0; i < len; i++)
                    {
                        double dDelta = 0;
                        for (int e = 0; e < Dh; e++)
                        {
                            double o = 0;
                            for (int j = 0; j < len; j++) o += p[i, j] * V(j, e);
                            dDelta += GO(i, e) * o;
                        }
                        for (int j = 0; j < len; j++)
                        {
                            double dp = 0;
                            for (int e = 0; e < Dh; e++) dp += GO(i, e) * V(j, e);
                            double ds = p[i, j] * (dp - dDelta);
                            for (int e = 0; e < Dh; e++)
                            {
                                dq[(s0 + j) * 3 * D + 2 * D + h * Dh + e] += p[i, j] * GO(i, e);
                                dq[(s0 + i) * 3 * D + h * Dh + e] += Scale * ds * qkv[(s0 + j) * 3 * D + D + h * Dh + e];
                                dq[(s0 + j) * 3 * D + D + h * Dh + e] += Scale * ds * qkv[(s0 + i) * 3 * D + h * Dh + e];
                            }
                        }
                    }
                }
            }
            return dq;
        }
    }

    [Theory]
    [InlineData(new[] { 5, 3 }, 3, 4)]            // dh below one vector (scalar path)
    [InlineData(new[] { 1, 70, 130 }, 3, 12)]     // a single token; sequences over one and two 64-key tiles; dh = 8 + tail
    [InlineData(new[] { 4, 0, 66 }, 5, 16)]       // an empty sequence; five heads
    public void AttentionBackwardMatchesExplicitSoftmaxGradients(int[] lengths, int heads, int dh)
    {
        var c = new AttentionCase(lengths, heads, dh, 81);
        var (_, dq) = c.Run(s_cpu);
        var expected = c.ReferenceBackward();
        // fp32 recomputation of P (exp of O(10) arguments: ~1e-6 relative), D_i and dO·V over ≤ 16 terms, and sums
        // over ≤ 130 keys or queries of terms that are O(1) in total: ~1e-6 against the O(1) gradient scale
        // (measured ≤ 4e-7); bound 1e-5 (relative above 1).
        AllNear(expected, dq, 1e-5, "dQkv");
    }

    [Fact]
    public void AttentionBackwardMatchesFiniteDifferences()
    {
        var c = new AttentionCase([1, 70, 6], 3, 5, 91);
        var (_, dq) = c.Run(s_cpu);
        var qkv = ToDouble(c.Qkv);
        int width = 3 * c.D;
        // Every entry of the single token and of the short sequence, and 150 sampled entries of the long one
        // (Q, K and V blocks alike); the loss of a token's own sequence is the only one it affects.
        var entries = new List<int>();
        for (int t = 0; t < c.N; t++)
            if (t < c.Cu[1] || t >= c.Cu[2])
                for (int e = 0; e < width; e++) entries.Add(t * width + e);
        var r = new Random(92);
        for (int s = 0; s < 150; s++) entries.Add((c.Cu[1] + r.Next(70)) * width + r.Next(width));
        foreach (int k in entries)
        {
            int token = k / width;
            int b = Array.FindLastIndex(c.Cu, x => x <= token);
            double fd = CentralDifference(() => c.Loss(qkv, b), qkv, k);
            Near(fd, dq[k], FdTolerance, $"dQkv[{token}, {k % width}]");
        }
        // A lone token attends only to itself: P = 1, so dS = 0 (no gradient for q or k) and dV = dO.
        for (int e = 0; e < c.D; e++)
        {
            Assert.Equal(0f, dq[e]);
            Assert.Equal(0f, dq[c.D + e]);
            Assert.Equal(c.DContext[e], dq[2 * c.D + e], 1e-6f);
        }
    }

    [Fact]
    public void AttentionBackwardIsBitwiseTheSameOnAnyThreadCount()
    {
        var c = new AttentionCase([130, 70, 1, 100, 2], 3, 12, 101);
        var (ctx1, dq1) = c.Run(new CpuBackend(threads: 1));
        foreach (int threads in new[] { 2, 3, 4 })
        {
            var (ctx, dq) = c.Run(new CpuBackend(threads));
            AssertBitwiseEqual(ctx1, ctx, $"context with {threads} threads");
            AssertBitwiseEqual(dq1, dq, $"dQkv with {threads} threads");
        }
    }

    [Fact]
    public void AttentionBackwardRejectsBadArguments()
    {
        int n = 4, heads = 2, dh = 4, d = heads * dh;
        using var qkv = Upload(Random(n * 3 * d, 1), n, 3 * d);
        using var cu = UploadInts([0, 4]);
        using var pos = UploadInts([0, 1, 2, 3]);
        using var slopes = Upload([0.5f, 0.25f], heads);
        using var ctx = s_cpu.Allocate(n, d);
        using var lse = s_cpu.Allocate(n, heads);
        s_cpu.Attention(qkv, cu, pos, slopes, 0.5f, ctx, lse);
        using var dctx = Upload(Random(n * d, 2), n, d);
        using var dq = s_cpu.Allocate(n, 3 * d);
        Assert.Throws<ArgumentException>(() => s_cpu.AttentionBackward(qkv, cu, pos, slopes, 0.5f, ctx, lse, dctx, qkv));
        using var badCu = UploadInts([0, 3]);
        Assert.Throws<ArgumentException>(() => s_cpu.AttentionBackward(qkv, badCu, pos, slopes, 0.5f, ctx, lse, dctx, dq));
        using var badDq = s_cpu.Allocate(n, 3 * d - 1);
        Assert.Throws<ArgumentException>(() => s_cpu.AttentionBackward(qkv, cu, pos, slopes, 0.5f, ctx, lse, dctx, badDq));
    }

    // ---- embeddings and scatter ----

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EmbeddingBackwardAccumulatesRepeatedRows(bool withPositions)
    {
        int d = 21, vocab = 10, types = 2, maxPos = 6;
        int[] ids = [3, 3, 0, 9, 3, 0, 7];
        int[] typeIds = [1, 0, 1, 1, 0, 0, 1];
        int[] positions = [0, 1, 2, 1, 0, 5, 1];
        int n = ids.Length;
        var dOut = Random(n * d, 111, 2);
        var w0 = Random(vocab * d, 112);
        var t0 = Random(types * d, 113);
        var p0 = Random(maxPos * d, 114);
        using var idt = UploadInts(ids);
        using var tyt = UploadInts(typeIds);
        using var post = UploadInts(positions);
        using var got = Upload(dOut, n, d);
        using var dw = Upload(w0, vocab, d);
        using var dt = Upload(t0, types, d);
        using var dp = Upload(p0, maxPos, d);
        s_cpu.EmbeddingBackward(idt, tyt, withPositions ? post : null, got, dw, dt, withPositions ? dp : null);

        // Reference: the accumulation in double (≤ 3 fp32 additions per element: 2e-7 relative to the terms).
        var ew = ToDouble(w0);
        var et = ToDouble(t0);
        var ep = ToDouble(p0);
        for (int i = 0; i < n; i++)
            for (int e = 0; e < d; e++)
            {
                ew[ids[i] * d + e] += dOut[i * d + e];
                et[typeIds[i] * d + e] += dOut[i * d + e];
                if (withPositions) ep[positions[i] * d + e] += dOut[i * d + e];
            }
        AllNear(ew, Get(dw), 1e-6, "dWord");
        AllNear(et, Get(dt), 1e-6, "dType");
        AllNear(ep, Get(dp), 1e-6, "dPosition");

        // Finite differences of Σ dOut·EmbeddingSum in double: the gradient of a table entry is what was added to it.
        var word = ToDouble(Random(vocab * d, 115));
        var type = ToDouble(Random(types * d, 116));
        var pos = ToDouble(Random(maxPos * d, 117));
        double Loss()
        {
            double l = 0;
            for (int i = 0; i < n; i++)
                for (int e = 0; e < d; e++)
                    l += dOut[i * d + e] * (word[ids[i] * d + e] + type[typeIds[i] * d + e] + (withPositions ? pos[positions[i] * d + e] : 0));
            return l;
        }
        var gw = Get(dw);
        var gt = Get(dt);
        var gp = Get(dp);
        for (int k = 0; k < word.Length; k++) Near(CentralDifference(Loss, word, k), gw[k] - w0[k], FdTolerance, $"fd dWord[{k}]");
        for (int k = 0; k < type.Length; k++) Near(CentralDifference(Loss, type, k), gt[k] - t0[k], FdTolerance, $"fd dType[{k}]");
        for (int k = 0; k < pos.Length; k++) Near(CentralDifference(Loss, pos, k), gp[k] - p0[k], FdTolerance, $"fd dPosition[{k}]");
    }

    [Fact]
    public void EmbeddingBackwardIsTheSameOnAnyThreadCountAndValidatesFirst()
    {
        int n = 600, d = 200, vocab = 7;
        var r = new Random(121);
        var ids = Enumerable.Range(0, n).Select(_ => r.Next(vocab)).ToArray();
        var types = Enumerable.Range(0, n).Select(_ => r.Next(2)).ToArray();
        var dOut = Random(n * d, 122);
        float[]? first = null;
        foreach (int threads in new[] { 1, 2, 3 })
        {
            using var cpu = new CpuBackend(threads);
            using var idt = UploadInts(cpu, ids);
            using var tyt = UploadInts(cpu, types);
            using var got = Upload(cpu, dOut, n, d);
            using var dw = cpu.Allocate(vocab, d);
            using var dt = cpu.Allocate(2, d);
            cpu.EmbeddingBackward(idt, tyt, null, got, dw, dt, null);
            var result = Get(dw);
            if (first is null) first = result;
            else AssertBitwiseEqual(first, result, $"dWord with {threads} threads");
        }

        using var bad = UploadInts([0, 1, 7]);
        using var ty = UploadInts([0, 0, 0]);
        using var g3 = Upload(Random(3 * d, 123), 3, d);
        using var w = s_cpu.Allocate(vocab, d);
        using var t = s_cpu.Allocate(2, d);
        Assert.Throws<ArgumentOutOfRangeException>(() => s_cpu.EmbeddingBackward(bad, ty, null, g3, w, t, null));
        Assert.All(Get(w), v => Assert.Equal(0f, v));
        Assert.All(Get(t), v => Assert.Equal(0f, v));
        Assert.Throws<ArgumentException>(() => s_cpu.EmbeddingBackward(ty, ty, ty, g3, w, t, null));
    }

    [Fact]
    public void ScatterAddRowsAccumulatesRepeatedIndices()
    {
        int k = 6, width = 19, rows = 4;
        int[] idx = [2, 0, 2, 2, 3, 0];
        var src = Random(k * width, 131, 2);
        var dst0 = Random(rows * width, 132);
        using var it = UploadInts(idx);
        using var st = Upload(src, k, width);
        using var dt = Upload(dst0, rows, width);
        s_cpu.ScatterAddRows(st, it, dt);
        var expected = ToDouble(dst0);
        for (int i = 0; i < k; i++)
            for (int e = 0; e < width; e++) expected[idx[i] * width + e] += src[i * width + e];
        AllNear(expected, Get(dt), 1e-6, "destination");

        // Backward of GatherRows: finite differences of Σ w·gather(source).
        var sd = ToDouble(Random(rows * width, 133));
        var w = src;
        double Loss()
        {
            double l = 0;
            for (int i = 0; i < k; i++)
                for (int e = 0; e < width; e++) l += w[i * width + e] * sd[idx[i] * width + e];
            return l;
        }
        var got = Get(dt);
        for (int j = 0; j < sd.Length; j++) Near(CentralDifference(Loss, sd, j), got[j] - dst0[j], FdTolerance, $"fd d[{j}]");

        // Large and parallel: same bits on any thread count.
        int bigK = 3000, bigW = 300;
        var r = new Random(134);
        var bigIdx = Enumerable.Range(0, bigK).Select(_ => r.Next(50)).ToArray();
        var bigSrc = Random(bigK * bigW, 135);
        float[]? first = null;
        foreach (int threads in new[] { 1, 3 })
        {
            using var cpu = new CpuBackend(threads);
            using var bi = UploadInts(cpu, bigIdx);
            using var bs = Upload(cpu, bigSrc, bigK, bigW);
            using var bd = cpu.Allocate(50, bigW);
            cpu.ScatterAddRows(bs, bi, bd);
            var result = Get(bd);
            if (first is null) first = result;
            else AssertBitwiseEqual(first, result, $"scatter with {threads} threads");
        }

        using var bad = UploadInts([0, 4, 1, 1, 1, 1]);
        Assert.Throws<ArgumentOutOfRangeException>(() => s_cpu.ScatterAddRows(st, bad, dt));
        AssertBitwiseEqual(got, Get(dt), "destination after a rejected call");
    }

    // ---- losses ----

    [Fact]
    public void SquaredErrorLossAndGradient()
    {
        int b = 9;
        var p = Random(b, 141, 3);
        var t = Random(b, 142, 3);
        using var pt = Upload(p, b, 1);
        using var tt = Upload(t, b);
        using var loss = s_cpu.Allocate(b);
        using var grad = s_cpu.Allocate(b, 1);
        s_cpu.SquaredError(pt, tt, loss, grad, gradientScale: 1f / b);
        var l = Get(loss);
        var g = Get(grad);
        var pd = ToDouble(p);
        double Loss()
        {
            double s = 0;
            for (int i = 0; i < b; i++) s += (pd[i] - t[i]) * (pd[i] - t[i]) / b;
            return s;
        }
        for (int i = 0; i < b; i++)
        {
            double diff = (double)p[i] - t[i];
            Near(diff * diff, l[i], 3e-7, $"loss[{i}]");
            Near(2 * diff / b, g[i], 3e-7, $"gradient[{i}]");
            Near(CentralDifference(Loss, pd, i), g[i], FdTolerance, $"fd gradient[{i}]");
        }
        s_cpu.SquaredError(pt, tt, loss);
        AssertBitwiseEqual(l, Get(loss), "loss without gradient");
        using var wide = s_cpu.Allocate(b, 2);
        Assert.Throws<ArgumentException>(() => s_cpu.SquaredError(wide, tt, loss));
    }

    [Fact]
    public void CrossEntropyGradientMatchesFiniteDifferences()
    {
        int k = 3, v = 17;
        var logits = Random(k * v, 151, 4);
        int[] labels = [0, 16, 5];
        using var lt = Upload(logits, k, v);
        using var yt = UploadInts(labels);
        using var loss = s_cpu.Allocate(k);
        using var grad = s_cpu.Allocate(k, v);
        s_cpu.CrossEntropy(lt, yt, loss, grad, gradientScale: 1f / k);
        var g = Get(grad);
        var x = ToDouble(logits);
        double Loss()
        {
            double s = 0;
            for (int r = 0; r < k; r++)
            {
                double max = double.NegativeInfinity, z = 0;
                for (int c = 0; c < v; c++) max = Math.Max(max, x[r * v + c]);
                for (int c = 0; c < v; c++) z += Math.Exp(x[r * v + c] - max);
                s += (max + Math.Log(z) - x[r * v + labels[r]]) / k;
            }
            return s;
        }
        for (int j = 0; j < x.Length; j++) Near(CentralDifference(Loss, x, j), g[j], FdTolerance, $"dlogits[{j}]");
    }

    // ---- dropout ----

    /// <summary>The documented generator, written independently of <see cref="DropoutRandom"/>.</summary>
    private static ulong SplitMix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static float ExpectedMask(ulong seed, long counter, float p)
    {
        ulong h = SplitMix(SplitMix(seed) + ((ulong)counter + 1) * 0x9E3779B97F4A7C15UL);
        float u = (h >> 40) * (1f / 16777216f);
        return u >= p ? 1f / (1f - p) : 0f;
    }

    private static (float[] y, float[] mask) RunDropout(CpuBackend cpu, float[] x, float p, ulong seed, long offset)
    {
        using var xt = Upload(cpu, x, x.Length);
        using var yt = cpu.Allocate(x.Length);
        using var mt = cpu.Allocate(x.Length);
        cpu.Dropout(xt, yt, mt, p, seed, offset);
        return (Get(yt), Get(mt));
    }

    [Fact]
    public void DropoutGeneratorIsSplitMix64()
    {
        // The mixer against SplitMix64's published outputs for seed 1234567 (state += γ, then mix).
        ulong[] published = [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431, 16408922859458223821];
        for (int i = 0; i < published.Length; i++)
        {
            Assert.Equal(published[i], SplitMix(1234567UL + (ulong)(i + 1) * 0x9E3779B97F4A7C15UL));
            Assert.Equal(published[i], DropoutRandom.Mix(1234567UL + (ulong)(i + 1) * DropoutRandom.Gamma));
        }
        for (ulong c = 0; c < 1000; c += 37)
        {
            Assert.Equal(SplitMix(SplitMix(42) + (c + 1) * 0x9E3779B97F4A7C15UL), DropoutRandom.Hash(42, c));
            Assert.Equal((SplitMix(SplitMix(42) + (c + 1) * 0x9E3779B97F4A7C15UL) >> 40) / 16777216.0, DropoutRandom.Uniform(42, c));
        }
        // ceil(p·2²⁴) keeps exactly the u ≥ p.
        Assert.Equal(0u, DropoutRandom.Threshold(0));
        Assert.Equal(1u << 23, DropoutRandom.Threshold(0.5f));
        Assert.Equal(1677722u, DropoutRandom.Threshold(0.1f));
    }

    [Fact]
    public void DropoutMaskFollowsTheDocumentedFormulaWithTheRightStatistics()
    {
        const int n = 100_000;
        var x = Random(n, 161, 3);
        foreach (float p in new[] { 0.1f, 0.5f })
        {
            const ulong seed = 0xDEADBEEF;
            const long offset = 123_456_789_012;
            var (y, mask) = RunDropout(s_cpu, x, p, seed, offset);
            float keepScale = 1f / (1f - p);
            int kept = 0, sameAsNext = 0;
            for (int i = 0; i < n; i++)
            {
                Assert.Equal(ExpectedMask(seed, offset + i, p), mask[i]);
                Assert.True(mask[i] == 0 || mask[i] == keepScale);
                Assert.Equal(x[i] * mask[i], y[i]);
                if (mask[i] != 0) kept++;
                if (i + 1 < n && (mask[i] != 0) == (ExpectedMask(seed, offset + i + 1, p) != 0)) sameAsNext++;
            }
            // Keep count ~ Binomial(n, 1 − p): within 4σ.
            double sigma = Math.Sqrt(n * p * (1 - p));
            Assert.True(Math.Abs(kept - n * (1 - p)) <= 4 * sigma, $"p = {p}: kept {kept} of {n}");
            // Neighbours independent: P(same decision) = p² + (1 − p)², n − 1 Bernoulli trials.
            double q = p * p + (1 - p) * (1 - p);
            Assert.True(Math.Abs(sameAsNext - (n - 1) * q) <= 4 * Math.Sqrt((n - 1) * q * (1 - q)), $"p = {p}: {sameAsNext} equal neighbours");
        }
    }

    [Fact]
    public void DropoutMaskIsTheSameOnAnyThreadCountAndAnySplit()
    {
        const int n = 100_003;
        const float p = 0.3f;
        const ulong seed = 77;
        var x = Random(n, 171);
        var (y1, m1) = RunDropout(new CpuBackend(threads: 1), x, p, seed, 0);
        foreach (int threads in new[] { 2, 4 })
        {
            var (y, m) = RunDropout(new CpuBackend(threads), x, p, seed, 0);
            AssertBitwiseEqual(m1, m, $"mask with {threads} threads");
            AssertBitwiseEqual(y1, y, $"y with {threads} threads");
        }
        foreach (int split in new[] { 1, 8191, 12_345, 100_000 })
        {
            var (_, tail) = RunDropout(s_cpu, x[split..], p, seed, split);
            AssertBitwiseEqual(m1[split..], tail, $"mask of [{split}, {n})");
        }
        var (_, other) = RunDropout(s_cpu, x, p, seed + 1, 0);
        Assert.NotEqual(m1, other);
    }

    [Fact]
    public void DropoutWithZeroProbabilityIsIdentityAndBadProbabilitiesThrow()
    {
        var x = Random(1000, 181, 5);
        var (y, mask) = RunDropout(s_cpu, x, 0, 5, 0);
        Assert.All(mask, m => Assert.Equal(1f, m));
        AssertBitwiseEqual(x, y, "y");

        // In place (x and y the same tensor).
        using var xt = Upload(x, 1000);
        using var mt = s_cpu.Allocate(1000);
        s_cpu.Dropout(xt, xt, mt, 0.25f, 9, 0);
        var (ySeparate, _) = RunDropout(s_cpu, x, 0.25f, 9, 0);
        AssertBitwiseEqual(ySeparate, Get(xt), "in-place dropout");

        foreach (float bad in new[] { 1f, -0.01f, float.NaN, 1.5f })
            Assert.Throws<ArgumentOutOfRangeException>(() => s_cpu.Dropout(xt, xt, mt, bad, 1, 0));
    }

    // ---- element-wise algebra and norms ----

    [Fact]
    public void MultiplyAddScaledAndScale()
    {
        foreach (int n in new[] { 0, 7, 37, 100_003 })
        {
            var a = Random(n, 191 + n, 3);
            var b = Random(n, 192 + n, 3);
            using var at = Upload(a, n);
            using var bt = Upload(b, n);
            using var zt = s_cpu.Allocate(n);
            // A product of two floats is exact in double, so fp32 results are the correctly rounded ones.
            s_cpu.Multiply(at, bt, zt);
            AssertBitwiseEqual([.. a.Select((v, i) => (float)((double)v * b[i]))], Get(zt), $"x⊙y ({n})");
            s_cpu.Multiply(at, bt, at); // z aliases x
            AssertBitwiseEqual(Get(zt), Get(at), $"x⊙y in place ({n})");

            s_cpu.AddScaled(bt, -0.75f, zt);
            var z = Get(zt);
            for (int i = 0; i < n; i++)
            {
                double e = (double)a[i] * b[i] - 0.75 * b[i];
                // At most two roundings of O(10) values: 2.4e-7 of the terms' magnitude.
                Assert.True(Math.Abs(e - z[i]) <= 2.5e-7 * (Math.Abs((double)a[i] * b[i]) + Math.Abs(0.75 * b[i])) + 1e-30, $"y + αx at {i}");
            }
            s_cpu.Scale(bt, 0.3f);
            AssertBitwiseEqual([.. b.Select(v => (float)((double)v * 0.3f))], Get(bt), $"x·factor ({n})");
        }
        using var x3 = s_cpu.Allocate(3);
        using var x4 = s_cpu.Allocate(4);
        Assert.Throws<ArgumentException>(() => s_cpu.Multiply(x3, x4, x3));
        Assert.Throws<ArgumentException>(() => s_cpu.AddScaled(x3, 1, x4));
    }

    [Fact]
    public void SumOfSquaresIsAccurateAndThreadIndependent()
    {
        foreach (int n in new[] { 0, 5, 37, 100_003 })
        {
            var x = Random(n, 201 + n, 100);
            using var xt = Upload(x, n);
            double expected = 0;
            foreach (float v in x) expected += (double)v * v;
            double got = s_cpu.SumOfSquares(xt);
            // Exact squares, double sums: error ≤ (1027 + n/8192)·1.1e-16 relative; the reference's own error is
            // n·1.1e-16.
            Assert.True(Math.Abs(expected - got) <= 2e-11 * expected, $"Σx² of {n}: expected {expected}, got {got}");
            foreach (int threads in new[] { 1, 3 })
            {
                using var cpu = new CpuBackend(threads);
                using var ct = Upload(cpu, x, n);
                Assert.Equal(BitConverter.DoubleToInt64Bits(got), BitConverter.DoubleToInt64Bits(cpu.SumOfSquares(ct)));
            }
        }
    }

    [Theory]
    [InlineData(0.1f)]
    [InlineData(0f)]
    public void DropoutResidualLayerNormIsDropoutThenLayerNormAndLeavesXAlone(float p)
    {
        int n = 9, d = 24;
        var xv = Random(n * d, 301, 3);
        using var x = Upload(xv, n, d);
        using var res = Upload(Random(n * d, 302, 3), n, d);
        using var gamma = Upload(Random(d, 303, 2), d);
        using var beta = Upload(Random(d, 304), d);
        using var sum = s_cpu.Allocate(n, d);
        using var y = s_cpu.Allocate(n, d);
        using var mean = s_cpu.Allocate(n);
        using var rstd = s_cpu.Allocate(n);
        s_cpu.DropoutResidualLayerNorm(x, p, 41, 7, res, gamma, beta, 1e-12f, sum, y, mean, rstd);
        Assert.Equal(xv, Get(x));
        using var dropped = Upload(xv, n, d);
        if (p > 0) s_cpu.Dropout(dropped, dropped, null, p, 41, 7);
        using var sum2 = s_cpu.Allocate(n, d);
        using var y2 = s_cpu.Allocate(n, d);
        using var mean2 = s_cpu.Allocate(n);
        using var rstd2 = s_cpu.Allocate(n);
        s_cpu.LayerNorm(dropped, res, gamma, beta, 1e-12f, sum2, y2, mean2, rstd2);
        Assert.Equal(Get(sum2), Get(sum));
        Assert.Equal(Get(y2), Get(y));
        Assert.Equal(Get(mean2), Get(mean));
        Assert.Equal(Get(rstd2), Get(rstd));
        Assert.Equal(p > 0, Get(sum).Zip(Get(res), (a, b) => a == b).Any(same => same));   // dropped elements add nothing
    }

    [Theory]
    [InlineData(0.5)]   // clipped
    [InlineData(1e6)]   // below the threshold: untouched
    public void ClipByGlobalNormIsSumOfSquaresThenScale(double maxNorm)
    {
        var x = Random(1001, 7, 3);
        using var clipped = Upload(x, x.Length);
        using var manual = Upload(x, x.Length);
        double norm = s_cpu.ClipByGlobalNorm(clipped, maxNorm).Read();
        double expected = Math.Sqrt(s_cpu.SumOfSquares(manual));
        Assert.Equal(expected, norm);
        if (expected > maxNorm) s_cpu.Scale(manual, (float)(maxNorm / expected));
        var a = new float[x.Length];
        var b = new float[x.Length];
        s_cpu.Download(clipped, a);
        s_cpu.Download(manual, b);
        Assert.Equal(b, a);
        Assert.Equal(maxNorm < 1e3, !a.SequenceEqual(x));
    }

    [Fact]
    public void MeanSumsInDouble()
    {
        var x = Random(999, 8, 2);
        using var t = Upload(x, x.Length);
        var mean = s_cpu.Mean(t);
        Assert.True(mean.IsRead);
        Assert.Equal(x.Average(v => (double)v), mean.Read(), 15);
        using var empty = s_cpu.Allocate(0);
        Assert.True(double.IsNaN(s_cpu.Mean(empty).Read()));
    }

    // ---- AdamW ----

    [Theory]
    [InlineData(37)]
    [InlineData(40_000)]
    public void AdamWMatchesAScalarReferenceOverSeveralSteps(int n)
    {
        const float lr = 1e-2f, beta1 = 0.9f, beta2 = 0.98f, eps = 1e-6f, decay = 1e-3f;
        var theta0 = Random(n, 211, 2);
        using var th = Upload(theta0, n);
        using var g = s_cpu.Allocate(n);
        using var m = s_cpu.Allocate(n);
        using var v = s_cpu.Allocate(n);
        var rt = ToDouble(theta0);
        var rm = new double[n];
        var rv = new double[n];
        for (int step = 1; step <= 5; step++)
        {
            // Step 3 has an all-zero gradient; every 5th element never has a gradient.
            var grad = step == 3 ? new float[n] : Random(n, 212 + step, 0.5f);
            for (int i = 0; i < n; i += 5) grad[i] = 0;
            s_cpu.Upload(grad, g);
            float decayFactor = decay * (1 - 0.1f * step); // a schedule: (lr_t/lr_0)·wd changes per step
            s_cpu.AdamW(th, g, m, v, lr, beta1, beta2, eps, decayFactor, step);
            double bc1 = 1 - Math.Pow(beta1, step), bc2 = 1 - Math.Pow(beta2, step);
            for (int i = 0; i < n; i++)
            {
                rt[i] *= 1 - (double)decayFactor;
                rm[i] = beta1 * rm[i] + (1 - (double)beta1) * grad[i];
                rv[i] = beta2 * rv[i] + (1 - (double)beta2) * grad[i] * grad[i];
                rt[i] -= lr * (rm[i] / bc1) / (Math.Sqrt(rv[i] / bc2) + eps);
            }
            // fp32 state: m and v carry ~1e-7 relative per step; the update lr·m̂/(√v̂ + ε) is O(lr) with ~1e-6
            // relative error; θ itself rounds at 6e-8: bound 1e-6 (relative above 1) on θ and m, 1e-6 relative on v.
            var pt = Get(th);
            var pm = Get(m);
            var pv = Get(v);
            for (int i = 0; i < n; i++)
            {
                Near(rt[i], pt[i], 1e-6, $"θ[{i}] after step {step}");
                Near(rm[i], pm[i], 1e-6, $"m[{i}] after step {step}");
                Assert.True(Math.Abs(rv[i] - pv[i]) <= 1e-6 * rv[i], $"v[{i}] after step {step}: expected {rv[i]}, got {pv[i]}");
                if (i % 5 == 0) { Assert.Equal(0f, pm[i]); Assert.Equal(0f, pv[i]); }
            }
        }
    }

    [Fact]
    public void AdamWIsThreadIndependentAndValidates()
    {
        int n = 50_001;
        var theta = Random(n, 221);
        var grad = Random(n, 222);
        float[]? first = null;
        foreach (int threads in new[] { 1, 3 })
        {
            using var cpu = new CpuBackend(threads);
            using var th = Upload(cpu, theta, n);
            using var g = Upload(cpu, grad, n);
            using var m = cpu.Allocate(n);
            using var v = cpu.Allocate(n);
            for (int step = 1; step <= 2; step++) cpu.AdamW(th, g, m, v, 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-5f, step);
            var result = Get(th);
            if (first is null) first = result;
            else AssertBitwiseEqual(first, result, $"θ with {threads} threads");
        }
        using var a = s_cpu.Allocate(4);
        using var b = s_cpu.Allocate(4);
        using var c = s_cpu.Allocate(4);
        using var d = s_cpu.Allocate(5);
        Assert.Throws<ArgumentOutOfRangeException>(() => s_cpu.AdamW(a, b, c, a, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => s_cpu.AdamW(a, b, c, a, 1e-3f, 1f, 0.999f, 1e-8f, 0, 1));
        Assert.Throws<ArgumentException>(() => s_cpu.AdamW(a, b, c, d, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 1));
    }
}
