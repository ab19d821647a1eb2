using System.Collections.Concurrent;
using System.Collections.ObjectModel;
using System.Globalization;

namespace MosaicBert.ML.Data;

/// <summary>One column's values: a <c>T[]</c>, given or computed on first use (once, thread-safely).</summary>
internal sealed class ColumnData
{
    private readonly Lazy<Array> _values;

    public ColumnData(Array values) => _values = new Lazy<Array>(values);

    public ColumnData(Func<Array> compute) => _values = new Lazy<Array>(compute, LazyThreadSafetyMode.ExecutionAndPublication);

    public Array Values => _values.Value;
}

/// <summary>The in-memory, columnar <see cref="IDataView"/> behind every view this library makes.</summary>
internal sealed class ColumnarDataView : IDataView
{
    private readonly ColumnData[] _columns;

    public ColumnarDataView(DataViewSchema schema, int rowCount, ColumnData[] columns)
    {
        if (schema.Count != columns.Length) throw new ArgumentException("One ColumnData per schema column is needed.", nameof(columns));
        Schema = schema;
        RowCount = rowCount;
        _columns = columns;
    }

    public DataViewSchema Schema { get; }

    public int RowCount { get; }

    public bool CanShuffle => true;

    public long? GetRowCount() => RowCount;

    public IReadOnlyList<TValue> GetColumn<TValue>(DataViewSchema.Column column) =>
        new ReadOnlyCollection<TValue>(Values<TValue>(this, column));

    /// <summary>The column's array, computing it if needed and checking that it has one value per row.</summary>
    private Array ValuesAt(int index)
    {
        var values = _columns[index].Values;
        if (values.Length != RowCount)
            throw new InvalidOperationException($"Column '{Schema[index].Name}' produced {values.Length} values for {RowCount} rows.");
        return values;
    }

    private static void CheckColumn(IDataView view, DataViewSchema.Column column, Type requested)
    {
        var schema = view.Schema;
        if (column.Index < 0 || column.Index >= schema.Count || schema[column.Index].Name != column.Name || !schema[column.Index].Type.Equals(column.Type))
            throw new ArgumentOutOfRangeException(nameof(column), $"Column '{column.Name}' ({column.Type}) is not a column of this view; its columns are: {schema}.");
        if (requested != column.Type.RawType)
            throw new InvalidOperationException($"Column '{column.Name}' is {column.Type}, read as {column.Type.RawType.Name}, not {requested.Name}.");
    }

    // ---- Helpers used by every operation; they accept any IDataView and take the fast path for ours. ----

    /// <summary>The values of a column as an array (shared, not copied, for our views: do not modify).</summary>
    public static TValue[] Values<TValue>(IDataView view, DataViewSchema.Column column)
    {
        CheckColumn(view, column, typeof(TValue));
        return view is ColumnarDataView c ? (TValue[])c.ValuesAt(column.Index) : [.. view.GetColumn<TValue>(column)];
    }

    /// <summary>The number of rows of any view (reading a column when the view does not know it).</summary>
    public static int RowCountOf(IDataView view)
    {
        if (view is ColumnarDataView c) return c.RowCount;
        var n = view.GetRowCount() ?? (view.Schema.Count == 0 ? 0 : DataOf(view, 0).Values.Length);
        return n <= int.MaxValue ? (int)n : throw new NotSupportedException($"In-memory views hold at most {int.MaxValue} rows; this one has {n}.");
    }

    /// <summary>A column's data as a <see cref="ColumnData"/>: shared for our views, read lazily from others.</summary>
    public static ColumnData DataOf(IDataView view, int index)
    {
        if (view is ColumnarDataView c) return new ColumnData(() => c.ValuesAt(index));
        var column = view.Schema[index];
        return new ColumnData(() => ColumnOps.For(column.Type.RawType).ReadColumn(view, column));
    }

    /// <summary>A view of the given rows of <paramref name="view"/>, in the given order (columns gathered lazily).</summary>
    public static ColumnarDataView SelectRows(IDataView view, int[] rows)
    {
        var columns = new ColumnData[view.Schema.Count];
        for (var i = 0; i < columns.Length; i++)
        {
            var source = DataOf(view, i);
            var ops = ColumnOps.For(view.Schema[i].Type.RawType);
            columns[i] = new ColumnData(() => ops.Gather(source.Values, rows));
        }
        return new ColumnarDataView(view.Schema, rows.Length, columns);
    }
}

/// <summary>Type-specific column operations, created once per raw type so that callers need no generics.</summary>
internal abstract class ColumnOps
{
    private static readonly ConcurrentDictionary<Type, ColumnOps> s_cache = new();

    public static ColumnOps For(Type rawType) =>
        s_cache.GetOrAdd(rawType, t => (ColumnOps)Activator.CreateInstance(typeof(ColumnOps<>).MakeGenericType(t))!);

    public abstract Array Gather(Array source, int[] rows);

    /// <summary>One value, boxed; arrays are copied.</summary>
    public abstract object? GetBoxed(Array source, int row);

    public abstract Array ReadColumn(IDataView view, DataViewSchema.Column column);
}

internal sealed class ColumnOps<T> : ColumnOps
{
    public override Array Gather(Array source, int[] rows)
    {
        var src = (T[])source;
        var dst = new T[rows.Length];
        for (var i = 0; i < rows.Length; i++) dst[i] = src[rows[i]];
        return dst;
    }

    public override object? GetBoxed(Array source, int row)
    {
        var value = ((T[])source)[row];
        return value is Array a ? a.Clone() : value;
    }

    public override Array ReadColumn(IDataView view, DataViewSchema.Column column) => view.GetColumn<T>(column).ToArray();
}

/// <summary>Parsing, formatting, "missing" and ordering of scalar values, specialised per type by the JIT.</summary>
internal static class ScalarValue<T>
{
    /// <summary>Ordinal for text (as ML.NET orders text keys), natural order otherwise.</summary>
    public static IComparer<T> Comparer { get; } = typeof(T) == typeof(string)
        ? (IComparer<T>)(object)StringComparer.Ordinal
        : Comparer<T>.Default;

    /// <summary>What a missing value reads as: NaN for floats, the empty string for text, the default otherwise.</summary>
    public static T Missing =>
        typeof(T) == typeof(float) ? (T)(object)float.NaN
        : typeof(T) == typeof(double) ? (T)(object)double.NaN
        : typeof(T) == typeof(string) ? (T)(object)string.Empty
        : default!;

    /// <summary>NaN for floats, empty text (what ML.NET's key mapping leaves out of its values and maps to key 0).</summary>
    public static bool IsMissing(T value) => value switch
    {
        float f => float.IsNaN(f),
        double d => double.IsNaN(d),
        string s => s.Length == 0,
        _ => false,
    };

    public static string Format(T value) =>
        value is IFormattable f ? f.ToString(null, CultureInfo.InvariantCulture) : value?.ToString() ?? "";

    /// <summary>Parses one text field. Empty floats are NaN (missing); "?" too, as ML.NET reads it.</summary>
    public static bool TryParse(string text, out T value)
    {
        value = default!;
        if (typeof(T) == typeof(string))
        {
            value = (T)(object)text;
            return true;
        }
        var span = text.AsSpan().Trim();
        if (typeof(T) == typeof(float) || typeof(T) == typeof(double))
        {
            if (span.IsEmpty || span is "?")
            {
                value = Missing;
                return true;
            }
            if (typeof(T) == typeof(float) && float.TryParse(span, NumberStyles.Float, CultureInfo.InvariantCulture, out var f))
                value = (T)(object)f;
            else if (typeof(T) == typeof(double) && double.TryParse(span, NumberStyles.Float, CultureInfo.InvariantCulture, out var d))
                value = (T)(object)d;
            else
                return false;
            return true;
        }
        if (typeof(T) == typeof(int) && int.TryParse(span, NumberStyles.Integer, CultureInfo.InvariantCulture, out var i)) value = (T)(object)i;
        else if (typeof(T) == typeof(uint) && uint.TryParse(span, NumberStyles.Integer, CultureInfo.InvariantCulture, out var u)) value = (T)(object)u;
        else if (typeof(T) == typeof(long) && long.TryParse(span, NumberStyles.Integer, CultureInfo.InvariantCulture, out var l)) value = (T)(object)l;
        else if (typeof(T) == typeof(bool) && TryParseBool(span, out var b)) value = (T)(object)b;
        else return false;
        return true;
    }

    // The spellings ML.NET's text-to-boolean conversion accepts.
    private static bool TryParseBool(ReadOnlySpan<char> s, out bool value)
    {
        foreach (var t in (ReadOnlySpan<string>)["true", "t", "yes", "y", "1", "+1"])
        {
            if (s.Equals(t, StringComparison.OrdinalIgnoreCase)) return value = true;
        }
        value = false;
        foreach (var f in (ReadOnlySpan<string>)["false", "f", "no", "n", "0", "-1"])
        {
            if (s.Equals(f, StringComparison.OrdinalIgnoreCase)) return true;
        }
        return false;
    }
}
