using System.Text.Json.Nodes;
using MosaicBert.ML.Data;

namespace MosaicBert.ML.Transforms;

/// <summary>
/// Learns the distinct values of columns and maps them to keys (as Microsoft.ML.Transforms.ValueToKeyMappingEstimator);
/// made by <c>Transforms.Conversion.MapValueToKey</c>.
/// </summary>
public sealed class ValueToKeyMappingEstimator : IEstimator<ValueToKeyMappingTransformer>
{
    private readonly MLContext _context;
    private readonly InputOutputColumnPair[] _columns;
    private readonly int _maximumNumberOfKeys;
    private readonly KeyOrdinality _ordinality;
    private readonly bool _asText;
    private readonly IDataView? _keyData;

    internal ValueToKeyMappingEstimator(MLContext context, InputOutputColumnPair[] columns, int maximumNumberOfKeys,
        KeyOrdinality keyOrdinality, bool addKeyValueAnnotationsAsText, IDataView? keyData)
    {
        if (columns.Length == 0) throw new ArgumentException("At least one column is needed.", nameof(columns));
        _context = context;
        _columns = [.. columns];
        _maximumNumberOfKeys = maximumNumberOfKeys;
        _ordinality = keyOrdinality;
        _asText = addKeyValueAnnotationsAsText;
        _keyData = keyData;
    }

    /// <summary>The order of keys.</summary>
    public enum KeyOrdinality : byte
    {
        /// <summary>In the order values are first seen.</summary>
        ByOccurrence = 0,

        /// <summary>In sorted value order (ordinal for text), independent of row order.</summary>
        ByValue = 1,
    }

    internal static class Defaults
    {
        public const int MaximumNumberOfKeys = 1_000_000;
        public const KeyOrdinality Ordinality = KeyOrdinality.ByOccurrence;
        public const bool AddKeyValueAnnotationsAsText = false;
    }

    /// <summary>Learns the values of each input column (from the key data when given).</summary>
    /// <exception cref="InvalidOperationException">A column has no values to learn (e.g. the data has no rows).</exception>
    public ValueToKeyMappingTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var source = _keyData ?? input;
        var maps = new List<ValueToKeyMappingTransformer.ColumnMap>();
        foreach (var pair in _columns)
        {
            var inputType = CheckInput(input.Schema, pair.InputColumnName);
            var column = source.Schema.GetColumnOrNull(pair.InputColumnName);
            if (column is not { } c || !c.Type.Equals(inputType))
                throw new ArgumentOutOfRangeException(nameof(input), $"The key data has no column '{pair.InputColumnName}' of type {inputType}.");
            var map = KeyMap.Build(inputType, ColumnarDataView.DataOf(source, c.Index).Values, _maximumNumberOfKeys, _ordinality);
            if (map.Count == 0)
                throw new InvalidOperationException(
                    $"MapValueToKey cannot learn keys for column '{pair.InputColumnName}': the {(_keyData is null ? "training" : "key")} data has {(ColumnarDataView.RowCountOf(source) == 0 ? "no rows" : "only missing values")}.");
            _context.WriteLog(ChannelMessageKind.Info, nameof(ValueToKeyMappingEstimator), $"Column '{pair.InputColumnName}': {map.Count} keys ({_ordinality}).");
            maps.Add(new(pair.OutputColumnName, pair.InputColumnName, inputType, map, _asText));
        }
        return new ValueToKeyMappingTransformer(maps);
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var columns = inputSchema.ToList();
        foreach (var pair in _columns)
        {
            if (!inputSchema.TryFindColumn(pair.InputColumnName, out var c))
                throw Mismatch(pair.InputColumnName, "the column is missing");
            if (c.Kind != SchemaShape.Column.VectorKind.Scalar || c.IsKey || c.ItemType is not (TextDataViewType or NumberDataViewType or BooleanDataViewType))
                throw Mismatch(pair.InputColumnName, $"expected a scalar text, number or boolean, got {c.GetTypeString()}");
            var keyValues = new SchemaShape.Column(AnnotationUtils.Kinds.KeyValues, SchemaShape.Column.VectorKind.Vector,
                _asText ? TextDataViewType.Instance : c.ItemType, isKey: false);
            columns.Add(new SchemaShape.Column(pair.OutputColumnName, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.UInt32,
                isKey: true, new SchemaShape([keyValues])));
        }
        return new SchemaShape(columns);
    }

    /// <summary>The input column's type, checked to be a scalar that can be mapped.</summary>
    internal static PrimitiveDataViewType CheckInput(DataViewSchema schema, string name)
    {
        var column = schema.GetColumnOrNull(name) ?? throw Mismatch(name, $"the column is missing (columns: {schema})");
        return column.Type is TextDataViewType or NumberDataViewType or BooleanDataViewType
            ? (PrimitiveDataViewType)column.Type
            : throw Mismatch(name, $"expected a scalar text, number or boolean, got {column.Type}");
    }

    internal static ArgumentOutOfRangeException Mismatch(string column, string detail) =>
        new("inputSchema", $"Schema mismatch for input column '{column}': {detail}.");
}

/// <summary>Maps values to keys with the values learned by <see cref="ValueToKeyMappingEstimator"/>.</summary>
public sealed class ValueToKeyMappingTransformer : IPersistableTransformer
{
    internal sealed record ColumnMap(string Output, string Input, PrimitiveDataViewType InputType, KeyMap Map, bool AsText);

    internal const string LoaderName = "ValueToKeyMapping";

    private readonly ColumnMap[] _maps;

    internal ValueToKeyMappingTransformer(IEnumerable<ColumnMap> maps) => _maps = [.. maps];

    string IPersistableTransformer.LoaderName => LoaderName;

    /// <summary>Saves each column's names, input type and learned values (in key order).</summary>
    void IPersistableTransformer.Save(ModelSaveContext context) =>
        context.Parameters["columns"] = new JsonArray([.. _maps.Select(m => (JsonNode)new JsonObject
        {
            ["output"] = m.Output,
            ["input"] = m.Input,
            ["inputType"] = SchemaJson.TypeName(m.InputType),
            ["asText"] = m.AsText,
            ["values"] = SchemaJson.Values(m.Map.Values),
        })]);

    internal static ValueToKeyMappingTransformer Load(ModelLoadContext context) =>
        new(context.Get<JsonArray>("columns").OfType<JsonObject>().Select(c =>
        {
            var type = (PrimitiveDataViewType)SchemaJson.ParseType(c["inputType"]!.GetValue<string>());
            // The saved values are distinct and in key order, so learning them "by occurrence" rebuilds the same keys.
            var map = KeyMap.Build(type, SchemaJson.ReadValues(c["values"]!, type), int.MaxValue, ValueToKeyMappingEstimator.KeyOrdinality.ByOccurrence);
            return new ColumnMap(c["output"]!.GetValue<string>(), c["input"]!.GetValue<string>(), type, map, c["asText"]!.GetValue<bool>());
        }));

    /// <summary>The values behind the keys of output column <paramref name="outputColumnName"/>: key k is item k-1.</summary>
    public IReadOnlyList<object> GetKeyValues(string outputColumnName) =>
        (_maps.FirstOrDefault(m => m.Output == outputColumnName) ?? throw new ArgumentOutOfRangeException(nameof(outputColumnName)))
        .Map.Values.Cast<object>().ToArray();

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        foreach (var m in _maps)
        {
            Check(inputSchema, m);
            builder.AddColumn(m.Output, m.Map.KeyType, m.Map.KeyValueAnnotations(m.AsText));
        }
        return builder.ToSchema();
    }

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var builder = new ArrayDataViewBuilder(input);
        foreach (var m in _maps)
        {
            Check(input.Schema, m);
            var source = ColumnarDataView.DataOf(input, input.Schema[m.Input].Index);
            builder.AddColumn(m.Output, m.Map.KeyType, () => m.Map.Map(source.Values), m.Map.KeyValueAnnotations(m.AsText));
        }
        return builder.GetDataView();
    }

    private static void Check(DataViewSchema schema, ColumnMap m)
    {
        var type = ValueToKeyMappingEstimator.CheckInput(schema, m.Input);
        if (!type.Equals(m.InputType))
            throw ValueToKeyMappingEstimator.Mismatch(m.Input, $"the keys were learned from {m.InputType}, got {type}");
    }
}

/// <summary>
/// Maps keys back to the values in the key column's <see cref="AnnotationUtils.Kinds.KeyValues"/> annotation (as
/// Microsoft.ML.Transforms.KeyToValueMappingEstimator); made by <c>Transforms.Conversion.MapKeyToValue</c>.
/// Nothing is learned: the values are read from the schema of the data transformed.
/// </summary>
public sealed class KeyToValueMappingEstimator : IEstimator<KeyToValueMappingTransformer>
{
    private readonly InputOutputColumnPair[] _columns;

    internal KeyToValueMappingEstimator(InputOutputColumnPair[] columns)
    {
        if (columns.Length == 0) throw new ArgumentException("At least one column is needed.", nameof(columns));
        _columns = [.. columns];
    }

    /// <inheritdoc/>
    public KeyToValueMappingTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var transformer = new KeyToValueMappingTransformer(_columns);
        transformer.GetOutputSchema(input.Schema); // validates
        return transformer;
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var columns = inputSchema.ToList();
        foreach (var pair in _columns)
        {
            if (!inputSchema.TryFindColumn(pair.InputColumnName, out var c))
                throw ValueToKeyMappingEstimator.Mismatch(pair.InputColumnName, "the column is missing");
            if (!c.IsKey || c.Kind != SchemaShape.Column.VectorKind.Scalar)
                throw ValueToKeyMappingEstimator.Mismatch(pair.InputColumnName, $"expected a key, got {c.GetTypeString()}");
            if (!c.Annotations.TryFindColumn(AnnotationUtils.Kinds.KeyValues, out var kv))
                throw ValueToKeyMappingEstimator.Mismatch(pair.InputColumnName, "the key has no KeyValues annotation to map back to");
            columns.Add(new SchemaShape.Column(pair.OutputColumnName, SchemaShape.Column.VectorKind.Scalar, kv.ItemType, isKey: false));
        }
        return new SchemaShape(columns);
    }
}

/// <summary>Maps keys back to values (see <see cref="KeyToValueMappingEstimator"/>).</summary>
public sealed class KeyToValueMappingTransformer : IPersistableTransformer
{
    internal const string LoaderName = "KeyToValueMapping";

    private readonly InputOutputColumnPair[] _columns;

    internal KeyToValueMappingTransformer(InputOutputColumnPair[] columns) => _columns = columns;

    string IPersistableTransformer.LoaderName => LoaderName;

    /// <summary>Saves the column names (the values come from the key column's annotation at transform time).</summary>
    void IPersistableTransformer.Save(ModelSaveContext context) =>
        context.Parameters["columns"] = new JsonArray([.. _columns.Select(c => (JsonNode)new JsonObject { ["output"] = c.OutputColumnName, ["input"] = c.InputColumnName })]);

    internal static KeyToValueMappingTransformer Load(ModelLoadContext context) =>
        new([.. context.Get<JsonArray>("columns").OfType<JsonObject>().Select(c => new InputOutputColumnPair(c["output"]!.GetValue<string>(), c["input"]!.GetValue<string>()))]);

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        foreach (var pair in _columns) builder.AddColumn(pair.OutputColumnName, ValueType(inputSchema, pair.InputColumnName));
        return builder.ToSchema();
    }

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var builder = new ArrayDataViewBuilder(input);
        foreach (var pair in _columns)
        {
            var type = ValueType(input.Schema, pair.InputColumnName);
            var column = input.Schema[pair.InputColumnName];
            var keys = ColumnarDataView.DataOf(input, column.Index);
            var unmap = KeyMap.ValuesOf(type, column);
            builder.AddLazy(pair.OutputColumnName, type, () => unmap(keys.Values));
        }
        return builder.GetDataView();
    }

    /// <summary>The item type of the key values of a scalar key column.</summary>
    private static PrimitiveDataViewType ValueType(DataViewSchema schema, string name)
    {
        var column = schema.GetColumnOrNull(name) ?? throw ValueToKeyMappingEstimator.Mismatch(name, $"the column is missing (columns: {schema})");
        if (column.Type is not KeyDataViewType)
            throw ValueToKeyMappingEstimator.Mismatch(name, $"expected a key, got {column.Type}");
        return column.Annotations.Schema.GetColumnOrNull(AnnotationUtils.Kinds.KeyValues) is { Type: VectorDataViewType { } kv }
            ? kv.ItemType
            : throw ValueToKeyMappingEstimator.Mismatch(name, "the key has no KeyValues annotation to map back to");
    }
}

/// <summary>The values behind a key column and the lookups both ways, typed per value type.</summary>
internal abstract class KeyMap
{
    public abstract int Count { get; }

    public abstract Array Values { get; }

    public KeyDataViewType KeyType => new(typeof(uint), Count);

    /// <summary>The KeyValues annotation: the values, or their text when <paramref name="asText"/>.</summary>
    public abstract DataViewSchema.Annotations KeyValueAnnotations(bool asText);

    /// <summary>The key of each value: 1-based, 0 for missing and unknown values.</summary>
    public abstract uint[] Map(Array values);

    public static KeyMap Build(PrimitiveDataViewType type, Array values, int maximumNumberOfKeys, ValueToKeyMappingEstimator.KeyOrdinality ordinality) =>
        (KeyMap)Activator.CreateInstance(typeof(KeyMap<>).MakeGenericType(type.RawType), type, values, maximumNumberOfKeys, ordinality)!;

    /// <summary>The mapping from keys to the values in <paramref name="keyColumn"/>'s KeyValues annotation.</summary>
    public static Func<Array, Array> ValuesOf(PrimitiveDataViewType valueType, DataViewSchema.Column keyColumn) =>
        ((KeyMap)Activator.CreateInstance(typeof(KeyMap<>).MakeGenericType(valueType.RawType), valueType, keyColumn)!).Unmap;

    /// <summary>The value of each key; key 0 and keys beyond the values give the missing value.</summary>
    public abstract Array Unmap(Array keys);
}

internal sealed class KeyMap<T> : KeyMap where T : notnull
{
    private readonly PrimitiveDataViewType _type;
    private readonly T[] _values;
    private readonly Dictionary<T, uint> _keys = [];

    /// <summary>Learns the values of <paramref name="source"/> (missing ones skipped), capped and ordered.</summary>
    public KeyMap(PrimitiveDataViewType type, Array source, int maximumNumberOfKeys, ValueToKeyMappingEstimator.KeyOrdinality ordinality)
    {
        _type = type;
        var seen = new HashSet<T>();
        var values = new List<T>();
        foreach (var v in (T[])source)
        {
            if (values.Count == maximumNumberOfKeys) break;
            if (!ScalarValue<T>.IsMissing(v) && seen.Add(v)) values.Add(v);
        }
        if (ordinality == ValueToKeyMappingEstimator.KeyOrdinality.ByValue) values.Sort(ScalarValue<T>.Comparer);
        _values = [.. values];
        for (var i = 0; i < _values.Length; i++) _keys[_values[i]] = (uint)(i + 1);
    }

    /// <summary>Reads the values from a key column's KeyValues annotation, for mapping keys back.</summary>
    public KeyMap(PrimitiveDataViewType type, DataViewSchema.Column keyColumn)
    {
        _type = type;
        T[] values = [];
        keyColumn.GetKeyValues(ref values);
        _values = values;
    }

    public override int Count => _values.Length;

    public override Array Values => _values;

    public override DataViewSchema.Annotations KeyValueAnnotations(bool asText)
    {
        var builder = new DataViewSchema.Annotations.Builder();
        if (asText) builder.Add(AnnotationUtils.Kinds.KeyValues, new VectorDataViewType(TextDataViewType.Instance, Count), _values.Select(ScalarValue<T>.Format).ToArray());
        else builder.Add(AnnotationUtils.Kinds.KeyValues, new VectorDataViewType(_type, Count), _values);
        return builder.ToAnnotations();
    }

    public override uint[] Map(Array values)
    {
        var source = (T[])values;
        var keys = new uint[source.Length];
        for (var i = 0; i < source.Length; i++) keys[i] = _keys.GetValueOrDefault(source[i]);
        return keys;
    }

    public override Array Unmap(Array keys)
    {
        var source = (uint[])keys;
        var values = new T[source.Length];
        for (var i = 0; i < source.Length; i++)
            values[i] = source[i] >= 1 && source[i] <= _values.Length ? _values[source[i] - 1] : ScalarValue<T>.Missing;
        return values;
    }
}
