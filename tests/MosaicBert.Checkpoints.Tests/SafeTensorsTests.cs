using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using MosaicBert.Checkpoints;

namespace MosaicBert.Checkpoints.Tests;

public sealed class SafeTensorsTests
{
    // ---------- round trips ----------

    [Fact]
    public void RoundTrip_EveryDType()
    {
        using var dir = new TempDirectory();
        var path = dir.File("all.safetensors");
        float[] f32 = [0.5f, -1.25f, float.MaxValue, float.Epsilon, float.NegativeInfinity, 0f];
        double[] f64 = [1.0 / 3.0, -1e300, double.Epsilon];
        Half[] f16 = [(Half)1.5f, (Half)(-65504f), Half.Epsilon, (Half)0.1f];
        float[] bf16Source = [1f, -3.140625f, 1e38f, 0.1f];
        long[] i64 = [long.MinValue, -1, 0, long.MaxValue];
        int[] i32 = [int.MinValue, 7, int.MaxValue, -8];
        short[] i16 = [short.MinValue, 1, short.MaxValue];
        sbyte[] i8 = [sbyte.MinValue, 0, sbyte.MaxValue];
        byte[] u8 = [0, 17, 255];
        bool[] flags = [true, false, true, true];
        ushort[] u16 = [0, 65535];
        uint[] u32 = [0, uint.MaxValue];
        ulong[] u64 = [0, 1UL << 40];
        byte[] f8e4m3 = [0x00, 0x38, 0xB8, 0x7E, 0x01]; // 0, 1, -1, 448, 2^-9
        byte[] f8e5m2 = [0x3C, 0xBC, 0x7B]; // 1, -1, 57344

        var writer = new SafeTensorsWriter()
            .SetMetadata("format", "pt")
            .SetMetadata("note", "ünïcødé ok")
            .Add("f32", f32, [2, 3])
            .Add("f64", f64)
            .Add("f16", f16, [2, 2])
            .AddFloat("bf16", TensorDType.BFloat16, bf16Source, [4])
            .Add("i64", i64, [2, 2])
            .Add("i32", i32, [4])
            .Add("i16", i16)
            .Add("i8", i8)
            .Add("u8", u8)
            .Add("bool", flags, [2, 2])
            .Add("u16", u16)
            .Add("u32", u32)
            .Add("u64", u64)
            .AddRaw("f8_e4m3", TensorDType.Float8E4M3, [5], f8e4m3)
            .AddRaw("f8_e5m2", TensorDType.Float8E5M2, [3], f8e5m2)
            .Add("scalar", new[] { 3.5f }, [])
            .Add("empty", Array.Empty<float>(), [0, 3])
            .Add("naïve/ünicode.名前", new[] { 1L });
        writer.Save(path);

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(18, file.Tensors.Count);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal("ünïcødé ok", file.Metadata["note"]);

        Assert.Equal(TensorDType.Float32, file.Tensors["f32"].DType);
        Assert.Equal([2L, 3], file.Tensors["f32"].Shape);
        Assert.Equal(f32, file.ReadFloat32("f32"));
        Assert.Equal(f64, file.ReadFloat64("f64"));
        Assert.Equal(f64.Select(d => (float)d).ToArray(), file.ReadFloat32("f64"));
        Assert.Equal(f16.Select(h => (float)h).ToArray(), file.ReadFloat32("f16"));
        Assert.Equal(MemoryMarshal.AsBytes(f16.AsSpan()).ToArray(), file.ReadBytes("f16"));
        Assert.Equal([1f, -3.140625f, 9.969209968386869e37f, 0.10009765625f], file.ReadFloat32("bf16"));
        Assert.Equal(i64, file.ReadInt64("i64"));
        Assert.Equal(i32.Select(v => (long)v), file.ReadInt64("i32"));
        Assert.Equal(i16.Select(v => (long)v), file.ReadInt64("i16"));
        Assert.Equal(i8.Select(v => (long)v), file.ReadInt64("i8"));
        Assert.Equal(u8.Select(v => (long)v), file.ReadInt64("u8"));
        Assert.Equal([1L, 0, 1, 1], file.ReadInt64("bool"));
        Assert.Equal(u16.Select(v => (long)v), file.ReadInt64("u16"));
        Assert.Equal(u32.Select(v => (long)v), file.ReadInt64("u32"));
        Assert.Equal(u64.Select(v => (long)v), file.ReadInt64("u64"));
        Assert.Equal([0f, 1f, -1f, 448f, MathF.ScaleB(1, -9)], file.ReadFloat32("f8_e4m3"));
        Assert.Equal([1f, -1f, 57344f], file.ReadFloat32("f8_e5m2"));
        Assert.Equal(f8e4m3, file.GetSpan("f8_e4m3").ToArray());
        Assert.Equal([3.5f], file.ReadFloat32("scalar"));
        Assert.Empty(file.Tensors["scalar"].Shape);
        Assert.Equal(1, file.Tensors["scalar"].ElementCount);
        Assert.Empty(file.ReadFloat32("empty"));
        Assert.Equal(0, file.Tensors["empty"].ByteLength);
        Assert.Equal([1L], file.ReadInt64("naïve/ünicode.名前"));

        foreach (var name in file.TensorNames)
        {
            var info = file.Tensors[name];
            Assert.Equal(0, file.GetDataOffset(name) % info.DType.ElementSize()); // natural alignment
            using var s = file.OpenRead(name);
            Assert.Equal(info.ByteLength, s.Length);
        }
    }

    [Fact]
    public void Writer_PadsHeaderToEightBytes_AndOrdersBySizeThenName()
    {
        using var dir = new TempDirectory();
        var path = dir.File("order.safetensors");
        new SafeTensorsWriter()
            .Add("b_u8", new byte[] { 1, 2, 3 })
            .Add("a_f32", new[] { 1f })
            .Add("c_f64", new[] { 2.0 })
            .Add("a_f64", new[] { 3.0 })
            .Add("z_i16", new short[] { 4 })
            .Save(path);

        var bytes = File.ReadAllBytes(path);
        var headerSize = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, headerSize % 8);
        var headerText = Encoding.UTF8.GetString(bytes, 8, (int)headerSize);
        Assert.StartsWith("{", headerText);
        Assert.Equal(headerText.TrimEnd(' ').Length + (headerText.Length - headerText.TrimEnd(' ').Length), headerText.Length);
        using var doc = JsonDocument.Parse(headerText);
        Assert.Equal(["a_f64", "c_f64", "a_f32", "z_i16", "b_u8"], doc.RootElement.EnumerateObject().Select(p => p.Name));

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(["a_f64", "c_f64", "a_f32", "z_i16", "b_u8"], file.TensorNames);
        Assert.Empty(file.Metadata);
        Assert.Equal(8 + headerSize, file.DataStart);
    }

    [Fact]
    public void Reads_Fixture_WrittenByIndependentPythonWriter()
    {
        using var file = SafeTensorsFile.Open(SharedData.Fixture("tensors.safetensors"));
        Assert.Equal("pt", file.Metadata["format"]);
        var expected = Expected.For("tensors.safetensors");
        Assert.Equal(expected.Select(e => e.Name).Order(StringComparer.Ordinal), file.TensorNames.Order(StringComparer.Ordinal));
        foreach (var e in expected)
        {
            var info = file.Tensors[e.Name];
            Assert.Equal(e.DType, info.DType);
            Assert.Equal(e.Shape, info.Shape);
            if (e.DType.IsFloatingPoint()) Assert.Equal(e.Values, file.ReadFloat64(e.Name));
            else Assert.Equal(Expected.Int64Values("tensors.safetensors", e.Name), file.ReadInt64(e.Name));
        }
    }

    [Fact]
    public void Reads_IntoCallerBuffer_AndChecksLength()
    {
        using var dir = new TempDirectory();
        var path = dir.File("buf.safetensors");
        new SafeTensorsWriter().AddFloat("h", TensorDType.Float16, new[] { 1f, 2f, 3f }, [3]).Save(path);
        using var file = SafeTensorsFile.Open(path);
        var buffer = new float[3];
        file.ReadFloat32("h", buffer);
        Assert.Equal([1f, 2f, 3f], buffer);
        Assert.Throws<ArgumentException>(() => file.ReadFloat32("h", new float[2]));
    }

    [Fact]
    public void WrongConversion_MissingName_AndDisposed_Throw()
    {
        using var dir = new TempDirectory();
        var path = dir.File("x.safetensors");
        new SafeTensorsWriter().Add("f", new[] { 1f }).Add("i", new[] { 1L }).Save(path);
        var file = SafeTensorsFile.Open(path);
        var ex = Assert.Throws<InvalidOperationException>(() => file.ReadInt64("f"));
        Assert.Contains("'f'", ex.Message);
        Assert.Throws<InvalidOperationException>(() => file.ReadFloat32("i"));
        var missing = Assert.Throws<KeyNotFoundException>(() => file.ReadFloat32("nope"));
        Assert.Contains("nope", missing.Message);
        Assert.Contains(path, missing.Message);
        file.Dispose();
        Assert.Throws<ObjectDisposedException>(() => file.ReadFloat32("f"));
        file.Dispose(); // idempotent
    }

    [Fact]
    public void U64_AboveLongMax_Overflows()
    {
        using var dir = new TempDirectory();
        var path = dir.File("u64.safetensors");
        new SafeTensorsWriter().Add("u", new[] { ulong.MaxValue }).Save(path);
        using var file = SafeTensorsFile.Open(path);
        Assert.Throws<OverflowException>(() => file.ReadInt64("u"));
    }

    [Theory]
    [InlineData(0f, (ushort)0x0000)]
    [InlineData(1f, (ushort)0x3F80)]
    [InlineData(-2f, (ushort)0xC000)]
    [InlineData(1.00390625f, (ushort)0x3F80)] // exactly halfway between 0x3F80 and 0x3F81 → even
    [InlineData(1.01171875f, (ushort)0x3F82)] // halfway between 0x3F81 and 0x3F82 → even
    [InlineData(float.PositiveInfinity, (ushort)0x7F80)]
    public void BFloat16_RoundsToNearestEven(float value, ushort bits) =>
        Assert.Equal(bits, SafeTensorsWriter.FloatToBFloat16Bits(value));

    [Fact]
    public void Writer_RejectsBadInput()
    {
        var w = new SafeTensorsWriter().Add("a", new[] { 1f });
        Assert.Throws<ArgumentException>(() => w.Add("a", new[] { 2f }));
        Assert.Throws<ArgumentException>(() => w.Add("b", new[] { 1f, 2f }, [3]));
        Assert.Throws<ArgumentException>(() => w.Add("c", new[] { 1f }, [-1]));
        Assert.Throws<ArgumentException>(() => w.Add("__metadata__", new[] { 1f }));
        Assert.Throws<ArgumentException>(() => w.AddRaw("d", TensorDType.Float32, [2], new byte[7]));
        Assert.Throws<ArgumentException>(() => w.AddFloat("e", TensorDType.Int32, new[] { 1f }, [1]));
        Assert.Throws<NotSupportedException>(() => w.Add("f", new[] { 'x' }));
    }

    // ---------- atomic writes ----------

    [Fact]
    public void Save_CallbackThrows_LeavesExistingFileIntact_AndNoTempFiles()
    {
        using var dir = new TempDirectory();
        var path = dir.File("model.safetensors");
        new SafeTensorsWriter().Add("old", new[] { 1f, 2f }).Save(path);
        var before = File.ReadAllBytes(path);

        var writer = new SafeTensorsWriter()
            .Add("a", new[] { 1f })
            .AddStreamed("b", TensorDType.Float32, [1000], s =>
            {
                s.Write(new byte[2000]); // half of the tensor
                throw new IOException("disk on fire");
            });
        var ex = Assert.Throws<IOException>(() => writer.Save(path));
        Assert.Equal("disk on fire", ex.Message);

        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal([path], Directory.GetFiles(dir.Path));
        using var file = SafeTensorsFile.Open(path);
        Assert.Equal([1f, 2f], file.ReadFloat32("old"));
    }

    [Fact]
    public void Save_CallbackWritesWrongLength_Fails_AndLeavesNothing()
    {
        using var dir = new TempDirectory();
        var path = dir.File("new.safetensors");
        var writer = new SafeTensorsWriter().AddStreamed("b", TensorDType.Float32, [2], s => s.Write(new byte[12]));
        var ex = Assert.Throws<InvalidOperationException>(() => writer.Save(path));
        Assert.Contains("'b'", ex.Message);
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void Save_Streamed_And_Overwrite_Succeeds()
    {
        using var dir = new TempDirectory();
        var path = dir.File("m.safetensors");
        new SafeTensorsWriter().Add("old", new[] { 1f }).Save(path);
        new SafeTensorsWriter()
            .AddStreamed("s", TensorDType.Int32, [3], s =>
            {
                foreach (var v in new[] { 5, 6, 7 }) s.Write(BitConverter.GetBytes(v));
            })
            .Save(path);
        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(["s"], file.TensorNames);
        Assert.Equal([5L, 6, 7], file.ReadInt64("s"));
        Assert.Equal([path], Directory.GetFiles(dir.Path));
    }

    // ---------- malformed files ----------

    /// <summary>Writes 8-byte size + header + data.</summary>
    private static void WriteRaw(string path, string header, int dataBytes, ulong? sizeOverride = null, int? truncateTo = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, sizeOverride ?? (ulong)h.Length);
        h.CopyTo(bytes, 8);
        File.WriteAllBytes(path, truncateTo is null ? bytes : bytes[..truncateTo.Value]);
    }

    public static TheoryData<string, int, string?, string> MalformedHeaders() => new()
    {
        // header, data bytes, tensor named (or null), expected text in the message
        { "[1,2]", 0, null, "JSON object" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}", 4, null, "not valid UTF-8 JSON" },
        { "{\"a\": {\"dtype\": \"Q7\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "a", "unknown or unsupported dtype 'Q7'" },
        { "{\"a\": {\"dtype\": \"f32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "a", "unknown or unsupported dtype 'f32'" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4, "a", "negative" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 4]}}", 4, "a", "not an integer" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 4]}}", 4, "a", "not an integer" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 4]}}", 4, "a", "too many elements" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [99999999999999999999], \"data_offsets\": [0, 4]}}", 4, "a", "not an integer" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 4, "a", "needs 8" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", 4, "a", "end before they begin" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4, "a", "two integers" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4, "a", "non-negative" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 18446744073709551615]}}", 4, "a", "non-negative" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 4, "a", "extend past the end" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12, "b", "overlap tensor 'a'" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}", 12, "b", "hole" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8, "a", "hole" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 12, "a", "8 trailing bytes" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8, "a", "duplicate tensor name" },
        { "{\"a\": {\"dtype\": \"F32\", \"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "a", "duplicate key 'dtype'" },
        { "{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "a", "no 'dtype'" },
        { "{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, "a", "no 'shape'" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, "a", "no 'data_offsets'" },
        { "{\"a\": [1, 2]}", 0, "a", "must be an object" },
        { "{\"__metadata__\": {\"k\": 1}}", 0, null, "must be a string" },
        { "{\"__metadata__\": [\"k\"]}", 0, null, "object of strings" },
    };

    [Theory]
    [MemberData(nameof(MalformedHeaders))]
    public void Malformed_Header_Throws_NamingFileAndTensor(string header, int dataBytes, string? tensor, string text)
    {
        using var dir = new TempDirectory();
        var path = dir.File("bad.safetensors");
        WriteRaw(path, header, dataBytes);
        var ex = Assert.Throws<CheckpointFormatException>(() => SafeTensorsFile.Open(path));
        Assert.Equal(path, ex.FilePath);
        Assert.Contains(path, ex.Message);
        Assert.Contains(text, ex.Message);
        Assert.Equal(tensor, ex.TensorName);
        if (tensor is not null) Assert.Contains($"tensor '{tensor}'", ex.Message);
    }

    [Fact]
    public void Malformed_InvalidUtf8Header()
    {
        using var dir = new TempDirectory();
        var path = dir.File("utf8.safetensors");
        var header = Encoding.UTF8.GetBytes("{\"a\u00e9\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [0, 0]}}");
        var i = Array.IndexOf(header, (byte)0xC3);
        header[i] = 0xFF; // break the UTF-8 sequence
        var bytes = new byte[8 + header.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        var ex = Assert.Throws<CheckpointFormatException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("UTF-8", ex.Message);
    }

    [Fact]
    public void Malformed_FileShorterThanSizeField()
    {
        using var dir = new TempDirectory();
        var path = dir.File("short.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        var ex = Assert.Throws<CheckpointFormatException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("too short", ex.Message);
        Assert.Contains(path, ex.Message);
    }

    [Fact]
    public void Malformed_HeaderSizeAbsurd()
    {
        using var dir = new TempDirectory();
        var path = dir.File("huge.safetensors");
        WriteRaw(path, "{}", 0, sizeOverride: 100_000_001);
        var ex = Assert.Throws<CheckpointFormatException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("exceeds the 100000000-byte limit", ex.Message);
        WriteRaw(path, "{}", 0, sizeOverride: ulong.MaxValue);
        Assert.Throws<CheckpointFormatException>(() => SafeTensorsFile.Open(path));
    }

    [Fact]
    public void Malformed_HeaderSizeLargerThanFile()
    {
        using var dir = new TempDirectory();
        var path = dir.File("big.safetensors");
        WriteRaw(path, "{}", 0, sizeOverride: 1000);
        var ex = Assert.Throws<CheckpointFormatException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("larger than the 2 bytes", ex.Message);
    }

    [Fact]
    public void Malformed_TruncatedFile_NamesTheCutTensor()
    {
        using var dir = new TempDirectory();
        var path = dir.File("t.safetensors");
        new SafeTensorsWriter().Add("a", new double[] { 1, 2 }).Add("b", new[] { 1f, 2f, 3f }).Save(path);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^5]);
        var ex = Assert.Throws<CheckpointFormatException>(() => SafeTensorsFile.Open(path));
        Assert.Equal("b", ex.TensorName);
        Assert.Contains("truncated", ex.Message);

        File.WriteAllBytes(path, bytes[..20]); // cut inside the header
        ex = Assert.Throws<CheckpointFormatException>(() => SafeTensorsFile.Open(path));
        Assert.Contains("header size", ex.Message);
    }

    [Fact]
    public void EmptyHeader_NoTensors_IsValid()
    {
        using var dir = new TempDirectory();
        var path = dir.File("empty.safetensors");
        new SafeTensorsWriter().SetMetadata("k", "v").Save(path);
        using var file = SafeTensorsFile.Open(path);
        Assert.Empty(file.TensorNames);
        Assert.Equal("v", file.Metadata["k"]);
    }
}
