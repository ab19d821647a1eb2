using System.Collections.Immutable;

namespace MosaicBert.ML.Data;

/// <summary>Reading helpers on <see cref="IDataView"/> (ML.NET's <c>GetColumn</c> and <c>Preview</c>).</summary>
public static class DataViewExtensions
{
    /// <summary>The values of the column named <paramref name="columnName"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">There is no such column.</exception>
    public static IReadOnlyList<TValue> GetColumn<TValue>(this IDataView data, string columnName)
    {
        ArgumentNullException.ThrowIfNull(data);
        return data.GetColumn<TValue>(data.Schema[columnName]);
    }

    /// <summary>The first <paramref name="maxRows"/> rows, by row and by column, for debugging (vectors shown as arrays).</summary>
    public static DataDebuggerPreview Preview(this IDataView data, int maxRows = 100)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentOutOfRangeException.ThrowIfNegative(maxRows);
        var rows = Math.Min(maxRows, ColumnarDataView.RowCountOf(data));
        var columns = data.Schema.Select(c =>
        {
            var source = ColumnarDataView.DataOf(data, c.Index).Values;
            var ops = ColumnOps.For(c.Type.RawType);
            return new DataDebuggerPreview.ColumnInfo(c, [.. Enumerable.Range(0, rows).Select(r => ops.GetBoxed(source, r))]);
        }).ToImmutableArray();
        var rowView = Enumerable.Range(0, rows)
            .Select(r => new DataDebuggerPreview.RowInfo([.. columns.Select(c => new KeyValuePair<string, object?>(c.Column.Name, c.Values[r]))]))
            .ToImmutableArray();
        return new DataDebuggerPreview(data.Schema, columns, rowView);
    }
}

/// <summary>A snapshot of the first rows of a view (as Microsoft.ML.Data.DataDebuggerPreview).</summary>
public sealed class DataDebuggerPreview
{
    internal DataDebuggerPreview(DataViewSchema schema, ImmutableArray<ColumnInfo> columnView, ImmutableArray<RowInfo> rowView)
    {
        Schema = schema;
        ColumnView = columnView;
        RowView = rowView;
    }

    /// <summary>The view's schema.</summary>
    public DataViewSchema Schema { get; }

    /// <summary>The values, column by column.</summary>
    public ImmutableArray<ColumnInfo> ColumnView { get; }

    /// <summary>The values, row by row.</summary>
    public ImmutableArray<RowInfo> RowView { get; }

    /// <inheritdoc/>
    public override string ToString() => $"{RowView.Length} rows, {ColumnView.Length} columns";

    /// <summary>One column's values.</summary>
    public sealed class ColumnInfo(DataViewSchema.Column column, object?[] values)
    {
        /// <summary>The column.</summary>
        public DataViewSchema.Column Column { get; } = column;

        /// <summary>Its values, one per previewed row.</summary>
        public object?[] Values { get; } = values;
    }

    /// <summary>One row's values.</summary>
    public sealed class RowInfo(KeyValuePair<string, object?>[] values)
    {
        /// <summary>Column name and value, for each column.</summary>
        public KeyValuePair<string, object?>[] Values { get; } = values;

        /// <inheritdoc/>
        public override string ToString() => string.Join(", ", Values.Select(v => $"{v.Key}: {Show(v.Value)}"));

        private static string Show(object? value) => value is Array a ? $"[{string.Join(", ", a.Cast<object>())}]" : $"{value}";
    }
}
