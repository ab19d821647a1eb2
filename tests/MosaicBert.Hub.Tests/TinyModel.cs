using MosaicBert.Model;
using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Hub.Tests;

/// <summary>A tiny MosaicBERT checkpoint saved by <see cref="PretrainedModel.Save"/> with a small vocabulary, and
/// temporary folders deleted at process exit.</summary>
internal static class TinyModel
{
    private static readonly Lazy<string> s_root = new(() =>
    {
        var root = Directory.CreateTempSubdirectory("mosaicbert-hub-tests-").FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        return root;
    });

    private static readonly Lazy<string> s_checkpoint = new(() =>
    {
        var dir = NewFolder();
        using var backend = new CpuBackend(1);
        var config = new MosaicBertConfig { VocabSize = 128, HiddenSize = 32, NumHiddenLayers = 2, NumAttentionHeads = 2, IntermediateSize = 64 };
        using var model = new MosaicBertModel(config, ModelHeads.MaskedLM, backend);
        model.InitializeWeights(seed: 11);
        PretrainedModel.Save(model, dir);
        var letters = Enumerable.Range('a', 26).Select(c => ((char)c).ToString()).ToArray();
        File.WriteAllLines(Path.Combine(dir, "vocab.txt"),
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "good", "bad", "plot", "story", .. letters, .. letters.Select(l => "##" + l)]);
        return dir;
    });

    /// <summary>config.json, model.safetensors and vocab.txt.</summary>
    public static string CheckpointDirectory => s_checkpoint.Value;

    public static byte[] Read(string name) => File.ReadAllBytes(Path.Combine(CheckpointDirectory, name));

    /// <summary>The checkpoint's files as a hub repository holds them.</summary>
    public static Dictionary<string, byte[]> Files(params string[] names) =>
        (names.Length == 0 ? ["config.json", "model.safetensors", "vocab.txt"] : names).ToDictionary(n => n, Read);

    public static string NewFolder() => Directory.CreateDirectory(Path.Combine(s_root.Value, Guid.NewGuid().ToString("N"))).FullName;
}
