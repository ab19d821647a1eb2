using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using MosaicBert.Checkpoints;

namespace MosaicBert.Checkpoints.Tests;

/// <summary>A fresh directory under the system temp folder, deleted on dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "mosaicbert-ckpt-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (IOException) { }
    }
}

/// <summary>Expected tensors written by Fixtures/make_fixtures.py.</summary>
internal sealed record ExpectedTensor(string Name, TensorDType DType, long[] Shape, double[] Values);

internal static class Expected
{
    private static readonly Lazy<JsonDocument> s_doc = new(() => JsonDocument.Parse(System.IO.File.ReadAllBytes(SharedData.Fixture("expected.json"))));

    public static IReadOnlyList<ExpectedTensor> For(string file)
    {
        var list = new List<ExpectedTensor>();
        foreach (var t in s_doc.Value.RootElement.GetProperty(file).EnumerateObject())
        {
            Assert.True(TensorDTypeExtensions.TryParseSafeTensorsName(t.Value.GetProperty("dtype").GetString()!, out var dtype));
            list.Add(new ExpectedTensor(t.Name, dtype.Value,
                t.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray(),
                t.Value.GetProperty("values").EnumerateArray().Select(e => e.GetDouble()).ToArray()));
        }
        return list;
    }

    public static ExpectedTensor Get(string file, string name) => For(file).Single(t => t.Name == name);

    /// <summary>Integer values as longs (JSON doubles lose precision above 2^53, so parse the raw text).</summary>
    public static long[] Int64Values(string file, string name) =>
        s_doc.Value.RootElement.GetProperty(file).GetProperty(name).GetProperty("values").EnumerateArray()
            .Select(e => e.GetInt64()).ToArray();
}

/// <summary>Emits protocol-2 pickle opcodes for hand-made (malformed or malicious) data.pkl files.</summary>
internal sealed class PickleBuilder
{
    private readonly MemoryStream _s = new();

    public long Position => _s.Position;

    public PickleBuilder Proto(byte protocol = 2) => Op(0x80).Byte(protocol);
    public PickleBuilder Global(string module, string name) => Op((byte)'c').Raw(Encoding.ASCII.GetBytes(module + "\n" + name + "\n"));
    public PickleBuilder Str(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        Op((byte)'X');
        Span<byte> len = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(len, bytes.Length);
        return Raw(len.ToArray()).Raw(bytes);
    }
    public PickleBuilder Int(long value)
    {
        if (value is >= 0 and < 256) return Op((byte)'K').Byte((byte)value);
        var bytes = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(bytes, value);
        return Op(0x8a).Byte(8).Raw(bytes);
    }
    public PickleBuilder Mark() => Op((byte)'(');
    public PickleBuilder Tuple() => Op((byte)'t');
    public PickleBuilder Tuple1() => Op(0x85);
    public PickleBuilder EmptyTuple() => Op((byte)')');
    public PickleBuilder EmptyDict() => Op((byte)'}');
    public PickleBuilder False() => Op(0x89);
    public PickleBuilder Reduce() => Op((byte)'R');
    public PickleBuilder SetItem() => Op((byte)'s');
    public PickleBuilder SetItems() => Op((byte)'u');
    public PickleBuilder BinPersId() => Op((byte)'Q');
    public PickleBuilder Stop() => Op((byte)'.');
    public PickleBuilder Op(byte op) => Byte(op);

    public PickleBuilder Byte(byte b)
    {
        _s.WriteByte(b);
        return this;
    }

    public PickleBuilder Raw(byte[] bytes)
    {
        _s.Write(bytes);
        return this;
    }

    /// <summary>Tuple of ints.</summary>
    public PickleBuilder IntTuple(params long[] values)
    {
        Mark();
        foreach (var v in values) Int(v);
        return Tuple();
    }

    /// <summary><c>_rebuild_tensor_v2(('storage', torch.&lt;type&gt;, key, 'cpu', numel), offset, size, stride, False, OrderedDict())</c>.</summary>
    public PickleBuilder Tensor(string storageType, string key, long numel, long offset, long[] size, long[] stride)
    {
        Global("torch._utils", "_rebuild_tensor_v2");
        Mark();
        Mark().Str("storage").Global("torch", storageType).Str(key).Str("cpu").Int(numel).Tuple().BinPersId();
        Int(offset).IntTuple(size).IntTuple(stride).False();
        Global("collections", "OrderedDict").EmptyTuple().Reduce();
        Tuple();
        return Reduce();
    }

    public byte[] ToArray() => _s.ToArray();
}

/// <summary>Builds torch-style zip archives: copies of fixtures with entries replaced, removed or added.</summary>
internal static class TorchZip
{
    /// <summary>Writes a zip with the given entries (stored, like torch).</summary>
    public static void Write(string path, IEnumerable<(string Name, byte[] Data)> entries)
    {
        using var file = System.IO.File.Create(path);
        using var zip = new ZipArchive(file, ZipArchiveMode.Create);
        foreach (var (name, data) in entries)
        {
            var entry = zip.CreateEntry(name, CompressionLevel.NoCompression);
            using var s = entry.Open();
            s.Write(data);
        }
    }

    /// <summary>All entries of an existing zip.</summary>
    public static List<(string Name, byte[] Data)> Read(string path)
    {
        using var zip = ZipFile.OpenRead(path);
        return zip.Entries.Select(e =>
        {
            using var s = e.Open();
            var ms = new MemoryStream();
            s.CopyTo(ms);
            return (e.FullName, ms.ToArray());
        }).ToList();
    }

    /// <summary>A minimal archive holding only <paramref name="pickle"/> as archive/data.pkl plus blobs.</summary>
    public static void WriteWithPickle(string path, byte[] pickle, params (string Key, byte[] Data)[] blobs)
    {
        var entries = new List<(string, byte[])> { ("archive/data.pkl", pickle) };
        entries.AddRange(blobs.Select(b => ("archive/data/" + b.Key, b.Data)));
        entries.Add(("archive/version", "3\n"u8.ToArray()));
        Write(path, entries);
    }
}
