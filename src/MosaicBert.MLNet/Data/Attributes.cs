namespace MosaicBert.ML.Data;

/// <summary>
/// Binds a field or property of a row class to columns of a delimited text file, by 0-based position (as
/// Microsoft.ML.Data.LoadColumnAttribute). A scalar member takes one column; an array member (a vector) takes a
/// range or a list of columns. The header, if any, is skipped, never matched by name.
/// </summary>
[AttributeUsage(AttributeTargets.Field | AttributeTargets.Property, AllowMultiple = false)]
public sealed class LoadColumnAttribute : Attribute
{
    /// <summary>Loads the single column <paramref name="fieldIndex"/>.</summary>
    public LoadColumnAttribute(int fieldIndex) : this([fieldIndex]) { }

    /// <summary>Loads columns <paramref name="start"/> to <paramref name="end"/>, both included, as a vector.</summary>
    public LoadColumnAttribute(int start, int end)
        : this(end >= start ? [.. Enumerable.Range(start, end - start + 1)] : throw new ArgumentOutOfRangeException(nameof(end), $"The range {start}-{end} is empty."))
    {
    }

    /// <summary>Loads the listed columns, in that order, as a vector.</summary>
    public LoadColumnAttribute(int[] columnIndexes)
    {
        ArgumentNullException.ThrowIfNull(columnIndexes);
        if (columnIndexes.Length == 0 || columnIndexes.Any(i => i < 0))
            throw new ArgumentOutOfRangeException(nameof(columnIndexes), "Column indexes must be given and be 0 or more.");
        ColumnIndexes = [.. columnIndexes];
    }

    /// <summary>The 0-based source columns, in order.</summary>
    public IReadOnlyList<int> ColumnIndexes { get; }
}

/// <summary>Names the column that a field or property maps to, instead of the member's name.</summary>
[AttributeUsage(AttributeTargets.Field | AttributeTargets.Property, AllowMultiple = false)]
public sealed class ColumnNameAttribute(string name) : Attribute
{
    /// <summary>The column name.</summary>
    public string Name { get; } = !string.IsNullOrEmpty(name) ? name : throw new ArgumentException("A column name cannot be empty.", nameof(name));
}

/// <summary>Excludes a field or property from the columns of its row class.</summary>
[AttributeUsage(AttributeTargets.Field | AttributeTargets.Property, AllowMultiple = false)]
public sealed class NoColumnAttribute : Attribute
{
}

/// <summary>Declares that an array member is a vector of known <see cref="Size"/> (otherwise its size varies).</summary>
[AttributeUsage(AttributeTargets.Field | AttributeTargets.Property, AllowMultiple = false)]
public sealed class VectorTypeAttribute : Attribute
{
    /// <summary>A vector of varying size.</summary>
    public VectorTypeAttribute() { }

    /// <summary>A vector of <paramref name="size"/> items.</summary>
    public VectorTypeAttribute(int size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        Size = size;
    }

    /// <summary>The vector size; 0 when it varies.</summary>
    public int Size { get; }
}

/// <summary>Declares that a <see cref="uint"/> (or <c>uint[]</c>) member holds keys 1..<see cref="Count"/> (0 = missing).</summary>
[AttributeUsage(AttributeTargets.Field | AttributeTargets.Property, AllowMultiple = false)]
public sealed class KeyTypeAttribute : Attribute
{
    /// <summary>Keys 1..<paramref name="count"/>.</summary>
    public KeyTypeAttribute(ulong count)
    {
        ArgumentOutOfRangeException.ThrowIfZero(count);
        Count = count;
    }

    /// <summary>The number of valid keys.</summary>
    public ulong Count { get; }
}
