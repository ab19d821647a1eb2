using MosaicBert.ML.Data;
using MosaicBert.ML.Transforms;
using MosaicBert.Model;

namespace MosaicBert.ML.Trainers;

/// <summary>
/// The result of <c>mlContext.Pretraining.MosaicBert(options).Fit(data)</c>: a pretrained MosaicBERT encoder saved
/// as a Hugging Face checkpoint directory (<see cref="ModelPath"/>: config.json, model.safetensors with the MLM
/// head, vocab.txt). Fine-tuning and featurizing start from it by path, as from any checkpoint:
/// <c>new TextClassificationTrainer.TextClassificationOptions { ModelPath = pretrained.ModelPath, … }</c> or
/// <c>Transforms.MosaicBert("Features", "Text", options: new() { ModelPath = pretrained.ModelPath })</c>.
/// </summary>
/// <remarks>
/// As a transformer it embeds the text column it was trained on: <see cref="Transform"/> adds
/// <see cref="FeatureColumnName"/>, the mean of the final hidden states (exactly what <c>Transforms.MosaicBert</c>
/// with this model gives). The model is loaded on first use; <see cref="Dispose"/> releases it. Saved with
/// <c>mlContext.Model.Save</c>, it is stored as (and loads back as) that featurizer.
/// </remarks>
public sealed class PretrainedMosaicBertTransformer : IPersistableTransformer, IDisposable
{
    private readonly MLContext _context;
    private readonly int _maxSequenceLength;
    private readonly int _batchSize;
    private readonly int? _threads;
    private readonly Lock _gate = new();
    private MosaicBertFeaturizingTransformer? _featurizer;
    private bool _disposed;

    internal PretrainedMosaicBertTransformer(MLContext context, string modelPath, string checkpointPath, MosaicBertConfig config, long steps,
        double evalLoss, string textColumnName, string featureColumnName, int maxSequenceLength, int batchSize, int? threads)
    {
        _context = context;
        ModelPath = modelPath;
        CheckpointPath = checkpointPath;
        ModelConfig = config;
        Steps = steps;
        EvalLoss = evalLoss;
        TextColumnName = textColumnName;
        FeatureColumnName = featureColumnName;
        _maxSequenceLength = maxSequenceLength;
        _batchSize = batchSize;
        _threads = threads;
    }

    /// <summary>The exported model: a Hugging Face checkpoint directory with vocab.txt, for <c>ModelPath</c> options.</summary>
    public string ModelPath { get; }

    /// <summary>The newest training checkpoint (model + optimizer state + data position), for resuming.</summary>
    public string CheckpointPath { get; }

    /// <summary>The model's configuration.</summary>
    public MosaicBertConfig ModelConfig { get; }

    /// <summary>Optimizer steps trained (over all resumed runs).</summary>
    public long Steps { get; }

    /// <summary>The MLM loss on the held-out samples at the end (masked at the evaluation ratio).</summary>
    public double EvalLoss { get; }

    /// <summary>The text column embedded by <see cref="Transform"/>.</summary>
    public string TextColumnName { get; }

    /// <summary>The embedding column added by <see cref="Transform"/>.</summary>
    public string FeatureColumnName { get; }

    /// <summary>The length of the embeddings (the model's hidden size).</summary>
    public int EmbeddingSize => ModelConfig.HiddenSize;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        MosaicBertTransformer.CheckTextColumns(inputSchema, TextColumnName, null);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        builder.AddColumn(FeatureColumnName, new VectorDataViewType(NumberDataViewType.Single, EmbeddingSize));
        return builder.ToSchema();
    }

    /// <summary>Adds the embedding of <see cref="TextColumnName"/> (mean pooling), computed when first read.</summary>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return Featurizer(input).Transform(input);
    }

    string IPersistableTransformer.LoaderName => MosaicBertFeaturizingTransformer.LoaderName;

    void IPersistableTransformer.Save(ModelSaveContext context) => ((IPersistableTransformer)Featurizer(null)).Save(context);

    /// <summary>Releases the loaded model, if any (later use throws <see cref="ObjectDisposedException"/>).</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
            _featurizer?.Dispose();
            _featurizer = null;
        }
    }

    /// <summary>The featurizer over <see cref="ModelPath"/>, loaded once.</summary>
    private MosaicBertFeaturizingTransformer Featurizer(IDataView? input)
    {
        if (input is not null) MosaicBertTransformer.CheckTextColumns(input.Schema, TextColumnName, null);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_featurizer is null)
            {
                var options = new MosaicBertFeaturizerOptions
                {
                    ModelPath = ModelPath, MaxSequenceLength = _maxSequenceLength, BatchSize = _batchSize, Threads = _threads, Seed = 0,
                };
                var encoder = MosaicBertEncoder.Create(_context, options, ModelHeads.None, 0, 0, MosaicBertPretrainingTrainer.Component);
                _featurizer = new MosaicBertFeaturizingTransformer(encoder, FeatureColumnName, TextColumnName, null, _maxSequenceLength, _batchSize, MosaicBertPooling.Mean);
            }
            return _featurizer;
        }
    }
}
