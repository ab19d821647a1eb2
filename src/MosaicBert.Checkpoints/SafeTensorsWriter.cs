using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace MosaicBert.Checkpoints;

/// <summary>
/// Collects named tensors and metadata, then writes a <c>.safetensors</c> file atomically.
/// </summary>
/// <remarks>
/// <para><b>Order.</b> Tensors are written sorted by element size, largest first, then by name (ordinal), in the
/// header and in the data section alike. This is what the reference implementation does (dtype first, then name): as
/// the data section starts 8-byte aligned and has no gaps, it keeps every tensor naturally aligned for its element
/// type. The order does not depend on the order of the <c>Add</c> calls, so the output is deterministic.</para>
/// <para><b>Header.</b> Compact JSON, <c>"__metadata__"</c> first (only when there is metadata), then the tensors;
/// padded with spaces so that its length, and therefore the data section's offset, is a multiple of 8.</para>
/// <para><b>Atomicity.</b> <see cref="Save"/> writes to a temporary file in the destination's directory, flushes it to
/// disk, then renames it over the destination. If anything fails (a data callback throws, the disk fills up) the
/// temporary file is deleted and an existing file at the destination is left untouched.</para>
/// <para>Arrays and memory passed to <c>Add</c> are referenced, not copied: do not modify them before <see cref="Save"/>.</para>
/// </remarks>
public sealed class SafeTensorsWriter
{
    private sealed record Pending(TensorInfo Info, Action<Stream> Write);

    private readonly Dictionary<string, Pending> _tensors = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _metadata = new(StringComparer.Ordinal);

    /// <summary>Metadata written under <c>"__metadata__"</c>.</summary>
    public IReadOnlyDictionary<string, string> Metadata => _metadata;

    /// <summary>Number of tensors added so far.</summary>
    public int Count => _tensors.Count;

    /// <summary>Sets a metadata entry (replacing an existing value).</summary>
    public SafeTensorsWriter SetMetadata(string key, string value)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        _metadata[key] = value;
        return this;
    }

    /// <summary>Adds a 1-D tensor of <paramref name="data"/>.Length elements.</summary>
    /// <typeparam name="T">float, double, long, int, short, sbyte, byte, bool, Half, ushort, uint or ulong.</typeparam>
    public SafeTensorsWriter Add<T>(string name, T[] data) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(data);
        return Add(name, new ReadOnlyMemory<T>(data), [data.LongLength]);
    }

    /// <summary>Adds a tensor with the given shape (empty shape: a 0-d scalar holding one element).</summary>
    /// <typeparam name="T">float, double, long, int, short, sbyte, byte, bool, Half, ushort, uint or ulong.</typeparam>
    public SafeTensorsWriter Add<T>(string name, T[] data, long[] shape) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(data);
        return Add(name, new ReadOnlyMemory<T>(data), shape);
    }

    /// <summary>Adds a tensor with the given shape; the dtype follows from <typeparamref name="T"/>.</summary>
    /// <typeparam name="T">float, double, long, int, short, sbyte, byte, bool, Half, ushort, uint or ulong.</typeparam>
    public SafeTensorsWriter Add<T>(string name, ReadOnlyMemory<T> data, long[] shape) where T : unmanaged
    {
        var dtype = TensorDTypeExtensions.FromClrType<T>();
        var info = CreateInfo(name, dtype, shape);
        if (data.Length != info.ElementCount)
            throw new ArgumentException($"tensor '{name}': shape {info.ShapeText} needs {info.ElementCount} elements, got {data.Length}", nameof(data));
        return AddPending(info, stream => stream.Write(MemoryMarshal.AsBytes(data.Span)));
    }

    /// <summary>
    /// Adds float values stored as <paramref name="dtype"/>: <see cref="TensorDType.Float32"/>,
    /// <see cref="TensorDType.Float64"/>, <see cref="TensorDType.Float16"/> or <see cref="TensorDType.BFloat16"/>
    /// (the last two round to nearest even, as torch does).
    /// </summary>
    public SafeTensorsWriter AddFloat(string name, TensorDType dtype, ReadOnlyMemory<float> values, long[] shape)
    {
        if (dtype is not (TensorDType.Float32 or TensorDType.Float64 or TensorDType.Float16 or TensorDType.BFloat16))
            throw new ArgumentException($"AddFloat writes F32, F64, F16 or BF16, not {dtype.ToSafeTensorsName()}; use AddRaw", nameof(dtype));
        var info = CreateInfo(name, dtype, shape);
        if (values.Length != info.ElementCount)
            throw new ArgumentException($"tensor '{name}': shape {info.ShapeText} needs {info.ElementCount} elements, got {values.Length}", nameof(values));
        return AddPending(info, stream => WriteConverted(stream, dtype, values.Span));
    }

    /// <summary>Adds a tensor from raw little-endian bytes (exactly elements × element size of them).</summary>
    public SafeTensorsWriter AddRaw(string name, TensorDType dtype, long[] shape, ReadOnlyMemory<byte> data)
    {
        var info = CreateInfo(name, dtype, shape);
        if (data.Length != info.ByteLength)
            throw new ArgumentException($"tensor '{name}': {dtype.ToSafeTensorsName()} {info.ShapeText} needs {info.ByteLength} bytes, got {data.Length}", nameof(data));
        return AddPending(info, stream => stream.Write(data.Span));
    }

    /// <summary>
    /// Adds a tensor whose bytes are produced during <see cref="Save"/> by <paramref name="writeData"/>, which must
    /// write exactly elements × element size little-endian bytes to the stream it is given (more or fewer is an
    /// error). Lets large tensors be streamed without holding them in memory. If the callback throws, nothing is
    /// written at the destination.
    /// </summary>
    public SafeTensorsWriter AddStreamed(string name, TensorDType dtype, long[] shape, Action<Stream> writeData)
    {
        ArgumentNullException.ThrowIfNull(writeData);
        return AddPending(CreateInfo(name, dtype, shape), writeData);
    }

    /// <summary>Writes the file atomically (see the class remarks). The writer can be saved again afterwards.</summary>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        TensorReading.EnsureLittleEndianHost();
        var fullPath = Path.GetFullPath(path);
        var directory = Path.GetDirectoryName(fullPath) ?? throw new ArgumentException($"'{path}' has no directory", nameof(path));
        Directory.CreateDirectory(directory);

        var ordered = _tensors.Values
            .OrderByDescending(p => p.Info.DType.ElementSize())
            .ThenBy(p => p.Info.Name, StringComparer.Ordinal)
            .ToList();
        var header = BuildHeader(ordered, _metadata);

        var tempPath = Path.Combine(directory, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var file = new FileStream(tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> size = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(size, (ulong)header.Length);
                file.Write(size);
                file.Write(header);
                foreach (var p in ordered)
                {
                    var counting = new CountingWriteStream(file);
                    p.Write(counting);
                    if (counting.Written != p.Info.ByteLength)
                        throw new InvalidOperationException(
                            $"tensor '{p.Info.Name}': the data callback wrote {counting.Written} bytes, {p.Info.DType.ToSafeTensorsName()} {p.Info.ShapeText} needs {p.Info.ByteLength}");
                }
                file.Flush(flushToDisk: true);
            }
            File.Move(tempPath, fullPath, overwrite: true);
        }
        catch
        {
            try { File.Delete(tempPath); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    private SafeTensorsWriter AddPending(TensorInfo info, Action<Stream> write)
    {
        if (!_tensors.TryAdd(info.Name, new Pending(info, write)))
            throw new ArgumentException($"a tensor named '{info.Name}' was already added", "name");
        return this;
    }

    private static TensorInfo CreateInfo(string name, TensorDType dtype, long[] shape)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(shape);
        if (name == SafeTensorsFile.MetadataKey)
            throw new ArgumentException($"'{SafeTensorsFile.MetadataKey}' is reserved for metadata and cannot name a tensor", nameof(name));
        _ = dtype.ElementSize(); // validates the enum value
        if (!TensorInfo.TryCountElements(shape, out _))
            throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape)}] has a negative dimension or too many elements", nameof(shape));
        return new TensorInfo(name, dtype, shape);
    }

    private static byte[] BuildHeader(List<Pending> ordered, Dictionary<string, string> metadata)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = false, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            if (metadata.Count > 0)
            {
                json.WriteStartObject(SafeTensorsFile.MetadataKey);
                foreach (var (key, value) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) json.WriteString(key, value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var p in ordered)
            {
                json.WriteStartObject(p.Info.Name);
                json.WriteString("dtype", p.Info.DType.ToSafeTensorsName());
                json.WriteStartArray("shape");
                foreach (var d in p.Info.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + p.Info.ByteLength);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += p.Info.ByteLength;
            }
            json.WriteEndObject();
        }
        var padding = (8 - buffer.WrittenCount % 8) % 8;
        var header = new byte[buffer.WrittenCount + padding];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(buffer.WrittenCount).Fill((byte)' ');
        return header;
    }

    private static void WriteConverted(Stream stream, TensorDType dtype, ReadOnlySpan<float> values)
    {
        if (dtype == TensorDType.Float32)
        {
            stream.Write(MemoryMarshal.AsBytes(values));
            return;
        }
        const int chunk = 1 << 16;
        var elementSize = dtype.ElementSize();
        var buffer = ArrayPool<byte>.Shared.Rent(chunk * elementSize);
        try
        {
            for (var done = 0; done < values.Length;)
            {
                var n = Math.Min(chunk, values.Length - done);
                var src = values.Slice(done, n);
                var dst = buffer.AsSpan(0, n * elementSize);
                switch (dtype)
                {
                    case TensorDType.Float64:
                    {
                        var d = MemoryMarshal.Cast<byte, double>(dst);
                        for (var i = 0; i < n; i++) d[i] = src[i];
                        break;
                    }
                    case TensorDType.Float16:
                    {
                        var d = MemoryMarshal.Cast<byte, Half>(dst);
                        for (var i = 0; i < n; i++) d[i] = (Half)src[i];
                        break;
                    }
                    default:
                    {
                        var d = MemoryMarshal.Cast<byte, ushort>(dst);
                        for (var i = 0; i < n; i++) d[i] = FloatToBFloat16Bits(src[i]);
                        break;
                    }
                }
                stream.Write(dst);
                done += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>float → bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN.</summary>
    internal static ushort FloatToBFloat16Bits(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        var rounding = 0x7FFFu + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>Write-only pass-through that counts bytes and refuses to be closed by the callback.</summary>
    private sealed class CountingWriteStream(Stream inner) : Stream
    {
        public long Written { get; private set; }
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => Written; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            inner.Write(buffer);
            Written += buffer.Length;
        }

        public override void WriteByte(byte value)
        {
            inner.WriteByte(value);
            Written++;
        }
    }
}
