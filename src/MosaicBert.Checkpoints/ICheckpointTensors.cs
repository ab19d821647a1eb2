namespace MosaicBert.Checkpoints;

/// <summary>Which kind of file a checkpoint was read from.</summary>
public enum CheckpointFormat
{
    /// <summary>A <c>.safetensors</c> file.</summary>
    SafeTensors,
    /// <summary>A <c>torch.save</c> zip archive (<c>pytorch_model.bin</c>, <c>*.pt</c>).</summary>
    TorchZip,
    /// <summary>Several shards listed by a Hugging Face <c>*.index.json</c>.</summary>
    Sharded,
}

/// <summary>
/// Read-only access to the named tensors of a checkpoint, whatever file format they came from. Data is read lazily,
/// tensor by tensor, and always returned as a dense row-major (C-order) copy in host (little-endian) order.
/// </summary>
/// <remarks>
/// Implementations are safe for concurrent reads from several threads; <see cref="IDisposable.Dispose"/> must not race
/// with reads. Reading a missing name throws <see cref="KeyNotFoundException"/>; asking for a conversion the dtype does
/// not allow (e.g. <see cref="ReadInt64(string)"/> of a float tensor) throws <see cref="InvalidOperationException"/>.
/// </remarks>
public interface ICheckpointTensors : IDisposable
{
    /// <summary>The file the tensors come from (the index file for sharded checkpoints).</summary>
    string SourcePath { get; }

    /// <summary>The file format.</summary>
    CheckpointFormat Format { get; }

    /// <summary>Tensor names in a stable order (file order for safetensors, state-dict order for torch files).</summary>
    IReadOnlyList<string> TensorNames { get; }

    /// <summary>Name → description of every tensor.</summary>
    IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <summary>Description of one tensor; <see cref="KeyNotFoundException"/> naming the file if absent.</summary>
    TensorInfo GetInfo(string name);

    /// <summary>Opens a stream over the tensor's data: <see cref="TensorInfo.ByteLength"/> bytes, dense row-major,
    /// little-endian, in the stored dtype. Non-contiguous torch views are materialised.</summary>
    Stream OpenRead(string name);

    /// <summary>The tensor's data bytes (see <see cref="OpenRead"/>) as a new array.</summary>
    byte[] ReadBytes(string name);

    /// <summary>The tensor as float32; float16, bfloat16, float8 and float64 are converted (float64 rounds to nearest).</summary>
    float[] ReadFloat32(string name);

    /// <summary>Like <see cref="ReadFloat32(string)"/>, into a caller buffer of exactly <see cref="TensorInfo.ElementCount"/> elements.</summary>
    void ReadFloat32(string name, Span<float> destination);

    /// <summary>The tensor as float64; any floating-point dtype is converted exactly.</summary>
    double[] ReadFloat64(string name);

    /// <summary>The tensor as int64; any integer dtype or bool (0/1) is widened; uint64 values above
    /// <see cref="long.MaxValue"/> throw <see cref="OverflowException"/>.</summary>
    long[] ReadInt64(string name);
}
