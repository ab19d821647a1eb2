using System.Text;
using MosaicBert.Checkpoints;
using MosaicBert.Checkpoints.Torch;

namespace MosaicBert.Checkpoints.Tests;

public sealed class TorchStateDictTests
{
    private static void AssertMatchesExpected(ICheckpointTensors tensors, string expectedKey)
    {
        var expected = Expected.For(expectedKey);
        Assert.Equal(expected.Select(e => e.Name).Order(StringComparer.Ordinal), tensors.TensorNames.Order(StringComparer.Ordinal));
        foreach (var e in expected)
        {
            var info = tensors.GetInfo(e.Name);
            Assert.Equal(e.DType, info.DType);
            Assert.Equal(e.Shape, info.Shape);
            if (e.DType.IsFloatingPoint())
            {
                Assert.Equal(e.Values, tensors.ReadFloat64(e.Name));
                Assert.Equal(e.Values.Select(v => (float)v).ToArray(), tensors.ReadFloat32(e.Name));
            }
            else
            {
                Assert.Equal(Expected.Int64Values(expectedKey, e.Name), tensors.ReadInt64(e.Name));
            }
            Assert.Equal(info.ByteLength, tensors.ReadBytes(e.Name).LongLength);
        }
    }

    [Fact]
    public void Loads_RealTorchSave_EveryDTypeAndLayout()
    {
        using var sd = TorchStateDict.Load(SharedData.Fixture("tensors.pt"));
        Assert.Equal(CheckpointFormat.TorchZip, sd.Format);
        Assert.Equal("3", sd.Version);
        Assert.False(sd.IsComposerCheckpoint);
        Assert.Equal(
            ["f32", "f64", "f16", "bf16", "i64", "i32", "i16", "i8", "u8", "bool", "transposed", "row_view", "column_view",
             "embed.weight", "decoder.weight", "scalar", "empty", "param"],
            sd.TensorNames);
        AssertMatchesExpected(sd, "tensors.pt");
    }

    [Fact]
    public void Layouts_NonContiguous_Offsets_TiedWeights()
    {
        using var sd = TorchStateDict.Load(SharedData.Fixture("tensors.pt"));
        var baseLayout = sd.GetLayout("f32");
        var transposed = sd.GetLayout("transposed");
        Assert.False(transposed.IsContiguous);
        Assert.Equal([1L, 4], transposed.Strides);
        Assert.Equal(baseLayout.StorageKey, transposed.StorageKey);
        Assert.Equal([0.5f, 4.5f, 8f, -1.25f, -5f, 9.5f, 2f, 6.125f, -10f, 3.75f, 7f, 11.25f], sd.ReadFloat32("transposed"));

        var row = sd.GetLayout("row_view");
        Assert.True(row.IsContiguous);
        Assert.Equal(4, row.StorageOffset);
        Assert.Equal([4.5f, -5f, 6.125f, 7f], sd.ReadFloat32("row_view"));

        var column = sd.GetLayout("column_view");
        Assert.False(column.IsContiguous);
        Assert.Equal(2, column.StorageOffset);
        Assert.Equal([2f, 6.125f, -10f], sd.ReadFloat32("column_view"));

        Assert.Equal(sd.GetLayout("embed.weight").StorageKey, sd.GetLayout("decoder.weight").StorageKey);
        Assert.Equal(sd.ReadFloat32("embed.weight"), sd.ReadFloat32("decoder.weight"));

        Assert.Empty(sd.Tensors["scalar"].Shape);
        Assert.Equal([3.5f], sd.ReadFloat32("scalar"));
        Assert.Equal([0L, 3], sd.Tensors["empty"].Shape);
        Assert.Empty(sd.ReadFloat32("empty"));
        Assert.Equal([1.5f, -2.5f], sd.ReadFloat32("param"));
    }

    [Fact]
    public void Loads_RealModuleStateDict_WithMetadataBuild_AndTiedDecoder()
    {
        using var sd = TorchStateDict.Load(SharedData.Fixture("tiny_mlm.pt"));
        Assert.Equal(["embeddings.weight", "norm.weight", "norm.bias", "decoder.weight", "decoder.bias"], sd.TensorNames);
        AssertMatchesExpected(sd, "tiny_mlm.pt");
        Assert.Equal(sd.GetLayout("embeddings.weight").StorageKey, sd.GetLayout("decoder.weight").StorageKey);
    }

    [Fact]
    public void TorchAndSafeTensorsFixtures_GiveIdenticalBytes()
    {
        using var torch = CheckpointFile.Open(SharedData.Fixture("tensors.pt"));
        using var st = CheckpointFile.Open(SharedData.Fixture("tensors.safetensors"));
        Assert.IsType<TorchStateDict>(torch);
        Assert.IsType<SafeTensorsFile>(st);
        foreach (var name in st.TensorNames)
        {
            Assert.Equal(st.GetInfo(name).Shape, torch.GetInfo(name).Shape);
            Assert.Equal(st.ReadBytes(name), torch.ReadBytes(name));
        }
    }

    [Fact]
    public void ConcurrentReads_AreIndependent()
    {
        using var sd = TorchStateDict.Load(SharedData.Fixture("tensors.pt"));
        var expected = sd.TensorNames.ToDictionary(n => n, n => sd.ReadBytes(n));
        Parallel.For(0, 200, i =>
        {
            var name = sd.TensorNames[i % sd.TensorNames.Count];
            Assert.Equal(expected[name], sd.ReadBytes(name));
        });
    }

    [Fact]
    public void Composer_Plain_LoadsModelState_AndStripsPrefix()
    {
        using var sd = TorchStateDict.Load(SharedData.Fixture("composer_plain.pt"));
        Assert.True(sd.IsComposerCheckpoint);
        AssertMatchesExpected(sd, "composer.pt");

        using var keep = TorchStateDict.Load(SharedData.Fixture("composer_plain.pt"), new TorchLoadOptions { StripComposerModelPrefix = false });
        Assert.All(keep.TensorNames, n => Assert.StartsWith("model.", n));
    }

    [Fact]
    public void Composer_Full_RefusesNumpyGlobal_UnlessOpaqueAllowed()
    {
        var path = SharedData.Fixture("composer_full.pt");
        var ex = Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path));
        Assert.Contains("numpy.core.multiarray._reconstruct", ex.Message);
        Assert.Equal("composer_full/data.pkl", ex.EntryName);
        Assert.NotNull(ex.ByteOffset);
        Assert.Contains(path, ex.Message);

        using var sd = TorchStateDict.Load(path, new TorchLoadOptions { AllowUnknownGlobals = true });
        Assert.True(sd.IsComposerCheckpoint);
        AssertMatchesExpected(sd, "composer.pt");
    }

    [Fact]
    public void Legacy_Format_IsRejectedClearly()
    {
        var path = SharedData.Fixture("legacy.pt");
        var ex = Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path));
        Assert.Contains("legacy torch.save format (pre-1.6) is not supported; re-save with torch>=1.6", ex.Message);
        Assert.Contains(path, ex.Message);
        Assert.Throws<CheckpointFormatException>(() => CheckpointFile.Open(path));
    }

    // ---------- malicious pickles: refused, nothing executed ----------

    public static TheoryData<string, string, string> MaliciousGlobals() => new()
    {
        { "os", "system", "os.system" },
        { "posix", "system", "posix.system" },
        { "builtins", "eval", "builtins.eval" },
        { "__builtin__", "eval", "builtins.eval" },
        { "builtins", "exec", "builtins.exec" },
        { "subprocess", "Popen", "subprocess.Popen" },
        { "torch", "load", "torch.load" },
        { "torch._utils", "_rebuild_device_tensor_from_numpy", "torch._utils._rebuild_device_tensor_from_numpy" },
    };

    [Theory]
    [MemberData(nameof(MaliciousGlobals))]
    public void MaliciousGlobal_WithReduce_IsRefused_WithoutExecuting(string module, string name, string reported)
    {
        using var dir = new TempDirectory();
        var marker = dir.File("pwned");
        var p = new PickleBuilder().Proto();
        var globalOffset = p.Position;
        var pickle = p.Global(module, name).Str($"touch {marker}").Tuple1().Reduce().Stop().ToArray();
        var path = dir.File("evil.pt");
        TorchZip.WriteWithPickle(path, pickle);

        var ex = Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path));
        Assert.Contains($"global '{reported}' is not on the allow-list", ex.Message);
        Assert.Equal(globalOffset, ex.ByteOffset);
        Assert.Equal("archive/data.pkl", ex.EntryName);
        Assert.Contains(path, ex.Message);
        Assert.False(File.Exists(marker));
        // Even the tolerant mode never executes: the call becomes an inert placeholder and no tensors are found.
        Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path, new TorchLoadOptions { AllowUnknownGlobals = true }));
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void MaliciousGlobal_HiddenAfterTensors_IsRefused_AtItsOffset()
    {
        using var dir = new TempDirectory();
        var p = new PickleBuilder().Proto().Global("collections", "OrderedDict").EmptyTuple().Reduce().Mark();
        p.Str("w").Tensor("FloatStorage", "0", 2, 0, [2], [1]);
        p.Str("evil");
        var offset = p.Position;
        p.Op(0x8c).Byte(2).Raw("os"u8.ToArray()).Op(0x8c).Byte(6).Raw("system"u8.ToArray()).Op(0x93); // STACK_GLOBAL
        p.Str("id").Tuple1().Reduce().SetItems().Stop();
        var path = dir.File("evil2.pt");
        TorchZip.WriteWithPickle(path, p.ToArray(), ("0", new byte[8]));
        var ex = Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path));
        Assert.Contains("os.system", ex.Message);
        Assert.Equal(offset + 12, ex.ByteOffset); // the STACK_GLOBAL opcode after the two strings
    }

    [Theory]
    [InlineData((byte)'i', "0x69")] // INST: instantiates a class
    [InlineData((byte)'o', "0x6f")] // OBJ
    [InlineData((byte)'P', "0x50")] // PERSID (text)
    [InlineData((byte)0x82, "0x82")] // EXT1
    public void UnsupportedOpcodes_AreRefused(byte opcode, string reported)
    {
        using var dir = new TempDirectory();
        var path = dir.File("op.pt");
        TorchZip.WriteWithPickle(path, new PickleBuilder().Proto().Mark().Op(opcode).Stop().ToArray());
        var ex = Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path));
        Assert.Contains($"opcode {reported}", ex.Message);
        Assert.Equal(3, ex.ByteOffset);
    }

    [Fact]
    public void NonCallableAllowListedGlobal_IsRefused()
    {
        using var dir = new TempDirectory();
        var path = dir.File("call.pt");
        TorchZip.WriteWithPickle(path, new PickleBuilder().Proto().Global("torch", "FloatStorage").Str("x").Tuple1().Reduce().Stop().ToArray());
        var ex = Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path));
        Assert.Contains("not callable", ex.Message);
    }

    // ---------- damaged archives ----------

    [Fact]
    public void TruncatedZip_Throws()
    {
        using var dir = new TempDirectory();
        var bytes = File.ReadAllBytes(SharedData.Fixture("tensors.pt"));
        var path = dir.File("cut.pt");
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var ex = Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path));
        Assert.Contains("not a valid zip archive", ex.Message);
        Assert.Contains(path, ex.Message);
    }

    [Fact]
    public void EmptyAndGarbageFiles_Throw()
    {
        using var dir = new TempDirectory();
        var path = dir.File("junk.bin");
        File.WriteAllBytes(path, []);
        Assert.Contains("empty", Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path)).Message);
        File.WriteAllBytes(path, Encoding.ASCII.GetBytes("hello world, not a checkpoint"));
        Assert.Contains("not a torch.save zip archive", Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path)).Message);
    }

    private static string Rewrite(TempDirectory dir, Func<List<(string Name, byte[] Data)>, List<(string Name, byte[] Data)>> edit)
    {
        var path = dir.File("edited.pt");
        TorchZip.Write(path, edit(TorchZip.Read(SharedData.Fixture("tensors.pt"))));
        return path;
    }

    [Fact]
    public void Rewritten_Unchanged_StillLoads()
    {
        using var dir = new TempDirectory();
        using var sd = TorchStateDict.Load(Rewrite(dir, e => e));
        AssertMatchesExpected(sd, "tensors.pt");
    }

    [Fact]
    public void MissingStorageEntry_Throws_NamingIt()
    {
        using var dir = new TempDirectory();
        var path = Rewrite(dir, e => e.Where(x => x.Name != "tensors/data/3").ToList());
        var ex = Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path));
        Assert.Equal("tensors/data/3", ex.EntryName);
        Assert.Contains("has no blob", ex.Message);
    }

    [Fact]
    public void StorageBlobOfWrongSize_Throws()
    {
        using var dir = new TempDirectory();
        var path = Rewrite(dir, e => e.Select(x => x.Name == "tensors/data/0" ? (x.Name, x.Data[..^4]) : x).ToList());
        var ex = Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path));
        Assert.Equal("tensors/data/0", ex.EntryName);
        Assert.Contains("bytes but its blob is", ex.Message);
    }

    [Fact]
    public void MissingPickle_Throws()
    {
        using var dir = new TempDirectory();
        var path = Rewrite(dir, e => e.Where(x => !x.Name.EndsWith("data.pkl")).ToList());
        Assert.Contains("no '<prefix>/data.pkl'", Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path)).Message);
    }

    [Fact]
    public void TruncatedPickle_Throws()
    {
        using var dir = new TempDirectory();
        var path = Rewrite(dir, e => e.Select(x => x.Name.EndsWith("data.pkl") ? (x.Name, x.Data[..(x.Data.Length / 2)]) : x).ToList());
        var ex = Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path));
        Assert.Equal("tensors/data.pkl", ex.EntryName);
        Assert.Contains("truncated", ex.Message);
    }

    [Theory]
    [InlineData("little\n", null)]
    [InlineData("little", null)]
    [InlineData("big", "big-endian")]
    [InlineData("middle", "unknown byte order")]
    public void ByteOrderEntry_IsChecked(string content, string? error)
    {
        using var dir = new TempDirectory();
        var path = Rewrite(dir, e => [.. e, ("tensors/byteorder", Encoding.ASCII.GetBytes(content))]);
        if (error is null)
        {
            using var sd = TorchStateDict.Load(path);
            Assert.Equal([1.5f, -2.5f], sd.ReadFloat32("param"));
        }
        else
        {
            var ex = Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path));
            Assert.Contains(error, ex.Message);
            Assert.Equal("tensors/byteorder", ex.EntryName);
        }
    }

    // ---------- hand-made pickles ----------

    private static string WriteStateDict(TempDirectory dir, Action<PickleBuilder> items, params (string Key, byte[] Data)[] blobs)
    {
        var p = new PickleBuilder().Proto().Global("collections", "OrderedDict").EmptyTuple().Reduce().Mark();
        items(p);
        p.SetItems().Stop();
        var path = dir.File("hand.pt");
        TorchZip.WriteWithPickle(path, p.ToArray(), blobs);
        return path;
    }

    private static byte[] Floats(params float[] values) => values.SelectMany(BitConverter.GetBytes).ToArray();

    [Fact]
    public void HandMade_ViewBeyondStorage_Throws_NamingTensor()
    {
        using var dir = new TempDirectory();
        var path = WriteStateDict(dir, p => p.Str("too.big").Tensor("FloatStorage", "0", 4, 1, [2, 2], [2, 1]), ("0", Floats(1, 2, 3, 4)));
        var ex = Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path));
        Assert.Equal("too.big", ex.TensorName);
        Assert.Contains("reaches element 4", ex.Message);
    }

    [Fact]
    public void HandMade_NegativeSizeOrStride_Throws()
    {
        using var dir = new TempDirectory();
        var path = WriteStateDict(dir, p => p.Str("neg").Tensor("FloatStorage", "0", 4, 0, [-2], [1]), ("0", Floats(1, 2, 3, 4)));
        Assert.Equal("neg", Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path)).TensorName);
        path = WriteStateDict(dir, p => p.Str("neg").Tensor("FloatStorage", "0", 4, 3, [2], [-1]), ("0", Floats(1, 2, 3, 4)));
        Assert.Contains("negative stride", Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path)).Message);
    }

    [Fact]
    public void HandMade_ExpandedStrideZero_And_ReversedInnerOrder_Materialise()
    {
        using var dir = new TempDirectory();
        var path = WriteStateDict(dir, p =>
        {
            p.Str("expanded").Tensor("FloatStorage", "0", 4, 1, [3, 2], [0, 1]);
            p.Str("cols").Tensor("FloatStorage", "0", 4, 0, [2, 2], [1, 2]);
            p.Str("same").Tensor("FloatStorage", "0", 4, 0, [4], [1]);
        }, ("0", Floats(1, 2, 3, 4)));
        using var sd = TorchStateDict.Load(path);
        Assert.Equal([2f, 3f, 2f, 3f, 2f, 3f], sd.ReadFloat32("expanded"));
        Assert.Equal([1f, 3f, 2f, 4f], sd.ReadFloat32("cols"));
        Assert.Equal([1f, 2f, 3f, 4f], sd.ReadFloat32("same"));
    }

    [Fact]
    public void HandMade_StorageDeclaredTwiceDifferently_Throws()
    {
        using var dir = new TempDirectory();
        var path = WriteStateDict(dir, p =>
        {
            p.Str("a").Tensor("FloatStorage", "0", 2, 0, [2], [1]);
            p.Str("b").Tensor("LongStorage", "0", 1, 0, [1], [1]);
        }, ("0", new byte[8]));
        Assert.Contains("declared twice", Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path)).Message);
    }

    [Fact]
    public void HandMade_StorageKeyWithPath_IsRefused()
    {
        using var dir = new TempDirectory();
        var path = WriteStateDict(dir, p => p.Str("a").Tensor("FloatStorage", "../x", 1, 0, [1], [1]));
        Assert.Contains("invalid storage key", Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path)).Message);
    }

    [Fact]
    public void HandMade_TopLevelNotADict_Throws()
    {
        using var dir = new TempDirectory();
        var path = dir.File("list.pt");
        TorchZip.WriteWithPickle(path, new PickleBuilder().Proto().Op((byte)']').Stop().ToArray());
        Assert.Contains("not a dict of tensors", Assert.Throws<CheckpointFormatException>(() => TorchStateDict.Load(path)).Message);
    }

    [Fact]
    public void HandMade_RebuildTensorV3_WithDType()
    {
        using var dir = new TempDirectory();
        var p = new PickleBuilder().Proto().EmptyDict().Str("h");
        p.Global("torch._utils", "_rebuild_tensor_v3").Mark();
        p.Mark().Str("storage").Global("torch", "UntypedStorage").Str("0").Str("cpu").Int(6).Tuple().BinPersId();
        p.Int(1).IntTuple(2).IntTuple(1).False().Global("collections", "OrderedDict").EmptyTuple().Reduce();
        p.Global("torch", "uint16").Tuple().Reduce().SetItem().Stop();
        var path = dir.File("v3.pt");
        TorchZip.WriteWithPickle(path, p.ToArray(), ("0", [1, 0, 2, 0, 0xFF, 0xFF]));
        using var sd = TorchStateDict.Load(path);
        Assert.Equal(TensorDType.UInt16, sd.Tensors["h"].DType);
        Assert.Equal([2L, 65535], sd.ReadInt64("h"));
    }

    [Fact]
    public void Disposed_Throws()
    {
        var sd = TorchStateDict.Load(SharedData.Fixture("tiny_mlm.pt"));
        sd.Dispose();
        Assert.Throws<ObjectDisposedException>(() => sd.ReadFloat32("norm.bias"));
    }
}
