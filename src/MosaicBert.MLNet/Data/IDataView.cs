namespace MosaicBert.ML.Data;

/// <summary>
/// A table with a schema: what loaders produce, transformers consume and produce, and evaluators read
/// (as Microsoft.ML.IDataView).
/// </summary>
/// <remarks>
/// <para>
/// Deliberately simpler than ML.NET: views here are in-memory and columnar, and are read a whole column at a time
/// through <see cref="GetColumn{TValue}"/> instead of through row cursors. Laziness is kept where it matters: a
/// transformer's output column is computed on the first request for it, once, so a featurizer runs only when (and
/// if) its column is read, and then over all rows in batches. Rows are enumerated with
/// <c>MLContext.Data.CreateEnumerable</c> or <see cref="DataViewExtensions.Preview"/>.
/// </para>
/// <para>
/// Views are immutable: the lists returned by <see cref="GetColumn{TValue}"/> are read-only, and vector values
/// (arrays) must not be modified.
/// </para>
/// </remarks>
public interface IDataView
{
    /// <summary>The columns.</summary>
    DataViewSchema Schema { get; }

    /// <summary>Whether rows can be shuffled (always true for in-memory views).</summary>
    bool CanShuffle { get; }

    /// <summary>The number of rows, or null when unknown without reading the data.</summary>
    long? GetRowCount();

    /// <summary>The values of one column, in row order.</summary>
    /// <typeparam name="TValue">The column type's <see cref="DataViewType.RawType"/>.</typeparam>
    /// <exception cref="ArgumentOutOfRangeException">The column is not a column of this view's schema.</exception>
    /// <exception cref="InvalidOperationException"><typeparamref name="TValue"/> is not the column's raw type.</exception>
    IReadOnlyList<TValue> GetColumn<TValue>(DataViewSchema.Column column);
}
