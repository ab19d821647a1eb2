using System.Diagnostics;
using System.Text.Json.Nodes;
using MosaicBert.Model;
using MosaicBert.Tensors;
using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Benchmarks;

/// <summary>
/// The CPU model end to end. <c>model-forward</c>: encoder inference on a full batch (default MosaicBERT-base,
/// B = 8, S = 128): sequences/s and achieved GFLOP/s, and that rate as a fraction of OpenBLAS's sgemm rate measured in
/// the same run with the same threads (on the QKV shape of the same batch), the acceptance metric of the CPU issue.
/// <c>model-train</c>: one optimizer step (forward, MLM loss, backward, AdamW) of a preset, tokens/s, and the bytes of
/// activation and gradient memory the step keeps.
/// </summary>
/// <remarks>
/// FLOPs counted (spec §6.3): 2 per multiply-add of every encoder matmul on the N real tokens, plus attention
/// 4·L·d·Σ_b len_b² (QKᵀ and PV); training counts 3× the forward and adds the MLM head on the masked tokens.
/// </remarks>
internal static class ModelBenchmark
{
    public static int Forward(Dictionary<string, string> args)
    {
        var (config, batchSize, seq, threads, repeats) = Common(args, "base", 8);
        var backend = new CpuBackend(threads);
        using var model = new MosaicBertModel(config, ModelHeads.None, backend);
        model.InitializeWeights(1);
        var batch = RandomBatch(config, batchSize, seq, maskedFraction: 0, seed: 7);
        model.Encode(batch); // warm-up: JIT, workspace
        double best = Time(repeats, () => model.Encode(batch));
        double flops = EncoderFlops(config, batch);
        double gemmRate = OpenBlasRate(threads, batch.TokenCount, 3 * config.HiddenSize, config.HiddenSize, out string blasName);
        var line = new JsonObject
        {
            ["bench"] = "model-forward",
            ["preset"] = args.GetValueOrDefault("preset", "base"),
            ["batch"] = batchSize,
            ["seq"] = seq,
            ["threads"] = backend.Threads,
            ["gemm"] = backend.GemmProvider.Name,
            ["seconds"] = Math.Round(best, 4),
            ["seq_per_s"] = Math.Round(batchSize / best, 2),
            ["gflops"] = Math.Round(flops / best / 1e9, 1),
            ["openblas"] = blasName,
            ["openblas_sgemm_gflops"] = double.IsNaN(gemmRate) ? null : Math.Round(gemmRate / 1e9, 1),
            ["fraction_of_openblas_sgemm"] = double.IsNaN(gemmRate) ? null : Math.Round(flops / best / gemmRate, 3),
        };
        Console.WriteLine(line.ToJsonString());
        return 0;
    }

    public static int Train(Dictionary<string, string> args)
    {
        var (config, batchSize, seq, threads, repeats) = Common(args, "mini", 32);
        var backend = new CpuBackend(threads);
        using var model = new MosaicBertModel(config, ModelHeads.MaskedLM, backend);
        model.InitializeWeights(1);
        using var optimizer = new DecoupledAdamW(model);
        var batch = RandomBatch(config, batchSize, seq, maskedFraction: 0.3, seed: 11);
        void Step()
        {
            model.ZeroGradients();
            model.ForwardBackward(batch, new TrainingObjective.MaskedLM(), new DropoutSettings(42));
            optimizer.Step(1e-4f);
        }
        Step();
        long before = GC.GetAllocatedBytesForCurrentThread();
        double best = Time(repeats, Step);
        long allocated = (GC.GetAllocatedBytesForCurrentThread() - before) / repeats;
        double flops = 3 * (EncoderFlops(config, batch) + 2.0 * batch.MaskedTokens.Length *
            ((double)config.HiddenSize * config.HiddenSize + (double)config.HiddenSize * config.VocabSize));
        var line = new JsonObject
        {
            ["bench"] = "model-train",
            ["preset"] = args.GetValueOrDefault("preset", "mini"),
            ["batch"] = batchSize,
            ["seq"] = seq,
            ["threads"] = backend.Threads,
            ["parameters"] = model.Layout.Count,
            ["seconds_per_step"] = Math.Round(best, 4),
            ["tokens_per_s"] = Math.Round(batch.TokenCount / best),
            ["seq_per_s"] = Math.Round(batchSize / best, 2),
            ["gflops"] = Math.Round(flops / best / 1e9, 1),
            ["activation_bytes"] = model.ActivationBytes,
            ["parameter_state_bytes"] = 4L * model.Layout.Count * 4, // parameters, gradients, m, v (fp32)
            ["managed_bytes_allocated_per_step_on_caller_thread"] = allocated,
        };
        Console.WriteLine(line.ToJsonString());
        return 0;
    }

    private static (MosaicBertConfig Config, int Batch, int Seq, int? Threads, int Repeats) Common(Dictionary<string, string> args, string preset, int batch)
    {
        var config = MosaicBertConfig.Preset(args.GetValueOrDefault("preset", preset));
        return (config, int.Parse(args.GetValueOrDefault("batch", batch.ToString())), int.Parse(args.GetValueOrDefault("seq", "128")),
            args.TryGetValue("threads", out var t) ? int.Parse(t) : null, int.Parse(args.GetValueOrDefault("repeats", "3")));
    }

    private static double Time(int repeats, Action action)
    {
        double best = double.MaxValue;
        for (int r = 0; r < repeats; r++)
        {
            var sw = Stopwatch.StartNew();
            action();
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return best;
    }

    private static double EncoderFlops(MosaicBertConfig c, EncoderBatch batch)
    {
        double d = c.HiddenSize, i = c.IntermediateSize;
        double perToken = c.Architecture == EncoderArchitecture.MosaicBert ? 3 * d * d + d * d + 2 * d * i + i * d : 4 * d * d + 2 * d * i;
        double attention = 0;
        for (int b = 0; b < batch.BatchSize; b++)
        {
            double len = batch.CuSeqlens[b + 1] - batch.CuSeqlens[b];
            attention += 4 * d * len * len;
        }
        return c.NumHiddenLayers * (2 * perToken * batch.TokenCount + attention);
    }

    /// <summary>OpenBLAS sgemm FLOP/s on an [m×k]·[n×k]ᵀ product with the given threads, or NaN without OpenBLAS.</summary>
    private static double OpenBlasRate(int? threads, int m, int n, int k, out string name)
    {
        var blas = OpenBlasGemm.TryLoad();
        name = blas?.Name ?? "absent";
        if (blas is null) return double.NaN;
        if (threads is int t) blas.NumThreads = t;
        var a = new float[m * k];
        var b = new float[n * k];
        var c = new float[m * n];
        new Random(3).NextBytes(new byte[1]);
        for (int x = 0; x < a.Length; x++) a[x] = (x % 17) * 0.01f;
        for (int x = 0; x < b.Length; x++) b[x] = (x % 13) * 0.01f;
        blas.Sgemm(false, true, m, n, k, 1, a, k, b, k, 0, c, n);
        double best = Time(5, () => blas.Sgemm(false, true, m, n, k, 1, a, k, b, k, 0, c, n));
        return 2.0 * m * n * k / best;
    }

    /// <summary>A batch of full-length sequences (the benchmark shape of the issue) with random ids and MLM labels.</summary>
    internal static EncoderBatch RandomBatch(MosaicBertConfig config, int batchSize, int seq, double maskedFraction, int seed)
    {
        var rng = new Random(seed);
        var ids = new int[batchSize * seq];
        var labels = new int[batchSize * seq];
        for (int x = 0; x < ids.Length; x++)
        {
            ids[x] = x % seq == 0 ? 101 : rng.Next(1000, Math.Min(config.VocabSize, 30000));
            labels[x] = x % seq != 0 && rng.NextDouble() < maskedFraction ? ids[x] : -100;
        }
        return new EncoderBatch(ids, new int[ids.Length], [], batchSize, seq, maskedFraction > 0 ? labels : default);
    }
}
