namespace MosaicBert.ML.Data;

/// <summary>
/// Builds an <see cref="IDataView"/> from arrays, or adds columns to an existing view: the way transformers make
/// their output (ML.NET has an internal builder of this name; this one is public so that transformers in other
/// assemblies can use it).
/// </summary>
/// <example>
/// <code>
/// var builder = new ArrayDataViewBuilder(input);                       // keeps input's columns (shared, not copied)
/// builder.AddColumn("Score", new VectorDataViewType(NumberDataViewType.Single, 3), () => ScoreAll(input));  // lazy
/// IDataView output = builder.GetDataView();
/// </code>
/// </example>
public sealed class ArrayDataViewBuilder
{
    private readonly DataViewSchema.Builder _schema = new();
    private readonly List<(string Name, ColumnData Data)> _columns = [];
    private int? _rowCount;

    /// <summary>Starts an empty view; the first column added sets the row count.</summary>
    public ArrayDataViewBuilder() { }

    /// <summary>Starts from the columns of <paramref name="source"/> (their data is shared, not copied or computed).</summary>
    public ArrayDataViewBuilder(IDataView source)
    {
        ArgumentNullException.ThrowIfNull(source);
        _rowCount = ColumnarDataView.RowCountOf(source);
        _schema.AddColumns(source.Schema);
        for (var i = 0; i < source.Schema.Count; i++) _columns.Add((source.Schema[i].Name, ColumnarDataView.DataOf(source, i)));
    }

    /// <summary>Adds a column (replacing one of the same name) holding <paramref name="values"/>, one per row.</summary>
    /// <exception cref="ArgumentException">The values do not fit <paramref name="type"/> or the row count.</exception>
    public void AddColumn<TValue>(string name, DataViewType type, TValue[] values, DataViewSchema.Annotations? annotations = null)
    {
        ArgumentNullException.ThrowIfNull(values);
        CheckType<TValue>(name, type);
        AddArray(name, type, values, annotations);
    }

    /// <summary>The non-generic <see cref="AddColumn{TValue}(string, DataViewType, TValue[], DataViewSchema.Annotations?)"/>.</summary>
    internal void AddArray(string name, DataViewType type, Array values, DataViewSchema.Annotations? annotations = null)
    {
        if (_rowCount is int n && values.Length != n)
            throw new ArgumentException($"Column '{name}' has {values.Length} values for {n} rows.", nameof(values));
        Validate(name, type, values);
        _rowCount ??= values.Length;
        Add(name, type, new ColumnData(values), annotations);
    }

    /// <summary>
    /// Adds a column (replacing one of the same name) whose values <paramref name="computeValues"/> returns the first
    /// time the column is read, and never before; it runs at most once. The values are checked then.
    /// </summary>
    /// <exception cref="InvalidOperationException">The row count is not known yet (start from a source view or add an array column first).</exception>
    public void AddColumn<TValue>(string name, DataViewType type, Func<TValue[]> computeValues, DataViewSchema.Annotations? annotations = null)
    {
        ArgumentNullException.ThrowIfNull(computeValues);
        CheckType<TValue>(name, type);
        AddLazy(name, type, computeValues, annotations);
    }

    /// <summary>The non-generic <see cref="AddColumn{TValue}(string, DataViewType, Func{TValue[]}, DataViewSchema.Annotations?)"/>.</summary>
    internal void AddLazy(string name, DataViewType type, Func<Array> computeValues, DataViewSchema.Annotations? annotations = null)
    {
        var rows = _rowCount ?? throw new InvalidOperationException($"Column '{name}' is computed lazily, so the row count must be known first.");
        Add(name, type, new ColumnData(() =>
        {
            var values = computeValues();
            if (values.Length != rows) throw new InvalidOperationException($"Column '{name}' produced {values.Length} values for {rows} rows.");
            Validate(name, type, values);
            return values;
        }), annotations);
    }

    /// <summary>The view built so far (later additions do not change it).</summary>
    public IDataView GetDataView()
    {
        var schema = _schema.ToSchema();
        var data = schema.Select(c => _columns.Single(x => x.Name == c.Name).Data).ToArray();
        return new ColumnarDataView(schema, _rowCount ?? 0, data);
    }

    private void Add(string name, DataViewType type, ColumnData data, DataViewSchema.Annotations? annotations)
    {
        _schema.AddColumn(name, type, annotations);
        _columns.RemoveAll(c => c.Name == name);
        _columns.Add((name, data));
    }

    private static void CheckType<TValue>(string name, DataViewType type)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(type);
        if (typeof(TValue) != type.RawType)
            throw new ArgumentException($"Column '{name}' is {type}, whose values are {type.RawType.Name}, not {typeof(TValue).Name}.", nameof(type));
    }

    /// <summary>No null text or vectors, vector sizes as declared, keys within their count.</summary>
    private static void Validate(string name, DataViewType type, Array values)
    {
        if (type is NumberDataViewType or BooleanDataViewType) return; // nothing a value of these could get wrong
        var keyCount = type.GetKeyCount();
        var size = type is VectorDataViewType v ? v.Size : 0;
        for (var i = 0; i < values.Length; i++)
        {
            switch (values.GetValue(i))
            {
                case null:
                    throw new ArgumentException($"Column '{name}' has a null value in row {i}.");
                case uint key when keyCount > 0 && key > keyCount:
                    throw new ArgumentException($"Column '{name}' ({type}) has key {key} in row {i}.");
                case Array a when size > 0 && a.Length != size:
                    throw new ArgumentException($"Column '{name}' ({type}) has a vector of {a.Length} values in row {i}.");
                case uint[] keys when keyCount > 0 && keys.Any(k => k > keyCount):
                    throw new ArgumentException($"Column '{name}' ({type}) has a key above {keyCount} in row {i}.");
            }
        }
    }
}
