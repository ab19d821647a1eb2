using System.Collections;

namespace MosaicBert.ML.Data;

/// <summary>
/// The estimator-time view of a schema: column names, scalar/vector kind, item type and key-ness, without sizes or
/// data (as Microsoft.ML.SchemaShape). Unlike ML.NET, the constructors, <see cref="Create"/> and
/// <see cref="TryFindColumn"/> are public, so estimators outside this assembly can describe their outputs.
/// </summary>
public sealed class SchemaShape : IReadOnlyList<SchemaShape.Column>
{
    private readonly Column[] _columns;

    /// <summary>Creates a shape; a later column with the name of an earlier one replaces it.</summary>
    public SchemaShape(IEnumerable<Column> columns)
    {
        var list = new List<Column>();
        foreach (var c in columns)
        {
            list.RemoveAll(x => x.Name == c.Name);
            list.Add(c);
        }
        _columns = [.. list];
    }

    /// <summary>The shape of a schema. Key columns get <see cref="Column.IsKey"/> and their raw number type as
    /// <see cref="Column.ItemType"/>, as ML.NET does.</summary>
    public static SchemaShape Create(DataViewSchema schema)
    {
        ArgumentNullException.ThrowIfNull(schema);
        return new SchemaShape(schema.Select(c =>
        {
            var annotations = new SchemaShape(c.Annotations.Schema.Select(a => Shape(a.Name, a.Type, null)));
            return Shape(c.Name, c.Type, annotations);
        }));
    }

    private static Column Shape(string name, DataViewType type, SchemaShape? annotations)
    {
        var kind = type switch
        {
            VectorDataViewType { IsKnownSize: true } => Column.VectorKind.Vector,
            VectorDataViewType => Column.VectorKind.VariableVector,
            _ => Column.VectorKind.Scalar,
        };
        var item = type.GetItemType();
        var isKey = item is KeyDataViewType;
        return new Column(name, kind, isKey ? NumberDataViewType.UInt32 : item, isKey, annotations);
    }

    /// <summary>The number of columns.</summary>
    public int Count => _columns.Length;

    /// <summary>The column at <paramref name="index"/>.</summary>
    public Column this[int index] => _columns[index];

    /// <summary>Finds a column by name.</summary>
    public bool TryFindColumn(string name, out Column column)
    {
        foreach (var c in _columns)
        {
            if (c.Name == name)
            {
                column = c;
                return true;
            }
        }
        column = default;
        return false;
    }

    /// <inheritdoc/>
    public IEnumerator<Column> GetEnumerator() => ((IEnumerable<Column>)_columns).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <inheritdoc/>
    public override string ToString() => string.Join(", ", _columns);

    /// <summary>The shape of one column.</summary>
    public readonly struct Column
    {
        /// <summary>Scalar, vector of known size, or vector of varying size.</summary>
        public enum VectorKind
        {
            /// <summary>One value per row.</summary>
            Scalar,

            /// <summary>A vector of known size per row.</summary>
            Vector,

            /// <summary>A vector whose size varies from row to row.</summary>
            VariableVector,
        }

        /// <summary>Creates a column shape.</summary>
        /// <param name="name">The column name.</param>
        /// <param name="vecKind">Scalar or vector.</param>
        /// <param name="itemType">The item type; for keys the raw number type (UInt32).</param>
        /// <param name="isKey">Whether the items are keys.</param>
        /// <param name="annotations">The shapes of the column's annotations, or null for none.</param>
        public Column(string name, VectorKind vecKind, DataViewType itemType, bool isKey, SchemaShape? annotations = null)
        {
            ArgumentException.ThrowIfNullOrEmpty(name);
            ArgumentNullException.ThrowIfNull(itemType);
            if (itemType is VectorDataViewType or KeyDataViewType)
                throw new ArgumentException("The item type of a shape is a scalar type (keys use UInt32 and isKey: true).", nameof(itemType));
            Name = name;
            Kind = vecKind;
            ItemType = itemType;
            IsKey = isKey;
            Annotations = annotations ?? new SchemaShape([]);
        }

        /// <summary>The column name.</summary>
        public string Name { get; }

        /// <summary>Scalar or vector.</summary>
        public VectorKind Kind { get; }

        /// <summary>The item type (UInt32 for keys).</summary>
        public DataViewType ItemType { get; }

        /// <summary>Whether the items are keys.</summary>
        public bool IsKey { get; }

        /// <summary>The shapes of the column's annotations.</summary>
        public SchemaShape Annotations { get; }

        /// <summary>Whether a column of shape <paramref name="source"/> can be used where this shape is expected:
        /// same kind, item type and key-ness, and every annotation of this shape present and compatible in the source.</summary>
        public bool IsCompatibleWith(Column source)
        {
            if (Kind != source.Kind || !ItemType.Equals(source.ItemType) || IsKey != source.IsKey) return false;
            foreach (var a in Annotations)
            {
                if (!source.Annotations.TryFindColumn(a.Name, out var sa) || !a.IsCompatibleWith(sa)) return false;
            }
            return true;
        }

        /// <summary>The type as ML.NET prints it, e.g. <c>Vector&lt;Single&gt;</c> or <c>Key&lt;UInt32&gt;</c>.</summary>
        public string GetTypeString()
        {
            var item = IsKey ? $"Key<{ItemType}>" : ItemType.ToString()!;
            return Kind == VectorKind.Scalar ? item : $"Vector<{item}>";
        }

        /// <inheritdoc/>
        public override string ToString() =>
            Annotations.Count == 0 ? $"{Name}: {GetTypeString()}" : $"{Name}: {GetTypeString()} {{{Annotations}}}";
    }
}
