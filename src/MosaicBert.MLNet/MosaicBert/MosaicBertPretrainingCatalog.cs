using MosaicBert.ML.Trainers;

namespace MosaicBert.ML;

/// <summary>
/// MosaicBERT masked-language-model pretraining on the <see cref="PretrainingCatalog"/>: the pretraining host's loop
/// as an estimator whose result the featurizer and the fine-tuning trainers start from.
/// </summary>
/// <example>
/// <code>
/// var ctx = new MLContext(seed: 1);
/// IDataView text = ctx.Data.LoadFromTextFile&lt;Row&gt;("sentences.tsv", hasHeader: true);
/// using var pretrained = ctx.Pretraining.MosaicBert(new MosaicBertPretrainingTrainer.Options
/// {
///     TextColumnName = "Text", Preset = "mini", VocabPath = "vocab.txt", OutputDirectory = "runs/mlm", MaxSteps = 2000,
/// }).Fit(text);
/// var classifier = ctx.MulticlassClassification.Trainers.TextClassification(
///     new TextClassificationTrainer.TextClassificationOptions { ModelPath = pretrained.ModelPath, Sentence1ColumnName = "Text" });
/// </code>
/// </example>
public static class MosaicBertPretrainingCatalog
{
    /// <summary>Pretrains MosaicBERT on a text column, with every option (see <see cref="MosaicBertPretrainingTrainer"/>).</summary>
    public static MosaicBertPretrainingTrainer MosaicBert(this PretrainingCatalog catalog, MosaicBertPretrainingTrainer.Options options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new(catalog.Context, options);
    }

    /// <summary>Pretrains MosaicBERT from scratch on a text column with the recipe's settings.</summary>
    /// <param name="catalog">The pretraining catalog.</param>
    /// <param name="outputDirectory">Where checkpoints, metrics and the final model go (a second Fit resumes there).</param>
    /// <param name="vocabPath">The WordPiece vocabulary (vocab.txt).</param>
    /// <param name="textColumnName">The text column.</param>
    /// <param name="preset">The model size: tiny, mini, small, medium, base or large.</param>
    /// <param name="maxSteps">Optimizer steps.</param>
    /// <param name="batchSize">Samples per optimizer step (run as micro-batches of at most 32).</param>
    public static MosaicBertPretrainingTrainer MosaicBert(this PretrainingCatalog catalog, string outputDirectory, string vocabPath,
        string textColumnName = "Text", string preset = "base", long maxSteps = 10_000, int batchSize = 256) =>
        catalog.MosaicBert(new MosaicBertPretrainingTrainer.Options
        {
            OutputDirectory = outputDirectory,
            VocabPath = vocabPath,
            TextColumnName = textColumnName,
            Preset = preset,
            MaxSteps = maxSteps,
            BatchSize = batchSize,
            // The largest divisor of the batch up to 32 (the global batch is accumulated from micro-batches).
            MicroBatchSize = Enumerable.Range(1, Math.Clamp(batchSize, 1, 32)).Last(m => batchSize % m == 0),
        });
}
