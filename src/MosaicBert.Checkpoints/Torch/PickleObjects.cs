namespace MosaicBert.Checkpoints.Torch;

// Inert values produced by PickleMachine. None of them can run code: a "global" is only a name, and calling one
// either builds one of these records (allow-listed names) or yields an opaque placeholder / an error.

/// <summary>A module-qualified name from GLOBAL / STACK_GLOBAL. Never imported, never called.</summary>
internal sealed record PyGlobal(string Module, string Name)
{
    public string FullName => Module + "." + Name;
    public override string ToString() => FullName;
}

/// <summary>A Python tuple.</summary>
internal sealed class PyTuple(object?[] items)
{
    public object?[] Items { get; } = items;
    public int Count => Items.Length;
    public object? this[int index] => Items[index];
}

/// <summary>A Python dict or OrderedDict: insertion-ordered, later SETITEMs of an existing key replace its value.</summary>
internal sealed class PyDict(bool ordered)
{
    private static readonly object s_noneKey = new();
    private readonly Dictionary<object, int> _index = new();

    public bool IsOrderedDict { get; } = ordered;
    public List<KeyValuePair<object?, object?>> Items { get; } = [];

    /// <summary>State given by BUILD (e.g. a state dict's <c>_metadata</c>); kept, never interpreted.</summary>
    public object? State { get; set; }

    public void Set(object? key, object? value)
    {
        var k = key ?? s_noneKey;
        if (_index.TryGetValue(k, out var i)) Items[i] = new(key, value);
        else
        {
            _index.Add(k, Items.Count);
            Items.Add(new(key, value));
        }
    }

    public bool TryGet(string key, out object? value)
    {
        if (_index.TryGetValue(key, out var i))
        {
            value = Items[i].Value;
            return true;
        }
        value = null;
        return false;
    }
}

/// <summary>A storage referenced by a persistent id <c>('storage', type, key, location, numel)</c>.</summary>
internal sealed class PyStorage(string key, TensorDType dtype, string typeName, long numel, string location)
{
    public string Key { get; } = key;
    /// <summary>Element type of the storage (uint8 for an untyped storage).</summary>
    public TensorDType DType { get; } = dtype;
    public string TypeName { get; } = typeName;
    public long Numel { get; } = numel;
    public string Location { get; } = location;
    public long ByteLength => Numel * DType.ElementSize();
}

/// <summary>What <c>_rebuild_tensor_v2/v3</c> would build: a strided view of a storage. Offset and strides are in
/// elements of <see cref="DType"/>.</summary>
internal sealed class PyTensor(PyStorage storage, TensorDType dtype, long storageOffset, long[] size, long[] stride, long pickleOffset)
{
    public PyStorage Storage { get; } = storage;
    public TensorDType DType { get; } = dtype;
    public long StorageOffset { get; } = storageOffset;
    public long[] Size { get; } = size;
    public long[] Stride { get; } = stride;
    /// <summary>Offset in data.pkl of the REDUCE that built it (for error messages).</summary>
    public long PickleOffset { get; } = pickleOffset;
}

/// <summary>Placeholder for an object of a non-allow-listed class, only produced when
/// <see cref="TorchLoadOptions.AllowUnknownGlobals"/> is set. It records the name and nothing else.</summary>
internal sealed class PyOpaque(string description)
{
    public string Description { get; } = description;
    public override string ToString() => Description;
}
