using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text.Json;
using System.Text.Unicode;

namespace MosaicBert.Checkpoints;

/// <summary>
/// A validated, memory-mapped <c>.safetensors</c> file. Opening reads and checks the whole header; tensor data is only
/// touched when a tensor is read, straight from the mapping (zero-copy with <see cref="GetSpan"/>).
/// </summary>
/// <remarks>
/// <para>Format: an 8-byte little-endian unsigned header size N, N bytes of UTF-8 JSON mapping each tensor name to
/// <c>{"dtype", "shape", "data_offsets": [begin, end]}</c> (offsets relative to the data section that follows the
/// header) plus an optional <c>"__metadata__"</c> object of strings, then the data section.</para>
/// <para>Validation (any failure throws <see cref="CheckpointFormatException"/> naming the file and, where one is
/// involved, the tensor): file at least 8 bytes; N ≤ <see cref="MaxHeaderSize"/> and within the file; the header is
/// UTF-8 JSON holding one object; no duplicate names (nor duplicate keys inside an entry); known dtypes; shapes of
/// non-negative integers whose element and byte counts fit in a long; <c>data_offsets</c> two integers with
/// begin ≤ end, end − begin = elements × element size, within the file; and, as the format requires, the tensors cover
/// the data section exactly — no overlap, no hole, no trailing bytes. Unknown extra keys inside a tensor entry are
/// ignored (as the reference implementation does).</para>
/// <para>Thread safety: reads may run concurrently. Spans and streams handed out point into the mapping and are valid
/// only until <see cref="Dispose"/>.</para>
/// </remarks>
public sealed unsafe class SafeTensorsFile : ICheckpointTensors
{
    /// <summary>Largest accepted JSON header (100 MB, the reference implementation's limit).</summary>
    public const long MaxHeaderSize = 100_000_000;

    /// <summary>Name of the optional metadata entry in the header.</summary>
    public const string MetadataKey = "__metadata__";

    private readonly record struct Entry(TensorInfo Info, long Begin);

    private readonly Dictionary<string, Entry> _entries;
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _base;

    private SafeTensorsFile(string path, long fileLength, long dataStart, Dictionary<string, Entry> entries,
        IReadOnlyList<string> names, IReadOnlyDictionary<string, string> metadata, MemoryMappedFile map,
        MemoryMappedViewAccessor view, byte* basePointer)
    {
        SourcePath = path;
        FileLength = fileLength;
        DataStart = dataStart;
        _entries = entries;
        TensorNames = names;
        Metadata = metadata;
        _map = map;
        _view = view;
        _base = basePointer;
        Tensors = entries.ToDictionary(kv => kv.Key, kv => kv.Value.Info, StringComparer.Ordinal).AsReadOnly();
    }

    /// <inheritdoc />
    public string SourcePath { get; }

    /// <inheritdoc />
    public CheckpointFormat Format => CheckpointFormat.SafeTensors;

    /// <summary>Size of the file in bytes.</summary>
    public long FileLength { get; }

    /// <summary>File offset of the data section (8 + header size).</summary>
    public long DataStart { get; }

    /// <summary>Tensor names in file order (by data offset; ties, i.e. empty tensors, by name).</summary>
    public IReadOnlyList<string> TensorNames { get; }

    /// <inheritdoc />
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <summary>The <c>__metadata__</c> entries (empty when the header has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Opens and validates a safetensors file and memory-maps it.</summary>
    /// <exception cref="CheckpointFormatException">The file is malformed (see the class remarks).</exception>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        TensorReading.EnsureLittleEndianHost();
        var fullPath = Path.GetFullPath(path);
        var stream = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete,
            bufferSize: 1, FileOptions.RandomAccess);
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        var pointerAcquired = false;
        try
        {
            var fileLength = stream.Length;
            if (fileLength < 8)
                throw new CheckpointFormatException(fullPath, $"file is {fileLength} bytes, too short for the 8-byte header size: truncated or not a safetensors file");
            Span<byte> sizeBytes = stackalloc byte[8];
            stream.ReadExactly(sizeBytes);
            var headerSize = BinaryPrimitives.ReadUInt64LittleEndian(sizeBytes);
            if (headerSize > MaxHeaderSize)
                throw new CheckpointFormatException(fullPath, $"header size {headerSize} exceeds the {MaxHeaderSize}-byte limit: corrupt or not a safetensors file", byteOffset: 0);
            if ((long)headerSize > fileLength - 8)
                throw new CheckpointFormatException(fullPath, $"header size {headerSize} is larger than the {fileLength - 8} bytes after the size field: truncated or not a safetensors file", byteOffset: 0);
            if (headerSize < 2)
                throw new CheckpointFormatException(fullPath, $"header size {headerSize} is too small to hold a JSON object", byteOffset: 0);
            var header = new byte[(int)headerSize];
            stream.ReadExactly(header);
            var dataStart = 8 + (long)headerSize;
            var dataLength = fileLength - dataStart;

            var (entries, names, metadata) = ParseHeader(fullPath, header, dataLength);

            map = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read,
                HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            pointerAcquired = true;
            pointer += view.PointerOffset;
            return new SafeTensorsFile(fullPath, fileLength, dataStart, entries, names, metadata, map, view, pointer);
        }
        catch
        {
            if (pointerAcquired) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            if (map is not null) map.Dispose();
            else stream.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public TensorInfo GetInfo(string name) => GetEntry(name).Info;

    /// <summary>File offset of the first byte of the tensor's data.</summary>
    public long GetDataOffset(string name) => DataStart + GetEntry(name).Begin;

    /// <summary>
    /// The tensor's bytes, zero-copy, straight from the mapping. Valid only until <see cref="Dispose"/>.
    /// </summary>
    /// <exception cref="NotSupportedException">The tensor is larger than 2 GiB (use <see cref="OpenRead"/>).</exception>
    public ReadOnlySpan<byte> GetSpan(string name)
    {
        var entry = GetEntry(name);
        if (entry.Info.ByteLength > int.MaxValue)
            throw new NotSupportedException($"'{SourcePath}', tensor '{name}' is {entry.Info.ByteLength} bytes, too large for a span; use OpenRead");
        return new ReadOnlySpan<byte>(Pointer(entry), (int)entry.Info.ByteLength);
    }

    /// <inheritdoc />
    /// <remarks>The stream reads the mapping directly and is valid only until <see cref="Dispose"/>.</remarks>
    public Stream OpenRead(string name)
    {
        var entry = GetEntry(name);
        return new UnmanagedMemoryStream(Pointer(entry), entry.Info.ByteLength);
    }

    /// <inheritdoc />
    public byte[] ReadBytes(string name)
    {
        using var s = OpenRead(name);
        return TensorReading.ReadBytes(GetInfo(name), s);
    }

    /// <inheritdoc />
    public float[] ReadFloat32(string name)
    {
        using var s = OpenRead(name);
        return TensorReading.ReadFloat32(GetInfo(name), s, SourcePath);
    }

    /// <inheritdoc />
    public void ReadFloat32(string name, Span<float> destination)
    {
        using var s = OpenRead(name);
        TensorReading.ReadFloat32(GetInfo(name), s, destination, SourcePath);
    }

    /// <inheritdoc />
    public double[] ReadFloat64(string name)
    {
        using var s = OpenRead(name);
        return TensorReading.ReadFloat64(GetInfo(name), s, SourcePath);
    }

    /// <inheritdoc />
    public long[] ReadInt64(string name)
    {
        using var s = OpenRead(name);
        return TensorReading.ReadInt64(GetInfo(name), s, SourcePath);
    }

    /// <summary>Unmaps the file. Spans and streams obtained earlier must no longer be used.</summary>
    public void Dispose()
    {
        if (_base is null) return;
        _base = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }

    private Entry GetEntry(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        ObjectDisposedException.ThrowIf(_base is null, this);
        return _entries.TryGetValue(name, out var entry)
            ? entry
            : throw new KeyNotFoundException($"'{SourcePath}' has no tensor named '{name}'");
    }

    private byte* Pointer(Entry entry)
    {
        var p = _base;
        ObjectDisposedException.ThrowIf(p is null, this);
        return p + DataStart + entry.Begin;
    }

    private static (Dictionary<string, Entry>, IReadOnlyList<string>, IReadOnlyDictionary<string, string>) ParseHeader(
        string path, byte[] header, long dataLength)
    {
        if (!Utf8.IsValid(header))
            throw new CheckpointFormatException(path, "header is not valid UTF-8 JSON: it contains invalid UTF-8 bytes", byteOffset: 8);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException ex)
        {
            throw new CheckpointFormatException(path,
                $"header is not valid UTF-8 JSON (line {ex.LineNumber + 1}, byte {ex.BytePositionInLine + 1} of the header): {ex.Message}",
                byteOffset: 8, innerException: ex);
        }
        catch (ArgumentException ex)
        {
            throw new CheckpointFormatException(path, $"header is not valid UTF-8 JSON: {ex.Message}", byteOffset: 8, innerException: ex);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(path, $"header must be a JSON object, found {root.ValueKind}", byteOffset: 8);

            var entries = new Dictionary<string, Entry>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var sawMetadata = false;
            foreach (var property in root.EnumerateObject())
            {
                var name = property.Name;
                if (name == MetadataKey)
                {
                    if (sawMetadata) throw new CheckpointFormatException(path, $"duplicate '{MetadataKey}' entry in the header");
                    sawMetadata = true;
                    ParseMetadata(path, property.Value, metadata);
                    continue;
                }
                if (entries.ContainsKey(name))
                    throw new CheckpointFormatException(path, "duplicate tensor name in the header", tensorName: name);
                var (info, begin) = ParseEntry(path, name, property.Value, dataLength);
                entries.Add(name, new Entry(info, begin));
            }

            // The data section must be covered exactly: sort by offsets and walk.
            var ordered = entries.Values
                .OrderBy(e => e.Begin).ThenBy(e => e.Begin + e.Info.ByteLength).ThenBy(e => e.Info.Name, StringComparer.Ordinal)
                .ToList();
            long position = 0;
            Entry? previous = null;
            foreach (var e in ordered)
            {
                if (e.Begin < position)
                    throw new CheckpointFormatException(path,
                        $"data_offsets [{e.Begin}, {e.Begin + e.Info.ByteLength}] overlap tensor '{previous!.Value.Info.Name}' which ends at {position}",
                        tensorName: e.Info.Name);
                if (e.Begin > position)
                    throw new CheckpointFormatException(path,
                        $"data_offsets start at {e.Begin} but the previous tensor{(previous is null ? "" : $" '{previous.Value.Info.Name}'")} ends at {position}: {e.Begin - position}-byte hole in the data section",
                        tensorName: e.Info.Name);
                position = e.Begin + e.Info.ByteLength;
                previous = e;
            }
            if (position != dataLength)
                throw new CheckpointFormatException(path,
                    $"the data section is {dataLength} bytes but the tensors cover only {position}: {dataLength - position} trailing bytes not described by the header",
                    tensorName: previous?.Info.Name);

            var names = ordered.Select(e => e.Info.Name).ToArray();
            return (entries, Array.AsReadOnly(names), metadata.AsReadOnly());
        }
    }

    private static void ParseMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind == JsonValueKind.Null) return;
        if (value.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, $"'{MetadataKey}' must be an object of strings, found {value.ValueKind}");
        foreach (var item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw new CheckpointFormatException(path, $"'{MetadataKey}' value for key '{item.Name}' must be a string, found {item.Value.ValueKind}");
            if (!metadata.TryAdd(item.Name, item.Value.GetString()!))
                throw new CheckpointFormatException(path, $"duplicate key '{item.Name}' in '{MetadataKey}'");
        }
    }

    private static (TensorInfo, long) ParseEntry(string path, string name, JsonElement value, long dataLength)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, $"header entry must be an object with dtype, shape and data_offsets, found {value.ValueKind}", tensorName: name);

        JsonElement? dtypeElement = null, shapeElement = null, offsetsElement = null;
        foreach (var field in value.EnumerateObject())
        {
            ref JsonElement? slot = ref dtypeElement;
            switch (field.Name)
            {
                case "dtype": slot = ref dtypeElement; break;
                case "shape": slot = ref shapeElement; break;
                case "data_offsets": slot = ref offsetsElement; break;
                default: continue;
            }
            if (slot is not null) throw new CheckpointFormatException(path, $"duplicate key '{field.Name}' in the header entry", tensorName: name);
            slot = field.Value;
        }
        if (dtypeElement is null) throw new CheckpointFormatException(path, "header entry has no 'dtype'", tensorName: name);
        if (shapeElement is null) throw new CheckpointFormatException(path, "header entry has no 'shape'", tensorName: name);
        if (offsetsElement is null) throw new CheckpointFormatException(path, "header entry has no 'data_offsets'", tensorName: name);

        if (dtypeElement.Value.ValueKind != JsonValueKind.String)
            throw new CheckpointFormatException(path, $"'dtype' must be a string, found {dtypeElement.Value.ValueKind}", tensorName: name);
        var dtypeName = dtypeElement.Value.GetString()!;
        if (!TensorDTypeExtensions.TryParseSafeTensorsName(dtypeName, out var dtype))
            throw new CheckpointFormatException(path, $"unknown or unsupported dtype '{dtypeName}'", tensorName: name);

        if (shapeElement.Value.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(path, $"'shape' must be an array of integers, found {shapeElement.Value.ValueKind}", tensorName: name);
        var shape = new long[shapeElement.Value.GetArrayLength()];
        var i = 0;
        foreach (var dim in shapeElement.Value.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out var d))
                throw new CheckpointFormatException(path, $"shape dimension {i} ({dim.GetRawText()}) is not an integer that fits in 64 bits", tensorName: name);
            if (d < 0)
                throw new CheckpointFormatException(path, $"shape dimension {i} is negative ({d})", tensorName: name);
            shape[i++] = d;
        }
        if (!TensorInfo.TryCountElements(shape, out _))
            throw new CheckpointFormatException(path, $"shape [{string.Join(", ", shape)}] has too many elements (the byte size overflows 64 bits)", tensorName: name);
        var info = new TensorInfo(name, dtype.Value, shape);

        if (offsetsElement.Value.ValueKind != JsonValueKind.Array || offsetsElement.Value.GetArrayLength() != 2)
            throw new CheckpointFormatException(path, $"'data_offsets' must be an array of two integers, found {offsetsElement.Value.GetRawText()}", tensorName: name);
        var begin = ReadOffset(path, name, offsetsElement.Value[0], "begin");
        var end = ReadOffset(path, name, offsetsElement.Value[1], "end");
        if (end < begin)
            throw new CheckpointFormatException(path, $"data_offsets [{begin}, {end}] end before they begin", tensorName: name);
        if (end - begin != info.ByteLength)
            throw new CheckpointFormatException(path,
                $"data_offsets [{begin}, {end}] span {end - begin} bytes but {dtypeName} {info.ShapeText} needs {info.ByteLength}",
                tensorName: name);
        if (end > dataLength)
            throw new CheckpointFormatException(path,
                $"data_offsets [{begin}, {end}] extend past the end of the file (the data section holds {dataLength} bytes): truncated file?",
                tensorName: name);
        return (info, begin);
    }

    private static long ReadOffset(string path, string name, JsonElement element, string which)
    {
        if (element.ValueKind != JsonValueKind.Number || !element.TryGetInt64(out var value) || value < 0)
            throw new CheckpointFormatException(path, $"data_offsets {which} ({element.GetRawText()}) is not a non-negative integer that fits in 63 bits", tensorName: name);
        return value;
    }
}
