using System.Collections.Concurrent;
using System.Reflection;

namespace MosaicBert.ML.Data;

/// <summary>
/// How the public fields and properties of a row class map to columns: what LoadFromTextFile, LoadFromEnumerable,
/// CreateEnumerable and PredictionEngine share (ML.NET's SchemaDefinition, reduced to the attributes).
/// </summary>
/// <remarks>
/// Members are public instance fields (not read-only), then properties with a public getter and setter (init
/// included), each in declaration order (as ML.NET orders them), minus those marked <see cref="NoColumnAttribute"/>. Get-only properties are
/// computed values and are not columns.
/// </remarks>
internal sealed class RowBinding
{
    private static readonly ConcurrentDictionary<Type, RowBinding> s_cache = new();

    private RowBinding(Type rowType, Member[] members)
    {
        RowType = rowType;
        Members = members;
    }

    public Type RowType { get; }

    public IReadOnlyList<Member> Members { get; }

    public sealed class Member
    {
        public required MemberInfo Info { get; init; }
        public required string ColumnName { get; init; }
        public required DataViewType ColumnType { get; init; }
        public required IReadOnlyList<int>? LoadColumns { get; init; }

        public string Describe => $"{Info.DeclaringType!.Name}.{Info.Name}";

        public object? Get(object row) => Info is FieldInfo f ? f.GetValue(row) : ((PropertyInfo)Info).GetValue(row);

        public void Set(object row, object? value)
        {
            if (Info is FieldInfo f) f.SetValue(row, value);
            else ((PropertyInfo)Info).SetValue(row, value);
        }
    }

    /// <exception cref="InvalidOperationException">A member's type or attributes cannot be mapped (the message names it).</exception>
    public static RowBinding For(Type rowType) => s_cache.GetOrAdd(rowType, Create);

    private static RowBinding Create(Type rowType)
    {
        const BindingFlags Public = BindingFlags.Public | BindingFlags.Instance;
        var candidates = rowType.GetFields(Public).Where(f => !f.IsInitOnly && !f.IsLiteral).Cast<MemberInfo>()
            .Concat(rowType.GetProperties(Public).Where(p => p.GetIndexParameters().Length == 0 && p.GetMethod?.IsPublic == true && p.SetMethod?.IsPublic == true))
            .Where(m => m.GetCustomAttribute<NoColumnAttribute>() is null)
            .OrderBy(m => m.MetadataToken);
        var members = new List<Member>();
        foreach (var m in candidates)
        {
            var member = CreateMember(m, m is FieldInfo f ? f.FieldType : ((PropertyInfo)m).PropertyType);
            if (members.FirstOrDefault(x => x.ColumnName == member.ColumnName) is { } other)
                throw new InvalidOperationException($"{member.Describe} and {other.Describe} both map to column '{member.ColumnName}'.");
            members.Add(member);
        }
        return new RowBinding(rowType, [.. members]);
    }

    private static Member CreateMember(MemberInfo info, Type clrType)
    {
        var describe = $"{info.DeclaringType!.Name}.{info.Name}";
        var type = DataViewType.FromClrType(clrType) ?? throw new InvalidOperationException(
            $"{describe} is {clrType.Name}: columns are string, float, double, int, uint, long, bool or 1-D arrays of these; mark it [NoColumn] to leave it out.");
        var load = info.GetCustomAttribute<LoadColumnAttribute>()?.ColumnIndexes;
        var vector = info.GetCustomAttribute<VectorTypeAttribute>();
        var key = info.GetCustomAttribute<KeyTypeAttribute>();
        var isArray = type is VectorDataViewType;
        if (load is { Count: > 1 } && !isArray)
            throw new InvalidOperationException($"{describe} loads {load.Count} columns, so it must be an array.");
        if (vector is not null && !isArray)
            throw new InvalidOperationException($"{describe} has [VectorType] but is not an array.");

        var item = type.GetItemType();
        if (key is not null)
        {
            if (item.RawType != typeof(uint)) throw new InvalidOperationException($"{describe} has [KeyType], so it must be uint or uint[].");
            item = new KeyDataViewType(typeof(uint), key.Count);
        }
        if (isArray)
        {
            var size = vector?.Size ?? 0;
            if (load is not null)
            {
                if (size > 0 && size != load.Count)
                    throw new InvalidOperationException($"{describe} is [VectorType({size})] but loads {load.Count} columns.");
                size = load.Count;
            }
            type = new VectorDataViewType(item, size);
        }
        else
        {
            type = item;
        }
        return new Member
        {
            Info = info,
            ColumnName = info.GetCustomAttribute<ColumnNameAttribute>()?.Name ?? info.Name,
            ColumnType = type,
            LoadColumns = load,
        };
    }

    /// <summary>A view of <paramref name="rows"/> (read now; text null becomes "", arrays are copied).</summary>
    public IDataView ToDataView<TRow>(IEnumerable<TRow> rows) where TRow : class
    {
        if (Members.Count == 0) throw new InvalidOperationException($"{RowType.Name} has no public read-write fields or properties to make columns of.");
        var list = rows as IReadOnlyList<TRow> ?? [.. rows];
        var builder = new ArrayDataViewBuilder();
        foreach (var m in Members)
        {
            var values = Array.CreateInstance(m.ColumnType.RawType, list.Count);
            for (var i = 0; i < list.Count; i++)
            {
                var row = list[i] ?? throw new ArgumentException($"Row {i} is null.", nameof(rows));
                values.SetValue(Normalize(m, m.Get(row), i), i);
            }
            builder.AddArray(m.ColumnName, m.ColumnType, values);
        }
        return builder.GetDataView();
    }

    private static object Normalize(Member m, object? value, int row) => value switch
    {
        null when m.ColumnType is TextDataViewType => string.Empty,
        null when m.ColumnType is VectorDataViewType { IsKnownSize: false } v => Array.CreateInstance(v.ItemType.RawType, 0),
        null => throw new ArgumentException($"{m.Describe} is null in row {row}; {m.ColumnType} needs a value."),
        Array a => a.Clone(),
        _ => value,
    };

    /// <summary>Matches the members to the columns of <paramref name="schema"/> by name and raw type.</summary>
    /// <exception cref="InvalidOperationException">A member has no column (unless ignored) or a column of another type.</exception>
    public IReadOnlyList<(Member Member, DataViewSchema.Column Column)> Bind(DataViewSchema schema, bool ignoreMissingColumns)
    {
        var bound = new List<(Member, DataViewSchema.Column)>();
        foreach (var m in Members)
        {
            if (schema.GetColumnOrNull(m.ColumnName) is not { } column)
            {
                if (ignoreMissingColumns) continue;
                throw new InvalidOperationException($"{m.Describe} maps to column '{m.ColumnName}', which the data does not have; its columns are: {schema}.");
            }
            if (column.Type.RawType != m.ColumnType.RawType)
            {
                var hint = column.Type is KeyDataViewType ? " (a key column: map it back with MapKeyToValue, or read it as uint)" : "";
                throw new InvalidOperationException($"Column '{column.Name}' is {column.Type}{hint}, but {m.Describe} is {m.ColumnType}.");
            }
            bound.Add((m, column));
        }
        return bound;
    }

    /// <summary>Sets the bound members of <paramref name="target"/> from row <paramref name="row"/> of <paramref name="view"/>.</summary>
    public static void Fill(object target, IDataView view, IReadOnlyList<(Member Member, DataViewSchema.Column Column)> bound, int row)
    {
        foreach (var (m, c) in bound) m.Set(target, ColumnOps.For(c.Type.RawType).GetBoxed(ColumnarDataView.DataOf(view, c.Index).Values, row));
    }

    /// <summary>The rows of <paramref name="view"/> as <typeparamref name="TRow"/> objects, read lazily (the binding
    /// is checked at the call).</summary>
    public IEnumerable<TRow> ReadRows<TRow>(IDataView view, bool reuseRowObject, bool ignoreMissingColumns) where TRow : class, new()
    {
        var bound = Bind(view.Schema, ignoreMissingColumns);
        return Enumerate();

        IEnumerable<TRow> Enumerate()
        {
            var columns = bound.Select(b => (b.Member, Values: ColumnarDataView.DataOf(view, b.Column.Index).Values, Ops: ColumnOps.For(b.Column.Type.RawType))).ToArray();
            var rows = ColumnarDataView.RowCountOf(view);
            TRow? shared = null;
            for (var i = 0; i < rows; i++)
            {
                var row = reuseRowObject ? shared ??= new TRow() : new TRow();
                foreach (var (member, values, ops) in columns) member.Set(row, ops.GetBoxed(values, i));
                yield return row;
            }
        }
    }
}
