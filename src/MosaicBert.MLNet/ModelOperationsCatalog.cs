using MosaicBert.ML.Data;

namespace MosaicBert.ML;

/// <summary>Operations on fitted models (as Microsoft.ML.ModelOperationsCatalog): saving, loading, prediction engines.</summary>
public sealed class ModelOperationsCatalog : CatalogBase
{
    internal ModelOperationsCatalog(MLContext context) : base(context) { }

    /// <summary>
    /// Saves a fitted model (a transformer or chain whose steps are all <see cref="IPersistableTransformer"/>: the key
    /// mappings, the MosaicBERT featurizer and trainers) and the schema of the data it expects, as one zip:
    /// <c>manifest.json</c> (versions, input schema, the steps with their parameters: column names, label key values,
    /// lengths) and each step's files (MosaicBERT steps: <c>config.json</c>, <c>model.safetensors</c>, <c>vocab.txt</c>).
    /// </summary>
    /// <remarks>The zip is written to a temporary file in the same folder, flushed to disk and renamed over
    /// <paramref name="filePath"/>, so a failure or a killed process leaves the previous file intact (a killed process
    /// may leave a hidden <c>.NAME.*.tmp</c> file behind; a failure removes it).</remarks>
    /// <param name="model">The fitted model.</param>
    /// <param name="inputSchema">The schema of the model's input (e.g. the training data's), returned by <see cref="Load(string, out DataViewSchema)"/>; may be null.</param>
    /// <param name="filePath">The zip to write.</param>
    /// <exception cref="NotSupportedException">A step cannot be saved.</exception>
    public void Save(ITransformer model, DataViewSchema? inputSchema, string filePath)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(filePath);
        ModelArchive.Save(model, inputSchema, filePath);
    }

    /// <summary>Writes the model zip (see <see cref="Save(ITransformer, DataViewSchema?, string)"/>) to a stream.</summary>
    public void Save(ITransformer model, DataViewSchema? inputSchema, Stream stream)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(stream);
        ModelArchive.Save(model, inputSchema, stream);
    }

    /// <summary>Loads a model saved by <see cref="Save(ITransformer, DataViewSchema?, string)"/>. A saved chain comes
    /// back as a <see cref="TransformerChain{TLastTransformer}"/> of <see cref="ITransformer"/>, with its scopes. Dispose
    /// it when done (it owns the MosaicBERT models).</summary>
    /// <param name="filePath">The zip.</param>
    /// <param name="inputSchema">The input schema that was saved (empty when none was).</param>
    /// <exception cref="FormatException">The file is not a model zip, or one this version cannot read.</exception>
    public ITransformer Load(string filePath, out DataViewSchema inputSchema)
    {
        ArgumentException.ThrowIfNullOrEmpty(filePath);
        using var stream = File.OpenRead(filePath);
        return Load(stream, out inputSchema);
    }

    /// <summary>Loads a model zip from a stream (see <see cref="Load(string, out DataViewSchema)"/>).</summary>
    public ITransformer Load(Stream stream, out DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(stream);
        return ModelArchive.Load(Context, stream, out inputSchema);
    }

    /// <summary>An engine that runs <paramref name="transformer"/> on one example at a time.</summary>
    /// <param name="transformer">The fitted model.</param>
    /// <param name="ignoreMissingColumns">Leave members of <typeparamref name="TDst"/> that have no output column unset
    /// (ML.NET's default) instead of failing.</param>
    /// <exception cref="InvalidOperationException"><typeparamref name="TSrc"/>'s columns do not fit the model, or
    /// <typeparamref name="TDst"/>'s members do not fit its output.</exception>
    public PredictionEngine<TSrc, TDst> CreatePredictionEngine<TSrc, TDst>(ITransformer transformer, bool ignoreMissingColumns = true)
        where TSrc : class where TDst : class, new()
    {
        ArgumentNullException.ThrowIfNull(transformer);
        return new PredictionEngine<TSrc, TDst>(transformer, ignoreMissingColumns);
    }
}

/// <summary>
/// Runs a model on single examples (as Microsoft.ML.PredictionEngine), or on a batch with <see cref="PredictBatch"/>.
/// </summary>
/// <remarks>
/// Unlike ML.NET's, an engine may be shared by many threads when the model's transformers are thread-safe, which
/// those of this library are: the engine keeps no per-call state, and the MosaicBERT transformers run one forward
/// pass at a time on their model (a lock around the model's workspace; each pass uses all the backend's threads).
/// For throughput, batch: <see cref="PredictBatch"/> (or <c>Transform</c> on a view) runs the model on
/// <c>BatchSize</c> rows per forward pass.
/// </remarks>
public sealed class PredictionEngine<TSrc, TDst> : IDisposable where TSrc : class where TDst : class, new()
{
    private readonly ITransformer _transformer;
    private readonly bool _ignoreMissingColumns;
    private readonly RowBinding _input = RowBinding.For(typeof(TSrc));
    private readonly RowBinding _output = RowBinding.For(typeof(TDst));
    private bool _disposed;

    internal PredictionEngine(ITransformer transformer, bool ignoreMissingColumns)
    {
        _transformer = transformer;
        _ignoreMissingColumns = ignoreMissingColumns;
        // Check both ends now rather than at the first Predict.
        var inputSchema = new DataViewSchema.Builder();
        foreach (var m in _input.Members) inputSchema.AddColumn(m.ColumnName, m.ColumnType);
        OutputSchema = transformer.GetOutputSchema(inputSchema.ToSchema());
        _output.Bind(OutputSchema, ignoreMissingColumns);
    }

    /// <summary>The schema of the model's output.</summary>
    public DataViewSchema OutputSchema { get; }

    /// <summary>Predicts one example.</summary>
    public TDst Predict(TSrc example)
    {
        TDst prediction = new();
        Predict(example, ref prediction);
        return prediction;
    }

    /// <summary>Predicts one example into <paramref name="prediction"/> (reusing the object).</summary>
    public void Predict(TSrc example, ref TDst prediction)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(example);
        var output = _transformer.Transform(_input.ToDataView([example]));
        prediction ??= new TDst();
        RowBinding.Fill(prediction, output, _output.Bind(output.Schema, _ignoreMissingColumns), row: 0);
    }

    /// <summary>Predicts many examples with one <c>Transform</c> (batched forward passes), in order.</summary>
    public IReadOnlyList<TDst> PredictBatch(IReadOnlyList<TSrc> examples)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(examples);
        var output = _transformer.Transform(_input.ToDataView(examples));
        return [.. _output.ReadRows<TDst>(output, reuseRowObject: false, _ignoreMissingColumns)];
    }

    /// <summary>Releases the engine; the model itself is not disposed.</summary>
    public void Dispose() => _disposed = true;
}
