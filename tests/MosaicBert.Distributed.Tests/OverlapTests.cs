using Microsoft.Extensions.Logging.Abstractions;
using MosaicBert.Model;
using MosaicBert.Pretraining;
using MosaicBert.Tensors;
using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Distributed.Tests;

/// <summary>The model's backward-pass hook: which gradient ranges it reports, when, and that they are final then.</summary>
public sealed class GradientsFinalTests
{
    private static MosaicBertModel Model(ModelHeads heads, EncoderArchitecture architecture, int labels)
    {
        var model = new MosaicBertModel(new MosaicBertConfig
        {
            VocabSize = 64, HiddenSize = 16, NumAttentionHeads = 2, NumHiddenLayers = 3, IntermediateSize = 32, HiddenDropoutProb = 0.1f,
            Architecture = architecture, MaxPositionEmbeddings = 16, NumLabels = labels,
        }, heads, new CpuBackend(threads: 1));
        model.InitializeWeights(5);
        return model;
    }

    /// <summary>Three sequences of 10 with padding and a few masked positions.</summary>
    private static EncoderBatch Batch()
    {
        const int b = 3, s = 10;
        var rng = new Random(9);
        var ids = new int[b * s];
        var mask = new int[b * s];
        var labels = Enumerable.Repeat(-100, b * s).ToArray();
        for (int r = 0; r < b; r++)
            for (int t = 0; t < 7 + r; t++)
            {
                mask[r * s + t] = 1;
                ids[r * s + t] = 5 + rng.Next(59);
                if (t % 3 == 1) (labels[r * s + t], ids[r * s + t]) = (ids[r * s + t], 4);
            }
        return new EncoderBatch(ids, [], mask, b, s, labels);
    }

    private static float[] Download(MosaicBertModel model, Tensor t)
    {
        var host = new float[t.Length];
        model.Backend.Download(t, host);
        return host;
    }

    public static TheoryData<ModelHeads, string, EncoderArchitecture> Cases => new()
    {
        { ModelHeads.MaskedLM, "mlm", EncoderArchitecture.MosaicBert },
        { ModelHeads.SequenceClassification, "classification", EncoderArchitecture.MosaicBert },
        { ModelHeads.SequenceClassification, "regression", EncoderArchitecture.MosaicBert },
        { ModelHeads.MaskedLM | ModelHeads.SequenceClassification, "mlm", EncoderArchitecture.MosaicBert },
        { ModelHeads.MaskedLM | ModelHeads.SequenceClassification, "classification", EncoderArchitecture.MosaicBert },
        { ModelHeads.MaskedLM, "mlm", EncoderArchitecture.Bert },
        { ModelHeads.SequenceClassification, "classification", EncoderArchitecture.Bert },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void TheRangesCoverTheBlockOnceInBackwardOrderEachFinalWhenReported(ModelHeads heads, string objective, EncoderArchitecture architecture)
    {
        using var model = Model(heads, architecture, objective == "regression" ? 1 : 2);
        var batch = Batch();
        TrainingObjective goal = objective switch
        {
            "mlm" => new TrainingObjective.MaskedLM(),
            "classification" => new TrainingObjective.Classification([1, 0, 1]),
            _ => new TrainingObjective.Regression([0.5f, -1f, 2f]),
        };
        var dropout = new DropoutSettings(21);
        // Reference: the same pass without the hook, accumulated twice (as gradient accumulation does).
        model.ZeroGradients();
        model.ForwardBackward(batch, goal, dropout);
        model.ForwardBackward(batch, goal, dropout);
        var expected = Download(model, model.Gradients);

        model.ZeroGradients();
        model.ForwardBackward(batch, goal, dropout); // an earlier micro-batch: no hook
        var reported = new List<GradientRange>();
        var atReport = new List<float[]>();
        model.ForwardBackward(batch, goal, dropout, gradientsFinal: (offset, length) =>
        {
            reported.Add(new GradientRange(offset, length));
            atReport.Add(Download(model, model.Gradients)); // the CPU backend has finished the work issued so far
        });
        var final = Download(model, model.Gradients);

        Assert.Equal(expected, final); // the hook changes nothing
        Assert.Equal(DataParallel.BackwardOrder(model.Layout), reported);
        var sorted = reported.OrderBy(r => r.Offset).ToList();
        Assert.Equal(0, sorted[0].Offset);
        for (int i = 1; i < sorted.Count; i++) Assert.Equal(sorted[i - 1].End, sorted[i].Offset);
        Assert.Equal(model.Layout.Count, sorted[^1].End);
        for (int i = 0; i < reported.Count; i++)
        {
            var r = reported[i];
            Assert.True(atReport[i].AsSpan((int)r.Offset, (int)r.Length).SequenceEqual(final.AsSpan((int)r.Offset, (int)r.Length)),
                $"range {i} {r} changed after it was reported final");
        }
        // Reported during the pass, not after it: when the head's range is final, the embeddings' is not yet.
        var embeddings = reported[^1];
        Assert.False(atReport[0].AsSpan((int)embeddings.Offset, (int)embeddings.Length).SequenceEqual(final.AsSpan((int)embeddings.Offset, (int)embeddings.Length)),
            "the embeddings' gradients were already final when the first range was reported");
    }
}

/// <summary>
/// Overlapped gradient averaging in the pretraining runner: the same bits as averaging after the backward pass, on
/// CPU ranks over TCP; reductions only from the last micro-batch of a step; GPU ranks over NCCL where there are GPUs.
/// </summary>
public sealed class OverlappedReductionTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mosaicbert-overlap-");

    public void Dispose() => _dir.Delete(recursive: true);

    /// <summary>8 samples a step in micro-batches of 2 (2 per rank on 2 ranks: accumulation), 4 buckets of the tiny model.</summary>
    internal static PretrainingOptions Options(string dir, bool? overlap, long steps = 6) => new()
    {
        OutputDir = dir, MaxSteps = steps, GlobalBatchSize = 8, MicroBatchSize = 2, LearningRate = 1e-2, WarmupFraction = 0.1,
        EvalInterval = 3, CheckpointInterval = 4, LogInterval = 2, Seed = 3, Vocab = "unused", Corpus = ["unused"],
        OverlapGradientReduction = overlap, GradientBucketElements = 4000,
    };

    /// <summary>The tiny MLM model; <paramref name="hiddenSize"/> 64 for the GPU (head dimension 16, as the GPU pretraining tests use).</summary>
    internal static MosaicBertModel Model(Backend backend, int seed, int hiddenSize = 32)
    {
        var model = new MosaicBertModel(new MosaicBertConfig
        {
            VocabSize = 64, HiddenSize = hiddenSize, NumAttentionHeads = 4, NumHiddenLayers = 2, IntermediateSize = 2 * hiddenSize, HiddenDropoutProb = 0.1f,
        }, ModelHeads.MaskedLM, backend);
        model.InitializeWeights(seed);
        return model;
    }

    internal static IReadOnlyList<MlmBatch> Eval
    {
        get
        {
            var source = new NumberedSource();
            source.Skip(1_000_000);
            return [.. Enumerable.Range(0, 2).Select(_ => source.Next(8))];
        }
    }

    internal sealed class Losses : IProgress<StepReport>
    {
        public List<long> Bits { get; } = [];
        public void Report(StepReport value) => Bits.Add(BitConverter.DoubleToInt64Bits(value.Loss));
    }

    /// <summary>
    /// Runs <paramref name="world"/> ranks on threads, rank r on <paramref name="backend"/>(r) and in the group
    /// <paramref name="join"/> makes; returns rank 0's losses (bits) and every rank's final parameters.
    /// </summary>
    internal static (List<long> Losses, float[][] Parameters) RunRanks(int world, PretrainingOptions options, Func<int, Backend> backend,
        Func<DistributedEnvironment, Backend, ProcessGroup> join, int hiddenSize = 32)
    {
        int port = Launcher.FreePort();
        var losses = new Losses();
        var parameters = new float[world][];
        var ranks = Enumerable.Range(0, world).Select(r => Threads.Start(() =>
        {
            using var device = backend(r);
            using var model = Model(device, seed: r == 0 ? 11 : 100 + r, hiddenSize);
            using var group = join(ControlChannelTests.Env(r, world, port), device);
            new PretrainingRunner(options, NullLogger.Instance, group).Run(model, new NumberedSource(), Eval, losses, TestContext.Current.CancellationToken);
            group.Shutdown();
            var values = new float[model.Layout.Count];
            model.Backend.Download(model.Parameters, values);
            parameters[r] = values;
        })).ToArray();
        Threads.JoinAll(ranks, TimeSpan.FromMinutes(3));
        return (losses.Bits, parameters);
    }

    private static ProcessGroup Tcp(DistributedEnvironment env, Backend backend) =>
        new TcpProcessGroup(ControlChannel.Connect(env, null, ControlChannelTests.Fast), backend);

    [Fact]
    public void TwoCpuRanksGiveTheSameBitsWithAndWithoutOverlap()
    {
        var (overlapped, overlappedParameters) = RunRanks(2, Options(Path.Combine(_dir.FullName, "on"), overlap: null), _ => new CpuBackend(threads: 1), Tcp);
        var (after, afterParameters) = RunRanks(2, Options(Path.Combine(_dir.FullName, "off"), overlap: false), _ => new CpuBackend(threads: 1), Tcp);
        Assert.Equal(6, overlapped.Count);
        Assert.Equal(after, overlapped);
        Assert.Equal(afterParameters[0], overlappedParameters[0]);
        Assert.Equal(overlappedParameters[0], overlappedParameters[1]);
        Assert.Equal(File.ReadAllLines(Path.Combine(_dir.FullName, "off", "metrics.jsonl")).Length,
            File.ReadAllLines(Path.Combine(_dir.FullName, "on", "metrics.jsonl")).Length);
    }

    /// <summary>
    /// Rank 0 of 2 with no peer (its collectives are recorded, not run): what the runner starts and when. Each start
    /// records the gradient block at that moment, each "finish" (the wait before the optimizer step) too.
    /// </summary>
    private sealed class RecordingGroup() : ProcessGroup(new DistributedEnvironment(0, 2, 0, 2, "127.0.0.1", 1))
    {
        public List<string> Calls { get; } = [];
        public List<float[]> Snapshots { get; } = [];
        public MosaicBertModel? Model { get; set; }
        public override string Kind => "recording";

        protected internal override void StartAllReduceAverage(Tensor values)
        {
            Calls.Add($"start {values.Offset}+{values.Length}");
            Snapshot();
        }

        protected internal override void FinishPending()
        {
            Calls.Add("finish");
            Snapshot();
        }

        private void Snapshot()
        {
            var host = new float[Model!.Layout.Count];
            Model.Backend.Download(Model.Gradients, host);
            Snapshots.Add(host);
        }

        public override void Broadcast(Tensor values, int root = 0) { }
        public override void AllReduceSum(Span<double> values) { }
        public override void Barrier() { }
    }

    /// <summary>Logs each micro-batch the rank reads into the group's calls.</summary>
    private sealed class LoggingSource(NumberedSource inner, List<string> calls) : ISkippableBatchSource
    {
        public string Position { get => inner.Position; set => inner.Position = value; }
        public void Skip(int samples) => inner.Skip(samples);

        public MlmBatch Next(int batchSize)
        {
            calls.Add("micro-batch");
            return inner.Next(batchSize);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void OnlyTheLastMicroBatchOfAStepStartsReductions(bool overlap)
    {
        var group = new RecordingGroup();
        using var model = Model(new CpuBackend(threads: 1), 11);
        group.Model = model;
        var options = Options(Path.Combine(_dir.FullName, overlap ? "on" : "off"), overlap, steps: 2);
        new PretrainingRunner(options, NullLogger.Instance, group).Run(model, new LoggingSource(new NumberedSource(), group.Calls), Eval, null,
            TestContext.Current.CancellationToken);

        var buckets = GradientBuckets.Plan(DataParallel.BackwardOrder(model.Layout), options.GradientBucketElements);
        Assert.Equal(4, buckets.Length);
        string[] step = ["micro-batch", "micro-batch", .. buckets.Select(b => $"start {b.Offset}+{b.Length}"), "finish"];
        Assert.Equal([.. step, .. step], group.Calls); // rank 0 of 2 runs 2 of the 4 micro-batches; the second starts every bucket

        for (int s = 0; s < 2; s++)
        {
            int first = s * (buckets.Length + 1);
            var atFinish = group.Snapshots[first + buckets.Length];
            for (int b = 0; b < buckets.Length; b++)
                Assert.True(Slice(group.Snapshots[first + b], buckets[b]).SequenceEqual(Slice(atFinish, buckets[b])), $"step {s + 1}: bucket {b} started before it was final");
            // Overlapped: the head's bucket starts before the last micro-batch's embedding gradients are added.
            bool embeddingsFinalAtFirstStart = Slice(group.Snapshots[first], buckets[^1]).SequenceEqual(Slice(atFinish, buckets[^1]));
            Assert.Equal(!overlap, embeddingsFinalAtFirstStart);
        }
    }

    private static ReadOnlySpan<float> Slice(float[] block, GradientRange r) => block.AsSpan((int)r.Offset, (int)r.Length);

    [Fact]
    public void OverlapDefaultsToOnForMoreThanOneRankAndCanBeSwitchedOff()
    {
        var two = new RecordingGroup();
        Assert.True(DataParallel.Overlaps(Options("x", null), two));
        Assert.False(DataParallel.Overlaps(Options("x", false), two));
        Assert.False(DataParallel.Overlaps(Options("x", null), new SingleProcessGroup()));
        Assert.True(DataParallel.Overlaps(Options("x", true), new SingleProcessGroup()));
        var bad = Options("x", null);
        bad.GradientBucketElements = 0;
        var result = new PretrainingOptionsValidator().Validate(null, bad);
        Assert.Contains("GradientBucketElements must be at least 1, not 0.", result.FailureMessage);
    }
}

/// <summary>
/// Overlapped averaging on GPUs: NCCL's all-reduces on the communication stream, each after an event on the compute
/// stream where its bucket became final, while the backward pass goes on; the optimizer step after an event on the
/// communication stream. Any missing ordering would show as different bits. Skipped, with the reason, where there is
/// no GPU, no NCCL or (for two ranks) one GPU.
/// </summary>
[Collection("gpu")]
public sealed class NcclOverlapTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mosaicbert-overlap-gpu-");

    public void Dispose() => _dir.Delete(recursive: true);

    private PretrainingOptions Options(string name, bool? overlap) => OverlappedReductionTests.Options(Path.Combine(_dir.FullName, name), overlap);

    private const int Width = 64; // every range is over the 4000-element cap: 4 buckets (head, layer 1, layer 0, embeddings)

    private static Backend Gpu(int rank) => new Tensors.Cuda.CudaBackend(rank);

    /// <summary>World size 1 through a real NCCL group (ProcessGroup.Create would take the no-op group for one rank).</summary>
    private static ProcessGroup NcclOfOne(DistributedEnvironment env, Backend backend)
    {
        var channel = ControlChannel.Connect(env, () => NcclCommunicator.CreateUniqueId().ToArray(), ControlChannelTests.Fast);
        try
        {
            return new NcclProcessGroup(channel, (Tensors.Cuda.CudaBackend)backend);
        }
        catch
        {
            channel.Dispose();
            throw;
        }
    }

    [Fact]
    public void OverlapOnOneGpuGivesTheSameBitsAsAveragingAfterTheBackwardPass()
    {
        NcclTests.RequireGpus(1);
        var (on, onParameters) = OverlappedReductionTests.RunRanks(1, Options("on", overlap: true), Gpu, NcclOfOne, Width);
        var (off, offParameters) = OverlappedReductionTests.RunRanks(1, Options("off", overlap: false), Gpu, NcclOfOne, Width);
        var (plain, plainParameters) = OverlappedReductionTests.RunRanks(1, Options("plain", overlap: null), Gpu, (env, _) => new SingleProcessGroup(env), Width);
        Assert.Equal(6, on.Count);
        Assert.Equal(off, on);
        Assert.Equal(plain, on);
        Assert.Equal(offParameters[0], onParameters[0]);
        Assert.Equal(plainParameters[0], onParameters[0]);
    }

    [Fact]
    public void TwoGpusGiveTheSameBitsWithAndWithoutOverlap()
    {
        NcclTests.RequireGpus(2);
        static ProcessGroup Nccl(DistributedEnvironment env, Backend backend) => ProcessGroup.Create(env, backend, ControlChannelTests.Fast);
        var (on, onParameters) = OverlappedReductionTests.RunRanks(2, Options("on", overlap: null), Gpu, Nccl, Width);
        var (off, offParameters) = OverlappedReductionTests.RunRanks(2, Options("off", overlap: false), Gpu, Nccl, Width);
        Assert.Equal(6, on.Count);
        // A two-rank average is symmetric in its inputs, so the order NCCL adds in cannot change its bits.
        Assert.Equal(off, on);
        Assert.Equal(offParameters[0], onParameters[0]);
        Assert.Equal(onParameters[0], onParameters[1]);
    }
}
