using System.Text;
using System.Text.Json;
using MosaicBert.ML;
using MosaicBert.ML.Data;
using MosaicBert.ML.Transforms;

namespace MosaicBert.Hub.Tests;

/// <summary>The featurizer's <c>ModelPath = "hf://org/name"</c>: the same embeddings as the checkpoint directory.</summary>
public sealed class HubFeaturizerTests : IDisposable
{
    private static readonly string[] s_texts = ["the movie was good", "bad plot", "the story was bad and the movie was good"];

    private readonly LoopbackServer _server = new();
    private readonly FakeHub _hub;

    public HubFeaturizerTests() => _hub = new FakeHub(_server);

    public void Dispose() => _server.Dispose();

    public sealed class Row
    {
        public string Sentence1 { get; set; } = "";
    }

    private HuggingFaceHubOptions Hub(string cache, bool offline = false) =>
        new() { Endpoint = _hub.Endpoint, CacheDirectory = cache, Offline = offline, Token = null, Timeout = TimeSpan.FromSeconds(10) };

    private static float[][] Embed(MosaicBertFeaturizerOptions options)
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(s_texts.Select(t => new Row { Sentence1 = t }));
        using var featurizer = ctx.Transforms.MosaicBert("Features", "Sentence1", null, options).Fit(data);
        return [.. featurizer.Transform(data).GetColumn<float[]>("Features")];
    }

    [Fact]
    public void AHubModelEmbedsExactlyAsItsCheckpointDirectory()
    {
        _hub.AddRepo("acme/tiny-bert", TinyModel.Files(), lfs: ["model.safetensors"]);
        var cache = TinyModel.NewFolder();
        var expected = Embed(new MosaicBertFeaturizerOptions { ModelPath = TinyModel.CheckpointDirectory });

        var fromHub = Embed(new MosaicBertFeaturizerOptions { ModelPath = "hf://acme/tiny-bert", Hub = Hub(cache) });
        Assert.Equal(expected, fromHub);

        // Again, offline, from the cache alone: no request.
        var before = _server.Requests.Count;
        Assert.Equal(expected, Embed(new MosaicBertFeaturizerOptions { ModelPath = "hf://acme/tiny-bert@main", Hub = Hub(cache, offline: true) }));
        Assert.Equal(before, _server.Requests.Count);
    }

    [Fact]
    public void TheVocabularyCanComeFromTokenizerJsonOrFromAnotherRepository()
    {
        var vocab = File.ReadAllLines(Path.Combine(TinyModel.CheckpointDirectory, "vocab.txt"));
        var tokenizerJson = JsonSerializer.SerializeToUtf8Bytes(new
        {
            normalizer = new { type = "BertNormalizer", lowercase = true },
            model = new { type = "WordPiece", continuing_subword_prefix = "##", vocab = vocab.Select((t, i) => (t, i)).ToDictionary(p => p.t, p => p.i) },
        });
        _hub.AddRepo("acme/json-tokenizer", new Dictionary<string, byte[]>(TinyModel.Files("config.json", "model.safetensors")) { ["tokenizer.json"] = tokenizerJson }, lfs: ["model.safetensors"]);
        _hub.AddRepo("acme/weights-only", TinyModel.Files("config.json", "model.safetensors"), lfs: ["model.safetensors"]);
        _hub.AddRepo("acme/tokenizer", TinyModel.Files("vocab.txt"));
        var cache = TinyModel.NewFolder();
        var expected = Embed(new MosaicBertFeaturizerOptions { ModelPath = TinyModel.CheckpointDirectory });

        Assert.Equal(expected, Embed(new MosaicBertFeaturizerOptions { ModelPath = "hf://acme/json-tokenizer", Hub = Hub(cache) }));

        // A repository without a tokenizer (like mosaicml/mosaic-bert-base): a clear error, or VocabPath from another repository.
        var e = Assert.Throws<ArgumentException>(() => Embed(new MosaicBertFeaturizerOptions { ModelPath = "hf://acme/weights-only", Hub = Hub(cache) }));
        Assert.Contains("hf://acme/weights-only", e.Message, StringComparison.Ordinal);
        Assert.Contains("set VocabPath", e.Message, StringComparison.Ordinal);
        Assert.Contains("hf://google-bert/bert-base-uncased/vocab.txt", e.Message, StringComparison.Ordinal);
        Assert.Equal(expected, Embed(new MosaicBertFeaturizerOptions { ModelPath = "hf://acme/weights-only", VocabPath = "hf://acme/tokenizer/vocab.txt", Hub = Hub(cache) }));
    }

    [Fact]
    public void AnUnsupportedTokenizerJsonIsAClearError()
    {
        var path = Path.Combine(TinyModel.NewFolder(), "tokenizer.json");
        File.WriteAllText(path, """{"model": {"type": "BPE", "vocab": {}}}""", Encoding.UTF8);
        Assert.Contains("not WordPiece", Assert.Throws<FormatException>(() => HubModelSource.VocabularyFromTokenizerJson(path)).Message, StringComparison.Ordinal);
        File.WriteAllText(path, """{"normalizer": {"type": "BertNormalizer", "lowercase": false}, "model": {"type": "WordPiece", "vocab": {"a": 0}}}""", Encoding.UTF8);
        Assert.Contains("cased", Assert.Throws<FormatException>(() => HubModelSource.VocabularyFromTokenizerJson(path)).Message, StringComparison.Ordinal);
        File.WriteAllText(path, """{"model": {"type": "WordPiece", "vocab": {"a": 0, "b": 2}}}""", Encoding.UTF8);
        Assert.Contains("\"b\"", Assert.Throws<FormatException>(() => HubModelSource.VocabularyFromTokenizerJson(path)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ABadHubPathNamesTheOption()
    {
        var e = Assert.Throws<ArgumentException>(() => Embed(new MosaicBertFeaturizerOptions { ModelPath = "hf://a/b/c/d", Hub = Hub(TinyModel.NewFolder()) }));
        Assert.Contains("ModelPath", e.Message, StringComparison.Ordinal);
        Assert.Contains("hf://a/b/c/d", e.Message, StringComparison.Ordinal);
    }
}
