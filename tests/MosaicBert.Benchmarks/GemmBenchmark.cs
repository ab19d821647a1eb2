using System.Diagnostics;
using System.Text.Json.Nodes;
using MosaicBert.Tensors;

namespace MosaicBert.Benchmarks;

/// <summary>
/// fp32 GEMM throughput on the BERT-base shapes at B = 8, S = 128 (1024 tokens, d = 768, I = 3072, 2I = 6144,
/// vocabulary 30528, ~300 masked tokens for the MLM decoder), forward (y = x·Wᵀ) and backward (dX = dY·W,
/// dW = dYᵀ·X), plus a square 2048³. One JSON line per shape and thread count: managed and OpenBLAS GFLOP/s in the
/// same run with the same thread count, their ratio, and the largest disagreement between the two measured before
/// timing (|managed − openblas| / Σ_p |a_ip·b_pj|, the scale fp32 rounding error is proportional to).
/// </summary>
/// <remarks>
/// Options: --threads 1,2 (default 1 and all cores) --repeats R (best of R, default 3) --shapes qkv,attn_out,...
/// (default all) and, for blocking sweeps, --kernel avx512|avx2|portable --kc N --mc N --nc N.
/// </remarks>
internal static class GemmBenchmark
{
    private const int Tokens = 1024, D = 768, I = 3072, Vocab = 30528, Masked = 300;

    /// <summary>Name, transA, transB, m, n, k (C[m×n] = op(A)[m×k] · op(B)[k×n]).</summary>
    internal static readonly (string Name, bool TransA, bool TransB, int M, int N, int K)[] Shapes =
    [
        // forward: y[tokens × out] = x[tokens × in] · W[out × in]ᵀ
        ("qkv", false, true, Tokens, 3 * D, D),
        ("attn_out", false, true, Tokens, D, D),
        ("glu_up", false, true, Tokens, 2 * I, D),
        ("glu_down", false, true, Tokens, D, I),
        ("mlm_decoder", false, true, Masked, Vocab, D),
        // backward: dX[tokens × in] = dY[tokens × out] · W[out × in]
        ("qkv_dx", false, false, Tokens, D, 3 * D),
        ("attn_out_dx", false, false, Tokens, D, D),
        ("glu_up_dx", false, false, Tokens, D, 2 * I),
        ("glu_down_dx", false, false, Tokens, I, D),
        ("mlm_decoder_dx", false, false, Masked, D, Vocab),
        // backward: dW[out × in] = dY[tokens × out]ᵀ · X[tokens × in]
        ("qkv_dw", true, false, 3 * D, D, Tokens),
        ("attn_out_dw", true, false, D, D, Tokens),
        ("glu_up_dw", true, false, 2 * I, D, Tokens),
        ("glu_down_dw", true, false, D, I, Tokens),
        ("mlm_decoder_dw", true, false, Vocab, D, Masked),
        ("square_2048", false, false, 2048, 2048, 2048),
    ];

    public static int Run(Dictionary<string, string> args)
    {
        int repeats = int.Parse(args.GetValueOrDefault("repeats", "3"));
        var threadCounts = args.GetValueOrDefault("threads", $"1,{Environment.ProcessorCount}").Split(',').Select(int.Parse).Distinct().ToArray();
        var only = args.TryGetValue("shapes", out var s) ? s.Split(',').ToHashSet() : null;
        var kernel = args.TryGetValue("kernel", out var kname)
            ? GemmKernel.Get(Enum.Parse<GemmKernelKind>(kname, ignoreCase: true)) : GemmKernel.Best;
        if (args.ContainsKey("kc") || args.ContainsKey("mc") || args.ContainsKey("nc"))
            kernel = kernel.WithBlocking(int.Parse(args.GetValueOrDefault("kc", kernel.Kc.ToString())),
                int.Parse(args.GetValueOrDefault("mc", kernel.Mc.ToString())), int.Parse(args.GetValueOrDefault("nc", kernel.NcMax.ToString())));
        var blas = OpenBlasGemm.TryLoad();
        if (blas is null) Console.Error.WriteLine("note: OpenBLAS not found (apt-get install libopenblas0); managed numbers only.");
        int failures = 0;

        foreach (var shape in Shapes.Where(x => only is null || only.Contains(x.Name)))
        {
            var (name, transA, transB, m, n, k) = shape;
            int lda = transA ? m : k, ldb = transB ? k : n, ldc = n;
            var random = new Random(42);
            float[] a = Random(m * k, random), b = Random(k * n, random), c = new float[m * n], c2 = new float[m * n];
            {
                double flops = 2.0 * m * n * k;
                // Correctness before timing: managed vs OpenBLAS relative to Σ|a||b| (itself a GEMM on |A|, |B|).
                double maxRelErr = double.NaN;
                if (blas is not null)
                {
                    Gemm.Sgemm(kernel, transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, c, ldc, Environment.ProcessorCount);
                    blas.Sgemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, c2, ldc);
                    maxRelErr = MaxRelativeError(transA, transB, m, n, k, a, lda, b, ldb, c, c2, ldc);
                    // Bound for two fp32 results of any summation order: each within (2k + 4)·u·Σ|a||b| of exact.
                    if (!(maxRelErr <= 2 * (2.0 * k + 4) * Math.ScaleB(1, -24)))
                    {
                        Console.Error.WriteLine($"error: {name}: managed and OpenBLAS disagree, max relative error {maxRelErr:E3}");
                        failures++;
                    }
                }
                foreach (int t in threadCounts)
                {
                    double managed = Time(repeats, () => Gemm.Sgemm(kernel, transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, c, ldc, t));
                    double native = double.NaN;
                    if (blas is not null)
                    {
                        blas.NumThreads = t;
                        native = Time(repeats, () => blas.Sgemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, c2, ldc));
                    }
                    var line = new JsonObject
                    {
                        ["bench"] = "gemm",
                        ["shape"] = name,
                        ["transA"] = transA,
                        ["transB"] = transB,
                        ["m"] = m,
                        ["n"] = n,
                        ["k"] = k,
                        ["threads"] = t,
                        ["cores"] = Environment.ProcessorCount,
                        ["kernel"] = $"{kernel.Name} kc={kernel.Kc} mc={kernel.Mc} nc={kernel.NcMax}",
                        ["gflops_managed"] = Math.Round(flops / managed / 1e9, 1),
                        ["seconds_managed"] = Math.Round(managed, 5),
                    };
                    if (blas is not null)
                    {
                        line["gflops_openblas"] = Math.Round(flops / native / 1e9, 1);
                        line["seconds_openblas"] = Math.Round(native, 5);
                        line["ratio_managed_vs_openblas"] = Math.Round(native / managed, 3);
                        line["max_rel_err"] = double.Parse(maxRelErr.ToString("E2"));
                        line["openblas"] = blas.CoreName;
                    }
                    Console.WriteLine(line.ToJsonString());
                }
            }
        }
        return failures == 0 ? 0 : 1;
    }

    private static float[] Random(int count, Random random)
    {
        var x = new float[count];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(random.NextDouble() * 2 - 1);
        return x;
    }

    /// <summary>Best wall time of <paramref name="repeats"/> runs after one warm-up run (JIT tiering, page faults).</summary>
    private static double Time(int repeats, Action run)
    {
        run();
        double best = double.MaxValue;
        for (int r = 0; r < repeats; r++)
        {
            long start = Stopwatch.GetTimestamp();
            run();
            best = Math.Min(best, Stopwatch.GetElapsedTime(start).TotalSeconds);
        }
        return best;
    }

    /// <summary>max_ij |x − y| / (|op(A)|·|op(B)|)_ij, the magnitude sum computed with the managed GEMM on |A|, |B|.</summary>
    private static double MaxRelativeError(bool transA, bool transB, int m, int n, int k,
        float[] a, int lda, float[] b, int ldb, float[] x, float[] y, int ldc)
    {
        var absA = Array.ConvertAll(a, MathF.Abs);
        var absB = Array.ConvertAll(b, MathF.Abs);
        var magnitude = new float[x.Length];
        Gemm.Sgemm(transA, transB, m, n, k, 1f, absA, lda, absB, ldb, 0f, magnitude, ldc);
        double worst = 0;
        for (int i = 0; i < x.Length; i++)
            worst = Math.Max(worst, Math.Abs((double)x[i] - y[i]) / Math.Max(magnitude[i], float.Epsilon));
        return worst;
    }
}
