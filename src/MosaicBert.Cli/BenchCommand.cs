using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using MosaicBert.Distributed;
using MosaicBert.Model;
using MosaicBert.Pretraining;
using MosaicBert.Tensors;
using MosaicBert.Tensors.Cpu;
using MosaicBert.Tensors.Cuda;

namespace MosaicBert.Cli;

/// <summary>
/// <c>mosaicbert bench pretrain|forward</c>: throughput of MLM pretraining steps (forward, backward, clipping, AdamW) or
/// of inference (encoder + MLM head on the masked rows) on synthetic batches, as one JSON line on stdout.
/// </summary>
/// <remarks>
/// FLOPs counted (multiply-adds × 2) on real tokens only, per sequence of L real tokens and per layer:
/// GEMMs 2·L·(4d² + 3d·I) (Wqkv 3d², attention output d², gated MLP 2d·I, MLP output I·d) and attention 4·L²·d
/// (QKᵀ and PV over all heads); plus the MLM head on the K masked rows, 2·K·(d² + d·V). A training step counts
/// 3× that (backward = 2× forward). model_tflops = FLOPs / step time; mfu = model_tflops / the GPU's dense bf16 peak
/// (989 TFLOP/s for H100 SXM and H200), also for fp32 runs, so figures compare across precisions.
/// </remarks>
internal static class BenchCommand
{
    private const int MaskTokenId = 103;

    public static Command Build(TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        var bench = new Command("bench", "Measure training or inference throughput on synthetic batches (one JSON line).");
        bench.Subcommands.Add(Verb("pretrain", "Full MLM training steps (30% masked): forward, backward, gradient clipping, AdamW.", training: true));
        bench.Subcommands.Add(Verb("forward", "Inference: encoder and MLM head on the masked rows.", training: false));
        return bench;

        Command Verb(string name, string description, bool training)
        {
            var preset = new Option<string>("--preset") { Description = "Model size: tiny, mini, small, medium, base, large.", DefaultValueFactory = _ => "base" };
            var batch = new Option<int>("--batch") { Description = "Sequences per step.", DefaultValueFactory = _ => 256 };
            var seq = new Option<int>("--seq") { Description = "Padded sequence length.", DefaultValueFactory = _ => 128 };
            var steps = new Option<int>("--steps") { Description = "Timed steps.", DefaultValueFactory = _ => 30 };
            var warmup = new Option<int>("--warmup") { Description = "Untimed steps first (kernel compilation, allocation, GEMM plans).", DefaultValueFactory = _ => 5 };
            var device = new Option<string>("--device") { Description = "cpu or cuda.", DefaultValueFactory = _ => "cuda" };
            var precision = new Option<string?>("--precision") { Description = "bf16 or fp32 (default: bf16 on cuda, fp32 on cpu)." };
            var lengths = new Option<string>("--lengths") { Description = "full (every sequence --seq tokens) or ragged (uniform in 16..--seq: the unpadding gain).", DefaultValueFactory = _ => "full" };
            var clip = new Option<double>("--clip") { Description = "Gradient-norm clipping threshold (0: none).", DefaultValueFactory = _ => 1.0 };
            var profile = new Option<bool>("--profile") { Description = "Also time the phases separately (forward, backward, optimizer, attention)." };
            var seed = new Option<int>("--seed") { Description = "Seed of the weights and the synthetic data.", DefaultValueFactory = _ => 1 };
            var gpus = new Option<int?>("--gpus") { Description = "Data parallel: start this many ranks (one per GPU; CPU ranks with --device cpu), each with --batch sequences per step; rank 0 prints the job's figures." };
            var command = new Command(name, description) { preset, batch, seq, steps, warmup, device, precision, lengths, clip, profile, seed };
            if (training) command.Options.Add(gpus);
            command.SetAction(r =>
            {
                try
                {
                    var options = new BenchOptions(training, r.GetValue(preset)!, r.GetValue(batch), r.GetValue(seq), r.GetValue(steps), r.GetValue(warmup),
                        r.GetValue(device)!, r.GetValue(precision), r.GetValue(lengths)!, r.GetValue(clip), r.GetValue(profile), r.GetValue(seed));
                    if (training && r.GetValue(gpus) is not null)
                        return LaunchRanks([.. r.Tokens.Select(t => t.Value)], options, stdout, stderr, cancellationToken);
                    var result = Run(options, cancellationToken);
                    if (result is not null) stdout.WriteLine(result.ToJsonString());
                    return ExitCodes.Success;
                }
                catch (Exception e) when (e is ArgumentException or CudaUnavailableException or NotSupportedException or DistributedConfigurationException)
                {
                    stderr.WriteLine($"error: {e.Message}");
                    return ExitCodes.UsageError;
                }
            });
            return command;
        }
    }

    /// <summary>
    /// <c>--gpus N</c>: starts N ranks of this same command line without --gpus (<paramref name="tokens"/>, taken apart
    /// by <see cref="Launcher.TryTakeGpus"/> as <c>pretrain --gpus</c> does) with the torchrun variables set; their
    /// output comes back prefixed with <c>[rank r]</c>.
    /// </summary>
    private static int LaunchRanks(IReadOnlyList<string> tokens, BenchOptions o, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        if (o.Profile) throw new ArgumentException("--profile times one process; leave it out with --gpus.");
        Launcher.TryTakeGpus(tokens, out int ranks, out var rankArgs);
        var (program, prefix) = Launcher.CurrentProgram();
        return Launcher.Run(ranks, program, [.. prefix, .. rankArgs], stdout, stderr, null, cancellationToken);
    }

    internal sealed record BenchOptions(bool Training, string Preset, int Batch, int Seq, int Steps, int Warmup, string Device,
        string? Precision, string Lengths, double Clip, bool Profile, int Seed);

    /// <summary>Runs the benchmark; null on the ranks other than 0 of a data-parallel job (rank 0 reports for all).</summary>
    internal static JsonObject? Run(BenchOptions o, CancellationToken cancellationToken)
    {
        if (o.Batch < 1 || o.Seq < 16) throw new ArgumentException($"--batch must be ≥ 1 and --seq ≥ 16 (got {o.Batch}, {o.Seq}).");
        if (o.Steps < 1 || o.Warmup < 0) throw new ArgumentException($"--steps must be ≥ 1 and --warmup ≥ 0 (got {o.Steps}, {o.Warmup}).");
        if (o.Lengths is not ("full" or "ragged")) throw new ArgumentException($"--lengths must be full or ragged, not '{o.Lengths}'.");
        var config = MosaicBertConfig.Preset(o.Preset);
        if (o.Seq > config.MaxPositionEmbeddings) throw new ArgumentException($"--seq {o.Seq} exceeds the preset's max_position_embeddings {config.MaxPositionEmbeddings}.");
        bool cuda = o.Device switch
        {
            "cuda" => true,
            "cpu" => false,
            _ => throw new ArgumentException($"--device must be cpu or cuda, not '{o.Device}'."),
        };
        var precision = (o.Precision ?? (cuda ? "bf16" : "fp32")) switch
        {
            "bf16" => ComputePrecision.BFloat16,
            "fp32" => ComputePrecision.Float32,
            var p => throw new ArgumentException($"--precision must be bf16 or fp32, not '{p}'."),
        };
        if (!cuda && precision == ComputePrecision.BFloat16) throw new ArgumentException("--precision bf16 needs --device cuda (the CPU backend computes in fp32).");

        // A rank of a data-parallel job (RANK, WORLD_SIZE, ... set by --gpus or torchrun): its own GPU, rank 0's
        // weights, its own synthetic batches, and gradients averaged over NCCL (CPU ranks: the control channel) in
        // buckets overlapped with the backward pass, as the pretraining loop does.
        var distributed = DistributedEnvironment.FromEnvironment();
        if (distributed.WorldSize > 1 && !o.Training) throw new ArgumentException("bench forward runs in one process.");
        using Backend backend = cuda ? new CudaBackend(distributed.DeviceOrdinal) : new CpuBackend();
        var gpu = backend as CudaBackend;
        using var model = new MosaicBertModel(config, ModelHeads.MaskedLM, backend, precision);
        model.InitializeWeights(o.Seed);
        using var optimizer = o.Training ? new DecoupledAdamW(model) : null;
        using var group = ProcessGroup.Create(distributed, backend, null, cancellationToken);
        group.Broadcast(model.Parameters);
        var buckets = distributed.WorldSize > 1 ? DataParallel.GradientBuckets(group, model) : null;
        GradientsFinal? reportFinal = buckets is null ? null : (offset, length) => buckets.MarkReady(new GradientRange(offset, length));
        var batches = SyntheticBatches(config, o with { Seed = o.Seed + 7919 * distributed.Rank }, count: 4);

        void Step(int i)
        {
            var batch = batches[i % batches.Length];
            if (o.Training)
            {
                model.ZeroGradients();
                // Queued: nothing waits for the GPU inside the step (the loss and the norm are not read), like the
                // PyTorch reference, which neither calls .item() nor lets clip_grad_norm_ leave the device.
                model.QueueForwardBackward(batch, new TrainingObjective.MaskedLM(), new DropoutSettings((ulong)(o.Seed * 1000 + i)), 1, reportFinal);
                buckets?.WaitAll();
                if (o.Clip > 0) optimizer!.QueueClipGradients(o.Clip);
                optimizer!.Step(1e-4f);
            }
            else
            {
                model.Encode(batch);
                model.MaskedLMLogits(batch.MaskedTokens);
            }
        }
        void Wait()
        {
            gpu?.Synchronize();
            group.Barrier();   // every rank's steps are done (world size 1: nothing)
        }

        for (int i = 0; i < o.Warmup; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Step(i);
        }
        Wait();
        gpu?.Pool.ResetPeak();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < o.Steps; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Step(o.Warmup + i);
        }
        Wait();
        double seconds = clock.Elapsed.TotalSeconds;

        long sequences = 0, tokens = 0;
        double flops = 0;
        for (int i = 0; i < o.Steps; i++)
        {
            var b = batches[(o.Warmup + i) % batches.Length];
            sequences += b.BatchSize;
            tokens += b.TokenCount;
            flops += ForwardFlops(config, b) * (o.Training ? 3 : 1);
        }
        // Data parallel: the job's totals (every rank ran its own batches in the same wall time, between barriers).
        Span<double> totals = [sequences, tokens, flops];
        group.AllReduceSum(totals);
        (sequences, tokens, flops) = ((long)totals[0], (long)totals[1], totals[2]);
        int world = distributed.WorldSize;
        if (!group.IsRoot)
        {
            group.Shutdown();
            return null;
        }
        double tflops = flops / seconds / 1e12;
        var result = new JsonObject
        {
            ["bench"] = o.Training ? "pretrain" : "forward",
            ["preset"] = o.Preset,
            ["device"] = o.Device,
            ["gpu"] = gpu?.Device.Name,
            ["precision"] = precision == ComputePrecision.BFloat16 ? "bf16" : "fp32",
            ["batch"] = o.Batch,
            ["seq"] = o.Seq,
            ["lengths"] = o.Lengths,
            ["steps"] = o.Steps,
            ["seq_per_s"] = Round(sequences / seconds, 1),
            ["tokens_per_s"] = Round(tokens / seconds, 0),
            ["model_tflops"] = Round(tflops, 2),
            ["mfu"] = gpu is null ? null : Round(tflops / (world * PeakBf16Tflops(gpu.Device.Name)), 4),
            ["ms_per_step"] = Round(seconds * 1000 / o.Steps, 2),
            ["real_tokens_per_step"] = Round((double)tokens / o.Steps, 0),
        };
        if (world > 1)
        {
            result["world_size"] = world;
            result["process_group"] = group.Kind;
            result["seq_per_s_per_rank"] = Round(sequences / seconds / world, 1);
        }
        if (gpu is not null)
        {
            result["peak_gpu_mem_gib"] = Round(gpu.Pool.PeakBytesInUse / (double)(1L << 30), 2);
            var (free, total) = gpu.Device.MemoryInfo();
            result["gpu_mem_used_gib"] = Round((total - free) / (double)(1L << 30), 2);
        }
        else result["activation_bytes"] = model.ActivationBytes;
        if (o.Profile && gpu is not null) Profile(gpu, model, optimizer, batches[0], o, result);
        group.Shutdown();
        return result;
    }

    /// <summary>
    /// Phase times with CUDA events over a few repetitions of each phase alone: forward (encoder + MLM head), forward +
    /// backward, the optimizer (clip + AdamW), and attention alone (forward and backward of every layer, on the same
    /// shapes and types as the model's).
    /// </summary>
    private static void Profile(CudaBackend gpu, MosaicBertModel model, DecoupledAdamW? optimizer, EncoderBatch batch, BenchOptions o, JsonObject result)
    {
        const int reps = 5;
        using var start = new CudaEvent(gpu.Device);
        using var end = new CudaEvent(gpu.Device);
        double Time(Action action)
        {
            action();
            gpu.Synchronize();
            start.Record(gpu.Stream);
            for (int i = 0; i < reps; i++) action();
            end.Record(gpu.Stream);
            return Math.Round(end.ElapsedMillisecondsSince(start) / reps, 2);
        }
        var dropout = new DropoutSettings(7);
        result["ms_forward"] = Time(() =>
        {
            model.Encode(batch, o.Training ? dropout : null);
            model.MaskedLMLogits(batch.MaskedTokens);
        });
        if (optimizer is null) return;
        result["ms_forward_backward"] = Time(() =>
        {
            model.ZeroGradients();
            model.ForwardBackward(batch, new TrainingObjective.MaskedLM(), dropout);
        });
        result["ms_optimizer"] = Time(() =>
        {
            if (o.Clip > 0) optimizer.QueueClipGradients(o.Clip);
            optimizer.Step(1e-4f);
        });
        var c = model.Config;
        int n = batch.TokenCount, d = c.HiddenSize, h = c.NumAttentionHeads;
        var act = model.Precision == ComputePrecision.BFloat16 ? DType.BFloat16 : DType.Float32;
        using var qkv = gpu.Allocate(act, n, 3 * d);
        using var context = gpu.Allocate(act, n, d);
        using var dContext = gpu.Allocate(act, n, d);
        using var dQkv = gpu.Allocate(act, n, 3 * d);
        using var lse = gpu.Allocate(n, h);
        using var cu = gpu.Allocate(DType.Int32, batch.BatchSize + 1);
        using var positions = gpu.Allocate(DType.Int32, n);
        using var slopes = gpu.Allocate(h);
        gpu.Upload(batch.CuSeqlens, cu);
        gpu.Upload(batch.Positions, positions);
        gpu.Upload(Alibi.Slopes(h).Select(s => (float)s).ToArray(), slopes);
        gpu.Upload(Enumerable.Range(0, n * 3 * d).Select(i => (float)Math.Sin(i * 0.37) * 0.5f).ToArray(), qkv);
        gpu.Upload(Enumerable.Range(0, n * d).Select(i => (float)Math.Cos(i * 0.11) * 0.1f).ToArray(), dContext);
        float scale = 1f / MathF.Sqrt(c.HeadSize);
        result["ms_attention_forward_all_layers"] = Time(() =>
        {
            for (int l = 0; l < c.NumHiddenLayers; l++) gpu.Attention(qkv, cu, positions, slopes, scale, context, lse);
        });
        result["ms_attention_backward_all_layers"] = Time(() =>
        {
            for (int l = 0; l < c.NumHiddenLayers; l++) gpu.AttentionBackward(qkv, cu, positions, slopes, scale, context, lse, dContext, dQkv);
        });

        // One whole training step with per-op GPU times (kernel names, GEMM shapes): where the step goes.
        gpu.StartProfile();
        model.ZeroGradients();
        model.ForwardBackward(batch, new TrainingObjective.MaskedLM(), dropout);
        if (o.Clip > 0) optimizer.ClipGradients(o.Clip);
        optimizer.Step(1e-4f);
        var ops = gpu.StopProfile();
        double total = ops.Sum(t => t.Milliseconds);
        result["profiled_step_gpu_ms"] = Math.Round(total, 2);
        result["ops"] = new JsonArray([.. ops.Take(40).Select(t => (JsonNode)new JsonObject
        {
            ["op"] = t.Label,
            ["calls"] = t.Calls,
            ["ms"] = Math.Round(t.Milliseconds, 3),
            ["share"] = Math.Round(t.Milliseconds / total, 4),
        })]);
    }

    /// <summary>FLOPs of one forward pass (see the class remarks).</summary>
    internal static double ForwardFlops(MosaicBertConfig c, EncoderBatch batch)
    {
        double d = c.HiddenSize, inner = c.IntermediateSize, flops = 0;
        for (int b = 0; b < batch.BatchSize; b++)
        {
            double l = batch.CuSeqlens[b + 1] - batch.CuSeqlens[b];
            flops += c.NumHiddenLayers * (2 * l * (4 * d * d + 3 * d * inner) + 4 * l * l * d);
        }
        double k = batch.MaskedTokens.Length;
        return flops + 2 * k * (d * d + d * c.VocabSize);
    }

    /// <summary>Dense bf16 tensor-core peak of the GPU in TFLOP/s (H100 SXM and H200: 989; others: the H100 figure).</summary>
    private static double PeakBf16Tflops(string gpuName) => gpuName.Contains("H100 PCIe", StringComparison.OrdinalIgnoreCase) ? 756 : 989;

    /// <summary>
    /// Random batches: ids uniform over the vocabulary past the special tokens, lengths = seq (full) or uniform in
    /// 16..seq (ragged, padding after), and 30% of the real tokens masked (input [MASK], label the original id).
    /// </summary>
    internal static EncoderBatch[] SyntheticBatches(MosaicBertConfig config, BenchOptions o, int count)
    {
        var rng = new Random(o.Seed);
        var result = new EncoderBatch[count];
        int cells = o.Batch * o.Seq;
        for (int k = 0; k < count; k++)
        {
            var ids = new int[cells];
            var mask = new int[cells];
            var labels = new int[cells];
            Array.Fill(labels, -100);
            for (int b = 0; b < o.Batch; b++)
            {
                int length = o.Lengths == "full" ? o.Seq : rng.Next(16, o.Seq + 1);
                for (int s = 0; s < length; s++)
                {
                    int cell = b * o.Seq + s;
                    mask[cell] = 1;
                    ids[cell] = rng.Next(1000, config.VocabSize);
                    if (rng.NextDouble() < 0.3)
                    {
                        labels[cell] = ids[cell];
                        ids[cell] = MaskTokenId;
                    }
                }
            }
            result[k] = new EncoderBatch(ids, [], mask, o.Batch, o.Seq, labels);
        }
        return result;
    }

    private static double Round(double value, int digits) => Math.Round(value, digits, MidpointRounding.AwayFromZero);
}
