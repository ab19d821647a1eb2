namespace MosaicBert.Data.Pretraining;

/// <summary>How a corpus becomes token-cache samples.</summary>
public sealed record TokenCacheOptions
{
    /// <summary>Tokens per sample, [CLS] and [SEP] included (128 in the MosaicBERT recipe).</summary>
    public int MaxLength { get; init; } = 128;

    /// <summary>
    /// False (the recipe): one sample per document, its first <c>MaxLength − 2</c> WordPiece tokens in
    /// <c>[CLS] … [SEP]</c>. True: documents are concatenated, <c>[SEP]</c> between two documents, and cut into
    /// samples <c>[CLS] … [SEP]</c> of <see cref="MaxLength"/> tokens — one fewer where a document boundary leaves room
    /// for only its separator, and the very last sample shorter.
    /// </summary>
    public bool Packing { get; init; }

    /// <summary>
    /// Cache file; null for the default, <c>.mosaicbert-cache/&lt;hash&gt;.tokens</c> next to the corpus's first file,
    /// or under the user's local application data when that directory is not writable (see
    /// <see cref="TokenCache.DefaultPath"/>).
    /// </summary>
    public string? CachePath { get; init; }

    /// <summary>What to do when the cache file exists but was built from other data or settings.</summary>
    public TokenCacheMismatch OnMismatch { get; init; } = TokenCacheMismatch.Rebuild;

    /// <summary>Tokenization threads; null for all cores. With 1 the corpus is also read on the calling thread.</summary>
    public int? MaxDegreeOfParallelism { get; init; }
}

/// <summary>What <see cref="TokenCache.OpenOrBuild"/> does with a cache file that does not match.</summary>
public enum TokenCacheMismatch
{
    /// <summary>Build a new cache and replace the file (atomically); the reason is in <see cref="TokenCacheBuildResult.RebuildReason"/>.</summary>
    Rebuild,

    /// <summary>Throw <see cref="TokenCacheMismatchException"/> naming what differs; the file is left alone.</summary>
    Throw,
}

/// <summary>What opening or building a token cache did.</summary>
/// <param name="Path">The cache file.</param>
/// <param name="Reused">True when a matching cache was opened without building.</param>
/// <param name="RebuildReason">Why an existing file was replaced; null when there was none or it was reused.</param>
/// <param name="Documents">Documents read (for a reused cache: when it was built).</param>
/// <param name="SkippedDocuments">Documents that gave no token (e.g. only control characters).</param>
/// <param name="Samples">Samples in the cache.</param>
/// <param name="Tokens">Token ids in the cache, [CLS]/[SEP] included.</param>
/// <param name="TextBytes">UTF-8 bytes of the documents' text (paragraphs joined by '\n'), after decompression.</param>
/// <param name="CorpusBytes">Bytes of the corpus files on disk (compressed size for .gz).</param>
/// <param name="Elapsed">Time of this call (the build, or the open).</param>
public sealed record TokenCacheBuildResult(string Path, bool Reused, string? RebuildReason, long Documents, long SkippedDocuments,
    long Samples, long Tokens, long TextBytes, long CorpusBytes, TimeSpan Elapsed)
{
    /// <summary>Text throughput of the build in MB/s (10^6 bytes); 0 for a reused cache.</summary>
    public double TextMegabytesPerSecond => Reused ? 0 : TextBytes / 1e6 / Math.Max(Elapsed.TotalSeconds, 1e-9);

    /// <summary>Tokens written per second; 0 for a reused cache.</summary>
    public double TokensPerSecond => Reused ? 0 : Tokens / Math.Max(Elapsed.TotalSeconds, 1e-9);
}

/// <summary>Progress of a build, reported after each batch of documents.</summary>
/// <param name="Documents">Documents tokenized so far.</param>
/// <param name="Samples">Samples written so far.</param>
/// <param name="Tokens">Tokens written so far.</param>
/// <param name="CorpusBytesRead">Corpus bytes read from disk so far (compressed for .gz).</param>
/// <param name="CorpusBytesTotal">Corpus bytes on disk in all.</param>
public readonly record struct TokenCacheProgress(long Documents, long Samples, long Tokens, long CorpusBytesRead, long CorpusBytesTotal);

/// <summary>
/// A token cache exists but does not match the corpus, tokenizer or options asked for, and
/// <see cref="TokenCacheMismatch.Throw"/> was chosen. The message names the file and every difference.
/// </summary>
public sealed class TokenCacheMismatchException : IOException
{
    /// <summary>Creates the exception.</summary>
    public TokenCacheMismatchException(string path, IReadOnlyList<string> differences)
        : base($"Token cache '{path}' does not match: {string.Join("; ", differences)}. Delete it, pass another cache path, " +
            $"or use {nameof(TokenCacheMismatch)}.{nameof(TokenCacheMismatch.Rebuild)}.")
    {
        Path = path;
        Differences = differences;
    }

    /// <summary>The cache file.</summary>
    public string Path { get; }

    /// <summary>One line per difference (vocabulary, options, corpus files).</summary>
    public IReadOnlyList<string> Differences { get; }
}
