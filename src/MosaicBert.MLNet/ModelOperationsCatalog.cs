using MosaicBert.ML.Data;

namespace MosaicBert.ML;

/// <summary>Operations on fitted models (as Microsoft.ML.ModelOperationsCatalog; saving and loading come with the model format).</summary>
public sealed class ModelOperationsCatalog : CatalogBase
{
    internal ModelOperationsCatalog(MLContext context) : base(context) { }

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
/// Runs a model on single examples (as Microsoft.ML.PredictionEngine). Not thread-safe, like ML.NET's: use one
/// engine per thread. For many rows, <c>Transform</c> a view and <c>CreateEnumerable</c> is faster.
/// </summary>
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

    /// <summary>Releases the engine; the model itself is not disposed.</summary>
    public void Dispose() => _disposed = true;
}
