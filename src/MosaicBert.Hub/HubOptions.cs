namespace MosaicBert.Hub;

/// <summary>
/// Where and how hub files are fetched and cached. Every default comes from the environment variables the Hugging Face
/// libraries read, so the same cache and settings are shared with Python's <c>huggingface_hub</c>.
/// </summary>
public sealed class HuggingFaceHubOptions
{
    /// <summary>The default endpoint when HF_ENDPOINT is not set.</summary>
    public const string DefaultEndpoint = "https://huggingface.co";

    /// <summary>The hub's base address; files are read from <c>{Endpoint}/{repo}/resolve/{revision}/{file}</c>.
    /// Default: HF_ENDPOINT, else https://huggingface.co.</summary>
    public string Endpoint { get; set; } = EnvironmentOr("HF_ENDPOINT", DefaultEndpoint).TrimEnd('/');

    /// <summary>The cache folder (holding <c>models--{org}--{name}</c> folders). Default: HF_HUB_CACHE, else
    /// HF_HOME/hub, else ~/.cache/huggingface/hub.</summary>
    public string CacheDirectory { get; set; } = DefaultCacheDirectory();

    /// <summary>The access token sent as <c>Authorization: Bearer</c> to the endpoint (never to the storage host it
    /// redirects to). Default: HF_TOKEN.</summary>
    public string? Token { get; set; } = Environment.GetEnvironmentVariable("HF_TOKEN") is { Length: > 0 } t ? t : null;

    /// <summary>Use only the cache and make no request; a file that is not cached is an error. Default: HF_HUB_OFFLINE
    /// set to 1, true, yes or on.</summary>
    public bool Offline { get; set; } = IsTrue(Environment.GetEnvironmentVariable("HF_HUB_OFFLINE"));

    /// <summary>When every file is cached for the revision, ask the hub whether a branch moved (one HEAD request per
    /// file, as <c>from_pretrained</c> does). Default false: a cached revision is used with no request at all.</summary>
    public bool CheckForUpdates { get; set; }

    /// <summary>Attempts per file when the connection drops mid-file; each attempt resumes where the previous one
    /// stopped (HTTP Range).</summary>
    public int MaxAttempts { get; set; } = 4;

    /// <summary>How long to wait for response headers or for the next bytes of a body.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Receives the bytes downloaded per file (not called for cached files). Called on a thread-pool thread.</summary>
    public IProgress<DownloadProgress>? Progress { get; set; }

    /// <summary>The cache folder implied by HF_HUB_CACHE / HF_HOME.</summary>
    public static string DefaultCacheDirectory()
    {
        if (Environment.GetEnvironmentVariable("HF_HUB_CACHE") is { Length: > 0 } cache) return cache;
        if (Environment.GetEnvironmentVariable("HF_HOME") is { Length: > 0 } home) return Path.Combine(home, "hub");
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x
            ? x : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(xdg, "huggingface", "hub");
    }

    internal HuggingFaceHubOptions Validated()
    {
        if (!Uri.TryCreate(Endpoint, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
            throw new ArgumentException($"Hub endpoint '{Endpoint}' is not an http(s) URL (check HF_ENDPOINT).");
        ArgumentException.ThrowIfNullOrEmpty(CacheDirectory);
        if (MaxAttempts < 1) throw new ArgumentOutOfRangeException(nameof(MaxAttempts), MaxAttempts, "MaxAttempts must be at least 1.");
        if (Timeout <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(Timeout), Timeout, "Timeout must be positive.");
        return this;
    }

    private static string EnvironmentOr(string name, string fallback) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : fallback;

    // huggingface_hub's ENV_VARS_TRUE_VALUES.
    internal static bool IsTrue(string? value) =>
        value?.Trim().ToUpperInvariant() is "1" or "ON" or "YES" or "TRUE";
}

/// <summary>Progress of one file's download.</summary>
/// <param name="FileName">The file (its name in the repository, or the URL's last segment).</param>
/// <param name="BytesDownloaded">Bytes on disk so far, including those of a resumed earlier attempt.</param>
/// <param name="TotalBytes">The file's size, when the server sent it.</param>
public readonly record struct DownloadProgress(string FileName, long BytesDownloaded, long? TotalBytes);
