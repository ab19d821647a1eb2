namespace MosaicBert.Checkpoints;

/// <summary>Name, element type and shape of one stored tensor (no data).</summary>
public sealed class TensorInfo
{
    /// <summary>Creates the description; <paramref name="shape"/> is copied.</summary>
    /// <exception cref="ArgumentException">A dimension is negative or the element count overflows.</exception>
    public TensorInfo(string name, TensorDType dtype, IEnumerable<long> shape)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(shape);
        var dims = shape.ToArray();
        Name = name;
        DType = dtype;
        Shape = Array.AsReadOnly(dims);
        ElementCount = TryCountElements(dims, out var count)
            ? count
            : throw new ArgumentException($"shape [{string.Join(", ", dims)}] has a negative dimension or too many elements", nameof(shape));
        ByteLength = checked(ElementCount * dtype.ElementSize());
    }

    /// <summary>The tensor's name (state-dict key).</summary>
    public string Name { get; }

    /// <summary>Element type as stored in the file.</summary>
    public TensorDType DType { get; }

    /// <summary>Dimensions, outermost first; empty for a 0-d scalar.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>Number of elements: the product of <see cref="Shape"/> (1 for a scalar, 0 when a dimension is 0).</summary>
    public long ElementCount { get; }

    /// <summary>Size of the tensor's data, contiguous, in its stored dtype: <see cref="ElementCount"/> × element size.</summary>
    public long ByteLength { get; }

    /// <summary>Shape as text, e.g. <c>[2, 3]</c>.</summary>
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";

    /// <inheritdoc />
    public override string ToString() => $"{Name}: {DType.ToSafeTensorsName()} {ShapeText}";

    /// <summary>Product of the dims with overflow checks; false if a dim is negative or the product (or its byte size
    /// at 8 bytes per element) does not fit in a long.</summary>
    internal static bool TryCountElements(ReadOnlySpan<long> dims, out long count)
    {
        count = 0;
        var hasZero = false;
        foreach (var d in dims)
        {
            if (d < 0) return false;
            if (d == 0) hasZero = true;
        }
        if (hasZero) return true;
        long product = 1;
        foreach (var d in dims)
        {
            if (product > long.MaxValue / 8 / d) return false;
            product *= d;
        }
        count = product;
        return true;
    }
}
