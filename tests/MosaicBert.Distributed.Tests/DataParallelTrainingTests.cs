using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using MosaicBert.Model;
using MosaicBert.Pretraining;
using MosaicBert.Tensors;
using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Distributed.Tests;

/// <summary>
/// Samples numbered in a global order: sample g is a short sequence over 8 of 64 tokens, masked at 30%, all derived
/// from g alone, so any rank can produce (or skip) any sample and the batches depend only on the positions.
/// </summary>
internal sealed class NumberedSource : ISkippableBatchSource
{
    public long Next_ { get; private set; }
    public List<long> Taken { get; } = [];

    public string Position
    {
        get => JsonSerializer.Serialize(new { next = Next_ });
        set => Next_ = JsonDocument.Parse(value).RootElement.GetProperty("next").GetInt64();
    }

    public void Skip(int samples) => Next_ += samples;

    public MlmBatch Next(int batchSize)
    {
        const int s = 12;
        var ids = new int[batchSize * s];
        var mask = new int[ids.Length];
        var labels = new int[ids.Length];
        for (int b = 0; b < batchSize; b++)
        {
            long g = Next_++;
            Taken.Add(g);
            var rng = new Random((int)(g * 7919 + 1));
            int len = 6 + rng.Next(s - 6 + 1), start = 5 + rng.Next(40);
            for (int t = 0; t < s; t++)
            {
                int cell = b * s + t;
                labels[cell] = -100;
                if (t >= len) continue;
                mask[cell] = 1;
                ids[cell] = t == 0 ? 2 : t == len - 1 ? 3 : 5 + (start + t) % 8;
                if (t > 0 && t < len - 1 && rng.NextDouble() < 0.3)
                {
                    labels[cell] = ids[cell];
                    ids[cell] = 4;
                }
            }
        }
        return new MlmBatch(batchSize, s, ids, mask, labels);
    }
}

/// <summary>
/// The pretraining runner across ranks on CPU (in-process ranks on threads, TCP over loopback): world size 1 through
/// the distributed path is bit-identical to the plain runner; 2 ranks equal 1 rank up to the order of the gradient
/// sums; rank 0 alone writes; a checkpoint resumes at another world size; the shards' union is the global order.
/// </summary>
public sealed class DataParallelTrainingTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mosaicbert-ddp-");

    public void Dispose() => _dir.Delete(recursive: true);

    private PretrainingOptions Options(string name, long steps = 10) => new()
    {
        OutputDir = Path.Combine(_dir.FullName, name), MaxSteps = steps, GlobalBatchSize = 8, MicroBatchSize = 2, LearningRate = 1e-2,
        WarmupFraction = 0.1, EvalInterval = 5, CheckpointInterval = 3, LogInterval = 2, Seed = 3, Vocab = "unused", Corpus = ["unused"],
    };

    private static MosaicBertModel Model(int? seed = 11)
    {
        var model = new MosaicBertModel(new MosaicBertConfig
        {
            VocabSize = 64, HiddenSize = 32, NumAttentionHeads = 4, NumHiddenLayers = 2, IntermediateSize = 64, HiddenDropoutProb = 0.1f,
        }, ModelHeads.MaskedLM, new CpuBackend(threads: 1));
        if (seed is int s) model.InitializeWeights(s);
        return model;
    }

    private static IReadOnlyList<MlmBatch> Eval => OverlappedReductionTests.Eval;

    private sealed class Recorder(Action<StepReport>? then = null) : IProgress<StepReport>
    {
        public List<StepReport> Reports { get; } = [];

        public void Report(StepReport value)
        {
            Reports.Add(value);
            then?.Invoke(value);
        }
    }

    private static float[] Parameters(MosaicBertModel model)
    {
        var values = new float[model.Layout.Count];
        model.Backend.Download(model.Parameters, values);
        return values;
    }

    /// <summary>Runs <paramref name="world"/> ranks on threads; returns rank 0's reports and every rank's final parameters.</summary>
    private static (List<StepReport> Reports, float[][] Parameters) RunRanks(int world, PretrainingOptions options, Func<StepReport, bool>? stopAfter = null)
    {
        int port = Launcher.FreePort();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        var recorder = new Recorder(r =>
        {
            if (stopAfter?.Invoke(r) == true) cts.Cancel();
        });
        var parameters = new float[world][];
        var ranks = Enumerable.Range(0, world).Select(r => Threads.Start(() =>
        {
            // Ranks other than 0 start from other weights: the broadcast at the start must make them equal.
            using var model = Model(seed: r == 0 ? 11 : 100 + r);
            var env = ControlChannelTests.Env(r, world, port);
            using var group = new TcpProcessGroup(ControlChannel.Connect(env, null, ControlChannelTests.Fast), model.Backend);
            new PretrainingRunner(options, NullLogger.Instance, group).Run(model, new NumberedSource(), Eval, recorder, cts.Token);
            group.Shutdown();
            parameters[r] = Parameters(model);
        })).ToArray();
        Threads.JoinAll(ranks, TimeSpan.FromMinutes(3));
        return (recorder.Reports, parameters);
    }

    private static void AssertClose(IReadOnlyList<double> expected, IReadOnlyList<double> actual, double relative, string what)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= relative * Math.Abs(expected[i]),
                $"{what}: step {i + 1}: {expected[i]:R} vs {actual[i]:R} (relative tolerance {relative:E0})");
    }

    [Fact]
    public void WorldSizeOneThroughTheDistributedPathIsBitIdenticalToThePlainRunner()
    {
        var plain = new Recorder();
        float[] plainParameters;
        using (var model = Model())
        {
            new PretrainingRunner(Options("plain"), NullLogger.Instance).Run(model, new NumberedSource(), Eval, plain, TestContext.Current.CancellationToken);
            plainParameters = Parameters(model);
        }
        // A real control channel and the CPU process group, world size 1.
        var (reports, parameters) = RunRanks(1, Options("world1"));
        Assert.Equal(plain.Reports.Select(r => BitConverter.DoubleToInt64Bits(r.Loss)), reports.Select(r => BitConverter.DoubleToInt64Bits(r.Loss)));
        Assert.Equal(plainParameters, parameters[0]);
        Assert.Equal(File.ReadAllLines(Path.Combine(_dir.FullName, "plain", "metrics.jsonl")).Select(StripSpeed),
            File.ReadAllLines(Path.Combine(_dir.FullName, "world1", "metrics.jsonl")).Select(StripSpeed));
    }

    private static string StripSpeed(string line)
    {
        var doc = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(line)!;
        doc.Remove("tokens_per_s");
        return JsonSerializer.Serialize(doc);
    }

    [Fact]
    public void TwoRanksEqualOneRankAndOnlyRankZeroWrites()
    {
        var (single, singleParameters) = RunRanks(1, Options("one"));
        var (two, twoParameters) = RunRanks(2, Options("two"));
        // The same micro-batches, masks and dropout; only the order of the gradient sums differs.
        AssertClose(single.Select(r => r.Loss).ToList(), two.Select(r => r.Loss).ToList(), 1e-4, "loss, 2 ranks vs 1");
        Assert.Equal(twoParameters[0], twoParameters[1]); // the ranks stay bit-identical
        double worst = singleParameters[0].Zip(twoParameters[0], (a, b) => Math.Abs(a - b)).Max();
        Assert.True(worst < 1e-4, $"parameters after 10 steps differ by up to {worst:E2}");
        Assert.Equal(10, two.Count); // progress from rank 0 only
        // Rank 0 alone writes: one line per logged step, one checkpoint per interval.
        var lines = File.ReadAllLines(Path.Combine(_dir.FullName, "two", "metrics.jsonl"));
        var steps = lines.Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64()).ToList();
        Assert.Equal(steps.Distinct().Count(), steps.Count);
        Assert.Equal(File.ReadAllLines(Path.Combine(_dir.FullName, "one", "metrics.jsonl")).Length, lines.Length);
        Assert.Equal(new[] { "step-00000006", "step-00000009", "step-00000010" },
            TrainingCheckpoint.List(Path.Combine(_dir.FullName, "two", "checkpoints")).Select(Path.GetFileName));
    }

    [Fact]
    public void ACheckpointResumesAtAnotherWorldSize()
    {
        var (straight, _) = RunRanks(1, Options("straight"));
        // Steps 1–6 on 2 ranks (a stop request reaching rank 0 stops both, with a checkpoint), 7–10 on 4 ranks.
        var (first, _) = RunRanks(2, Options("resumed"), r => r.Step == 6);
        Assert.Equal(6, first.Count);
        var (second, parameters) = RunRanks(4, Options("resumed"));
        Assert.Equal(Enumerable.Range(7, 4).Select(s => (long)s), second.Select(r => r.Step));
        AssertClose(straight.Select(r => r.Loss).ToList(), [.. first.Concat(second).Select(r => r.Loss)], 1e-4, "loss, resumed on 2 then 4 ranks vs 1");
        Assert.All(parameters, p => Assert.Equal(parameters[0], p));
    }

    [Fact]
    public void AGlobalBatchThatDoesNotSplitIntoWholeMicroBatchesPerRankIsRefused()
    {
        var options = Options("bad");
        options.GlobalBatchSize = 6;
        options.MicroBatchSize = 2;
        var e = Assert.Throws<InvalidOperationException>(() => DataParallel.Shard(options, new FakeGroup(0, 2)));
        Assert.Contains("GlobalBatchSize 6 must be a multiple of MicroBatchSize 2 × world size 2 = 4", e.Message);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    public void TheShardsUnionIsTheSingleProcessOrder(int world)
    {
        // 16 samples per step in micro-batches of 2: each rank runs 8 / world micro-batches and skips the rest.
        var options = Options("shards");
        options.GlobalBatchSize = 16;
        var single = new NumberedSource();
        var singleBatches = new List<long[]>();
        for (int step = 0; step < 3; step++)
            for (int micro = 0; micro < 8; micro++)
            {
                single.Next(2);
                singleBatches.Add([.. single.Taken.TakeLast(2)]);
            }
        var byMicro = new Dictionary<int, long[]>();
        var positions = new List<string>();
        for (int rank = 0; rank < world; rank++)
        {
            var share = DataParallel.Shard(options, new FakeGroup(rank, world));
            Assert.Equal(8 / world, share.MicroBatchesPerRank);
            var source = new NumberedSource();
            for (int step = 0; step < 3; step++)
                for (int micro = 0; micro < 8; micro++)
                {
                    if (!share.Owns(micro))
                    {
                        DataParallel.Skip(source, 2);
                        continue;
                    }
                    source.Next(2);
                    Assert.True(byMicro.TryAdd(step * 8 + micro, [.. source.Taken.TakeLast(2)]), $"micro-batch {micro} of step {step} taken twice");
                }
            positions.Add(source.Position);
        }
        Assert.Equal(singleBatches.Count, byMicro.Count);
        for (int i = 0; i < singleBatches.Count; i++) Assert.Equal(singleBatches[i], byMicro[i]);
        Assert.All(positions, p => Assert.Equal(single.Position, p)); // every rank ends where one process does
    }

    [Fact]
    public void BackwardOrderCoversTheGradientBlockFromTheHeadDown()
    {
        using var model = Model();
        var ranges = DataParallel.BackwardOrder(model.Layout).ToList();
        Assert.Equal(1 + 2 + 1, ranges.Count); // head, layer 1, layer 0, embeddings
        Assert.Equal(model.Layout.Count, ranges.Sum(r => r.Length));
        Assert.Equal(model.Layout["cls.predictions.transform.dense.weight"].Offset, ranges[0].Offset);
        Assert.Equal(model.Layout["bert.encoder.layer.1.attention.self.Wqkv.weight"].Offset, ranges[1].Offset);
        Assert.Equal(0, ranges[^1].Offset);
        for (int i = 1; i < ranges.Count; i++) Assert.Equal(ranges[i].End, ranges[i - 1].Offset); // contiguous, descending
        var one = GradientBuckets.Plan(ranges, long.MaxValue);
        Assert.Equal([new GradientRange(0, model.Layout.Count)], one);
    }
}

/// <summary>A process group that records what it is asked and computes nothing (for bucket and shard logic).</summary>
internal sealed class FakeGroup(int rank, int world) : ProcessGroup(new DistributedEnvironment(rank, world, rank, world, "127.0.0.1", 1))
{
    public List<string> Calls { get; } = [];
    public override string Kind => "fake";
    protected internal override void StartAllReduceAverage(Tensor values) => Calls.Add($"start {values.Offset}+{values.Length}");
    protected internal override void FinishPending() => Calls.Add("finish");
    public override void Broadcast(Tensor values, int root = 0) => Calls.Add("broadcast");
    public override void AllReduceSum(Span<double> values) => Calls.Add("sum");
    public override void Barrier() => Calls.Add("barrier");
}

public sealed class GradientBucketTests
{
    private static readonly CpuBackend s_cpu = new(threads: 1);

    [Fact]
    public void PlanMergesAdjacentRangesUpToTheCap()
    {
        // Backward order: [90,100), [60,90), [30,60), [0,30).
        GradientRange[] order = [new(90, 10), new(60, 30), new(30, 30), new(0, 30)];
        Assert.Equal([new GradientRange(60, 40), new GradientRange(0, 60)], GradientBuckets.Plan(order, 60));
        Assert.Equal([new GradientRange(0, 100)], GradientBuckets.Plan(order, 100));
        Assert.Equal(order, GradientBuckets.Plan(order, 10)); // a range larger than the cap stays whole
    }

    [Fact]
    public void BucketsStartInIndexOrderAndWaitAllJoinsThem()
    {
        var group = new FakeGroup(0, 2);
        using var grads = s_cpu.Allocate(100);
        var buckets = new GradientBuckets(group, grads, [new(60, 40), new(0, 60)]);
        // The second bucket's layers become ready first (in pieces): it waits for bucket 0.
        buckets.MarkReady(new GradientRange(30, 30));
        buckets.MarkReady(new GradientRange(0, 30));
        Assert.Empty(group.Calls);
        buckets.MarkReady(new GradientRange(90, 10));
        buckets.MarkReady(new GradientRange(60, 30));
        Assert.Equal(["start 60+40", "start 0+60"], group.Calls);
        buckets.WaitAll();
        Assert.Equal("finish", group.Calls[^1]);
        // The next step starts afresh.
        group.Calls.Clear();
        buckets.ReduceAll();
        Assert.Equal(["start 60+40", "start 0+60", "finish"], group.Calls);
    }

    [Fact]
    public void MisuseIsReported()
    {
        var group = new FakeGroup(0, 2);
        using var grads = s_cpu.Allocate(100);
        Assert.Contains("cover 90 of the 100", Assert.Throws<ArgumentException>(() => new GradientBuckets(group, grads, [new(0, 90)])).Message);
        Assert.Contains("overlap", Assert.Throws<ArgumentException>(() => new GradientBuckets(group, grads, [new(0, 60), new(50, 50)])).Message);
        var buckets = new GradientBuckets(group, grads, [new(50, 50), new(0, 50)]);
        buckets.MarkReady(0);
        Assert.Contains("twice", Assert.Throws<InvalidOperationException>(() => buckets.MarkReady(0)).Message);
        Assert.Contains("Bucket 1 [0, 50) was never marked ready", Assert.Throws<InvalidOperationException>(buckets.WaitAll).Message);
        Assert.Contains("inside one bucket", Assert.Throws<ArgumentException>(() => buckets.MarkReady(new GradientRange(40, 20))).Message);
    }
}

/// <summary>The real data path's skip: passing over samples lands where reading them would.</summary>
public sealed class CorpusSkipTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mosaicbert-ddp-corpus-");

    public void Dispose() => _dir.Delete(recursive: true);

    [Fact]
    public void SkippingEqualsReadingAndDropping()
    {
        var vocab = new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" }.Concat("abcdefghijklmnopqrstuvwxyz".Select(c => c.ToString())).Concat([".", ","]);
        File.WriteAllText(Path.Combine(_dir.FullName, "vocab.txt"), string.Join('\n', vocab) + "\n");
        var rng = new Random(5);
        var docs = Enumerable.Range(0, 60).Select(_ => string.Join(' ', Enumerable.Range(0, 10).Select(_ => ((char)('a' + rng.Next(26))).ToString())) + ".");
        File.WriteAllText(Path.Combine(_dir.FullName, "corpus.txt"), string.Join("\n\n", docs) + "\n");
        var options = new PretrainingOptions
        {
            Vocab = Path.Combine(_dir.FullName, "vocab.txt"), Corpus = [Path.Combine(_dir.FullName, "corpus.txt")], OutputDir = _dir.FullName,
            SequenceLength = 16, EvalSamples = 4, MicroBatchSize = 4, Threads = 1, Preset = "tiny",
        };
        IMlmBatchSource Source() => new CorpusDataFactory().Create(options, NullLogger.Instance).Train;
        var read = Source();
        var skipped = Source();
        Assert.IsAssignableFrom<ISkippableBatchSource>(skipped);
        // Across an epoch boundary (56 training samples): 3 × 20 samples.
        for (int i = 0; i < 3; i++)
        {
            read.Next(4);
            read.Next(16);
            DataParallel.Skip(skipped, 4);
            skipped.Next(16);
        }
        Assert.Equal(read.Position, skipped.Position);
        var a = read.Next(4);
        var b = skipped.Next(4);
        Assert.Equal(a.InputIds, b.InputIds);
        Assert.Equal(a.Labels, b.Labels);
        Assert.Contains("\"epoch\":1", read.Position);
    }
}
