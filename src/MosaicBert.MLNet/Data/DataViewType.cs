namespace MosaicBert.ML.Data;

/// <summary>
/// The type of a column's values, as Microsoft.ML.Data.DataViewType. <see cref="RawType"/> is the .NET type our
/// in-memory views store for one row: <see cref="string"/> for text, the number types, <see cref="bool"/>,
/// <see cref="uint"/> for keys and <c>T[]</c> for vectors (ML.NET stores <c>ReadOnlyMemory&lt;char&gt;</c> and
/// <c>VBuffer&lt;T&gt;</c>; an adapter converts those two at the boundary).
/// </summary>
/// <remarks>The set of types is closed (constructors are not public) because every view, loader and transform
/// must know how to store, parse and compare each of them.</remarks>
public abstract class DataViewType : IEquatable<DataViewType>
{
    private protected DataViewType(Type rawType) => RawType = rawType;

    /// <summary>The .NET type of one value of this type.</summary>
    public Type RawType { get; }

    /// <summary>Whether two types are the same (same kind, key count, vector size).</summary>
    public abstract bool Equals(DataViewType? other);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is DataViewType other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => RawType.GetHashCode();

    /// <summary>The .NET type's column type: string, float, double, int, uint, long, bool, or a 1-D array of these
    /// (a vector of unknown size); null for anything else.</summary>
    internal static DataViewType? FromClrType(Type type)
    {
        if (type.IsArray)
            return type.GetArrayRank() == 1 && FromClrType(type.GetElementType()!) is PrimitiveDataViewType item
                ? new VectorDataViewType(item)
                : null;
        if (type == typeof(string)) return TextDataViewType.Instance;
        if (type == typeof(bool)) return BooleanDataViewType.Instance;
        if (type == typeof(float)) return NumberDataViewType.Single;
        if (type == typeof(double)) return NumberDataViewType.Double;
        if (type == typeof(int)) return NumberDataViewType.Int32;
        if (type == typeof(uint)) return NumberDataViewType.UInt32;
        if (type == typeof(long)) return NumberDataViewType.Int64;
        return null;
    }
}

/// <summary>A scalar type: text, boolean, number or key.</summary>
public abstract class PrimitiveDataViewType : DataViewType
{
    private protected PrimitiveDataViewType(Type rawType) : base(rawType) { }
}

/// <summary>Text; values are <see cref="string"/> (never null: a missing text is the empty string).</summary>
public sealed class TextDataViewType : PrimitiveDataViewType
{
    private TextDataViewType() : base(typeof(string)) { }

    /// <summary>The single instance.</summary>
    public static TextDataViewType Instance { get; } = new();

    /// <inheritdoc/>
    public override bool Equals(DataViewType? other) => ReferenceEquals(this, other);

    /// <inheritdoc/>
    public override string ToString() => "String";
}

/// <summary>Boolean; values are <see cref="bool"/>.</summary>
public sealed class BooleanDataViewType : PrimitiveDataViewType
{
    private BooleanDataViewType() : base(typeof(bool)) { }

    /// <summary>The single instance.</summary>
    public static BooleanDataViewType Instance { get; } = new();

    /// <inheritdoc/>
    public override bool Equals(DataViewType? other) => ReferenceEquals(this, other);

    /// <inheritdoc/>
    public override string ToString() => "Boolean";
}

/// <summary>A number type. Floating-point NaN means "missing", as in ML.NET.</summary>
public sealed class NumberDataViewType : PrimitiveDataViewType
{
    private NumberDataViewType(Type rawType) : base(rawType) { }

    /// <summary>32-bit float (<see cref="float"/>).</summary>
    public static NumberDataViewType Single { get; } = new(typeof(float));

    /// <summary>64-bit float (<see cref="double"/>).</summary>
    public static NumberDataViewType Double { get; } = new(typeof(double));

    /// <summary>32-bit signed integer.</summary>
    public static NumberDataViewType Int32 { get; } = new(typeof(int));

    /// <summary>32-bit unsigned integer (the raw type of keys).</summary>
    public static NumberDataViewType UInt32 { get; } = new(typeof(uint));

    /// <summary>64-bit signed integer.</summary>
    public static NumberDataViewType Int64 { get; } = new(typeof(long));

    /// <inheritdoc/>
    public override bool Equals(DataViewType? other) => ReferenceEquals(this, other);

    /// <inheritdoc/>
    public override string ToString() => RawType.Name;
}

/// <summary>
/// A key: a 1-based <see cref="uint"/> index into a set of <see cref="Count"/> values, 0 meaning missing (ML.NET's
/// representation of categories and class labels). The values themselves usually travel as the column's
/// <see cref="AnnotationUtils.Kinds.KeyValues"/> annotation.
/// </summary>
public sealed class KeyDataViewType : PrimitiveDataViewType
{
    /// <summary>Creates a key type.</summary>
    /// <param name="type">The raw type; only <see cref="uint"/> is supported.</param>
    /// <param name="count">The number of valid keys (keys are 1..count).</param>
    public KeyDataViewType(Type type, ulong count) : base(type)
    {
        if (type != typeof(uint))
            throw new ArgumentException($"Key types are stored as UInt32; {type.Name} is not supported.", nameof(type));
        if (count == 0 || count > uint.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(count), count, "A key type needs between 1 and UInt32.MaxValue keys.");
        Count = count;
    }

    /// <summary>Creates a key type.</summary>
    public KeyDataViewType(Type type, int count) : this(type, count > 0 ? (ulong)count : 0) { }

    /// <summary>The number of valid keys.</summary>
    public ulong Count { get; }

    /// <inheritdoc/>
    public override bool Equals(DataViewType? other) => other is KeyDataViewType k && k.Count == Count;

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(RawType, Count);

    /// <inheritdoc/>
    public override string ToString() => $"Key<UInt32, 0-{Count - 1}>";
}

/// <summary>A vector of primitive values; values are <c>T[]</c>. <see cref="Size"/> 0 means variable length.</summary>
public sealed class VectorDataViewType : DataViewType
{
    /// <summary>Creates a vector type.</summary>
    /// <param name="itemType">The type of the items.</param>
    /// <param name="size">The length of every vector, or 0 for vectors of varying length.</param>
    public VectorDataViewType(PrimitiveDataViewType itemType, int size = 0) : base(itemType.RawType.MakeArrayType())
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        ItemType = itemType;
        Size = size;
    }

    /// <summary>The type of each item.</summary>
    public PrimitiveDataViewType ItemType { get; }

    /// <summary>The length of every vector; 0 when it varies.</summary>
    public int Size { get; }

    /// <summary>Whether all vectors have length <see cref="Size"/>.</summary>
    public bool IsKnownSize => Size > 0;

    /// <inheritdoc/>
    public override bool Equals(DataViewType? other) =>
        other is VectorDataViewType v && v.Size == Size && v.ItemType.Equals(ItemType);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(ItemType, Size);

    /// <inheritdoc/>
    public override string ToString() => IsKnownSize ? $"Vector<{ItemType}, {Size}>" : $"Vector<{ItemType}>";
}

/// <summary>Helpers on <see cref="DataViewType"/> (names as in ML.NET).</summary>
public static class DataViewTypeExtensions
{
    /// <summary>The item type of a vector, or the type itself for a scalar.</summary>
    public static PrimitiveDataViewType GetItemType(this DataViewType type) => type switch
    {
        VectorDataViewType v => v.ItemType,
        PrimitiveDataViewType p => p,
        _ => throw new ArgumentException($"Unknown column type {type}.", nameof(type)),
    };

    /// <summary>The key count of a key type (or of a vector of keys); 0 when the type is not a key.</summary>
    public static ulong GetKeyCount(this DataViewType type) => type.GetItemType() is KeyDataViewType k ? k.Count : 0;
}
