namespace MosaicBert.Hub;

/// <summary>The local files of a pretrained model resolved from a hub repository.</summary>
/// <param name="RepoId">The repository.</param>
/// <param name="Revision">The revision asked for.</param>
/// <param name="CommitHash">The commit it resolved to.</param>
/// <param name="Directory">The snapshot folder (<c>snapshots/{commit}</c>): a Hugging Face checkpoint directory.</param>
/// <param name="ConfigPath">config.json.</param>
/// <param name="WeightsPath">model.safetensors, or pytorch_model.bin when the repository has no safetensors file.</param>
/// <param name="VocabularyPath">vocab.txt, else tokenizer.json (a WordPiece tokenizer's vocabulary), else null: the
/// repository carries no tokenizer (mosaicml/mosaic-bert-base uses bert-base-uncased's).</param>
public sealed record PretrainedModelFiles(string RepoId, string Revision, string CommitHash, string Directory, string ConfigPath,
    string WeightsPath, string? VocabularyPath);

/// <summary>
/// <c>FromPretrained</c>-style access to models on a Hugging Face-style hub: resolves the files a MosaicBERT or BERT
/// checkpoint needs (config.json; model.safetensors or pytorch_model.bin; vocab.txt or tokenizer.json) into the
/// Hugging Face cache and returns their paths. All files come from the same commit. With the ML.NET-style API, set
/// <c>ModelPath = "hf://mosaicml/mosaic-bert-base"</c> on the featurizer or trainer options instead.
/// </summary>
public static class PretrainedModels
{
    /// <summary>The weight files tried, in order.</summary>
    public static IReadOnlyList<string> WeightFileNames { get; } = ["model.safetensors", "pytorch_model.bin"];

    /// <summary>The tokenizer files tried, in order.</summary>
    public static IReadOnlyList<string> VocabularyFileNames { get; } = ["vocab.txt", "tokenizer.json"];

    /// <summary>Downloads (or finds in the cache) a model repository's files. Blocks; see <see cref="DownloadAsync(string, string, HuggingFaceHubOptions?, CancellationToken)"/>.</summary>
    public static PretrainedModelFiles Download(string repoId, string revision = HubReference.DefaultRevision, HuggingFaceHubOptions? options = null,
        CancellationToken cancellationToken = default) =>
        DownloadAsync(repoId, revision, options, cancellationToken).GetAwaiter().GetResult();

    /// <summary>Downloads (or finds in the cache) a model repository's files.</summary>
    /// <param name="repoId">"org/name", e.g. "mosaicml/mosaic-bert-base".</param>
    /// <param name="revision">Branch, tag or commit hash.</param>
    /// <param name="options">Endpoint, cache, token, offline mode, progress; null for the environment's defaults.</param>
    /// <param name="cancellationToken">Stops the download (the partial file is kept and resumed next time).</param>
    /// <exception cref="HubDownloadException">See <see cref="HubClient.DownloadFileAsync"/>; also when the repository
    /// has no config.json or no weights file.</exception>
    public static async Task<PretrainedModelFiles> DownloadAsync(string repoId, string revision = HubReference.DefaultRevision,
        HuggingFaceHubOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var client = new HubClient(options);
        return await client.DownloadModelAsync(repoId, revision, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Downloads (or finds in the cache) a model repository's files with this client.</summary>
    public static async Task<PretrainedModelFiles> DownloadModelAsync(this HubClient client, string repoId, string revision = HubReference.DefaultRevision,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        string config, commit;
        try
        {
            (config, commit) = await client.DownloadFileWithCommitAsync(repoId, "config.json", revision, cancellationToken).ConfigureAwait(false);
        }
        catch (HubFileNotFoundException e)
        {
            throw new HubDownloadException($"{repoId}@{revision} has no config.json ({e.Url} answered 404): it is not a Transformers model repository.", e.Url, e.StatusCode, e);
        }
        // The remaining files are asked for at the commit config.json came from, so a push in between cannot mix versions.
        var weights = await FirstPresentAsync(client, repoId, commit, WeightFileNames, cancellationToken).ConfigureAwait(false)
            ?? throw new HubDownloadException(
                $"{repoId}@{revision} has neither {string.Join(" nor ", WeightFileNames)} ({string.Join(", ", WeightFileNames.Select(f => client.GetFileUrl(repoId, f, commit)))} answered 404; sharded checkpoints are not supported).",
                client.GetFileUrl(repoId, WeightFileNames[0], commit));
        var vocab = await FirstPresentAsync(client, repoId, commit, VocabularyFileNames, cancellationToken).ConfigureAwait(false);
        return new PretrainedModelFiles(repoId, revision, commit, Path.GetDirectoryName(config)!, config, weights, vocab);
    }

    private static async Task<string?> FirstPresentAsync(HubClient client, string repoId, string commit, IReadOnlyList<string> names, CancellationToken cancellationToken)
    {
        foreach (var name in names)
        {
            try
            {
                return await client.DownloadFileAsync(repoId, name, commit, cancellationToken).ConfigureAwait(false);
            }
            catch (HubFileNotFoundException)
            {
            }
        }
        return null;
    }
}
