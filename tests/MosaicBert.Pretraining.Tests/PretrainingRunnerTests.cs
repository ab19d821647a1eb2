using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using MosaicBert.Model;
using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Pretraining.Tests;

/// <summary>
/// The training loop on a tiny model with a deterministic in-memory batch source: the loss falls, a run stopped
/// part-way and started again equals an uninterrupted run exactly, and the metrics and plot files are written.
/// </summary>
public sealed class PretrainingRunnerTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mosaicbert-pretrain-");

    public void Dispose() => _dir.Delete(recursive: true);

    /// <summary>Sequences over 8 of the 64 tokens in a cyclic order (token 5 + (c + t) mod 8), masked at 30%: the
    /// unigram prior alone takes the loss from ln 64 to ln 8, the order to near 0.</summary>
    private sealed class PatternSource : IMlmBatchSource
    {
        private long _next;

        public string Position
        {
            get => JsonSerializer.Serialize(new { next = _next });
            set => _next = JsonDocument.Parse(value).RootElement.GetProperty("next").GetInt64();
        }

        public MlmBatch Next(int batchSize) => Make(batchSize, _next++, 0.3);

        public static MlmBatch Make(int batchSize, long index, double ratio)
        {
            const int s = 12;
            var rng = new Random((int)index * 7919 + 1);
            var ids = new int[batchSize * s];
            var mask = new int[ids.Length];
            var labels = new int[ids.Length];
            for (int b = 0; b < batchSize; b++)
            {
                int len = 6 + rng.Next(s - 6 + 1), start = 5 + rng.Next(40);
                for (int t = 0; t < s; t++)
                {
                    int cell = b * s + t;
                    if (t >= len) { labels[cell] = -100; continue; }
                    mask[cell] = 1;
                    ids[cell] = t == 0 ? 2 : t == len - 1 ? 3 : 5 + (start + t) % 8;
                    labels[cell] = -100;
                    if (t > 0 && t < len - 1 && rng.NextDouble() < ratio)
                    {
                        labels[cell] = ids[cell];
                        ids[cell] = 4; // [MASK]
                    }
                }
            }
            return new MlmBatch(batchSize, s, ids, mask, labels);
        }
    }

    private PretrainingOptions Options(long steps) => new()
    {
        OutputDir = _dir.FullName, MaxSteps = steps, GlobalBatchSize = 8, MicroBatchSize = 4, LearningRate = 1e-2,
        WarmupFraction = 0.1, WeightDecay = 1e-5, EvalInterval = 10, CheckpointInterval = 10, LogInterval = 5, Seed = 3,
        Vocab = "unused", Corpus = ["unused"],
    };

    private static MosaicBertModel Model() => NewModel(new MosaicBertConfig
    {
        VocabSize = 64, HiddenSize = 32, NumAttentionHeads = 4, NumHiddenLayers = 2, IntermediateSize = 64,
    });

    private static MosaicBertModel NewModel(MosaicBertConfig c)
    {
        var model = new MosaicBertModel(c, ModelHeads.MaskedLM, new CpuBackend(threads: 2));
        model.InitializeWeights(11);
        return model;
    }

    private static IReadOnlyList<MlmBatch> Eval => [.. Enumerable.Range(0, 4).Select(i => PatternSource.Make(8, 1_000_000 + i, 0.15))];

    private sealed class Recorder : IProgress<StepReport>
    {
        public List<StepReport> Reports { get; } = [];
        public void Report(StepReport value) => Reports.Add(value);
    }

    [Fact]
    public void LossFallsAndFilesAreWritten()
    {
        using var model = Model();
        double before = PretrainingRunner.Evaluate(model, Eval);
        var recorder = new Recorder();
        long last = new PretrainingRunner(Options(40), NullLogger.Instance).Run(model, new PatternSource(), Eval, recorder, TestContext.Current.CancellationToken);
        Assert.Equal(40, last);
        double after = PretrainingRunner.Evaluate(model, Eval);
        Assert.True(after < before - 1.0, $"eval MLM loss {before:F3} → {after:F3} did not fall by 1 nat");
        Assert.Equal(40, recorder.Reports.Count);
        Assert.All(recorder.Reports.Where(r => r.Step % 5 == 0), r => Assert.NotNull(r.MlmAccuracy));
        var lines = File.ReadAllLines(Path.Combine(_dir.FullName, "metrics.jsonl"));
        Assert.Equal(9, lines.Length); // the untrained eval at step 0, then every 5 steps
        Assert.Contains("<polyline", File.ReadAllText(Path.Combine(_dir.FullName, "training-curve.svg")));
        Assert.Equal(["step-00000030", "step-00000040"], TrainingCheckpoint.List(Path.Combine(_dir.FullName, "checkpoints")).Select(Path.GetFileName).TakeLast(2));
    }

    [Fact]
    public void StoppedAndResumedRunEqualsUninterruptedRun()
    {
        var straight = new Recorder();
        using (var model = Model())
            new PretrainingRunner(Options(20), NullLogger.Instance).Run(model, new PatternSource(), Eval, straight, TestContext.Current.CancellationToken);
        var uninterrupted = straight.Reports.Select(r => r.Loss).ToArray();
        Directory.Delete(_dir.FullName, recursive: true);

        // First run: cancellation arrives while step 12 reports → the loop checkpoints step 12 and returns.
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        var first = new Recorder();
        var stopper = new Progress(r =>
        {
            first.Report(r);
            if (r.Step == 12) cts.Cancel();
        });
        using (var model = Model())
            Assert.Equal(12, new PretrainingRunner(Options(20), NullLogger.Instance).Run(model, new PatternSource(), Eval, stopper, cts.Token));
        // Second run: a fresh process would build the same fresh model; the checkpoint replaces its weights.
        var second = new Recorder();
        using (var model = Model())
            Assert.Equal(20, new PretrainingRunner(Options(20), NullLogger.Instance).Run(model, new PatternSource(), Eval, second, TestContext.Current.CancellationToken));
        var resumed = first.Reports.Select(r => r.Loss).Concat(second.Reports.Select(r => r.Loss)).ToArray();
        Assert.Equal(uninterrupted, resumed);
        // The metrics file holds each step once.
        var steps = File.ReadAllLines(Path.Combine(_dir.FullName, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64()).ToArray();
        Assert.Equal(steps.Distinct().Count(), steps.Length);
    }

    private sealed class Progress(Action<StepReport> action) : IProgress<StepReport>
    {
        public void Report(StepReport value) => action(value);
    }

    [Fact]
    public void InvalidOptionsAreReportedByName()
    {
        var result = new PretrainingOptionsValidator().Validate(null, new PretrainingOptions
        {
            Preset = "huge", GlobalBatchSize = 10, MicroBatchSize = 4, MaskingRatio = 1.5, Precision = "fp16",
        });
        Assert.True(result.Failed);
        var text = string.Join("\n", result.Failures!);
        foreach (var part in new[] { "Preset 'huge'", "Vocab is required", "Corpus is required", "GlobalBatchSize 10 must be a multiple of MicroBatchSize 4",
            "MaskingRatio must be in (0, 1)", "Precision must be fp32 or bf16", "Set MaxSteps or TokenBudget" })
            Assert.Contains(part, text);
    }

    [Fact]
    public void ShortCommandLineFormsMapIntoTheSection()
    {
        var map = PretrainingHost.ShortForms(["--MaxSteps", "5", "--Corpus", "a", "--Corpus=b", "--Pretraining:Seed", "9"]);
        Assert.Equal("5", map["Pretraining:MaxSteps"]);
        Assert.Equal("a", map["Pretraining:Corpus:0"]);
        Assert.Equal("b", map["Pretraining:Corpus:1"]);
        Assert.Equal("9", map["Pretraining:Seed"]);
        Assert.Throws<ArgumentException>(() => PretrainingHost.ShortForms(["MaxSteps"]));
        Assert.Throws<ArgumentException>(() => PretrainingHost.ShortForms(["--MaxSteps"]));
    }
}

public sealed class ConsoleProgressTests
{
    [Fact]
    public void StatusLineShowsStepLossAccuracySpeedLearningRateAndEta()
    {
        var p = new ConsoleProgress(Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, 10, interactive: false);
        var line = p.Format(new StepReport(120, 400, 6.81234, 0.0923, 7.5e-4, 8510.4, double.NaN, TimeSpan.FromSeconds(50),
            TimeSpan.FromSeconds(100), null));
        Assert.Equal("step 120/400 | loss 6.8123 | mlm acc 9.2% | 8,510 tok/s | lr 0.00075 | ETA 0:01:40", line);
        // Accuracy is measured at log steps only; the last value is shown in between.
        line = p.Format(new StepReport(121, 400, 6.8, null, 7.5e-4, 8500, double.NaN, TimeSpan.FromSeconds(51), null, null));
        Assert.Contains("mlm acc 9.2%", line);
        Assert.EndsWith("ETA -", line);
    }
}
