using System.IO.Compression;
using System.Text;

namespace MosaicBert.Checkpoints.Torch;

/// <summary>Where a torch tensor's elements live in its storage.</summary>
/// <param name="StorageKey">Storage key: the blob is the zip entry <c>&lt;prefix&gt;/data/&lt;key&gt;</c>.</param>
/// <param name="StorageDType">Element type of the storage (uint8 for an untyped storage).</param>
/// <param name="StorageByteLength">Size of the storage blob in bytes.</param>
/// <param name="StorageOffset">Offset of the first element, in elements of the tensor's dtype.</param>
/// <param name="Strides">Stride per dimension, in elements.</param>
/// <param name="IsContiguous">True when the tensor is a dense row-major block of the storage.</param>
public sealed record TorchTensorLayout(string StorageKey, TensorDType StorageDType, long StorageByteLength,
    long StorageOffset, IReadOnlyList<long> Strides, bool IsContiguous);

/// <summary>
/// A state dict saved by <c>torch.save</c> (≥ 1.6 zip format: <c>pytorch_model.bin</c>, <c>*.pt</c>), read without
/// PyTorch and without executing anything.
/// </summary>
/// <remarks>
/// <para><b>Format.</b> A zip archive with <c>&lt;prefix&gt;/data.pkl</c> (a pickle describing the state dict),
/// <c>&lt;prefix&gt;/data/&lt;key&gt;</c> (one raw little-endian blob per storage), <c>&lt;prefix&gt;/version</c> and,
/// from torch 1.10 on, <c>&lt;prefix&gt;/byteorder</c>. Each tensor is pickled as
/// <c>torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])</c>
/// where <c>storage</c> is a persistent id <c>('storage', torch.FloatStorage, key, location, numel)</c>.</para>
/// <para><b>Safety.</b> The pickle is run by a small interpreter that supports only the opcodes containers and tensors
/// need and never imports or calls anything. GLOBALs must be on an allow-list (<c>collections.OrderedDict</c>, the
/// <c>torch._utils._rebuild_*</c> functions, <c>torch.*Storage</c> classes, <c>torch</c> dtypes, <c>torch.Size</c>,
/// <c>_codecs.encode</c>); anything else (e.g. <c>os.system</c>, <c>builtins.eval</c>) fails the load with a
/// <see cref="CheckpointFormatException"/> naming the global, the file and the byte offset in data.pkl.</para>
/// <para><b>What is found.</b> The top-level object must be a dict. If it holds tensors, it is the state dict
/// (entries that are not tensors are skipped). Otherwise a Composer checkpoint's <c>state → model</c> dict is used,
/// with the <c>model.</c> prefix dropped when every key has it (<see cref="TorchLoadOptions.StripComposerModelPrefix"/>);
/// then a nested <c>state_dict</c> or <c>model</c> dict. Full Composer checkpoints also pickle optimizer and RNG
/// state (numpy arrays, ...): load them with <see cref="TorchLoadOptions.AllowUnknownGlobals"/>.</para>
/// <para><b>Tensors.</b> Any storage offset and (non-negative) strides are supported: non-contiguous views (e.g. a
/// transposed weight) are materialised in row-major order when read. Tensors sharing a storage (tied weights, stored
/// once) are each listed and read independently. Every tensor's extent is checked against its storage at load.</para>
/// <para><b>Not supported.</b> The legacy pre-1.6 format (a bare pickle stream or tar); big-endian archives; sparse,
/// quantized, complex and nested tensors (their globals are not allow-listed).</para>
/// <para><b>Reading.</b> Each read opens its own handle on the file, so reads are thread-safe and the file is not
/// kept open between reads. Storage blobs are read sequentially through <see cref="ZipArchive"/> (torch stores them
/// uncompressed; deflated entries work too).</para>
/// </remarks>
public sealed class TorchStateDict : ICheckpointTensors
{
    private sealed record Item(TensorInfo Info, TorchTensorLayout Layout);

    private readonly Dictionary<string, Item> _items;
    private readonly string _prefix;
    private bool _disposed;

    private TorchStateDict(string path, string prefix, Dictionary<string, Item> items, IReadOnlyList<string> names,
        string? version, bool isComposer)
    {
        SourcePath = path;
        _prefix = prefix;
        _items = items;
        TensorNames = names;
        Version = version;
        IsComposerCheckpoint = isComposer;
        Tensors = items.ToDictionary(kv => kv.Key, kv => kv.Value.Info, StringComparer.Ordinal).AsReadOnly();
    }

    /// <inheritdoc />
    public string SourcePath { get; }

    /// <inheritdoc />
    public CheckpointFormat Format => CheckpointFormat.TorchZip;

    /// <summary>Tensor names in state-dict order (as pickled).</summary>
    public IReadOnlyList<string> TensorNames { get; }

    /// <inheritdoc />
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <summary>Content of the archive's <c>version</c> entry (e.g. "3"), or null if absent.</summary>
    public string? Version { get; }

    /// <summary>True when the tensors were found under Composer's <c>state → model</c>.</summary>
    public bool IsComposerCheckpoint { get; }

    /// <summary>Reads and validates the archive and its pickle. Tensor data is read later, on demand.</summary>
    /// <exception cref="CheckpointFormatException">Malformed, truncated, legacy, big-endian, or refused (global not allowed).</exception>
    public static TorchStateDict Load(string path, TorchLoadOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= TorchLoadOptions.Default;
        TensorReading.EnsureLittleEndianHost();
        var fullPath = Path.GetFullPath(path);

        using var file = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        CheckMagic(fullPath, file);
        using var archive = OpenArchive(fullPath, file);

        var seen = new HashSet<string>(StringComparer.Ordinal);
        ZipArchiveEntry? pickleEntry = null;
        foreach (var entry in archive.Entries)
        {
            if (!seen.Add(entry.FullName))
                throw new CheckpointFormatException(fullPath, "the zip archive holds this entry twice", entryName: entry.FullName);
            var slash = entry.FullName.IndexOf('/');
            if (slash > 0 && entry.FullName.AsSpan(slash + 1).SequenceEqual("data.pkl"))
            {
                if (pickleEntry is not null)
                    throw new CheckpointFormatException(fullPath, $"the archive holds two pickles ('{pickleEntry.FullName}' and '{entry.FullName}')");
                pickleEntry = entry;
            }
        }
        if (pickleEntry is null)
            throw new CheckpointFormatException(fullPath, "zip archive has no '<prefix>/data.pkl' entry: not a torch.save file");
        var prefix = pickleEntry.FullName[..pickleEntry.FullName.IndexOf('/')];

        var byteOrder = ReadSmallText(fullPath, archive, prefix + "/byteorder");
        if (byteOrder is not null && byteOrder.Trim() != "little")
            throw new CheckpointFormatException(fullPath,
                byteOrder.Trim() == "big"
                    ? "the checkpoint was saved on a big-endian machine; only little-endian checkpoints are supported"
                    : $"unknown byte order '{byteOrder.Trim()}'",
                entryName: prefix + "/byteorder");
        var version = ReadSmallText(fullPath, archive, prefix + "/version")?.Trim();

        if (pickleEntry.Length > options.MaxPickleBytes || pickleEntry.Length > Array.MaxLength)
            throw new CheckpointFormatException(fullPath, $"data.pkl is {pickleEntry.Length} bytes, over the {options.MaxPickleBytes}-byte limit", entryName: pickleEntry.FullName);
        var pickle = ReadEntry(fullPath, pickleEntry, (int)pickleEntry.Length);

        var storages = new Dictionary<string, PyStorage>(StringComparer.Ordinal);
        PickleMachine? machine = null;
        machine = new PickleMachine(pickle, fullPath, pickleEntry.FullName, options.AllowUnknownGlobals,
            (pid, offset) => PersistentLoad(machine!, pid, offset, storages));
        var root = machine.Run();

        var (stateDict, isComposer) = FindStateDict(fullPath, pickleEntry.FullName, root);
        var entries = new List<(string Name, PyTensor Tensor)>();
        if (stateDict is not null)
        {
            foreach (var (key, value) in stateDict.Items)
            {
                if (value is not PyTensor tensor) continue;
                if (key is not string name)
                    throw new CheckpointFormatException(fullPath, $"state-dict key {PickleMachine.TypeName(key)} is not a string", entryName: pickleEntry.FullName, byteOffset: tensor.PickleOffset);
                entries.Add((name, tensor));
            }
        }
        if (isComposer && options.StripComposerModelPrefix && entries.Count > 0 && entries.All(e => e.Name.StartsWith("model.", StringComparison.Ordinal)))
            entries = entries.Select(e => (e.Name["model.".Length..], e.Tensor)).ToList();

        // Storage blobs: present, and exactly as long as the persistent id says.
        foreach (var storage in storages.Values)
        {
            var entryName = $"{prefix}/data/{storage.Key}";
            var blob = archive.GetEntry(entryName)
                ?? throw new CheckpointFormatException(fullPath, $"storage '{storage.Key}' ({storage.TypeName}, {storage.Numel} elements) has no blob in the archive", entryName: entryName);
            if (blob.Length != storage.ByteLength)
                throw new CheckpointFormatException(fullPath,
                    $"storage '{storage.Key}' should hold {storage.Numel} × {storage.DType.ElementSize()} = {storage.ByteLength} bytes but its blob is {blob.Length} bytes",
                    entryName: entryName);
        }

        var items = new Dictionary<string, Item>(StringComparer.Ordinal);
        var names = new List<string>();
        foreach (var (name, tensor) in entries)
        {
            if (items.ContainsKey(name))
                throw new CheckpointFormatException(fullPath, "duplicate tensor name", tensorName: name, entryName: pickleEntry.FullName, byteOffset: tensor.PickleOffset);
            items.Add(name, new Item(new TensorInfo(name, tensor.DType, ValidateShape(fullPath, name, tensor)), CreateLayout(fullPath, name, tensor)));
            names.Add(name);
        }
        return new TorchStateDict(fullPath, prefix, items, names.AsReadOnly(), version, isComposer);
    }

    /// <inheritdoc />
    public TensorInfo GetInfo(string name) => GetItem(name).Info;

    /// <summary>Storage key, offset and strides of a tensor.</summary>
    public TorchTensorLayout GetLayout(string name) => GetItem(name).Layout;

    /// <inheritdoc />
    public Stream OpenRead(string name)
    {
        var item = GetItem(name);
        var info = item.Info;
        var layout = item.Layout;
        var elementSize = info.DType.ElementSize();
        if (info.ElementCount == 0) return new MemoryStream([], writable: false);

        var entryName = $"{_prefix}/data/{layout.StorageKey}";
        FileStream? file = null;
        ZipArchive? archive = null;
        BlobReadStream? source = null;
        try
        {
            file = new FileStream(SourcePath, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
            archive = OpenArchive(SourcePath, file);
            var entry = archive.GetEntry(entryName)
                ?? throw new CheckpointFormatException(SourcePath, "storage blob disappeared from the archive (file changed since it was loaded?)", tensorName: name, entryName: entryName);
            if (entry.Length != layout.StorageByteLength)
                throw new CheckpointFormatException(SourcePath, "storage blob changed size since the file was loaded", tensorName: name, entryName: entryName);
            source = new BlobReadStream(entry.Open(), SourcePath, name, entryName, [archive, file]);
            archive = null;
            file = null;
            source.Skip(layout.StorageOffset * elementSize);

            if (layout.IsContiguous)
            {
                source.Limit = info.ByteLength;
                var result = source;
                source = null; // the caller disposes it, and with it the archive and the file
                return result;
            }

            // Strided view: read the span of storage it touches, then gather in row-major order.
            var maxIndex = layout.StorageOffset;
            for (var d = 0; d < info.Shape.Count; d++) maxIndex += (info.Shape[d] - 1) * layout.Strides[d];
            var spanBytes = (maxIndex - layout.StorageOffset + 1) * elementSize;
            if (spanBytes > Array.MaxLength || info.ByteLength > Array.MaxLength)
                throw new NotSupportedException($"'{SourcePath}', tensor '{name}': non-contiguous view over {spanBytes} bytes is too large to materialise");
            var window = new byte[spanBytes];
            source.Limit = spanBytes;
            source.ReadExactly(window);
            return new MemoryStream(Gather(window, info, layout, elementSize), writable: false);
        }
        catch (InvalidDataException ex)
        {
            throw new CheckpointFormatException(SourcePath, $"cannot read storage blob: {ex.Message}", tensorName: name, entryName: entryName, innerException: ex);
        }
        finally
        {
            source?.Dispose();
            archive?.Dispose();
            file?.Dispose();
        }
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
        var info = GetInfo(name);
        using var s = OpenRead(name);
        return TensorReading.ReadFloat32(info, s, SourcePath);
    }

    /// <inheritdoc />
    public void ReadFloat32(string name, Span<float> destination)
    {
        var info = GetInfo(name);
        using var s = OpenRead(name);
        TensorReading.ReadFloat32(info, s, destination, SourcePath);
    }

    /// <inheritdoc />
    public double[] ReadFloat64(string name)
    {
        var info = GetInfo(name);
        using var s = OpenRead(name);
        return TensorReading.ReadFloat64(info, s, SourcePath);
    }

    /// <inheritdoc />
    public long[] ReadInt64(string name)
    {
        var info = GetInfo(name);
        using var s = OpenRead(name);
        return TensorReading.ReadInt64(info, s, SourcePath);
    }

    /// <summary>Nothing is held open between reads; after disposal reads throw <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose() => _disposed = true;

    private Item GetItem(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _items.TryGetValue(name, out var item)
            ? item
            : throw new KeyNotFoundException($"'{SourcePath}' has no tensor named '{name}'");
    }

    private static void CheckMagic(string path, FileStream file)
    {
        Span<byte> head = stackalloc byte[4];
        var n = file.ReadAtLeast(head, 4, throwOnEndOfStream: false);
        file.Position = 0;
        if (n == 4 && head[0] == (byte)'P' && head[1] == (byte)'K' && (head[2], head[3]) is (3, 4) or (5, 6)) return;
        if (n >= 1 && head[0] == 0x80)
            throw new CheckpointFormatException(path, "legacy torch.save format (pre-1.6) is not supported; re-save with torch>=1.6 (torch.save(torch.load(f), f))");
        if (file.Length >= 262)
        {
            Span<byte> tar = stackalloc byte[5];
            file.Position = 257;
            file.ReadExactly(tar);
            file.Position = 0;
            if (tar.SequenceEqual("ustar"u8))
                throw new CheckpointFormatException(path, "legacy torch.save tar format (pre-1.6) is not supported; re-save with torch>=1.6");
        }
        if (n == 0) throw new CheckpointFormatException(path, "file is empty");
        throw new CheckpointFormatException(path, $"not a torch.save zip archive (starts with bytes {Convert.ToHexString(head[..n])})", byteOffset: 0);
    }

    private static ZipArchive OpenArchive(string path, FileStream file)
    {
        try
        {
            return new ZipArchive(file, ZipArchiveMode.Read, leaveOpen: true);
        }
        catch (InvalidDataException ex)
        {
            throw new CheckpointFormatException(path, $"not a valid zip archive (truncated or corrupt?): {ex.Message}", innerException: ex);
        }
    }

    private static byte[] ReadEntry(string path, ZipArchiveEntry entry, int length)
    {
        try
        {
            using var s = entry.Open();
            var bytes = new byte[length];
            s.ReadExactly(bytes);
            return bytes;
        }
        catch (Exception ex) when (ex is InvalidDataException or EndOfStreamException)
        {
            throw new CheckpointFormatException(path, $"cannot read entry: {ex.Message}", entryName: entry.FullName, innerException: ex);
        }
    }

    private static string? ReadSmallText(string path, ZipArchive archive, string entryName)
    {
        var entry = archive.GetEntry(entryName);
        if (entry is null) return null;
        if (entry.Length > 64) throw new CheckpointFormatException(path, $"entry is {entry.Length} bytes, expected a short text", entryName: entryName);
        return Encoding.ASCII.GetString(ReadEntry(path, entry, (int)entry.Length));
    }

    private static PyStorage PersistentLoad(PickleMachine machine, PyTuple pid, long offset, Dictionary<string, PyStorage> storages)
    {
        if (pid.Count != 5 || pid[0] is not "storage")
            throw machine.Fail($"unsupported persistent id (expected ('storage', type, key, location, numel), got a {pid.Count}-tuple starting with {PickleMachine.TypeName(pid.Count > 0 ? pid[0] : null)})", offset);
        if (pid[1] is not PyGlobal type || !PickleMachine.StorageTypes.TryGetValue(type.FullName, out var dtype))
            throw machine.Fail($"unsupported storage type {PickleMachine.TypeName(pid[1])}", offset);
        if (pid[2] is not string key || key.Length == 0 || key.Contains('/') || key.Contains('\\') || key is "." or "..")
            throw machine.Fail($"invalid storage key {PickleMachine.TypeName(pid[2])}", offset);
        if (pid[3] is not string location)
            throw machine.Fail($"storage location is a {PickleMachine.TypeName(pid[3])}, not a string", offset);
        if (pid[4] is not long numel || numel < 0 || numel > long.MaxValue / 8)
            throw machine.Fail($"storage '{key}' has an invalid element count {PickleMachine.TypeName(pid[4])}", offset);

        if (storages.TryGetValue(key, out var existing))
        {
            if (existing.DType != dtype || existing.Numel != numel)
                throw machine.Fail($"storage '{key}' is declared twice with different types or sizes ({existing.TypeName} × {existing.Numel} vs {type.FullName} × {numel})", offset);
            return existing;
        }
        var storage = new PyStorage(key, dtype, type.FullName, numel, location);
        storages.Add(key, storage);
        return storage;
    }

    private static (PyDict? StateDict, bool IsComposer) FindStateDict(string path, string entryName, object? root)
    {
        if (root is not PyDict top)
            throw new CheckpointFormatException(path, $"the pickle holds a {PickleMachine.TypeName(root)}, not a dict of tensors", entryName: entryName);
        if (top.Items.Count == 0 || HasTensors(top)) return (top, false);
        if (top.TryGet("state", out var state) && state is PyDict stateDict
            && stateDict.TryGet("model", out var model) && model is PyDict modelDict && HasTensors(modelDict))
            return (modelDict, true);
        foreach (var key in (string[])["state_dict", "model"])
            if (top.TryGet(key, out var nested) && nested is PyDict nestedDict && HasTensors(nestedDict))
                return (nestedDict, false);
        throw new CheckpointFormatException(path,
            "found no tensors: the top-level dict holds none, and there is no Composer 'state' → 'model' dict nor a 'state_dict'/'model' dict of tensors",
            entryName: entryName);
    }

    private static bool HasTensors(PyDict dict) => dict.Items.Any(kv => kv.Value is PyTensor);

    private static long[] ValidateShape(string path, string name, PyTensor tensor)
    {
        for (var d = 0; d < tensor.Size.Length; d++)
            if (tensor.Size[d] < 0)
                throw new CheckpointFormatException(path, $"size [{string.Join(", ", tensor.Size)}] has a negative dimension", tensorName: name);
        if (!TensorInfo.TryCountElements(tensor.Size, out _))
            throw new CheckpointFormatException(path, $"size [{string.Join(", ", tensor.Size)}] has too many elements", tensorName: name);
        return tensor.Size;
    }

    private static TorchTensorLayout CreateLayout(string path, string name, PyTensor tensor)
    {
        var storage = tensor.Storage;
        var elementSize = tensor.DType.ElementSize();
        var size = tensor.Size;
        var stride = tensor.Stride;
        var where = $"view (offset {tensor.StorageOffset}, size [{string.Join(", ", size)}], stride [{string.Join(", ", stride)}])";
        if (tensor.StorageOffset < 0)
            throw new CheckpointFormatException(path, $"{where} has a negative storage offset", tensorName: name);
        for (var d = 0; d < stride.Length; d++)
            if (stride[d] < 0)
                throw new CheckpointFormatException(path, $"{where} has a negative stride", tensorName: name);
        if (storage.ByteLength % elementSize != 0)
            throw new CheckpointFormatException(path, $"storage '{storage.Key}' ({storage.ByteLength} bytes) is not a whole number of {tensor.DType.ToSafeTensorsName()} elements", tensorName: name);
        var storageElements = storage.ByteLength / elementSize;

        TensorInfo.TryCountElements(size, out var count);
        if (count > 0)
        {
            // Largest element index touched; every term is checked for overflow.
            var maxIndex = tensor.StorageOffset;
            try
            {
                for (var d = 0; d < size.Length; d++) maxIndex = checked(maxIndex + checked((size[d] - 1) * stride[d]));
            }
            catch (OverflowException)
            {
                throw new CheckpointFormatException(path, $"{where} overflows 64-bit indexing", tensorName: name);
            }
            if (maxIndex >= storageElements)
                throw new CheckpointFormatException(path,
                    $"{where} reaches element {maxIndex} but storage '{storage.Key}' holds only {storageElements} {tensor.DType.ToSafeTensorsName()} elements",
                    tensorName: name);
        }
        else if (tensor.StorageOffset > storageElements)
        {
            throw new CheckpointFormatException(path, $"{where} starts past the end of storage '{storage.Key}' ({storageElements} elements)", tensorName: name);
        }

        var contiguous = true;
        long expected = 1;
        for (var d = size.Length - 1; d >= 0; d--)
        {
            if (size[d] == 1) continue;
            if (stride[d] != expected) contiguous = false;
            expected *= size[d];
        }
        if (count == 0) contiguous = true;
        return new TorchTensorLayout(storage.Key, storage.DType, storage.ByteLength, tensor.StorageOffset,
            Array.AsReadOnly((long[])stride.Clone()), contiguous);
    }

    private static byte[] Gather(byte[] window, TensorInfo info, TorchTensorLayout layout, int elementSize)
    {
        var result = new byte[info.ByteLength];
        var rank = info.Shape.Count;
        var shape = info.Shape.ToArray();
        var strides = layout.Strides.ToArray();
        var index = new long[rank];
        var innerLength = shape[rank - 1];
        var innerStride = strides[rank - 1];
        long outPos = 0;
        while (true)
        {
            long src = 0;
            for (var d = 0; d < rank - 1; d++) src += index[d] * strides[d];
            if (innerStride == 1)
            {
                var bytes = (int)(innerLength * elementSize);
                Buffer.BlockCopy(window, (int)(src * elementSize), result, (int)outPos, bytes);
                outPos += bytes;
            }
            else
            {
                for (long i = 0; i < innerLength; i++)
                {
                    Buffer.BlockCopy(window, (int)((src + i * innerStride) * elementSize), result, (int)outPos, elementSize);
                    outPos += elementSize;
                }
            }
            // Advance the outer multi-index (all but the last dimension).
            var dim = rank - 2;
            while (dim >= 0)
            {
                if (++index[dim] < shape[dim]) break;
                index[dim] = 0;
                dim--;
            }
            if (dim < 0) break;
        }
        return result;
    }

    /// <summary>Reads a storage blob: translates zip errors into <see cref="CheckpointFormatException"/>, can skip,
    /// can be limited to a length, and owns the blob stream, the archive and the file it reads from.</summary>
    private sealed class BlobReadStream(Stream inner, string path, string tensor, string entry, IDisposable[] owned) : Stream
    {
        private long _blobPosition;
        private long _limit = -1;
        private long _returned;

        /// <summary>Number of bytes this stream yields from now on (−1: up to the blob's end).</summary>
        public long Limit
        {
            get => _limit;
            set
            {
                _limit = value;
                _returned = 0;
            }
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => _limit >= 0 ? _limit : throw new NotSupportedException();
        public override long Position { get => _returned; set => throw new NotSupportedException(); }

        public void Skip(long bytes)
        {
            if (bytes == 0) return;
            var scratch = new byte[(int)Math.Min(bytes, 1 << 16)];
            while (bytes > 0)
            {
                var n = ReadInner(scratch.AsSpan(0, (int)Math.Min(bytes, scratch.Length)));
                if (n == 0) throw new CheckpointFormatException(path, "storage blob ends early (truncated archive?)", tensorName: tensor, entryName: entry, byteOffset: _blobPosition);
                bytes -= n;
            }
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            if (_limit >= 0) buffer = buffer[..(int)Math.Min(buffer.Length, _limit - _returned)];
            if (buffer.IsEmpty) return 0;
            var n = ReadInner(buffer);
            if (n == 0 && _limit >= 0)
                throw new CheckpointFormatException(path, "storage blob ends early (truncated archive?)", tensorName: tensor, entryName: entry, byteOffset: _blobPosition);
            _returned += n;
            return n;
        }

        private int ReadInner(Span<byte> buffer)
        {
            try
            {
                var n = inner.Read(buffer);
                _blobPosition += n;
                return n;
            }
            catch (InvalidDataException ex)
            {
                throw new CheckpointFormatException(path, $"cannot read storage blob: {ex.Message}", tensorName: tensor, entryName: entry, byteOffset: _blobPosition, innerException: ex);
            }
        }

        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
                foreach (var o in owned) o.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
