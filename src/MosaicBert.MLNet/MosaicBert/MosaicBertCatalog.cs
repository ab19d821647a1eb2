using MosaicBert.ML.Data;
using MosaicBert.ML.Trainers;
using MosaicBert.ML.Transforms;

namespace MosaicBert.ML;

/// <summary>
/// The MosaicBERT components on the catalogs: the featurizer (<c>Transforms.MosaicBert</c>), and the fine-tuning
/// trainers <c>MulticlassClassification.Trainers.TextClassification</c> and
/// <c>Regression.Trainers.SentenceSimilarity</c>, with ML.NET's parameter names and order.
/// </summary>
/// <example>
/// <code>
/// var labelMap = ctx.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue);
/// var pipeline = labelMap
///     .Append(ctx.MulticlassClassification.Trainers.TextClassification(new TextClassificationTrainer.TextClassificationOptions
///     {
///         ModelPath = "checkpoints/step-70000", Sentence1ColumnName = "Sentence1", Sentence2ColumnName = "Sentence2",
///         MaxEpochs = 3, LearningRate = 5e-5, ValidationSet = labelMap.Fit(train).Transform(dev),
///     }))
///     .Append(ctx.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
/// using var model = pipeline.Fit(train);
/// ctx.Model.Save(model, train.Schema, "model.zip");
/// </code>
/// </example>
public static class MosaicBertCatalog
{
    /// <summary>
    /// Embeds a text (or a text pair, encoded as <c>[CLS] a [SEP] b [SEP]</c>) into a float vector of the model's hidden
    /// size, by mean or <c>[CLS]</c> pooling of the encoder's final hidden states. Rows are truncated longest-first to
    /// <c>MaxSequenceLength</c> and run <c>BatchSize</c> at a time.
    /// </summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="outputColumnName">The vector column to produce.</param>
    /// <param name="sentence1ColumnName">The text column.</param>
    /// <param name="sentence2ColumnName">The second text column of a pair, or null.</param>
    /// <param name="options">The model source (a checkpoint directory, a saved model zip, or a preset with random weights,
    /// which is useless except for tests), pooling, lengths.</param>
    public static MosaicBertFeaturizingEstimator MosaicBert(this TransformsCatalog catalog, string outputColumnName,
        string sentence1ColumnName, string? sentence2ColumnName = null, MosaicBertFeaturizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new(catalog.Context, outputColumnName, sentence1ColumnName, sentence2ColumnName, options ?? new MosaicBertFeaturizerOptions());
    }

    /// <summary>The featurizer of <see cref="MosaicBert(TransformsCatalog, string, string, string?, MosaicBertFeaturizerOptions?)"/>,
    /// on the text sub-catalog (where ML.NET keeps its text featurizers).</summary>
    public static MosaicBertFeaturizingEstimator MosaicBert(this TransformsCatalog.TextTransforms catalog, string outputColumnName,
        string sentence1ColumnName, string? sentence2ColumnName = null, MosaicBertFeaturizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new(catalog.Context, outputColumnName, sentence1ColumnName, sentence2ColumnName, options ?? new MosaicBertFeaturizerOptions());
    }

    /// <summary>
    /// Fine-tunes MosaicBERT to classify a text or text pair (ML.NET's signature, with a model path in place of the
    /// architecture). The label must be a key: put <c>MapValueToKey</c> before the trainer and <c>MapKeyToValue</c> after.
    /// Two-class tasks use this trainer too.
    /// </summary>
    /// <param name="catalog">The multiclass trainers catalog.</param>
    /// <param name="labelColumnName">The key label column.</param>
    /// <param name="scoreColumnName">The score column produced (class probabilities).</param>
    /// <param name="outputColumnName">The predicted-label column produced (a key).</param>
    /// <param name="sentence1ColumnName">The first text column.</param>
    /// <param name="sentence2ColumnName">The second text column, or null.</param>
    /// <param name="batchSize">Rows per step.</param>
    /// <param name="maxEpochs">Passes over the data.</param>
    /// <param name="validationSet">Data to evaluate on after each epoch (the best parameters are kept), or null.</param>
    /// <param name="modelPath">The checkpoint directory (with vocab.txt) or model zip to start from. Required here: there is
    /// no built-in download of pretrained weights; the options overload also accepts a preset.</param>
    public static TextClassificationTrainer TextClassification(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        string labelColumnName = "Label", string scoreColumnName = "Score", string outputColumnName = "PredictedLabel",
        string sentence1ColumnName = "Sentence1", string? sentence2ColumnName = null, int batchSize = 32, int maxEpochs = 3,
        IDataView? validationSet = null, string? modelPath = null) =>
        catalog.TextClassification(new TextClassificationTrainer.TextClassificationOptions
        {
            LabelColumnName = labelColumnName,
            ScoreColumnName = scoreColumnName,
            PredictedLabelColumnName = outputColumnName,
            Sentence1ColumnName = sentence1ColumnName,
            Sentence2ColumnName = sentence2ColumnName,
            BatchSize = batchSize,
            MaxEpochs = maxEpochs,
            ValidationSet = validationSet,
            ModelPath = modelPath,
        });

    /// <summary>Fine-tunes MosaicBERT to classify text, with every option (see <see cref="MosaicBertTrainerOptions"/>).</summary>
    public static TextClassificationTrainer TextClassification(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        TextClassificationTrainer.TextClassificationOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new(catalog.Context, options);
    }

    /// <summary>
    /// Fine-tunes MosaicBERT to score a sentence pair (STS-B): one output, mean squared error (ML.NET's signature, with a
    /// model path in place of the architecture). The label is a Single.
    /// </summary>
    /// <param name="catalog">The regression trainers catalog.</param>
    /// <param name="labelColumnName">The Single label column.</param>
    /// <param name="scoreColumnName">The score column produced (Single).</param>
    /// <param name="sentence1ColumnName">The first text column.</param>
    /// <param name="sentence2ColumnName">The second text column (null for single texts).</param>
    /// <param name="batchSize">Rows per step.</param>
    /// <param name="maxEpochs">Passes over the data.</param>
    /// <param name="validationSet">Data to evaluate on after each epoch (the best parameters are kept), or null.</param>
    /// <param name="modelPath">The checkpoint directory (with vocab.txt) or model zip to start from (required here).</param>
    public static SentenceSimilarityTrainer SentenceSimilarity(this RegressionCatalog.RegressionTrainers catalog,
        string labelColumnName = "Label", string scoreColumnName = "Score", string sentence1ColumnName = "Sentence1",
        string? sentence2ColumnName = "Sentence2", int batchSize = 32, int maxEpochs = 3, IDataView? validationSet = null, string? modelPath = null) =>
        catalog.SentenceSimilarity(new SentenceSimilarityTrainer.SentenceSimilarityOptions
        {
            LabelColumnName = labelColumnName,
            ScoreColumnName = scoreColumnName,
            Sentence1ColumnName = sentence1ColumnName,
            Sentence2ColumnName = sentence2ColumnName,
            BatchSize = batchSize,
            MaxEpochs = maxEpochs,
            ValidationSet = validationSet,
            ModelPath = modelPath,
        });

    /// <summary>Fine-tunes MosaicBERT to score sentence pairs, with every option (see <see cref="MosaicBertTrainerOptions"/>).</summary>
    public static SentenceSimilarityTrainer SentenceSimilarity(this RegressionCatalog.RegressionTrainers catalog,
        SentenceSimilarityTrainer.SentenceSimilarityOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new(catalog.Context, options);
    }
}
