using MosaicBert.ML;
using MosaicBert.ML.Data;
using MosaicBert.ML.Transforms;

namespace MosaicBert.MLNet.Tests;

/// <summary>
/// A whole pipeline on eight in-memory rows: label to key, a trainer, key back to value, then evaluation and a
/// prediction engine. The trainer is a nearest-class-mean classifier written here, against the public abstractions
/// only, the way the MosaicBERT trainers will plug in.
/// </summary>
public sealed class EstimatorChainTests
{
    public sealed class Review
    {
        public string Text { get; set; } = "";

        public float Length { get; set; }

        public string Sentiment { get; set; } = "";
    }

    public sealed class Input
    {
        public string Text { get; set; } = "";

        public float Length { get; set; }
    }

    public sealed class Prediction
    {
        [ColumnName("PredictedSentiment")] public string Sentiment { get; set; } = "";

        public float[] Score { get; set; } = [];
    }

    // Short reviews are negative, long ones positive, except "meh" (row 3), which the classifier gets wrong.
    private static readonly Review[] s_reviews =
    [
        new() { Text = "bad", Length = 1, Sentiment = "neg" },
        new() { Text = "great film", Length = 9, Sentiment = "pos" },
        new() { Text = "awful", Length = 2, Sentiment = "neg" },
        new() { Text = "meh", Length = 8, Sentiment = "neg" },
        new() { Text = "loved it", Length = 10, Sentiment = "pos" },
        new() { Text = "boring", Length = 3, Sentiment = "neg" },
        new() { Text = "superb", Length = 11, Sentiment = "pos" },
        new() { Text = "fine", Length = 7, Sentiment = "pos" },
    ];

    private static EstimatorChain<KeyToValueMappingTransformer> Pipeline(MLContext ctx) =>
        ctx.Transforms.Conversion.MapValueToKey("Label", "Sentiment", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
            .Append(new NearestMeanTrainer("Label", "Length"))
            .Append(ctx.Transforms.Conversion.MapKeyToValue("PredictedSentiment", "PredictedLabel"));

    private static string[] Describe(SchemaShape shape) => [.. shape.Select(c => c.ToString())];

    [Fact]
    public void FitTransformMatchesThePredictedSchemas()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(s_reviews);
        var pipeline = Pipeline(ctx);

        var predicted = pipeline.GetOutputSchema(SchemaShape.Create(data.Schema));
        var model = pipeline.Fit(data);
        var scored = model.Transform(data);

        Assert.Equal(Describe(predicted), Describe(SchemaShape.Create(scored.Schema)));
        Assert.Equal(
            ["Text: String", "Length: Single", "Sentiment: String", "Label: Key<UInt32> {KeyValues: Vector<String>}",
             "Score: Vector<Single> {KeyValues: Vector<String>}", "PredictedLabel: Key<UInt32> {KeyValues: Vector<String>}", "PredictedSentiment: String"],
            Describe(predicted));
        Assert.Equal(scored.Schema.ToString(), model.GetOutputSchema(data.Schema).ToString());
        Assert.Equal("Label: Key<UInt32, 0-1>, Score: Vector<Single, 2>, PredictedLabel: Key<UInt32, 0-1>, PredictedSentiment: String",
            string.Join(", ", scored.Schema.Skip(3).Select(c => $"{c.Name}: {c.Type}")));

        var predictions = ctx.Data.CreateEnumerable<Prediction>(scored, reuseRowObject: false).ToList();
        Assert.Equal(["neg", "pos", "neg", "pos", "pos", "neg", "pos", "pos"], predictions.Select(p => p.Sentiment));
        Assert.All(predictions, p => Assert.Equal(1f, p.Score.Sum(), 5));

        var trainer = Assert.IsType<NearestMeanTransformer>(model.ElementAt(1));
        model.Dispose(); // disposes the disposable steps (model-owning transformers)
        Assert.True(trainer.Disposed);
    }

    [Fact]
    public void EvaluateReadsLabelScoreAndPredictedLabel()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(s_reviews);
        using var model = Pipeline(ctx).Fit(data);

        var metrics = ctx.MulticlassClassification.Evaluate(model.Transform(data));

        // 7 of 8 right; "meh" (neg) is predicted pos. Confusion rows = truth (neg, pos), columns = prediction.
        Assert.Equal(7 / 8.0, metrics.MicroAccuracy, 12);
        Assert.Equal((3 / 4.0 + 4 / 4.0) / 2, metrics.MacroAccuracy, 12);
        Assert.Equal([[3.0, 1.0], [0.0, 4.0]], metrics.ConfusionMatrix.Counts.Select(r => r.ToArray()));
        Assert.Equal(["neg", "pos"], metrics.ConfusionMatrix.PredictedClassesIndicators);
        // MCC = (TP·TN − FP·FN)/√((TP+FP)(TP+FN)(TN+FP)(TN+FN)) with pos as positive: (4·3 − 1·0)/√(5·4·3·4) = 12/√240.
        Assert.Equal(12 / Math.Sqrt(240), metrics.MatthewsCorrelation, 12);
        // F1 of "pos": 2·4 / (2·4 + 1 + 0) = 8/9.
        Assert.Equal(8 / 9.0, metrics.F1Score!.Value, 12);
    }

    [Fact]
    public void ScopesDropLabelStepsForScoringAndThePredictionEngineRuns()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(s_reviews);
        var chain = new EstimatorChain<ITransformer>()
            .Append(ctx.Transforms.Conversion.MapValueToKey("Label", "Sentiment", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue), TransformerScope.TrainTest)
            .Append(new NearestMeanTrainer("Label", "Length"))
            .Append(ctx.Transforms.Conversion.MapKeyToValue("PredictedSentiment", "PredictedLabel"));

        using var model = chain.Fit(data);
        var scoring = model.GetModelFor(TransformerScope.Scoring);

        Assert.Equal(3, model.Count());
        Assert.Equal(2, scoring.Count());
        Assert.Throws<ArgumentOutOfRangeException>(() => model.GetOutputSchema(ctx.Data.LoadFromEnumerable(new[] { new Input() }).Schema));
        using var engine = ctx.Model.CreatePredictionEngine<Input, Prediction>(scoring);
        Assert.Equal("neg", engine.Predict(new Input { Text = "dull", Length = 2 }).Sentiment);
        var reused = new Prediction();
        engine.Predict(new Input { Text = "a triumph", Length = 12 }, ref reused);
        Assert.Equal("pos", reused.Sentiment);
        Assert.Equal(2, reused.Score.Length);
        Assert.IsType<KeyToValueMappingEstimator>(chain.LastEstimator);
    }

    [Fact]
    public void ChainFitChecksTheWholeSchemaBeforeFitting()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(s_reviews);
        var chain = ctx.Transforms.Conversion.MapValueToKey("Label", "Sentiment")
            .Append(ctx.Transforms.Conversion.MapKeyToValue("Back", "NoSuchKey"));

        var e = Assert.Throws<ArgumentOutOfRangeException>(() => chain.Fit(data));
        Assert.Contains("'NoSuchKey'", e.Message);
    }

    /// <summary>Predicts the class whose mean feature is nearest; Score = softmax of minus the distances.</summary>
    private sealed class NearestMeanTrainer(string labelColumnName, string featureColumnName) : IEstimator<NearestMeanTransformer>
    {
        public NearestMeanTransformer Fit(IDataView input)
        {
            var label = input.Schema[labelColumnName];
            var keys = input.GetColumn<uint>(label);
            var features = input.GetColumn<float>(featureColumnName);
            var k = (int)label.Type.GetKeyCount();
            var means = Enumerable.Range(1, k).Select(c => Enumerable.Range(0, keys.Count).Where(r => keys[r] == c).Average(r => features[r])).ToArray();
            var annotations = new DataViewSchema.Annotations.Builder();
            annotations.Add(label.Annotations, kind => kind == AnnotationUtils.Kinds.KeyValues);
            return new NearestMeanTransformer(featureColumnName, means, annotations.ToAnnotations());
        }

        public SchemaShape GetOutputSchema(SchemaShape inputSchema)
        {
            if (!inputSchema.TryFindColumn(labelColumnName, out var label) || !label.IsKey)
                throw new ArgumentOutOfRangeException(nameof(inputSchema), $"'{labelColumnName}' must be a key.");
            if (!inputSchema.TryFindColumn(featureColumnName, out var feature) || feature.ItemType != NumberDataViewType.Single)
                throw new ArgumentOutOfRangeException(nameof(inputSchema), $"'{featureColumnName}' must be Single.");
            return new SchemaShape([.. inputSchema,
                new SchemaShape.Column("Score", SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Single, false, label.Annotations),
                new SchemaShape.Column("PredictedLabel", SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.UInt32, true, label.Annotations)]);
        }
    }

    private sealed class NearestMeanTransformer(string feature, float[] means, DataViewSchema.Annotations keyValues) : ITransformer, IDisposable
    {
        public bool Disposed { get; private set; }

        public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
        {
            if (inputSchema.GetColumnOrNull(feature)?.Type != NumberDataViewType.Single)
                throw new ArgumentOutOfRangeException(nameof(inputSchema), $"'{feature}' must be Single.");
            var builder = new DataViewSchema.Builder();
            builder.AddColumns(inputSchema);
            builder.AddColumn("Score", new VectorDataViewType(NumberDataViewType.Single, means.Length), keyValues);
            builder.AddColumn("PredictedLabel", new KeyDataViewType(typeof(uint), means.Length), keyValues);
            return builder.ToSchema();
        }

        public IDataView Transform(IDataView input)
        {
            GetOutputSchema(input.Schema);
            var values = input.GetColumn<float>(feature);
            var builder = new ArrayDataViewBuilder(input);
            builder.AddColumn("Score", new VectorDataViewType(NumberDataViewType.Single, means.Length), () => values.Select(Softmax).ToArray(), keyValues);
            builder.AddColumn("PredictedLabel", new KeyDataViewType(typeof(uint), means.Length),
                () => values.Select(v => (uint)Array.IndexOf(means, means.MinBy(m => Math.Abs(m - v))) + 1).ToArray(), keyValues);
            return builder.GetDataView();
        }

        private float[] Softmax(float v)
        {
            var e = means.Select(m => MathF.Exp(-Math.Abs(m - v))).ToArray();
            return [.. e.Select(x => x / e.Sum())];
        }

        public void Dispose() => Disposed = true;
    }
}
