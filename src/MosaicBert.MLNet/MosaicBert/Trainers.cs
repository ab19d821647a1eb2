using System.Globalization;
using System.Text.Json.Nodes;
using MosaicBert.ML.Data;
using MosaicBert.ML.Glue;
using MosaicBert.ML.Transforms;
using MosaicBert.Model;

namespace MosaicBert.ML.Trainers;

/// <summary>
/// Fine-tunes MosaicBERT to classify a text or a text pair (as Microsoft.ML.TorchSharp's TextClassificationTrainer);
/// made by <c>MulticlassClassification.Trainers.TextClassification</c>. The label must be a key (map it with
/// <c>MapValueToKey</c> first); the output is <c>Score</c> (class probabilities) and <c>PredictedLabel</c> (a key with
/// the label's values, so <c>MapKeyToValue</c> restores them). Binary tasks are two-class problems here, as with
/// ML.NET's trainer: there is no separate binary trainer, and the multiclass metrics carry F1 and Matthews
/// correlation for two classes.
/// </summary>
public sealed class TextClassificationTrainer : IEstimator<TextClassificationTransformer>
{
    private const string Component = "TextClassification";
    private readonly MLContext _context;
    private readonly TextClassificationOptions _options;

    /// <summary>Options of <see cref="TextClassificationTrainer"/> (see <see cref="MosaicBertTrainerOptions"/> for the recipe defaults).</summary>
    public sealed class TextClassificationOptions : MosaicBertTrainerOptions
    {
        /// <summary>The predicted-label column produced (a key).</summary>
        public string PredictedLabelColumnName { get; set; } = "PredictedLabel";
    }

    internal TextClassificationTrainer(MLContext context, TextClassificationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(Component);
        ArgumentException.ThrowIfNullOrEmpty(options.PredictedLabelColumnName);
        _context = context;
        _options = options;
    }

    /// <summary>Fine-tunes on <paramref name="input"/> (rows whose label key is 0, i.e. missing, are skipped).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A column is missing or has the wrong type (the label must be a key).</exception>
    /// <exception cref="InvalidOperationException">No row has a label, or the label has fewer than two classes.</exception>
    /// <exception cref="OperationCanceledException">The options' cancellation token was cancelled.</exception>
    public TextClassificationTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var o = _options;
        o.Validate(Component);
        var metric = o.ValidationMetric ?? GlueMetricKind.Accuracy;
        var label = LabelColumn(input.Schema, o.LabelColumnName, "training data");
        var k = (int)label.Type.GetKeyCount();
        if (k < 2) throw new InvalidOperationException($"{Component}: the label '{o.LabelColumnName}' has {k} class; at least 2 are needed (use SentenceSimilarity for a real-valued label).");
        if (metric is not (GlueMetricKind.Accuracy or GlueMetricKind.MatthewsCorrelation) && !(metric == GlueMetricKind.F1Score && k == 2))
            throw new ArgumentException($"{Component}: ValidationMetric {metric} does not apply; use Accuracy, MatthewsCorrelation or (two classes) F1Score.");
        var (train, trainLabels) = Read(input, label, o);
        TextRows? validation = null;
        var validationLabels = Array.Empty<int>();
        if (o.ValidationSet is { } v)
        {
            var vLabel = LabelColumn(v.Schema, o.LabelColumnName, "validation set");
            if (!vLabel.Type.Equals(label.Type))
                throw new ArgumentOutOfRangeException(nameof(input), $"{Component}: the validation set's label is {vLabel.Type} but the training label is {label.Type}; map both with the same fitted MapValueToKey.");
            (validation, validationLabels) = Read(v, vLabel, o);
        }

        var task = new FineTuningTask(
            rows => new TrainingObjective.Classification([.. rows.Select(r => trainLabels[r])]),
            outputs =>
            {
                int[] predicted = [.. outputs.Select(FineTuning.ArgMax)];
                var metrics = new Dictionary<string, double>
                {
                    [nameof(GlueMetricKind.Accuracy)] = GlueMetrics.Accuracy(validationLabels, predicted),
                    [nameof(GlueMetricKind.MatthewsCorrelation)] = GlueMetrics.MatthewsCorrelation(validationLabels, predicted),
                };
                if (k == 2) metrics[nameof(GlueMetricKind.F1Score)] = GlueMetrics.F1Score(validationLabels, predicted, positiveClass: 1);
                return metrics;
            },
            metric.ToString());
        var encoder = FineTuning.Train(_context, o, Component, k, train, validation, task);
        var keyValues = new DataViewSchema.Annotations.Builder();
        keyValues.Add(label.Annotations, kind => kind == AnnotationUtils.Kinds.KeyValues);
        return new TextClassificationTransformer(encoder, o.Sentence1ColumnName, o.Sentence2ColumnName, o.MaxSequenceLength, o.BatchSize,
            o.ScoreColumnName, o.PredictedLabelColumnName, k, keyValues.ToAnnotations());
    }

    /// <summary>Adds <c>Score</c> (vector of class probabilities) and <c>PredictedLabel</c> (key with the label's values).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A column is missing or has the wrong type (the label must be a key).</exception>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var o = _options;
        MosaicBertTransformer.CheckTextColumns(inputSchema, o.Sentence1ColumnName, o.Sentence2ColumnName);
        if (!inputSchema.TryFindColumn(o.LabelColumnName, out var label))
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"{Component}: label column '{o.LabelColumnName}' not found; the columns are: {inputSchema}.");
        if (!label.IsKey || label.Kind != SchemaShape.Column.VectorKind.Scalar)
            throw NotAKey(o.LabelColumnName, label.GetTypeString());
        SchemaShape.Column[] keyValues = label.Annotations.TryFindColumn(AnnotationUtils.Kinds.KeyValues, out var kv) ? [kv] : [];
        SchemaShape.Column[] slotNames = keyValues.Length > 0 ? [Shape(AnnotationUtils.Kinds.SlotNames, SchemaShape.Column.VectorKind.Vector)] : [];
        return new SchemaShape([.. inputSchema,
            new SchemaShape.Column(o.ScoreColumnName, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Single, isKey: false, new SchemaShape([.. slotNames, .. ScoreKindShapes()])),
            new SchemaShape.Column(o.PredictedLabelColumnName, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.UInt32, isKey: true, new SchemaShape([.. keyValues, .. ScoreKindShapes()]))]);
    }

    internal static SchemaShape.Column Shape(string name, SchemaShape.Column.VectorKind kind) => new(name, kind, TextDataViewType.Instance, isKey: false);

    internal static SchemaShape.Column[] ScoreKindShapes() =>
        [Shape(AnnotationUtils.Kinds.ScoreColumnKind, SchemaShape.Column.VectorKind.Scalar), Shape(AnnotationUtils.Kinds.ScoreValueKind, SchemaShape.Column.VectorKind.Scalar)];

    private static DataViewSchema.Column LabelColumn(DataViewSchema schema, string name, string where)
    {
        var column = schema.GetColumnOrNull(name)
            ?? throw new ArgumentOutOfRangeException(nameof(schema), $"{Component}: label column '{name}' not found in the {where}; the columns are: {schema}.");
        return column.Type is KeyDataViewType ? column : throw NotAKey(name, column.Type.ToString()!);
    }

    private static ArgumentOutOfRangeException NotAKey(string name, string type) => new("inputSchema",
        $"{Component}: the label column '{name}' is {type}, but must be a key (Key<UInt32>), as in ML.NET. Map it first: " +
        $"mlContext.Transforms.Conversion.MapValueToKey(\"{name}\", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue).Append(...TextClassification(...)).");

    /// <summary>The labelled rows (key ≠ 0) and their classes (key − 1).</summary>
    private (TextRows Rows, int[] Labels) Read(IDataView data, DataViewSchema.Column label, MosaicBertTrainerOptions o)
    {
        var keys = ColumnarDataView.Values<uint>(data, label);
        int[] rows = [.. Enumerable.Range(0, keys.Length).Where(r => keys[r] != 0)];
        if (rows.Length < keys.Length)
            _context.WriteLog(ChannelMessageKind.Warning, Component, $"{keys.Length - rows.Length} rows with a missing label (key 0) were skipped.");
        return (TextRows.Read(data, o.Sentence1ColumnName, o.Sentence2ColumnName, rows), [.. rows.Select(r => (int)keys[r] - 1)]);
    }
}

/// <summary>
/// Fine-tunes MosaicBERT to score a text pair with a real number (as Microsoft.ML.TorchSharp's
/// SentenceSimilarityTrainer; STS-B): one regression output trained with the mean squared error. Made by
/// <c>Regression.Trainers.SentenceSimilarity</c>; the label is a Single, the output <c>Score</c> a Single.
/// </summary>
public sealed class SentenceSimilarityTrainer : IEstimator<SentenceSimilarityTransformer>
{
    private const string Component = "SentenceSimilarity";
    private readonly MLContext _context;
    private readonly SentenceSimilarityOptions _options;

    /// <summary>Options of <see cref="SentenceSimilarityTrainer"/>; <see cref="MosaicBertTrainerOptions.Sentence2ColumnName"/>
    /// defaults to "Sentence2".</summary>
    public sealed class SentenceSimilarityOptions : MosaicBertTrainerOptions
    {
        /// <summary>Creates options with the defaults.</summary>
        public SentenceSimilarityOptions() => Sentence2ColumnName = "Sentence2";
    }

    internal SentenceSimilarityTrainer(MLContext context, SentenceSimilarityOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(Component);
        _context = context;
        _options = options;
    }

    /// <summary>Fine-tunes on <paramref name="input"/> (rows whose label is NaN are skipped).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A column is missing or has the wrong type (the label must be Single).</exception>
    /// <exception cref="InvalidOperationException">No row has a label.</exception>
    /// <exception cref="OperationCanceledException">The options' cancellation token was cancelled.</exception>
    public SentenceSimilarityTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var o = _options;
        o.Validate(Component);
        var metric = o.ValidationMetric ?? GlueMetricKind.SpearmanCorrelation;
        if (metric is not (GlueMetricKind.SpearmanCorrelation or GlueMetricKind.PearsonCorrelation))
            throw new ArgumentException($"{Component}: ValidationMetric {metric} does not apply; use SpearmanCorrelation or PearsonCorrelation.");
        var (train, targets) = Read(input, o, "training data");
        TextRows? validation = null;
        var validationTargets = Array.Empty<float>();
        if (o.ValidationSet is { } v) (validation, validationTargets) = Read(v, o, "validation set");

        var task = new FineTuningTask(
            rows => new TrainingObjective.Regression([.. rows.Select(r => targets[r])]),
            outputs =>
            {
                double[] truth = [.. validationTargets.Select(t => (double)t)], predicted = [.. outputs.Select(p => (double)p[0])];
                return new Dictionary<string, double>
                {
                    ["MeanSquaredError"] = truth.Zip(predicted, (t, p) => (t - p) * (t - p)).Average(),
                    [nameof(GlueMetricKind.PearsonCorrelation)] = GlueMetrics.PearsonCorrelation(truth, predicted),
                    [nameof(GlueMetricKind.SpearmanCorrelation)] = GlueMetrics.SpearmanCorrelation(truth, predicted),
                };
            },
            metric.ToString());
        var encoder = FineTuning.Train(_context, o, Component, 1, train, validation, task);
        return new SentenceSimilarityTransformer(encoder, o.Sentence1ColumnName, o.Sentence2ColumnName, o.MaxSequenceLength, o.BatchSize, o.ScoreColumnName);
    }

    /// <summary>Adds <c>Score</c> (Single).</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var o = _options;
        MosaicBertTransformer.CheckTextColumns(inputSchema, o.Sentence1ColumnName, o.Sentence2ColumnName);
        if (!inputSchema.TryFindColumn(o.LabelColumnName, out var label))
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"{Component}: label column '{o.LabelColumnName}' not found; the columns are: {inputSchema}.");
        if (label.IsKey || label.Kind != SchemaShape.Column.VectorKind.Scalar || label.ItemType != NumberDataViewType.Single)
            throw NotSingle(o.LabelColumnName, label.GetTypeString());
        return new SchemaShape([.. inputSchema,
            new SchemaShape.Column(o.ScoreColumnName, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.Single, isKey: false,
                new SchemaShape(TextClassificationTrainer.ScoreKindShapes()))]);
    }

    private static ArgumentOutOfRangeException NotSingle(string name, string type) =>
        new("inputSchema", $"{Component}: the label column '{name}' is {type}, but must be Single (a real-valued score).");

    private (TextRows Rows, float[] Targets) Read(IDataView data, MosaicBertTrainerOptions o, string where)
    {
        var column = data.Schema.GetColumnOrNull(o.LabelColumnName)
            ?? throw new ArgumentOutOfRangeException(nameof(data), $"{Component}: label column '{o.LabelColumnName}' not found in the {where}; the columns are: {data.Schema}.");
        if (column.Type != NumberDataViewType.Single) throw NotSingle(o.LabelColumnName, column.Type.ToString()!);
        var labels = ColumnarDataView.Values<float>(data, column);
        int[] rows = [.. Enumerable.Range(0, labels.Length).Where(r => !float.IsNaN(labels[r]))];
        if (rows.Length < labels.Length)
            _context.WriteLog(ChannelMessageKind.Warning, Component, $"{labels.Length - rows.Length} rows of the {where} with a missing (NaN) label were skipped.");
        return (TextRows.Read(data, o.Sentence1ColumnName, o.Sentence2ColumnName, rows), [.. rows.Select(r => labels[r])]);
    }
}

/// <summary>A fine-tuned text classifier (see <see cref="TextClassificationTrainer"/>).</summary>
public sealed class TextClassificationTransformer : MosaicBertTransformer
{
    internal const string LoaderName = "TextClassification";
    private readonly DataViewSchema.Annotations _scoreAnnotations;
    private readonly DataViewSchema.Annotations _predictedAnnotations;
    private readonly DataViewSchema.Annotations _labelKeyValues;

    internal TextClassificationTransformer(MosaicBertEncoder encoder, string sentence1, string? sentence2, int maxSequenceLength, int batchSize,
        string scoreColumnName, string predictedLabelColumnName, int numberOfClasses, DataViewSchema.Annotations labelKeyValues)
        : base(encoder, sentence1, sentence2, maxSequenceLength, batchSize)
    {
        ScoreColumnName = scoreColumnName;
        PredictedLabelColumnName = predictedLabelColumnName;
        NumberOfClasses = numberOfClasses;
        _labelKeyValues = labelKeyValues;
        // ML.NET's annotations: slot names on the score, the label's key values on the predicted label, and the kinds.
        var score = new DataViewSchema.Annotations.Builder();
        if (labelKeyValues.TryGetValue<Array>(AnnotationUtils.Kinds.KeyValues, out var values))
        {
            score.Add(AnnotationUtils.Kinds.SlotNames, new VectorDataViewType(TextDataViewType.Instance, values.Length),
                values.Cast<object>().Select(v => Convert.ToString(v, CultureInfo.InvariantCulture) ?? "").ToArray());
        }
        AddKinds(score, "MulticlassClassification", "Score");
        _scoreAnnotations = score.ToAnnotations();
        var predicted = new DataViewSchema.Annotations.Builder();
        predicted.Add(labelKeyValues, _ => true);
        AddKinds(predicted, "MulticlassClassification", "PredictedLabel");
        _predictedAnnotations = predicted.ToAnnotations();
    }

    /// <summary>The score column (class probabilities).</summary>
    public string ScoreColumnName { get; }

    /// <summary>The predicted-label column (a key).</summary>
    public string PredictedLabelColumnName { get; }

    /// <summary>The number of classes.</summary>
    public int NumberOfClasses { get; }

    private protected override EncoderOutput Output => EncoderOutput.Logits;

    private protected override string Loader => LoaderName;

    private VectorDataViewType ScoreType => new(NumberDataViewType.Single, NumberOfClasses);

    private KeyDataViewType PredictedType => new(typeof(uint), NumberOfClasses);

    private protected override void AddOutputSchema(DataViewSchema.Builder builder)
    {
        builder.AddColumn(ScoreColumnName, ScoreType, _scoreAnnotations);
        builder.AddColumn(PredictedLabelColumnName, PredictedType, _predictedAnnotations);
    }

    private protected override void AddOutputColumns(ArrayDataViewBuilder builder, Lazy<float[][]> outputs)
    {
        builder.AddColumn(ScoreColumnName, ScoreType, () => outputs.Value.Select(Softmax).ToArray(), _scoreAnnotations);
        builder.AddColumn(PredictedLabelColumnName, PredictedType, () => outputs.Value.Select(l => (uint)FineTuning.ArgMax(l) + 1).ToArray(), _predictedAnnotations);
    }

    private static float[] Softmax(float[] logits)
    {
        var max = logits.Max();
        var e = logits.Select(l => Math.Exp(l - max)).ToArray();
        var sum = e.Sum();
        return [.. e.Select(x => (float)(x / sum))];
    }

    internal static void AddKinds(DataViewSchema.Annotations.Builder builder, string columnKind, string valueKind)
    {
        builder.Add(AnnotationUtils.Kinds.ScoreColumnKind, TextDataViewType.Instance, columnKind);
        builder.Add(AnnotationUtils.Kinds.ScoreValueKind, TextDataViewType.Instance, valueKind);
    }

    private protected override void SaveParameters(JsonObject parameters)
    {
        parameters["scoreColumnName"] = ScoreColumnName;
        parameters["predictedLabelColumnName"] = PredictedLabelColumnName;
        parameters["numberOfClasses"] = NumberOfClasses;
        parameters["labelKeyValues"] = SchemaJson.KeyValues(_labelKeyValues);
    }

    internal static TextClassificationTransformer Load(ModelLoadContext context)
    {
        var (s1, s2, maxLength, batchSize) = LoadCommon(context);
        return new TextClassificationTransformer(MosaicBertEncoder.Load(context.Directory, context.Context, LoaderName), s1, s2, maxLength, batchSize,
            context.Get<string>("scoreColumnName"), context.Get<string>("predictedLabelColumnName"), context.Get<int>("numberOfClasses"),
            SchemaJson.ReadKeyValues(context.Parameters["labelKeyValues"]));
    }
}

/// <summary>A fine-tuned sentence-pair regressor (see <see cref="SentenceSimilarityTrainer"/>).</summary>
public sealed class SentenceSimilarityTransformer : MosaicBertTransformer
{
    internal const string LoaderName = "SentenceSimilarity";
    private readonly DataViewSchema.Annotations _scoreAnnotations;

    internal SentenceSimilarityTransformer(MosaicBertEncoder encoder, string sentence1, string? sentence2, int maxSequenceLength, int batchSize, string scoreColumnName)
        : base(encoder, sentence1, sentence2, maxSequenceLength, batchSize)
    {
        ScoreColumnName = scoreColumnName;
        var score = new DataViewSchema.Annotations.Builder();
        TextClassificationTransformer.AddKinds(score, "Regression", "Score");
        _scoreAnnotations = score.ToAnnotations();
    }

    /// <summary>The score column (Single).</summary>
    public string ScoreColumnName { get; }

    private protected override EncoderOutput Output => EncoderOutput.Logits;

    private protected override string Loader => LoaderName;

    private protected override void AddOutputSchema(DataViewSchema.Builder builder) =>
        builder.AddColumn(ScoreColumnName, NumberDataViewType.Single, _scoreAnnotations);

    private protected override void AddOutputColumns(ArrayDataViewBuilder builder, Lazy<float[][]> outputs) =>
        builder.AddColumn(ScoreColumnName, NumberDataViewType.Single, () => outputs.Value.Select(o => o[0]).ToArray(), _scoreAnnotations);

    private protected override void SaveParameters(JsonObject parameters) => parameters["scoreColumnName"] = ScoreColumnName;

    internal static SentenceSimilarityTransformer Load(ModelLoadContext context)
    {
        var (s1, s2, maxLength, batchSize) = LoadCommon(context);
        return new SentenceSimilarityTransformer(MosaicBertEncoder.Load(context.Directory, context.Context, LoaderName), s1, s2, maxLength, batchSize, context.Get<string>("scoreColumnName"));
    }
}
