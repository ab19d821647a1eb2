using System.Text;
using System.Text.Json;
using MosaicBert.Hub;
using MosaicBert.Tokenizers;

namespace MosaicBert.ML.Transforms;

/// <summary>
/// Resolves <c>hf://</c> model and vocabulary paths of the MosaicBERT options through the hub cache, and reads the
/// vocabulary of a WordPiece <c>tokenizer.json</c> when a repository has no vocab.txt.
/// </summary>
internal static class HubModelSource
{
    /// <summary>The vocabulary MosaicBERT checkpoints were trained with, named in error messages.</summary>
    internal const string BertBaseUncasedVocab = "hf://google-bert/bert-base-uncased/vocab.txt";

    /// <summary>Downloads (or finds cached) the checkpoint of an <c>hf://org/name[@revision]</c> ModelPath; returns
    /// its snapshot directory and its vocabulary file (null when the repository has none).</summary>
    public static (string Directory, string? Vocabulary) ResolveModel(MLContext context, string modelPath, HuggingFaceHubOptions? hub, string component)
    {
        var reference = Parse(() => HubReference.ParseModel(modelPath), component, "ModelPath");
        var files = PretrainedModels.Download(reference.RepoId, reference.Revision, hub);
        context.WriteLog(ChannelMessageKind.Info, component, $"{modelPath}: commit {files.CommitHash}, {Path.GetFileName(files.WeightsPath)} in {files.Directory}.");
        return (files.Directory, files.VocabularyPath);
    }

    /// <summary>A local path as is; an <c>hf://org/name[@revision]/file</c> VocabPath downloaded (or found cached).</summary>
    public static string? ResolveFile(string? path, HuggingFaceHubOptions? hub, string component)
    {
        if (!HubReference.IsHubPath(path)) return path;
        var reference = Parse(() => HubReference.ParseFile(path!), component, "VocabPath");
        using var client = new HubClient(hub);
        return client.DownloadFileAsync(reference.RepoId, reference.FileName!, reference.Revision).GetAwaiter().GetResult();
    }

    /// <summary>Loads vocab.txt, or the WordPiece vocabulary inside a tokenizer.json.</summary>
    public static BertTokenizer CreateTokenizer(string vocabularyPath) =>
        vocabularyPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase)
            ? BertTokenizer.Create(VocabularyFromTokenizerJson(vocabularyPath))
            : BertTokenizer.Create(vocabularyPath);

    /// <summary>
    /// The vocabulary of a Hugging Face <c>tokenizer.json</c> whose model is WordPiece with "##" continuations and a
    /// lower-casing BERT normalizer (what the featurizer's tokenizer does), as a vocab.txt stream: tokens by id.
    /// </summary>
    /// <exception cref="FormatException">Another tokenizer type, casing or prefix, or ids that are not 0..n-1; the message names the file.</exception>
    internal static WordPieceVocabulary VocabularyFromTokenizerJson(string path)
    {
        var bytes = File.ReadAllBytes(path).AsMemory();
        if (bytes.Span.StartsWith("\uFEFF"u8)) bytes = bytes[3..];
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw new FormatException($"{path}: not valid JSON ({e.Message}).", e);
        }
        using var _ = document;
        var root = document.RootElement;
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new FormatException($"{path}: no \"model\" object; not a Hugging Face tokenizer.json.");
        var type = model.TryGetProperty("type", out var t) ? t.GetString() : null;
        if (type != "WordPiece")
            throw new FormatException($"{path}: the tokenizer model is {type ?? "(no type)"}, not WordPiece; set VocabPath to a BERT vocab.txt.");
        if (model.TryGetProperty("continuing_subword_prefix", out var prefix) && prefix.GetString() != "##")
            throw new FormatException($"{path}: continuing_subword_prefix is '{prefix.GetString()}', not '##'.");
        if (root.TryGetProperty("normalizer", out var normalizer) && normalizer.ValueKind == JsonValueKind.Object &&
            normalizer.TryGetProperty("lowercase", out var lower) && lower.ValueKind == JsonValueKind.False)
            throw new FormatException($"{path}: the tokenizer is cased (normalizer.lowercase is false) but the featurizer lower-cases; set VocabPath to an uncased vocab.txt.");
        if (!model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
            throw new FormatException($"{path}: model.vocab is missing or not an object of token → id.");
        var tokens = new string?[vocab.EnumerateObject().Count()];
        foreach (var entry in vocab.EnumerateObject())
        {
            if (!entry.Value.TryGetInt32(out var id) || id < 0 || id >= tokens.Length || tokens[id] is not null)
                throw new FormatException($"{path}: model.vocab[\"{entry.Name}\"] = {entry.Value} is not a distinct id in 0..{tokens.Length - 1}.");
            if (entry.Name.Contains('\n') || entry.Name.Contains('\r'))
                throw new FormatException($"{path}: model.vocab has a token with a line break (id {id}), which vocab.txt cannot hold.");
            tokens[id] = entry.Name;
        }
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(string.Join('\n', tokens) + "\n"));
        return WordPieceVocabulary.Load(stream, path);
    }

    private static HubReference Parse(Func<HubReference> parse, string component, string option)
    {
        try
        {
            return parse();
        }
        catch (FormatException e)
        {
            throw new ArgumentException($"{component}: {option}: {e.Message}", option, e);
        }
    }
}
