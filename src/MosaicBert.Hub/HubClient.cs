using System.Net;

namespace MosaicBert.Hub;

/// <summary>
/// Downloads files of Hugging Face-style model repositories into the Hugging Face cache, the way
/// <c>huggingface_hub.hf_hub_download</c> does: <c>HEAD {endpoint}/{repo}/resolve/{revision}/{file}</c> gives the
/// commit (X-Repo-Commit), the content's id (X-Linked-Etag for LFS files, else ETag) and size; the content is then
/// fetched (following the hub's redirect to its storage host for large files) into <c>blobs/</c>, and
/// <c>snapshots/{commit}/{file}</c> and <c>refs/{revision}</c> are updated. Files already cached for the revision are
/// returned with no request at all (unless <see cref="HuggingFaceHubOptions.CheckForUpdates"/>).
/// </summary>
/// <remarks>Thread-safe; several processes may share a cache (a blob being downloaded is locked).</remarks>
public sealed class HubClient : IDisposable
{
    private readonly HttpDownloader _http;

    /// <summary>Creates a client; options default to the environment's (HF_ENDPOINT, HF_HUB_CACHE/HF_HOME, HF_TOKEN, HF_HUB_OFFLINE).</summary>
    public HubClient(HuggingFaceHubOptions? options = null)
    {
        Options = (options ?? new HuggingFaceHubOptions()).Validated();
        _http = new HttpDownloader(Options.Timeout);
    }

    /// <summary>The settings in use.</summary>
    public HuggingFaceHubOptions Options { get; }

    /// <summary>The URL a file is resolved from: <c>{endpoint}/{repo}/resolve/{revision}/{file}</c>.</summary>
    public string GetFileUrl(string repoId, string fileName, string revision = HubReference.DefaultRevision) =>
        $"{Options.Endpoint}/{repoId}/resolve/{Uri.EscapeDataString(revision)}/{string.Join('/', fileName.Split('/').Select(Uri.EscapeDataString))}";

    /// <summary>The cache folder of a repository (<c>{cache}/models--{org}--{name}</c>).</summary>
    public string GetRepositoryCacheFolder(string repoId) => new HubCache(Options.CacheDirectory, HubReference.ValidateRepoId(repoId)).RepoFolder;

    /// <summary>
    /// Returns the local path of a repository file (<c>snapshots/{commit}/{file}</c> in the cache), downloading it
    /// when it is not cached.
    /// </summary>
    /// <exception cref="HubFileNotFoundException">The repository has no such file at that revision (404).</exception>
    /// <exception cref="HubDownloadException">Private or gated repository (401/403), unknown revision, network
    /// failure after the retries, content that does not match its SHA-256, or offline mode with the file not cached.</exception>
    public async Task<string> DownloadFileAsync(string repoId, string fileName, string revision = HubReference.DefaultRevision,
        CancellationToken cancellationToken = default)
    {
        var (path, _) = await DownloadFileWithCommitAsync(repoId, fileName, revision, cancellationToken).ConfigureAwait(false);
        return path;
    }

    /// <summary>The cached path of a file for a revision, or null (no request is made).</summary>
    public string? TryGetCachedFile(string repoId, string fileName, string revision = HubReference.DefaultRevision)
    {
        var cache = new HubCache(Options.CacheDirectory, HubReference.ValidateRepoId(repoId));
        return cache.ResolveCommit(revision) is { } commit ? cache.TryGetFile(commit, HubReference.ValidateFileName(fileName)) : null;
    }

    /// <summary>As <see cref="DownloadFileAsync"/>, also returning the commit the revision resolved to.</summary>
    internal async Task<(string Path, string Commit)> DownloadFileWithCommitAsync(string repoId, string fileName, string revision,
        CancellationToken cancellationToken)
    {
        HubReference.ValidateRepoId(repoId);
        HubReference.ValidateFileName(fileName);
        ArgumentException.ThrowIfNullOrEmpty(revision);
        var cache = new HubCache(Options.CacheDirectory, repoId);
        var url = GetFileUrl(repoId, fileName, revision);

        if (!Options.CheckForUpdates || Options.Offline)
        {
            if (cache.ResolveCommit(revision) is { } cachedCommit)
            {
                if (cache.TryGetFile(cachedCommit, fileName) is { } cached) return (cached, cachedCommit);
                if (cache.IsKnownMissing(cachedCommit, fileName))
                    throw new HubFileNotFoundException($"{repoId}@{revision} has no file '{fileName}' ({url} answered 404; remembered in {cache.RepoFolder}).", url, fileName);
            }
            if (Options.Offline)
                throw new HubDownloadException(
                    $"Offline mode (HF_HUB_OFFLINE): '{fileName}' of {repoId}@{revision} is not in the cache {cache.RepoFolder}. Download it first with network access (mosaicbert download model {repoId}{(revision == HubReference.DefaultRevision ? "" : " --revision " + revision)}).", url);
        }

        var (response, source) = await _http.SendAsync(HttpMethod.Head, new Uri(url), Options.Token, 0, followAbsoluteRedirects: false, cancellationToken).ConfigureAwait(false);
        string commit, etag;
        long? size;
        Uri download;
        using (response)
        {
            var status = (int)response.StatusCode;
            if (status is < 200 or >= 400 || (status >= 300 && response.Headers.Location is null))
            {
                if (response.StatusCode == HttpStatusCode.NotFound && Header(response, "X-Error-Code") is null or "EntryNotFound"
                    && Header(response, "X-Repo-Commit") is { } missingAt && HubReference.IsCommitHash(missingAt))
                {
                    cache.MarkMissing(missingAt, fileName);
                    cache.WriteRef(revision, missingAt);
                }
                throw DescribeError(response, source, repoId, revision, fileName);
            }
            commit = Header(response, "X-Repo-Commit") ?? throw new HubDownloadException($"{source}: the server sent no X-Repo-Commit header; is {Options.Endpoint} a Hugging Face hub?", url);
            if (!HubReference.IsCommitHash(commit))
                throw new HubDownloadException($"{source}: X-Repo-Commit '{commit}' is not a 40-digit commit hash.", url);
            etag = NormalizeEtag(Header(response, "X-Linked-Etag") ?? response.Headers.ETag?.Tag)
                ?? throw new HubDownloadException($"{source}: the server sent no ETag, so the file cannot be cached.", url);
            size = long.TryParse(Header(response, "X-Linked-Size"), out var linked) ? linked : response.Content.Headers.ContentLength;
            download = status >= 300 ? (response.Headers.Location!.IsAbsoluteUri ? response.Headers.Location : new Uri(source, response.Headers.Location)) : source;
        }

        var pointer = cache.TryGetFile(commit, fileName);
        var blob = cache.BlobPath(etag);
        if (pointer is null)
        {
            if (!File.Exists(blob))
            {
                var partial = blob + ".incomplete";
                try
                {
                    await _http.DownloadAsync(download, Options.Token, partial, blob, size, fileName, Options.Progress, Options.MaxAttempts,
                        (r, u) => DescribeError(r, u, repoId, revision, fileName), cancellationToken).ConfigureAwait(false);
                }
                catch (HubDownloadException e) when (download.ToString() != url && e is not HubFileNotFoundException)
                {
                    throw new HubDownloadException($"{url} (redirected to storage): {e.Message}", url, e.StatusCode, e);
                }
                if (File.Exists(partial))
                {
                    // LFS files are named by their SHA-256: check the content before it enters the cache.
                    if (etag.Length == 64 && IsHex(etag) && HttpDownloader.Sha256(partial) is var actual && actual != etag)
                    {
                        File.Delete(partial);
                        throw new HubDownloadException($"{download}: the content's SHA-256 is {actual} but the hub announced {etag}; the download was discarded, try again.", download.ToString());
                    }
                    MoveIntoPlace(partial, blob);
                }
            }
            pointer = cache.LinkSnapshot(commit, fileName, etag);
        }
        cache.WriteRef(revision, commit);
        return (pointer, commit);
    }

    private static void MoveIntoPlace(string partial, string blob)
    {
        try
        {
            File.Move(partial, blob, overwrite: false);
        }
        catch (IOException) when (File.Exists(blob))
        {
            File.Delete(partial); // another process got there first with the same content id
        }
    }

    private Exception DescribeError(HttpResponseMessage response, Uri url, string repoId, string revision, string fileName)
    {
        var code = Header(response, "X-Error-Code");
        var detail = Header(response, "X-Error-Message") is { } m ? $" The hub says: {m}" : "";
        var status = (int)response.StatusCode;
        var tokenHint = Options.Token is null ? "set HF_TOKEN (or the Token option) to an access token that can read it" : "the token in use (HF_TOKEN) cannot read it";
        return response.StatusCode switch
        {
            HttpStatusCode.NotFound when code is "RevisionNotFound" =>
                new HubDownloadException($"{repoId} has no revision '{revision}' ({url} answered 404).{detail}", url.ToString(), response.StatusCode),
            HttpStatusCode.NotFound when code is "RepoNotFound" =>
                new HubDownloadException($"Repository {repoId} not found ({url} answered 404).{detail}", url.ToString(), response.StatusCode),
            HttpStatusCode.NotFound =>
                new HubFileNotFoundException($"{repoId}@{revision} has no file '{fileName}' ({url} answered 404).{detail}", url.ToString(), fileName),
            HttpStatusCode.Unauthorized =>
                new HubDownloadException($"{url} answered 401 Unauthorized: {repoId} does not exist or is private; {tokenHint}.{detail}", url.ToString(), response.StatusCode),
            HttpStatusCode.Forbidden when code is "GatedRepo" =>
                new HubDownloadException($"{url} answered 403: {repoId} is gated; accept its conditions at {Options.Endpoint}/{repoId} and {tokenHint}.{detail}", url.ToString(), response.StatusCode),
            HttpStatusCode.Forbidden =>
                new HubDownloadException($"{url} answered 403 Forbidden: access to {repoId} is denied; {tokenHint}.{detail}", url.ToString(), response.StatusCode),
            _ => new HubDownloadException($"{url} answered {status} {response.ReasonPhrase}.{detail}", url.ToString(), response.StatusCode),
        };
    }

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? values.FirstOrDefault() :
        response.Content.Headers.TryGetValues(name, out var contentValues) ? contentValues.FirstOrDefault() : null;

    /// <summary>Strips the weak marker and quotes (W/"abc" → abc), as huggingface_hub names blobs.</summary>
    internal static string? NormalizeEtag(string? etag)
    {
        if (string.IsNullOrWhiteSpace(etag)) return null;
        var e = etag.Trim();
        if (e.StartsWith("W/", StringComparison.Ordinal)) e = e[2..];
        e = e.Trim('"');
        return e.Length == 0 || e.IndexOfAny(['/', '\\', '\0']) >= 0 || e is "." or ".." ? null : e;
    }

    private static bool IsHex(string s) => s.All(char.IsAsciiHexDigitLower);

    /// <inheritdoc/>
    public void Dispose() => _http.Dispose();
}
