namespace MosaicBert.Tensors;

/// <summary>Element type of a tensor.</summary>
public enum DType
{
    /// <summary>32-bit float.</summary>
    Float32,
    /// <summary>32-bit signed integer (token ids, offsets, indices).</summary>
    Int32,
    /// <summary>
    /// bfloat16: the upper half of an fp32 (1 sign, 8 exponent, 7 mantissa bits), 2 bytes per element. Activations
    /// of mixed-precision training on backends that support it (CUDA); conversions from fp32 round to nearest even.
    /// </summary>
    BFloat16,
}

/// <summary>Sizes and names of <see cref="DType"/>s.</summary>
public static class DTypes
{
    /// <summary>Bytes per element.</summary>
    public static int SizeOf(this DType dtype) => dtype switch
    {
        DType.Float32 or DType.Int32 => 4,
        DType.BFloat16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), $"Unknown dtype {dtype}."),
    };

    /// <summary>True for the floating-point types (Float32, BFloat16).</summary>
    public static bool IsFloat(this DType dtype) => dtype is DType.Float32 or DType.BFloat16;
}

/// <summary>
/// A dense row-major view of memory owned by a <see cref="Backend"/>: a storage, an element offset into it and a
/// shape. Views (<see cref="Rows"/>, <see cref="Reshape"/>) share the storage; only the tensor that allocated the
/// storage frees it.
/// </summary>
public sealed class Tensor : IDisposable
{
    private readonly int[] _shape;
    private bool _disposed;

    internal Tensor(Backend backend, object storage, DType dtype, long offset, int[] shape, bool ownsStorage)
    {
        Backend = backend;
        Storage = storage;
        DType = dtype;
        Offset = offset;
        _shape = shape;
        OwnsStorage = ownsStorage;
        long n = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"Negative dimension in shape [{string.Join(", ", shape)}].");
            n = checked(n * d);
        }
        Length = n;
    }

    /// <summary>The backend whose memory this is.</summary>
    public Backend Backend { get; }
    /// <summary>Backend-specific storage (CPU: the managed array).</summary>
    internal object Storage { get; }
    /// <summary>Element type.</summary>
    public DType DType { get; }
    /// <summary>Bytes per element (<see cref="DTypes.SizeOf"/>).</summary>
    public int ElementSize => DType.SizeOf();
    /// <summary>Bytes of the elements (Length · ElementSize).</summary>
    public long Bytes => Length * ElementSize;
    /// <summary>First element, counted in elements (not bytes) from the start of the storage.</summary>
    public long Offset { get; }
    /// <summary>Dimensions, outermost first.</summary>
    public ReadOnlySpan<int> Shape => _shape;
    /// <summary>Number of dimensions.</summary>
    public int Rank => _shape.Length;
    /// <summary>Number of elements.</summary>
    public long Length { get; }
    internal bool OwnsStorage { get; }

    /// <summary>Size of dimension <paramref name="i"/> (negative counts from the end).</summary>
    public int Dim(int i) => _shape[i < 0 ? _shape.Length + i : i];

    /// <summary>Elements per index of dimension 0.</summary>
    public long RowLength => _shape.Length == 0 ? 1 : Length / Math.Max(1, _shape[0]);

    /// <summary>View of rows [start, start + count) along dimension 0.</summary>
    public Tensor Rows(int start, int count)
    {
        if (Rank == 0) throw new InvalidOperationException("A scalar has no rows.");
        if (start < 0 || count < 0 || start + count > _shape[0])
            throw new ArgumentOutOfRangeException(nameof(start), $"Rows {start}..{start + count} of a tensor with {_shape[0]} rows.");
        var shape = (int[])_shape.Clone();
        shape[0] = count;
        return new Tensor(Backend, Storage, DType, Offset + start * RowLength, shape, ownsStorage: false);
    }

    /// <summary>The same elements with another shape (one dimension may be −1).</summary>
    public Tensor Reshape(params int[] shape)
    {
        var s = (int[])shape.Clone();
        int infer = Array.IndexOf(s, -1);
        if (infer >= 0)
        {
            long known = 1;
            for (int i = 0; i < s.Length; i++) if (i != infer) known *= s[i];
            s[infer] = known == 0 ? 0 : (int)(Length / known);
        }
        long n = 1;
        foreach (int d in s) n *= d;
        if (n != Length)
            throw new ArgumentException($"Cannot view [{string.Join(", ", _shape.ToArray())}] as [{string.Join(", ", shape)}].");
        return new Tensor(Backend, Storage, DType, Offset, s, ownsStorage: false);
    }

    /// <summary>Shape as text, for messages.</summary>
    public string ShapeString => "[" + string.Join(", ", _shape) + "]";

    /// <inheritdoc/>
    public override string ToString() => $"{DType}{ShapeString} on {Backend.Name}";

    /// <summary>Frees the storage when this tensor owns it.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (OwnsStorage) Backend.Free(this);
    }
}
