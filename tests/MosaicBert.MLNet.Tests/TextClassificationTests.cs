using System.Diagnostics;
using System.IO.Compression;
using System.Text.Json.Nodes;
using MosaicBert.ML;
using MosaicBert.ML.Data;
using MosaicBert.ML.Trainers;
using static MosaicBert.MLNet.Tests.MosaicBertTestKit;

namespace MosaicBert.MLNet.Tests;

/// <summary>One classifier trained once (about a second) on the synthetic "good"/"bad" task, shared by the tests of
/// training, saving, loading and concurrent prediction.</summary>
public sealed class TrainedClassifierFixture : IDisposable
{
    public TrainedClassifierFixture()
    {
        Context = new MLContext(seed: 1);
        Train = Context.Data.LoadFromEnumerable(Reviews(256, seed: 1));
        Test = Context.Data.LoadFromEnumerable(Reviews(128, seed: 2));
        var labelMap = Context.Transforms.Conversion.MapValueToKey("Label", "Sentiment", keyOrdinality: ML.Transforms.ValueToKeyMappingEstimator.KeyOrdinality.ByValue);
        var options = ClassifierOptions();
        options.ValidationSet = labelMap.Fit(Train).Transform(Test);
        options.LogInterval = 10;
        options.Progress = new SyncProgress(Reports.Add);
        var clock = Stopwatch.StartNew();
        Model = ClassifierPipeline(Context, options).Fit(Train);
        FitTime = clock.Elapsed;
    }

    public MLContext Context { get; }

    public IDataView Train { get; }

    public IDataView Test { get; }

    public TransformerChain<ML.Transforms.KeyToValueMappingTransformer> Model { get; }

    public List<TrainingProgress> Reports { get; } = [];

    public TimeSpan FitTime { get; }

    public void Dispose() => Model.Dispose();
}

/// <summary>An IProgress that reports on the calling thread (Progress&lt;T&gt; posts to the thread pool).</summary>
internal sealed class SyncProgress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress value) => report(value);
}

public sealed class TextClassificationTests(TrainedClassifierFixture fixture) : IClassFixture<TrainedClassifierFixture>
{
    private readonly MLContext _ctx = fixture.Context;

    [Fact]
    public void LearnsASeparableTaskAndReportsProgress()
    {
        var scored = fixture.Model.Transform(fixture.Test);
        var metrics = _ctx.MulticlassClassification.Evaluate(scored);

        Assert.True(metrics.MicroAccuracy >= 0.95, $"accuracy {metrics.MicroAccuracy}");
        Assert.True(fixture.FitTime < TimeSpan.FromSeconds(20), $"fit took {fixture.FitTime}");
        // 256 rows / 16 = 16 steps per epoch, 4 epochs: reports every 10 steps and one per epoch with validation metrics.
        Assert.Equal(64, fixture.Reports[^1].TotalSteps);
        Assert.Equal(4, fixture.Reports.Count(r => r.ValidationMetrics.ContainsKey("Accuracy")));
        Assert.True(fixture.Reports[^1].ValidationMetrics["Accuracy"] >= 0.95);
        Assert.All(scored.GetColumn<float[]>("Score"), s => Assert.Equal(1f, s.Sum(), 4));
        var truth = fixture.Test.GetColumn<string>("Sentiment");
        Assert.True(scored.GetColumn<string>("PredictedSentiment").Where((p, i) => p == truth[i]).Count() >= 122);
    }

    [Fact]
    public void OutputSchemaIsScoreVectorAndKeyPredictedLabelWithTheLabelsValues()
    {
        var pipeline = ClassifierPipeline(_ctx, ClassifierOptions());
        var predicted = pipeline.GetOutputSchema(SchemaShape.Create(fixture.Train.Schema));
        var actual = fixture.Model.Transform(fixture.Test).Schema;

        Assert.Equal(predicted.Select(c => c.ToString()), SchemaShape.Create(actual).Select(c => c.ToString()));
        Assert.Equal("Vector<Single, 2>", actual["Score"].Type.ToString());
        Assert.Equal(new KeyDataViewType(typeof(uint), 2), actual["PredictedLabel"].Type);
        string[] values = [];
        actual["PredictedLabel"].GetKeyValues(ref values);
        Assert.Equal(["neg", "pos"], values);
        Assert.Equal(actual.ToString(), fixture.Model.GetOutputSchema(fixture.Test.Schema).ToString());
    }

    [Fact]
    public void SaveThenLoadGivesBitwiseIdenticalPredictions()
    {
        var path = Path.Combine(NewFolder(), "model.zip");
        _ctx.Model.Save(fixture.Model, fixture.Train.Schema, path);
        using var loaded = Assert.IsType<TransformerChain<ITransformer>>(_ctx.Model.Load(path, out var inputSchema));

        Assert.Equal(fixture.Train.Schema.ToString(), inputSchema.ToString());
        var before = fixture.Model.Transform(fixture.Test);
        var after = loaded.Transform(fixture.Test);
        Assert.Equal(Bits(before.GetColumn<float[]>("Score")), Bits(after.GetColumn<float[]>("Score")));
        Assert.Equal(before.GetColumn<string>("PredictedSentiment"), after.GetColumn<string>("PredictedSentiment"));

        using var zip = ZipFile.OpenRead(path);
        Assert.Equal(["manifest.json", "model/001/config.json", "model/001/model.safetensors", "model/001/vocab.txt"],
            zip.Entries.Select(e => e.FullName).Order(StringComparer.Ordinal));
        using var reader = new StreamReader(zip.GetEntry("manifest.json")!.Open());
        var manifest = JsonNode.Parse(reader.ReadToEnd())!;
        var steps = manifest["model"]!["parameters"]!["steps"]!.AsArray();
        Assert.Equal(["ValueToKeyMapping", "TextClassification", "KeyToValueMapping"], steps.Select(s => s!["loader"]!.GetValue<string>()));
        Assert.Equal("""["neg","pos"]""", steps[1]!["parameters"]!["labelKeyValues"]!["values"]!.ToJsonString());
        Assert.Equal(1, manifest["formatVersion"]!.GetValue<int>());
    }

    [Fact]
    public void PredictionEngineGivesTheSameResultsFromManyThreads()
    {
        using var engine = _ctx.Model.CreatePredictionEngine<ReviewInput, ReviewPrediction>(fixture.Model);
        var inputs = Reviews(48, seed: 3).Select(r => new ReviewInput { Sentence1 = r.Sentence1 }).ToArray();
        var sequential = inputs.Select(engine.Predict).ToArray();

        var concurrent = new ReviewPrediction[4][];
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, t =>
        {
            // Each thread walks the inputs in its own order, so different rows run at the same time.
            var order = Enumerable.Range(0, inputs.Length).Select(i => (i * (t + 1) * 7 + t) % inputs.Length).Distinct().ToArray();
            var results = new ReviewPrediction[inputs.Length];
            foreach (var i in order) results[i] = engine.Predict(inputs[i]);
            concurrent[t] = results;
        });

        foreach (var results in concurrent)
        {
            for (var i = 0; i < inputs.Length; i++)
            {
                if (results[i] is null) continue; // this thread's order skipped it
                Assert.Equal(sequential[i].Sentiment, results[i].Sentiment);
                Assert.Equal(Bits([sequential[i].Score]), Bits([results[i].Score]));
            }
        }
        var batch = engine.PredictBatch(inputs);
        Assert.Equal(sequential.Select(p => p.Sentiment), batch.Select(p => p.Sentiment));
        Assert.All(batch.Zip(sequential), p => Assert.Equal(p.Second.Score, p.First.Score, (a, b) => Math.Abs(a - b) < 1e-5));
    }

    [Fact]
    public void ASavedModelZipCanSeedAFeaturizerAndAnotherFineTuning()
    {
        var path = Path.Combine(NewFolder(), "model.zip");
        _ctx.Model.Save(fixture.Model, fixture.Train.Schema, path);
        var trained = (TextClassificationTransformer)fixture.Model.ElementAt(1);

        using var featurizer = _ctx.Transforms.MosaicBert("Features", "Sentence1", options: new() { ModelPath = path, Pooling = ML.Transforms.MosaicBertPooling.Cls }).Fit(fixture.Test);
        Assert.Equal(32, featurizer.EmbeddingSize);
        Assert.Equal(trained.Encoder.Model.GetParameter("bert.encoder.layer.1.mlp.wo.weight"), featurizer.Encoder.Model.GetParameter("bert.encoder.layer.1.mlp.wo.weight"));

        // One step at learning rate 0 (all warm-up): the encoder and pooler are the zip's, the classifier is new.
        var options = ClassifierOptions();
        (options.Config, options.ModelPath, options.VocabPath, options.MaxSteps, options.WarmupFraction) = (null, path, null, 1, 0.9);
        using var again = (TextClassificationTransformer)ClassifierPipeline(_ctx, options).Fit(fixture.Train).ElementAt(1);
        Assert.Equal(trained.Encoder.Model.GetParameter("bert.pooler.dense.weight"), again.Encoder.Model.GetParameter("bert.pooler.dense.weight"));
        Assert.NotEqual(trained.Encoder.Model.GetParameter("classifier.weight"), again.Encoder.Model.GetParameter("classifier.weight"));
    }

    private static int[][] Bits(IEnumerable<float[]> rows) => [.. rows.Select(r => r.Select(BitConverter.SingleToInt32Bits).ToArray())];
}

/// <summary>Errors and cancellation, each on its own small data.</summary>
public sealed class TextClassificationErrorTests
{
    public sealed class KeyedRow
    {
        public string Sentence1 { get; set; } = "";

        [KeyType(2)] public uint Label { get; set; }
    }

    [Fact]
    public void ATextLabelIsRejectedWithAHintToMapValueToKey()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(Reviews(8, seed: 1));
        var trainer = ctx.MulticlassClassification.Trainers.TextClassification(WithLabel(ClassifierOptions(), "Sentiment"));

        var fit = Assert.Throws<ArgumentOutOfRangeException>(() => trainer.Fit(data));
        Assert.Contains("must be a key", fit.Message);
        Assert.Contains("MapValueToKey", fit.Message);
        var shape = Assert.Throws<ArgumentOutOfRangeException>(() => trainer.GetOutputSchema(SchemaShape.Create(data.Schema)));
        Assert.Contains("MapValueToKey", shape.Message);
    }

    [Fact]
    public void AnEmptyTrainingSetFailsClearly()
    {
        var ctx = new MLContext(seed: 1);
        var empty = ctx.Data.LoadFromEnumerable(Array.Empty<KeyedRow>());
        var trainer = ctx.MulticlassClassification.Trainers.TextClassification(ClassifierOptions());

        var e = Assert.Throws<InvalidOperationException>(() => trainer.Fit(empty));
        Assert.Contains("no rows", e.Message);
    }

    [Fact]
    public void CancellationDuringFitThrowsPromptly()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(Reviews(512, seed: 1));
        using var cancel = new CancellationTokenSource();
        var options = ClassifierOptions();
        options.MaxEpochs = 50;
        options.LogInterval = 1;
        var steps = 0L;
        options.Progress = new SyncProgress(p =>
        {
            steps = p.Step;
            if (p.Step == 3) cancel.Cancel();
        });
        options.CancellationToken = cancel.Token;

        Assert.ThrowsAny<OperationCanceledException>(() => ClassifierPipeline(ctx, options).Fit(data));
        Assert.Equal(3, steps); // stopped before the next step, not at the end of an epoch (32 steps) or of training
    }

    [Fact]
    public void ModelSourceAndDeviceAreCheckedUpFront()
    {
        var ctx = new MLContext(seed: 1);
        var none = Assert.Throws<ArgumentException>(() => ctx.MulticlassClassification.Trainers.TextClassification());
        Assert.Contains("ModelPath", none.Message);
        var options = ClassifierOptions();
        options.Device = "gpu";
        var device = Assert.Throws<ArgumentException>(() => ctx.MulticlassClassification.Trainers.TextClassification(options));
        Assert.Contains("TextClassification: Device must be cpu, cuda or cuda:N", device.Message);
        options.Device = "cuda:1"; // well-formed: whether GPU 1 can be used is decided when fitting
        _ = ctx.MulticlassClassification.Trainers.TextClassification(options);
        options.Precision = "bf16"; // bf16 on a GPU is fine up front
        _ = ctx.MulticlassClassification.Trainers.TextClassification(options);
        options.Device = "cpu";
        var bf16 = Assert.Throws<NotSupportedException>(() => ctx.MulticlassClassification.Trainers.TextClassification(options));
        Assert.Contains("bf16 needs a CUDA device", bf16.Message);
    }

    private static TextClassificationTrainer.TextClassificationOptions WithLabel(TextClassificationTrainer.TextClassificationOptions o, string label)
    {
        o.LabelColumnName = label;
        return o;
    }
}
