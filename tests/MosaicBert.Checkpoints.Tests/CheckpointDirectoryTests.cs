using MosaicBert.Checkpoints;
using MosaicBert.Checkpoints.Torch;

namespace MosaicBert.Checkpoints.Tests;

public sealed class CheckpointDirectoryTests
{
    private const string Config = """{"hidden_size": 4, "num_hidden_layers": 1, "model_type": "bert", "layer_norm_eps": 1e-12}""";

    [Fact]
    public void Opens_Safetensors_AndConfig()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("config.json"), Config);
        new SafeTensorsWriter().Add("w", new[] { 1f, 2f }).Save(dir.File("model.safetensors"));
        using var ckpt = CheckpointDirectory.Open(dir.Path);
        Assert.Equal(CheckpointFormat.SafeTensors, ckpt.Tensors.Format);
        Assert.Equal(dir.File("model.safetensors"), ckpt.WeightsPath);
        Assert.Equal(4, ckpt.ConfigValues["hidden_size"].GetInt32());
        Assert.Equal("bert", ckpt.Config!.RootElement.GetProperty("model_type").GetString());
        Assert.Equal([1f, 2f], ckpt.Tensors.ReadFloat32("w"));
    }

    [Fact]
    public void Opens_PytorchModelBin_WithoutConfig()
    {
        using var dir = new TempDirectory();
        File.Copy(SharedData.Fixture("tiny_mlm.pt"), dir.File("pytorch_model.bin"));
        using var ckpt = CheckpointDirectory.Open(dir.Path);
        Assert.Equal(CheckpointFormat.TorchZip, ckpt.Tensors.Format);
        Assert.Null(ckpt.Config);
        Assert.Null(ckpt.ConfigPath);
        Assert.Empty(ckpt.ConfigValues);
        Assert.Contains("decoder.weight", ckpt.Tensors.TensorNames);
    }

    [Fact]
    public void Prefers_Safetensors_OverPytorchBin()
    {
        using var dir = new TempDirectory();
        File.Copy(SharedData.Fixture("tiny_mlm.pt"), dir.File("pytorch_model.bin"));
        new SafeTensorsWriter().Add("w", new[] { 1f }).Save(dir.File("model.safetensors"));
        using var ckpt = CheckpointDirectory.Open(dir.Path);
        Assert.IsType<SafeTensorsFile>(ckpt.Tensors);
    }

    [Fact]
    public void Opens_ShardedSafetensors()
    {
        using var dir = new TempDirectory();
        new SafeTensorsWriter().Add("a", new[] { 1f }).Add("b", new[] { 2L }).Save(dir.File("model-00001-of-00002.safetensors"));
        new SafeTensorsWriter().Add("c", new[] { 3.0 }).Save(dir.File("model-00002-of-00002.safetensors"));
        File.WriteAllText(dir.File("model.safetensors.index.json"), """
            {"metadata": {"total_size": 20}, "weight_map": {
              "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
              "c": "model-00002-of-00002.safetensors"}}
            """);
        using var ckpt = CheckpointDirectory.Open(dir.Path);
        var sharded = Assert.IsType<ShardedCheckpoint>(ckpt.Tensors);
        Assert.Equal(2, sharded.Shards.Count);
        Assert.Equal(["a", "b", "c"], ckpt.Tensors.TensorNames.Order());
        Assert.Equal([1f], ckpt.Tensors.ReadFloat32("a"));
        Assert.Equal([2L], ckpt.Tensors.ReadInt64("b"));
        Assert.Equal([3.0], ckpt.Tensors.ReadFloat64("c"));
        Assert.Throws<KeyNotFoundException>(() => ckpt.Tensors.GetInfo("d"));
    }

    [Theory]
    [InlineData("""{"weight_map": {"a": "s1.safetensors"}}""", "does not list", "b")]
    [InlineData("""{"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "z": "s1.safetensors"}}""", "does not hold it", "z")]
    [InlineData("""{"weight_map": {"a": "../s1.safetensors", "b": "s1.safetensors"}}""", "plain file name", "a")]
    [InlineData("""{"weight_map": {"a": "s1.safetensors", "b": "missing.safetensors"}}""", "does not exist", null)]
    [InlineData("""{"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors",}""", "not valid JSON", null)]
    [InlineData("""{"metadata": {}}""", "'weight_map'", null)]
    public void ShardIndex_Inconsistent_Throws(string index, string text, string? tensor)
    {
        using var dir = new TempDirectory();
        new SafeTensorsWriter().Add("a", new[] { 1f }).Add("b", new[] { 2f }).Save(dir.File("s1.safetensors"));
        File.WriteAllText(dir.File("model.safetensors.index.json"), index);
        var ex = Assert.Throws<CheckpointFormatException>(() => CheckpointDirectory.Open(dir.Path));
        Assert.Contains(text, ex.Message);
        Assert.Equal(tensor, ex.TensorName);
        Assert.Equal(dir.File("model.safetensors.index.json"), ex.FilePath);
    }

    [Fact]
    public void ShardedTorchBins_Work()
    {
        using var dir = new TempDirectory();
        File.Copy(SharedData.Fixture("tiny_mlm.pt"), dir.File("pytorch_model-00001-of-00001.bin"));
        File.WriteAllText(dir.File("pytorch_model.bin.index.json"), """
            {"weight_map": {"embeddings.weight": "pytorch_model-00001-of-00001.bin", "norm.weight": "pytorch_model-00001-of-00001.bin",
             "norm.bias": "pytorch_model-00001-of-00001.bin", "decoder.weight": "pytorch_model-00001-of-00001.bin",
             "decoder.bias": "pytorch_model-00001-of-00001.bin"}}
            """);
        using var ckpt = CheckpointDirectory.Open(dir.Path);
        Assert.Equal(5, ckpt.Tensors.Tensors.Count);
        Assert.Equal(ckpt.Tensors.ReadFloat32("embeddings.weight"), ckpt.Tensors.ReadFloat32("decoder.weight"));
    }

    [Fact]
    public void MissingWeights_Or_Directory_Throw()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("config.json"), Config);
        var ex = Assert.Throws<FileNotFoundException>(() => CheckpointDirectory.Open(dir.Path));
        Assert.Contains("model.safetensors", ex.Message);
        Assert.Throws<DirectoryNotFoundException>(() => CheckpointDirectory.Open(dir.File("nope")));
    }

    [Theory]
    [InlineData("{\"hidden_size\": 4,", "not valid JSON")]
    [InlineData("[1, 2]", "JSON object")]
    public void BadConfig_Throws_NamingConfig(string config, string text)
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("config.json"), config);
        new SafeTensorsWriter().Add("w", new[] { 1f }).Save(dir.File("model.safetensors"));
        var ex = Assert.Throws<CheckpointFormatException>(() => CheckpointDirectory.Open(dir.Path));
        Assert.Equal(dir.File("config.json"), ex.FilePath);
        Assert.Contains(text, ex.Message);
    }

    [Fact]
    public void TorchOptions_ArePassedThrough()
    {
        using var dir = new TempDirectory();
        File.Copy(SharedData.Fixture("composer_full.pt"), dir.File("pytorch_model.bin"));
        Assert.Throws<CheckpointFormatException>(() => CheckpointDirectory.Open(dir.Path));
        using var ckpt = CheckpointDirectory.Open(dir.Path, new TorchLoadOptions { AllowUnknownGlobals = true });
        Assert.Contains("decoder.bias", ckpt.Tensors.TensorNames);
    }
}
