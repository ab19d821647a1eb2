using System.Collections;
using System.Diagnostics.CodeAnalysis;

namespace MosaicBert.ML.Data;

/// <summary>
/// The named, typed columns of an <see cref="IDataView"/>, in order (as Microsoft.ML.DataViewSchema).
/// </summary>
/// <remarks>
/// Names are unique: a transform whose output has the name of an input column replaces it (the new column goes to
/// the end). ML.NET keeps the old column as a hidden one instead; nothing user-visible depends on that here.
/// </remarks>
public sealed class DataViewSchema : IReadOnlyList<DataViewSchema.Column>
{
    private readonly Column[] _columns;
    private readonly Dictionary<string, int> _byName;

    private DataViewSchema(List<(string Name, DataViewType Type, Annotations Annotations)> columns)
    {
        _columns = new Column[columns.Count];
        _byName = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < columns.Count; i++)
        {
            _columns[i] = new Column(columns[i].Name, i, columns[i].Type, columns[i].Annotations);
            _byName[columns[i].Name] = i;
        }
    }

    /// <summary>The number of columns.</summary>
    public int Count => _columns.Length;

    /// <summary>The column at <paramref name="columnIndex"/>.</summary>
    public Column this[int columnIndex] => _columns[columnIndex];

    /// <summary>The column named <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">No column has that name (the message lists the columns).</exception>
    public Column this[string name] => GetColumnOrNull(name)
        ?? throw new ArgumentOutOfRangeException(nameof(name), $"Column '{name}' not found; the columns are: {this}.");

    /// <summary>The column named <paramref name="name"/>, or null.</summary>
    public Column? GetColumnOrNull(string name) => _byName.TryGetValue(name, out var i) ? _columns[i] : null;

    /// <inheritdoc/>
    public IEnumerator<Column> GetEnumerator() => ((IEnumerable<Column>)_columns).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>"Name: Type" for each column.</summary>
    public override string ToString() => _columns.Length == 0 ? "(none)" : string.Join(", ", _columns.Select(c => $"{c.Name}: {c.Type}"));

    /// <summary>One column of a schema.</summary>
    public readonly struct Column
    {
        internal Column(string name, int index, DataViewType type, Annotations annotations)
        {
            Name = name;
            Index = index;
            Type = type;
            Annotations = annotations;
        }

        /// <summary>The column's name.</summary>
        public string Name { get; }

        /// <summary>The column's position in its schema.</summary>
        public int Index { get; }

        /// <summary>The type of the column's values.</summary>
        public DataViewType Type { get; }

        /// <summary>Extra typed values describing the column (for example the values behind a key).</summary>
        public Annotations Annotations { get; }

        /// <inheritdoc/>
        public override string ToString() => $"{Name} ({Index}): {Type}";
    }

    /// <summary>
    /// Named, typed values attached to a column, such as <see cref="AnnotationUtils.Kinds.KeyValues"/> (ML.NET's
    /// DataViewSchema.Annotations, holding values instead of getters).
    /// </summary>
    public sealed class Annotations
    {
        private readonly Dictionary<string, (DataViewType Type, object Value)> _values;

        private Annotations(List<(string Kind, DataViewType Type, object Value)> values)
        {
            _values = values.ToDictionary(v => v.Kind, v => (v.Type, v.Value), StringComparer.Ordinal);
            var columns = new List<(string, DataViewType, Annotations)>();
            foreach (var v in values) columns.Add((v.Kind, v.Type, Empty)); // Empty itself has no values, so it is never read here before it is set
            Schema = new DataViewSchema(columns);
        }

        /// <summary>No annotations.</summary>
        public static Annotations Empty { get; } = new([]);

        /// <summary>One column per annotation: its kind as name, and its type.</summary>
        public DataViewSchema Schema { get; }

        /// <summary>Reads the annotation <paramref name="kind"/> (arrays are copied).</summary>
        /// <exception cref="ArgumentOutOfRangeException">There is no such annotation.</exception>
        /// <exception cref="InvalidOperationException"><typeparamref name="TValue"/> is not the annotation's raw type.</exception>
        public void GetValue<TValue>(string kind, ref TValue value)
        {
            if (!_values.ContainsKey(kind))
                throw new ArgumentOutOfRangeException(nameof(kind), $"There is no '{kind}' annotation.");
            if (!TryGetValue<TValue>(kind, out var v))
                throw new InvalidOperationException($"The '{kind}' annotation is {_values[kind].Type}, not {typeof(TValue).Name}.");
            value = v;
        }

        /// <summary>Reads the annotation <paramref name="kind"/> if it exists with raw type <typeparamref name="TValue"/>.</summary>
        public bool TryGetValue<TValue>(string kind, [MaybeNullWhen(false)] out TValue value)
        {
            if (_values.TryGetValue(kind, out var entry) && entry.Value is TValue v)
            {
                value = v is Array a ? (TValue)a.Clone() : v;
                return true;
            }
            value = default;
            return false;
        }

        /// <summary>Builds <see cref="Annotations"/>.</summary>
        public sealed class Builder
        {
            private readonly List<(string Kind, DataViewType Type, object Value)> _values = [];

            /// <summary>Adds (or replaces) the annotation <paramref name="kind"/>; arrays are copied.</summary>
            public void Add<TValue>(string kind, DataViewType type, TValue value) where TValue : notnull
            {
                ArgumentException.ThrowIfNullOrEmpty(kind);
                if (typeof(TValue) != type.RawType)
                    throw new ArgumentException($"A {type} annotation holds {type.RawType.Name}, not {typeof(TValue).Name}.", nameof(value));
                if (type is VectorDataViewType { IsKnownSize: true } vt && ((Array)(object)value).Length != vt.Size)
                    throw new ArgumentException($"The '{kind}' annotation is {type} but has {((Array)(object)value).Length} values.", nameof(value));
                _values.RemoveAll(v => v.Kind == kind);
                _values.Add((kind, type, value is Array a ? a.Clone() : value));
            }

            /// <summary>Copies the annotations of <paramref name="annotations"/> whose kind <paramref name="selector"/> accepts.</summary>
            public void Add(Annotations annotations, Func<string, bool> selector)
            {
                foreach (var (kind, entry) in annotations._values)
                {
                    if (!selector(kind)) continue;
                    _values.RemoveAll(v => v.Kind == kind);
                    _values.Add((kind, entry.Type, entry.Value));
                }
            }

            /// <summary>The annotations added so far.</summary>
            public Annotations ToAnnotations() => _values.Count == 0 ? Empty : new Annotations([.. _values]);
        }
    }

    /// <summary>Builds a <see cref="DataViewSchema"/>.</summary>
    public sealed class Builder
    {
        private readonly List<(string Name, DataViewType Type, Annotations Annotations)> _columns = [];

        /// <summary>Appends a column; a column already named <paramref name="name"/> is removed first.</summary>
        public void AddColumn(string name, DataViewType type, Annotations? annotations = null)
        {
            ArgumentException.ThrowIfNullOrEmpty(name);
            ArgumentNullException.ThrowIfNull(type);
            _columns.RemoveAll(c => c.Name == name);
            _columns.Add((name, type, annotations ?? Annotations.Empty));
        }

        /// <summary>Appends copies of <paramref name="columns"/> (name, type and annotations).</summary>
        public void AddColumns(IEnumerable<Column> columns)
        {
            foreach (var c in columns) AddColumn(c.Name, c.Type, c.Annotations);
        }

        /// <summary>The schema built so far.</summary>
        public DataViewSchema ToSchema() => new([.. _columns]);
    }
}

/// <summary>Annotation kinds and helpers (as Microsoft.ML.Data.AnnotationUtils).</summary>
public static class AnnotationUtils
{
    /// <summary>Well-known annotation kinds.</summary>
    public static class Kinds
    {
        /// <summary>On a key column: the value of each key, a vector of <c>Count</c> values (key k is item k-1).</summary>
        public const string KeyValues = "KeyValues";

        /// <summary>On a vector column: the name of each slot, a text vector.</summary>
        public const string SlotNames = "SlotNames";

        /// <summary>On a score column: which task produced it (for example "MulticlassClassification").</summary>
        public const string ScoreColumnKind = "ScoreColumnKind";

        /// <summary>On a score column: "Score", "Probability" or "PredictedLabel".</summary>
        public const string ScoreValueKind = "ScoreValueKind";

        /// <summary>On a score column: the label values the model was trained with.</summary>
        public const string TrainingLabelValues = "TrainingLabelValues";
    }

    /// <summary>Whether the column is a key (or vector of keys) with a <see cref="Kinds.KeyValues"/> annotation.</summary>
    public static bool HasKeyValues(this DataViewSchema.Column column) =>
        column.Type.GetItemType() is KeyDataViewType && column.Annotations.Schema.GetColumnOrNull(Kinds.KeyValues) is not null;

    /// <summary>Reads the values behind the column's keys (ML.NET fills a <c>VBuffer&lt;TValue&gt;</c>; here an array).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The column has no key values.</exception>
    public static void GetKeyValues<TValue>(this DataViewSchema.Column column, ref TValue[] keyValues) =>
        column.Annotations.GetValue(Kinds.KeyValues, ref keyValues);
}
