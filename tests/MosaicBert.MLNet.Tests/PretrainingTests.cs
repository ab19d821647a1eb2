using System.Text.Json;
using MosaicBert.ML;
using MosaicBert.ML.Data;
using MosaicBert.ML.Trainers;
using MosaicBert.ML.Transforms;
using MosaicBert.Model;
using static MosaicBert.MLNet.Tests.MosaicBertTestKit;

namespace MosaicBert.MLNet.Tests;

/// <summary>
/// <c>mlContext.Pretraining.MosaicBert(options).Fit(data)</c> on real SST-2 sentences with the bert-base-uncased
/// vocabulary and the tiny preset: the eval loss falls, the result feeds the featurizer and a classifier, a stopped
/// run resumes exactly, and bad options are named.
/// </summary>
public sealed class PretrainingTests(PretrainingTests.Pretrained pretrained) : IClassFixture<PretrainingTests.Pretrained>
{
    public sealed class Row
    {
        public string Text { get; set; } = "";
    }

    public sealed class LabeledRow
    {
        public string Text { get; set; } = "";

        public string Sentiment { get; set; } = "";
    }

    /// <summary>The first <paramref name="count"/> sentences (and labels) of SST-2's training set after <paramref name="skip"/>.</summary>
    private static LabeledRow[] Sst2(int count, int skip = 0) =>
        [.. File.ReadLines(SharedData.Get("glue/SST-2/train.tsv")).Skip(1 + skip).Take(count)
            .Select(l => l.Split('\t')).Select(f => new LabeledRow { Text = f[0], Sentiment = f[1] })];

    private static IDataView Texts(MLContext ctx, IEnumerable<LabeledRow> rows) => ctx.Data.LoadFromEnumerable(rows.Select(r => new Row { Text = r.Text }));

    private static MosaicBertPretrainingTrainer.Options Options(string output, long steps, int logInterval = 5, string textColumn = "Text") => new()
    {
        TextColumnName = textColumn, Preset = "tiny", VocabPath = SharedData.BertVocab, OutputDirectory = output,
        MaxSequenceLength = 64, BatchSize = 16, MicroBatchSize = 8, LearningRate = 2e-3, WarmupFraction = 0.1,
        MaxSteps = steps, EvalFraction = 0.1, EvalInterval = 10, CheckpointInterval = 10, LogInterval = logInterval, Seed = 5, Threads = 2,
    };

    /// <summary>One 30-step run on 400 sentences, shared by the tests that use its result.</summary>
    public sealed class Pretrained : IDisposable
    {
        private readonly Lazy<(PretrainedMosaicBertTransformer Model, List<TrainingProgress> Reports, List<LoggingEventArgs> Log)> _run;

        public Pretrained() => _run = new(() =>
        {
            var ctx = new MLContext(seed: 1);
            var log = new List<LoggingEventArgs>();
            ctx.Log += (_, e) => log.Add(e);
            var reports = new List<TrainingProgress>();
            var options = Options(NewFolder(), 30);
            options.Progress = new Recorder(reports);
            var model = ctx.Pretraining.MosaicBert(options).Fit(Texts(ctx, Sst2(400)));
            return (model, reports, log);
        });

        public PretrainedMosaicBertTransformer Model => _run.Value.Model;

        public IReadOnlyList<TrainingProgress> Reports => _run.Value.Reports;

        public IReadOnlyList<LoggingEventArgs> Log => _run.Value.Log;

        public void Dispose()
        {
            if (_run.IsValueCreated) _run.Value.Model.Dispose();
        }
    }

    private sealed class Recorder(List<TrainingProgress> reports, Action<TrainingProgress>? then = null) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value)
        {
            reports.Add(value);
            then?.Invoke(value);
        }
    }

    [Fact]
    public void EvalLossFallsAndTheRunIsObservable()
    {
        var model = pretrained.Model;
        Assert.Equal(30, model.Steps);
        var output = Path.GetDirectoryName(model.ModelPath)!;
        // Evaluations: the untrained model (metrics.jsonl, step 0), then steps 10, 20 and 30 (progress reports).
        var initial = File.ReadLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .First(e => e.GetProperty("step").GetInt64() == 0).GetProperty("eval_loss").GetDouble();
        var evals = pretrained.Reports.Where(r => r.ValidationMetrics.ContainsKey("MlmLoss")).Select(r => r.ValidationMetrics["MlmLoss"]).ToArray();
        Assert.Equal([10L, 20L, 30L], pretrained.Reports.Where(r => r.ValidationMetrics.Count > 0).Select(r => r.Step));
        Assert.True(initial > 9.5, $"untrained eval loss {initial:F3} should be near ln 30528 = 10.3");
        Assert.True(evals[0] < initial && evals[1] < evals[0] && evals[2] < evals[1], $"eval losses {initial:F3}, {string.Join(", ", evals.Select(e => e.ToString("F3")))} do not fall");
        // Measured on 2 cores: 10.32 → 9.30 → 8.50 → 8.30 (30 steps of 16 sentences).
        Assert.True(model.EvalLoss < initial - 1.5, $"eval loss {initial:F3} → {model.EvalLoss:F3} did not fall by 1.5 nats");
        Assert.Equal(evals[^1], model.EvalLoss);

        // Progress every LogInterval (5) steps, also in the context's log; checkpoints kept (3), plot and model files written.
        Assert.Equal([5L, 10, 15, 20, 25, 30], pretrained.Reports.Select(r => r.Step));
        Assert.All(pretrained.Reports, r => Assert.Equal(30, r.TotalSteps));
        Assert.Contains(pretrained.Log, e => e.Source == "MosaicBertPretraining" && e.RawMessage.StartsWith("epoch 1/", StringComparison.Ordinal));
        Assert.Contains(pretrained.Log, e => e.RawMessage.StartsWith("Token cache built", StringComparison.Ordinal));
        Assert.Equal(["step-00000010", "step-00000020", "step-00000030"], TrainingCheckpoint.List(Path.Combine(output, "checkpoints")).Select(Path.GetFileName));
        Assert.Equal(Path.Combine(output, "checkpoints", "step-00000030"), model.CheckpointPath);
        Assert.True(File.Exists(Path.Combine(output, "training-curve.svg")));
        foreach (var file in new[] { "config.json", "model.safetensors", "vocab.txt" }) Assert.True(File.Exists(Path.Combine(model.ModelPath, file)), file);
        Assert.Equal(MosaicBertConfig.Preset("tiny") with { VocabSize = 30528 }, model.ModelConfig);
    }

    [Fact]
    public void TheResultFeedsTheFeaturizerAndAClassifier()
    {
        var model = pretrained.Model;
        var ctx = new MLContext(seed: 2);
        var rows = Sst2(48, skip: 1000);

        // Its own Transform embeds the text column exactly as Transforms.MosaicBert over ModelPath does.
        var texts = Texts(ctx, rows);
        var own = model.Transform(texts).GetColumn<float[]>("Features");
        Assert.Equal(new VectorDataViewType(NumberDataViewType.Single, 128), model.GetOutputSchema(texts.Schema)["Features"].Type);
        using var featurizer = ctx.Transforms.MosaicBert("Features", "Text", options: new MosaicBertFeaturizerOptions
        {
            ModelPath = model.ModelPath, MaxSequenceLength = 64,
        }).Fit(texts);
        var viaPath = featurizer.Transform(texts).GetColumn<float[]>("Features");
        Assert.Equal(rows.Length, own.Count);
        for (int i = 0; i < own.Count; i++) Assert.Equal(viaPath[i], own[i]);

        // Fine-tuning starts from the pretrained encoder.
        var data = ctx.Data.LoadFromEnumerable(rows);
        var pipeline = ctx.Transforms.Conversion.MapValueToKey("Label", "Sentiment", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
            .Append(ctx.MulticlassClassification.Trainers.TextClassification(new TextClassificationTrainer.TextClassificationOptions
            {
                ModelPath = model.ModelPath, Sentence1ColumnName = "Text", MaxSequenceLength = 64, BatchSize = 16, MaxSteps = 3,
                LearningRate = 1e-3, Seed = 3, Threads = 2,
            }));
        using var classifier = pipeline.Fit(data);
        var trained = classifier.LastTransformer!;
        Assert.Equal(model.ModelConfig with { NumLabels = 2 }, trained.ModelConfig);
        var scores = classifier.Transform(data).GetColumn<float[]>("Score");
        Assert.All(scores, s => Assert.Equal(1.0, s.Sum(), 4));
        var metrics = ctx.MulticlassClassification.Evaluate(classifier.Transform(data));
        Assert.InRange(metrics.MicroAccuracy, 0, 1);

        // In a saved pipeline it is stored as the featurizer it stands for.
        var file = Path.Combine(NewFolder(), "features.zip");
        ctx.Model.Save(model, texts.Schema, file);
        using var loaded = (IDisposable)ctx.Model.Load(file, out _);
        var reloaded = ((ITransformer)loaded).Transform(texts).GetColumn<float[]>("Features");
        for (int i = 0; i < own.Count; i++) Assert.Equal(own[i], reloaded[i]);
    }

    [Fact]
    public void CancelledRunWritesACheckpointAndASecondFitResumesExactly()
    {
        var data = Sst2(200, skip: 2000);
        var straight = new List<TrainingProgress>();
        PretrainedMosaicBertTransformer uninterrupted;
        {
            var ctx = new MLContext(seed: 1);
            var options = Options(NewFolder(), 12, logInterval: 1);
            options.Seed = null; // the context's first draw, as in the interrupted run
            options.Progress = new Recorder(straight);
            uninterrupted = ctx.Pretraining.MosaicBert(options).Fit(Texts(ctx, data), TestContext.Current.CancellationToken);
        }

        var output = NewFolder();
        var first = new List<TrainingProgress>();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        {
            var ctx = new MLContext(seed: 1);
            var options = Options(output, 12, logInterval: 1);
            options.Seed = null; // drawn from the context (the same draw as above), taken from the checkpoint on resume
            options.Progress = new Recorder(first, r =>
            {
                if (r.Step == 7) cts.Cancel();
            });
            var e = Assert.Throws<OperationCanceledException>(() => ctx.Pretraining.MosaicBert(options).Fit(Texts(ctx, data), cts.Token));
            Assert.Contains("stopped at step 7", e.Message);
            Assert.Equal("step-00000007", Path.GetFileName(TrainingCheckpoint.FindLatest(Path.Combine(output, "checkpoints"))));
            Assert.False(Directory.Exists(Path.Combine(output, "model")));
        }
        var second = new List<TrainingProgress>();
        PretrainedMosaicBertTransformer resumed;
        {
            var ctx = new MLContext(seed: 99); // another context: the seed comes from the checkpoint
            var options = Options(output, 12, logInterval: 1);
            options.Seed = null;
            options.Progress = new Recorder(second);
            resumed = ctx.Pretraining.MosaicBert(options).Fit(Texts(ctx, data), TestContext.Current.CancellationToken);
        }
        Assert.Equal(Enumerable.Range(1, 7).Select(i => (long)i), first.Select(r => r.Step));
        Assert.Equal(Enumerable.Range(8, 5).Select(i => (long)i), second.Select(r => r.Step));
        Assert.Equal(straight.Select(r => r.Loss), first.Concat(second).Select(r => r.Loss));
        Assert.Equal(uninterrupted.EvalLoss, resumed.EvalLoss);
        Assert.Equal(File.ReadAllBytes(Path.Combine(uninterrupted.ModelPath, "model.safetensors")), File.ReadAllBytes(Path.Combine(resumed.ModelPath, "model.safetensors")));

        // A finished run fitted again only re-exports its model; other data in the same directory is refused.
        var ctx2 = new MLContext(seed: 1);
        var again = Options(output, 12);
        again.Seed = null;
        Assert.Equal(12, ctx2.Pretraining.MosaicBert(again).Fit(Texts(ctx2, data), TestContext.Current.CancellationToken).Steps);
        var other = Assert.Throws<InvalidOperationException>(() => ctx2.Pretraining.MosaicBert(again).Fit(Texts(ctx2, Sst2(200, skip: 3000)), TestContext.Current.CancellationToken));
        Assert.Contains("holds checkpoints", other.Message);
        Assert.Contains("other data", other.Message);
    }

    [Fact]
    public void ContinuedPretrainingStartsFromTheGivenModel()
    {
        var ctx = new MLContext(seed: 1);
        var options = Options(NewFolder(), 1);
        options.Preset = null;
        options.VocabPath = null; // the model directory's vocab.txt
        options.ModelPath = pretrained.Model.ModelPath;
        options.LearningRate = 1e-9; // one step that barely moves: the eval loss is the starting model's
        var continued = ctx.Pretraining.MosaicBert(options).Fit(Texts(ctx, Sst2(400)), TestContext.Current.CancellationToken);
        Assert.Equal(pretrained.Model.EvalLoss, continued.EvalLoss, 2);
        Assert.Equal(pretrained.Model.ModelConfig, continued.ModelConfig);
    }

    [Fact]
    public void BadOptionsAreNamed()
    {
        var ctx = new MLContext(seed: 1);
        var e = Assert.Throws<ArgumentException>(() => ctx.Pretraining.MosaicBert(new MosaicBertPretrainingTrainer.Options
        {
            BatchSize = 10, MicroBatchSize = 4, MaskingRatio = 1.5, LearningRate = -1, MaxSequenceLength = 4, EvalFraction = 1,
        }));
        foreach (var part in new[]
        {
            "MosaicBertPretraining:", "Set exactly one of ModelPath", "VocabPath is required", "OutputDirectory is required",
            "BatchSize 10 must be a multiple of MicroBatchSize 4", "MaskingRatio must be in (0, 1)", "LearningRate must be positive",
            "MaxSequenceLength must be in 8..8192", "EvalFraction must be in (0, 1)", "Set MaxSteps or TokenBudget",
        })
            Assert.Contains(part, e.Message);
        Assert.DoesNotContain("GlobalBatchSize", e.Message);
        Assert.DoesNotContain("Corpus", e.Message);

        var noVocab = Assert.Throws<ArgumentException>(() => ctx.Pretraining.MosaicBert(new MosaicBertPretrainingTrainer.Options
        {
            ModelPath = NewFolder(), OutputDirectory = "x", MaxSteps = 1,
        }));
        Assert.Contains("is not a checkpoint directory (it has no config.json)", noVocab.Message);

        // The text column is checked before anything is written.
        var output = NewFolder();
        var wrongColumn = Assert.Throws<ArgumentOutOfRangeException>(() =>
            ctx.Pretraining.MosaicBert(Options(output, 1, textColumn: "Sentence")).Fit(Texts(ctx, Sst2(10)), TestContext.Current.CancellationToken));
        Assert.Contains("Text column 'Sentence' not found", wrongColumn.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(output));

        // Too few rows to hold any out.
        var tiny = Assert.Throws<InvalidOperationException>(() => ctx.Pretraining.MosaicBert(Options(NewFolder(), 1)).Fit(Texts(ctx, Sst2(1)), TestContext.Current.CancellationToken));
        Assert.Contains("EvalSamples", tiny.Message);
    }
}
