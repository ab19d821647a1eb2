using System.Collections;
using MosaicBert.ML.Data;

namespace MosaicBert.ML;

/// <summary>
/// A fitted component that maps an input view to an output view, usually by adding columns (as
/// Microsoft.ML.ITransformer, without the row-cursor and persistence members).
/// </summary>
public interface ITransformer
{
    /// <summary>The schema <see cref="Transform"/> would produce for <paramref name="inputSchema"/>, without data.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An input column is missing or has the wrong type.</exception>
    DataViewSchema GetOutputSchema(DataViewSchema inputSchema);

    /// <summary>The transformed view. Cheap: new columns are computed when first read.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An input column is missing or has the wrong type.</exception>
    IDataView Transform(IDataView input);
}

/// <summary>A component that learns a transformer from data (as Microsoft.ML.IEstimator&lt;TTransformer&gt;).</summary>
public interface IEstimator<out TTransformer> where TTransformer : ITransformer
{
    /// <summary>Learns from <paramref name="input"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An input column is missing or has the wrong type.</exception>
    /// <exception cref="InvalidOperationException">The data cannot be learned from (for example it has no rows).</exception>
    TTransformer Fit(IDataView input);

    /// <summary>The shape of the fitted transformer's output for an input of shape <paramref name="inputSchema"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An input column is missing or has the wrong type.</exception>
    SchemaShape GetOutputSchema(SchemaShape inputSchema);
}

/// <summary>When a step of a chain runs (as Microsoft.ML.Data.TransformerScope).</summary>
[Flags]
public enum TransformerScope
{
    /// <summary>Never.</summary>
    None = 0,

    /// <summary>On training data.</summary>
    Training = 1 << 0,

    /// <summary>On test data.</summary>
    Testing = 1 << 1,

    /// <summary>When scoring new data.</summary>
    Scoring = 1 << 2,

    /// <summary>On training and test data, not when scoring (e.g. steps that need the label).</summary>
    TrainTest = Training | Testing,

    /// <summary>Always.</summary>
    Everything = Training | Testing | Scoring,
}

/// <summary>
/// Estimators applied in order, each fitted on the output of the previous ones (as Microsoft.ML.Data.EstimatorChain).
/// Immutable: <see cref="Append{TNewTrans}"/> returns a new chain.
/// </summary>
public sealed class EstimatorChain<TLastTransformer> : IEstimator<TransformerChain<TLastTransformer>>
    where TLastTransformer : class, ITransformer
{
    private readonly IEstimator<ITransformer>[] _estimators;
    private readonly TransformerScope[] _scopes;

    /// <summary>An empty chain, to <see cref="Append{TNewTrans}"/> to.</summary>
    public EstimatorChain() : this([], []) { }

    private EstimatorChain(IEstimator<ITransformer>[] estimators, TransformerScope[] scopes)
    {
        _estimators = estimators;
        _scopes = scopes;
        LastEstimator = estimators.Length == 0 ? null : estimators[^1] as IEstimator<TLastTransformer>;
    }

    /// <summary>The last estimator, or null for an empty chain.</summary>
    public IEstimator<TLastTransformer>? LastEstimator { get; }

    /// <summary>A chain with <paramref name="estimator"/> added at the end.</summary>
    public EstimatorChain<TNewTrans> Append<TNewTrans>(IEstimator<TNewTrans> estimator, TransformerScope scope = TransformerScope.Everything)
        where TNewTrans : class, ITransformer
    {
        ArgumentNullException.ThrowIfNull(estimator);
        return new EstimatorChain<TNewTrans>([.. _estimators, estimator], [.. _scopes, scope]);
    }

    /// <summary>Fits each estimator on the output of the transformers fitted before it. Every step is fitted and
    /// applied whatever its scope; scopes only matter for <see cref="TransformerChain{T}.GetModelFor"/>.</summary>
    public TransformerChain<TLastTransformer> Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        // Check the whole chain's schema first, so that a wrong column name fails before any (slow) fitting.
        GetOutputSchema(SchemaShape.Create(input.Schema));
        var transformers = new ITransformer[_estimators.Length];
        var current = input;
        for (var i = 0; i < _estimators.Length; i++)
        {
            transformers[i] = _estimators[i].Fit(current);
            if (i < _estimators.Length - 1) current = transformers[i].Transform(current);
        }
        return new TransformerChain<TLastTransformer>(transformers, _scopes);
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var shape = inputSchema;
        foreach (var e in _estimators) shape = e.GetOutputSchema(shape);
        return shape;
    }
}

/// <summary>
/// Fitted transformers applied in order (as Microsoft.ML.Data.TransformerChain). Disposing the chain disposes the
/// transformers that are <see cref="IDisposable"/> (model-owning ones). Saving saves the steps in order with their
/// scopes (every step must be <see cref="IPersistableTransformer"/>); a loaded chain is a
/// <c>TransformerChain&lt;ITransformer&gt;</c>.
/// </summary>
public sealed class TransformerChain<TLastTransformer> : IPersistableTransformer, IEnumerable<ITransformer>, IDisposable
    where TLastTransformer : class, ITransformer
{
    private readonly ITransformer[] _transformers;
    private readonly TransformerScope[] _scopes;

    /// <summary>A chain of the given transformers, all with scope <see cref="TransformerScope.Everything"/>.</summary>
    public TransformerChain(params ITransformer[] transformers)
        : this(transformers, [.. transformers.Select(_ => TransformerScope.Everything)])
    {
    }

    /// <summary>A chain of the given transformers with their scopes.</summary>
    public TransformerChain(IEnumerable<ITransformer> transformers, IEnumerable<TransformerScope> scopes)
    {
        _transformers = [.. transformers];
        _scopes = [.. scopes];
        if (_transformers.Length != _scopes.Length) throw new ArgumentException("One scope per transformer is needed.", nameof(scopes));
        if (_transformers.Any(t => t is null)) throw new ArgumentException("A transformer is null.", nameof(transformers));
        LastTransformer = _transformers.Length == 0 ? null : _transformers[^1] as TLastTransformer;
        if (_transformers.Length > 0 && LastTransformer is null)
            throw new ArgumentException($"The last transformer is {_transformers[^1].GetType().Name}, not {typeof(TLastTransformer).Name}.", nameof(transformers));
    }

    /// <summary>The last transformer (e.g. the trained model), or null for an empty chain.</summary>
    public TLastTransformer? LastTransformer { get; }

    /// <summary>A chain with <paramref name="transformer"/> added at the end.</summary>
    public TransformerChain<TNewLast> Append<TNewLast>(TNewLast transformer, TransformerScope scope = TransformerScope.Everything)
        where TNewLast : class, ITransformer =>
        new([.. _transformers, transformer], [.. _scopes, scope]);

    /// <summary>The chain of the transformers whose scope includes <paramref name="scopeFilter"/> (e.g. Scoring drops
    /// steps that need the label).</summary>
    public TransformerChain<ITransformer> GetModelFor(TransformerScope scopeFilter)
    {
        var kept = Enumerable.Range(0, _transformers.Length).Where(i => (_scopes[i] & scopeFilter) != 0).ToArray();
        return new TransformerChain<ITransformer>(kept.Select(i => _transformers[i]), kept.Select(i => _scopes[i]));
    }

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var schema = inputSchema;
        foreach (var t in _transformers) schema = t.GetOutputSchema(schema);
        return schema;
    }

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var current = input;
        foreach (var t in _transformers) current = t.Transform(current);
        return current;
    }

    /// <inheritdoc/>
    public IEnumerator<ITransformer> GetEnumerator() => ((IEnumerable<ITransformer>)_transformers).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    string IPersistableTransformer.LoaderName => TransformerChainPersistence.LoaderName;

    void IPersistableTransformer.Save(ModelSaveContext context) => TransformerChainPersistence.Save(context, _transformers, _scopes);

    /// <summary>Disposes the transformers that are disposable.</summary>
    public void Dispose()
    {
        foreach (var t in _transformers) (t as IDisposable)?.Dispose();
    }
}

/// <summary>The <c>Append</c> extensions that start chains (as Microsoft.ML.LearningPipelineExtensions).</summary>
public static class LearningPipelineExtensions
{
    /// <summary>A chain of <paramref name="start"/> then <paramref name="estimator"/>.</summary>
    public static EstimatorChain<TTrans> Append<TTrans>(this IEstimator<ITransformer> start, IEstimator<TTrans> estimator,
        TransformerScope scope = TransformerScope.Everything) where TTrans : class, ITransformer
    {
        ArgumentNullException.ThrowIfNull(start);
        return new EstimatorChain<ITransformer>().Append(start).Append(estimator, scope);
    }

    /// <summary>A chain of <paramref name="start"/> then <paramref name="transformer"/>.</summary>
    public static TransformerChain<TTrans> Append<TTrans>(this ITransformer start, TTrans transformer,
        TransformerScope scope = TransformerScope.Everything) where TTrans : class, ITransformer
    {
        ArgumentNullException.ThrowIfNull(start);
        return new TransformerChain<TTrans>([start, transformer], [TransformerScope.Everything, scope]);
    }
}
