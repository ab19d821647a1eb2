using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using MosaicBert.Tokenizers;

namespace MosaicBert.Data.Pretraining;

/// <summary>
/// A corpus tokenized once into a memory-mapped file of samples (token ids with [CLS]/[SEP], unpadded), with O(1)
/// random access to sample i. Safe to read from many threads at once.
/// </summary>
/// <remarks>
/// <para>
/// Samples (see <see cref="TokenCacheOptions.Packing"/>): by default one per document, as MosaicBERT trains: the
/// document's text (<see cref="CorpusDocument.Text"/>) encoded exactly as
/// <c>tokenizer.Encode(text, maxLength: MaxLength)</c> does. Documents that give no token are skipped. Samples keep
/// corpus order; shuffling is <see cref="PretrainingSampler"/>'s job.
/// </para>
/// <para>
/// File layout (little-endian): a 112-byte header — magic <c>MBTOKENS</c>, u32 version (1), u32 flags (bit 0 packing,
/// bit 1 ids stored as u16), i32 max length, i32 vocabulary size, u64 tokenizer hash, i64 samples, i64 tokens,
/// i64 documents, i64 skipped documents, i64 text bytes, i64 corpus bytes, i64 offset of the ids, i64 offset of the
/// index, i64 file length, i32 fingerprint length, u32 0 — then the corpus fingerprint (UTF-8 lines
/// <c>full path \t size \t last-write ticks (UTC)</c>), the ids (u16 when the vocabulary has at most 65,536 tokens,
/// else i32) from a 64-byte boundary, and the index, i64[samples + 1] token offsets, from an 8-byte boundary.
/// </para>
/// <para>
/// A build writes <c>path.tmp-&lt;pid&gt;-&lt;guid&gt;</c>, flushes it to disk and renames it over the path, so a
/// reader sees the old cache or the complete new one, never a partial file; a failed or cancelled build deletes its
/// temporary file (a killed process leaves it behind, never read, safe to delete).
/// </para>
/// </remarks>
public sealed class TokenCache : IDisposable
{
    private const int Version = 1;
    private const int FixedHeaderBytes = 112;
    private static ReadOnlySpan<byte> Magic => "MBTOKENS"u8;

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly SafeBuffer _buffer;
    private readonly ulong _ids, _index; // byte positions in the view
    private readonly bool _narrow;

    private TokenCache(string path, Header header, TokenCacheBuildResult result)
    {
        Path = path;
        var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        try
        {
            if (file.Length != header.FileLength)
                throw new InvalidDataException($"Token cache '{path}' is {file.Length} bytes; its header says {header.FileLength}.");
            _map = MemoryMappedFile.CreateFromFile(file, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
        }
        catch
        {
            file.Dispose();
            throw;
        }
        _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        _buffer = _view.SafeMemoryMappedViewHandle;
        ulong origin = (ulong)_view.PointerOffset;
        _ids = origin + (ulong)header.IdsOffset;
        _index = origin + (ulong)header.IndexOffset;
        _narrow = header.Narrow;
        Count = checked((int)header.Samples);
        TokenCount = header.Tokens;
        MaxLength = header.MaxLength;
        Packing = header.Packing;
        VocabSize = header.VocabSize;
        TokenizerHash = header.TokenizerHash;
        BuildResult = result;
        if (Offset(0) != 0 || Offset(Count) != TokenCount)
        {
            Dispose();
            throw new InvalidDataException($"Token cache '{path}' has an inconsistent index.");
        }
    }

    /// <summary>The cache file.</summary>
    public string Path { get; }
    /// <summary>Number of samples (at most <see cref="int.MaxValue"/>: 275 billion tokens at length 128).</summary>
    public int Count { get; }
    /// <summary>Token ids in all samples, [CLS]/[SEP] included.</summary>
    public long TokenCount { get; }
    /// <summary>Maximum tokens per sample.</summary>
    public int MaxLength { get; }
    /// <summary>True when documents were packed into full samples.</summary>
    public bool Packing { get; }
    /// <summary>Size of the vocabulary the ids come from.</summary>
    public int VocabSize { get; }
    /// <summary>Hash of the vocabulary and tokenizer settings the cache was built with.</summary>
    public ulong TokenizerHash { get; }
    /// <summary>Bytes per stored id: 2 or 4.</summary>
    public int BytesPerToken => _narrow ? 2 : 4;
    /// <summary>How this instance came about (reused or built, with counts and throughput).</summary>
    public TokenCacheBuildResult BuildResult { get; }

    /// <summary>Length of sample <paramref name="index"/>.</summary>
    public int GetLength(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
        return (int)(Offset(index + 1) - Offset(index));
    }

    /// <summary>Copies sample <paramref name="index"/> into <paramref name="destination"/>; returns its length.</summary>
    /// <exception cref="ArgumentException">The destination is shorter than the sample.</exception>
    public int CopySample(int index, Span<int> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
        long start = Offset(index);
        int length = (int)(Offset(index + 1) - start);
        if (destination.Length < length)
            throw new ArgumentException($"Sample {index} has {length} tokens; the destination holds {destination.Length}.", nameof(destination));
        var target = destination[..length];
        if (!_narrow)
        {
            _buffer.ReadSpan(_ids + (ulong)start * 4, target);
            return length;
        }
        ushort[]? rented = null;
        Span<ushort> narrow = length <= 1024 ? stackalloc ushort[length] : (rented = ArrayPool<ushort>.Shared.Rent(length)).AsSpan(0, length);
        _buffer.ReadSpan(_ids + (ulong)start * 2, narrow);
        for (int i = 0; i < length; i++) target[i] = narrow[i];
        if (rented is not null) ArrayPool<ushort>.Shared.Return(rented);
        return length;
    }

    /// <summary>Sample <paramref name="index"/> as a new array.</summary>
    public int[] GetSample(int index)
    {
        var ids = new int[GetLength(index)];
        CopySample(index, ids);
        return ids;
    }

    private long Offset(int index) => _buffer.Read<long>(_index + (ulong)index * 8);

    /// <inheritdoc/>
    public void Dispose()
    {
        _view.Dispose();
        _map.Dispose();
    }

    /// <summary>Opens an existing cache without checking it against a corpus (e.g. where the corpus is not present).</summary>
    /// <exception cref="InvalidDataException">The file is not a complete token cache of this format version.</exception>
    public static TokenCache Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var clock = Stopwatch.StartNew();
        var header = ReadHeader(path);
        return new TokenCache(path, header, header.Result(path, reused: true, null, clock.Elapsed));
    }

    /// <summary>
    /// Opens the cache of <paramref name="corpus"/> for <paramref name="tokenizer"/> and the options, building it when
    /// the file is absent. An existing file is reused at once when its tokenizer hash, vocabulary size, max length,
    /// packing flag and corpus fingerprint (every file's full path, size and last-write time) all match; otherwise it
    /// is rebuilt, or <see cref="TokenCacheMismatchException"/> is thrown, as <see cref="TokenCacheOptions.OnMismatch"/>
    /// says. A file that is not a valid cache counts as a mismatch.
    /// </summary>
    /// <exception cref="CorpusFormatException">The corpus is malformed or empty, a document cannot be tokenized, or no
    /// document gives a token.</exception>
    /// <exception cref="TokenCacheMismatchException">The file does not match and OnMismatch is Throw.</exception>
    /// <exception cref="IOException">A corpus file changed during the build (nothing is written; run again).</exception>
    public static TokenCache OpenOrBuild(TextCorpus corpus, BertTokenizer tokenizer, TokenCacheOptions? options = null,
        IProgress<TokenCacheProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        ArgumentNullException.ThrowIfNull(tokenizer);
        options ??= new TokenCacheOptions();
        Validate(options);
        var clock = Stopwatch.StartNew();
        var identity = new Identity(TokenizerHashOf(tokenizer), tokenizer.Vocabulary.Count, options.MaxLength, options.Packing, Fingerprint(corpus));
        string path = System.IO.Path.GetFullPath(options.CachePath ?? DefaultPath(corpus, tokenizer, options));
        string? reason = null;
        if (File.Exists(path))
        {
            List<string> differences;
            Header? header = null;
            try
            {
                header = ReadHeader(path);
                differences = identity.Compare(header);
            }
            catch (InvalidDataException e)
            {
                differences = [e.Message];
            }
            if (differences.Count == 0)
            {
                try
                {
                    return new TokenCache(path, header!, header!.Result(path, reused: true, null, clock.Elapsed));
                }
                catch (InvalidDataException e)
                {
                    differences = [e.Message];
                }
            }
            if (options.OnMismatch == TokenCacheMismatch.Throw) throw new TokenCacheMismatchException(path, differences);
            reason = string.Join("; ", differences);
        }
        var built = Build(corpus, tokenizer, path, options, identity, progress, cancellationToken);
        return new TokenCache(path, built, built.Result(path, reused: false, reason, clock.Elapsed));
    }

    /// <summary>
    /// The default cache file: <c>&lt;directory of the corpus's first file&gt;/.mosaicbert-cache/&lt;hash&gt;.tokens</c>,
    /// where the hash covers the corpus file paths, the tokenizer hash, max length and packing (so different settings
    /// get different files, and a changed corpus file rebuilds the same one). When that directory cannot be written
    /// (a read-only dataset), <c>&lt;local application data&gt;/mosaicbert/token-cache/</c> is used instead. The
    /// <c>.mosaicbert-cache</c> directory is hidden, so <see cref="TextCorpus"/> never reads it as corpus.
    /// </summary>
    public static string DefaultPath(TextCorpus corpus, BertTokenizer tokenizer, TokenCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        var name = new StringBuilder();
        foreach (var f in corpus.Files) name.Append(System.IO.Path.GetFullPath(f)).Append('\n');
        name.Append(CultureInfo.InvariantCulture, $"{TokenizerHashOf(tokenizer):x16}\n{options.MaxLength}\n{options.Packing}");
        var file = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(name.ToString())).AsSpan(0, 10)) + ".tokens";
        var next = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(corpus.Files[0]))!, ".mosaicbert-cache");
        if (IsWritable(next)) return System.IO.Path.Combine(next, file);
        var local = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.Create);
        var root = string.IsNullOrEmpty(local) ? System.IO.Path.GetTempPath() : local;
        return System.IO.Path.Combine(root, "mosaicbert", "token-cache", file);
    }

    private static bool IsWritable(string directory)
    {
        try
        {
            Directory.CreateDirectory(directory);
            using var probe = new FileStream(System.IO.Path.Combine(directory, $".probe-{Environment.ProcessId}-{Guid.NewGuid():N}"),
                FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static void Validate(TokenCacheOptions o)
    {
        if (o.MaxLength is < 3 or > 1 << 20)
            throw new ArgumentOutOfRangeException(nameof(o), $"MaxLength must be in 3..{1 << 20} ([CLS], at least one token, [SEP]), not {o.MaxLength}.");
        if (o.MaxDegreeOfParallelism is < 1)
            throw new ArgumentOutOfRangeException(nameof(o), $"MaxDegreeOfParallelism must be at least 1, not {o.MaxDegreeOfParallelism}.");
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("The token cache format is little-endian.");
    }

    /// <summary>SHA-256 (first 8 bytes) of the vocabulary and every tokenizer setting that changes the ids.</summary>
    internal static ulong TokenizerHashOf(BertTokenizer t)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var pre = t.PreTokenizer;
        hash.AppendData(Encoding.UTF8.GetBytes(string.Join('\u0001', "bert-v1", pre.CleanText, pre.IndividuallyTokenizeCjk,
            pre.RemoveNonSpacingMarks, pre.LowerCase, pre.SplitOnPunctuation, t.SplitOnSpecialTokens, t.UnknownToken,
            t.ContinuingSubwordPrefix, t.MaxInputCharsPerWord, t.ClassificationToken, t.SeparatorToken, t.PaddingToken,
            t.MaskingToken, string.Join('\u0001', t.SpecialTokens.Keys.Order(StringComparer.Ordinal)))));
        foreach (var token in t.Vocabulary.Tokens)
        {
            hash.AppendData(Encoding.UTF8.GetBytes(token));
            hash.AppendData("\n"u8);
        }
        return BinaryPrimitives.ReadUInt64LittleEndian(hash.GetHashAndReset());
    }

    private static string Fingerprint(TextCorpus corpus)
    {
        var sb = new StringBuilder();
        foreach (var f in corpus.Files)
        {
            var info = new FileInfo(f);
            sb.Append(CultureInfo.InvariantCulture, $"{info.FullName}\t{info.Length}\t{info.LastWriteTimeUtc.Ticks}\n");
        }
        return sb.ToString();
    }

    /// <summary>What a cache must have been built from to be reused.</summary>
    private sealed record Identity(ulong TokenizerHash, int VocabSize, int MaxLength, bool Packing, string Fingerprint)
    {
        public List<string> Compare(Header h)
        {
            var d = new List<string>();
            if (h.TokenizerHash != TokenizerHash || h.VocabSize != VocabSize)
                d.Add($"vocabulary/tokenizer differ (cache: {h.VocabSize} tokens, hash {h.TokenizerHash:x16}; asked: {VocabSize} tokens, hash {TokenizerHash:x16})");
            if (h.MaxLength != MaxLength) d.Add($"max length {h.MaxLength} in the cache, {MaxLength} asked");
            if (h.Packing != Packing) d.Add($"packing {(h.Packing ? "on" : "off")} in the cache, {(Packing ? "on" : "off")} asked");
            if (h.Fingerprint != Fingerprint) d.Add("corpus differs: " + DescribeFingerprintChange(h.Fingerprint, Fingerprint));
            return d;
        }

        private static string DescribeFingerprintChange(string cached, string now)
        {
            static Dictionary<string, string> Parse(string f) => f.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(l => l.Split('\t', 2)).ToDictionary(p => p[0], p => p.Length > 1 ? p[1] : "", StringComparer.Ordinal);
            var a = Parse(cached);
            var b = Parse(now);
            var changes = a.Keys.Where(k => !b.ContainsKey(k)).Select(k => $"{k} removed")
                .Concat(b.Keys.Where(k => !a.ContainsKey(k)).Select(k => $"{k} added"))
                .Concat(a.Keys.Where(k => b.TryGetValue(k, out var v) && v != a[k]).Select(k => $"{k} changed (size or time)"))
                .ToList();
            if (changes.Count == 0) return "file order changed";
            return changes.Count <= 3 ? string.Join(", ", changes) : $"{string.Join(", ", changes.Take(3))} and {changes.Count - 3} more";
        }
    }

    private sealed record Header(bool Packing, bool Narrow, int MaxLength, int VocabSize, ulong TokenizerHash, long Samples,
        long Tokens, long Documents, long Skipped, long TextBytes, long CorpusBytes, long IdsOffset, long IndexOffset,
        long FileLength, string Fingerprint)
    {
        public TokenCacheBuildResult Result(string path, bool reused, string? reason, TimeSpan elapsed) =>
            new(path, reused, reason, Documents, Skipped, Samples, Tokens, TextBytes, CorpusBytes, elapsed);

        public byte[] ToBytes()
        {
            var fp = Encoding.UTF8.GetBytes(Fingerprint);
            var b = new byte[FixedHeaderBytes + fp.Length];
            var s = b.AsSpan();
            Magic.CopyTo(s);
            BinaryPrimitives.WriteUInt32LittleEndian(s[8..], Version);
            BinaryPrimitives.WriteUInt32LittleEndian(s[12..], (Packing ? 1u : 0) | (Narrow ? 2u : 0));
            BinaryPrimitives.WriteInt32LittleEndian(s[16..], MaxLength);
            BinaryPrimitives.WriteInt32LittleEndian(s[20..], VocabSize);
            BinaryPrimitives.WriteUInt64LittleEndian(s[24..], TokenizerHash);
            long[] longs = [Samples, Tokens, Documents, Skipped, TextBytes, CorpusBytes, IdsOffset, IndexOffset, FileLength];
            for (int i = 0; i < longs.Length; i++) BinaryPrimitives.WriteInt64LittleEndian(s[(32 + 8 * i)..], longs[i]);
            BinaryPrimitives.WriteInt32LittleEndian(s[104..], fp.Length);
            fp.CopyTo(s[FixedHeaderBytes..]);
            return b;
        }
    }

    private static Header ReadHeader(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        Span<byte> s = stackalloc byte[FixedHeaderBytes];
        if (file.ReadAtLeast(s, s.Length, throwOnEndOfStream: false) < s.Length || !s[..8].SequenceEqual(Magic))
            throw new InvalidDataException($"'{path}' is not a token cache (no MBTOKENS header).");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(s[8..]);
        if (version != Version) throw new InvalidDataException($"'{path}' is token cache format version {version}; this build reads version {Version}.");
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(s[12..]);
        var l = new long[9];
        for (int i = 0; i < l.Length; i++) l[i] = BinaryPrimitives.ReadInt64LittleEndian(s[(32 + 8 * i)..]);
        int fpLength = BinaryPrimitives.ReadInt32LittleEndian(s[104..]);
        if (fpLength < 0 || FixedHeaderBytes + (long)fpLength > file.Length || l[8] != file.Length)
            throw new InvalidDataException($"'{path}' is a damaged token cache ({file.Length} bytes; its header says {l[8]}).");
        var fp = new byte[fpLength];
        file.ReadExactly(fp);
        return new Header((flags & 1) != 0, (flags & 2) != 0, BinaryPrimitives.ReadInt32LittleEndian(s[16..]),
            BinaryPrimitives.ReadInt32LittleEndian(s[20..]), BinaryPrimitives.ReadUInt64LittleEndian(s[24..]),
            l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7], l[8], Encoding.UTF8.GetString(fp));
    }

    // ---------------------------------------------------------------- build

    private static Header Build(TextCorpus corpus, BertTokenizer tokenizer, string path, TokenCacheOptions o, Identity id,
        IProgress<TokenCacheProgress>? progress, CancellationToken ct)
    {
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        string tmp = $"{path}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        int dop = o.MaxDegreeOfParallelism ?? Environment.ProcessorCount;
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = dop, CancellationToken = ct };
        bool narrow = id.VocabSize <= 1 << 16;
        // Truncation needs only the first MaxLength − 2 tokens: tokenizing a prefix of ~8 chars per token (English
        // averages 4–5) instead of the whole document (the shared enwiki sample averages ~3,400 tokens per article) makes the build
        // bound by reading the corpus. A prefix that turns out too short falls back to the whole text.
        int prefixChars = o.Packing ? int.MaxValue : (int)Math.Min(int.MaxValue, 8L * o.MaxLength + 256);
        try
        {
            Header header;
            using (var data = new FileStream(tmp, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 16))
            using (var index = new FileStream(tmp + ".index", FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 16, FileOptions.DeleteOnClose))
            {
                long idsOffset = Align(FixedHeaderBytes + Encoding.UTF8.GetByteCount(id.Fingerprint), 64);
                data.SetLength(idsOffset);
                data.Position = idsOffset;
                var writer = new SampleWriter(data, index, narrow);
                var packer = o.Packing ? new Packer(writer, o.MaxLength, tokenizer.ClassificationTokenId, tokenizer.SeparatorTokenId) : null;
                long documents = 0, skipped = 0, textBytes = 0;
                var batches = ReadBatches(corpus, prefixChars, ct);
                // With several threads, one reads and parses (gunzip, lines, JSON) while the others tokenize.
                if (dop > 1) batches = ReadAhead(batches, ct);
                foreach (var docs in batches)
                {
                    var texts = new string[docs.Count];
                    var cut = new bool[docs.Count];
                    var bytes = new long[docs.Count];
                    if (packer is not null)
                    {
                        // Whole documents: ids only. The batch Encode would also build type ids, special-token masks
                        // and offsets for thousands of tokens per document, ~30% of the time, all thrown away.
                        var ids = new IReadOnlyList<int>[docs.Count];
                        ForEach(docs.Count, parallel, i =>
                        {
                            (texts[i], _, bytes[i]) = Prepare(docs[i], prefixChars);
                            ids[i] = EncodeIds(tokenizer, texts[i], docs[i]);
                        });
                        foreach (var d in ids)
                        {
                            if (d.Count == 0) skipped++;
                            else packer.Add(AsSpan(d));
                        }
                    }
                    else
                    {
                        ForEach(docs.Count, parallel, i => (texts[i], cut[i], bytes[i]) = Prepare(docs[i], prefixChars));
                        var encodings = Encode(tokenizer, texts, docs, o.MaxLength, dop);
                        for (int i = 0; i < encodings.Length; i++)
                        {
                            var ids = encodings[i].InputIds;
                            // A prefix ends at a space, so every word in it is whole and its tokens are exactly the
                            // document's first tokens: once it was truncated it gave the right sample.
                            if (cut[i] && !encodings[i].Truncated) ids = EncodeOne(tokenizer, docs[i].Text, docs[i], o.MaxLength).InputIds;
                            if (ids.Count <= 2) skipped++; // [CLS] [SEP] alone: nothing to learn from
                            else writer.Add(AsSpan(ids));
                        }
                    }
                    documents += docs.Count;
                    textBytes += bytes.Sum();
                    progress?.Report(new TokenCacheProgress(documents, writer.Samples, writer.Tokens, corpus.BytesRead, corpus.TotalBytes));
                }
                ct.ThrowIfCancellationRequested(); // a cancelled build never publishes, even after its last batch
                packer?.Finish();
                if (writer.Samples == 0)
                    throw new CorpusFormatException(string.Join(", ", corpus.Files), null, $"no document gives any token ({documents} document(s) read)");
                long indexOffset = writer.Finish();
                header = new Header(o.Packing, narrow, o.MaxLength, id.VocabSize, id.TokenizerHash, writer.Samples, writer.Tokens,
                    documents, skipped, textBytes, corpus.TotalBytes, idsOffset, indexOffset, data.Length, id.Fingerprint);
                data.Position = 0;
                data.Write(header.ToBytes());
                data.Flush(flushToDisk: true);
            }
            if (Fingerprint(corpus) != id.Fingerprint)
                throw new IOException($"The corpus changed while its token cache was built; nothing was written to '{path}'. Run again.");
            File.Move(tmp, path, overwrite: true);
            return header;
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    private static long Align(long x, int a) => (x + a - 1) / a * a;

    private static ReadOnlySpan<int> AsSpan(IReadOnlyList<int> ids) => ids is int[] a ? a : ids.ToArray();

    /// <summary>Batch encoding on all cores; a document that cannot be encoded is reported by file and line.</summary>
    private static BertEncoding[] Encode(BertTokenizer tokenizer, string[] texts, List<CorpusDocument> docs, int? maxLength, int dop)
    {
        try
        {
            return tokenizer.Encode(texts, maxLength: maxLength, maxDegreeOfParallelism: dop);
        }
        catch (ArgumentException)
        {
            for (int i = 0; i < texts.Length; i++) EncodeOne(tokenizer, texts[i], docs[i], maxLength);
            throw;
        }
    }

    private static IReadOnlyList<int> EncodeIds(BertTokenizer tokenizer, string text, CorpusDocument document)
    {
        try
        {
            return tokenizer.EncodeToIds(text, addSpecialTokens: false);
        }
        catch (ArgumentException e)
        {
            throw new CorpusFormatException(document.Source, document.Line, $"the document cannot be tokenized: {e.Message}", e);
        }
    }

    /// <summary>Parallel.For that rethrows the first failure as itself (callers catch CorpusFormatException).</summary>
    private static void ForEach(int count, ParallelOptions parallel, Action<int> body)
    {
        try
        {
            Parallel.For(0, count, parallel, body);
        }
        catch (AggregateException e)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
    }

    private static BertEncoding EncodeOne(BertTokenizer tokenizer, string text, CorpusDocument document, int? maxLength)
    {
        try
        {
            return tokenizer.Encode(text, maxLength: maxLength);
        }
        catch (ArgumentException e)
        {
            throw new CorpusFormatException(document.Source, document.Line, $"the document cannot be tokenized: {e.Message}", e);
        }
    }

    /// <summary>Documents in batches: enough tokenization work to spread over the cores, small enough that reading
    /// the next batch overlaps tokenizing this one and read-ahead holds little memory.</summary>
    private static IEnumerable<List<CorpusDocument>> ReadBatches(TextCorpus corpus, int prefixChars, CancellationToken ct)
    {
        const long MaxWork = 1 << 20, MaxChars = 4 << 20;
        const int MaxDocuments = 4096;
        var batch = new List<CorpusDocument>();
        long work = 0, chars = 0;
        foreach (var doc in corpus.ReadDocuments(ct))
        {
            long n = doc.Paragraphs.Count - 1;
            foreach (var p in doc.Paragraphs) n += p.Length;
            batch.Add(doc);
            work += Math.Min(n, prefixChars);
            chars += n;
            if (work >= MaxWork || chars >= MaxChars || batch.Count >= MaxDocuments)
            {
                yield return batch;
                (batch, work, chars) = ([], 0, 0);
            }
        }
        if (batch.Count > 0) yield return batch;
    }

    /// <summary>
    /// The text to tokenize (the whole text, or when it is longer than <paramref name="prefixChars"/> the part before
    /// the last ASCII space or newline within that many chars), whether it was cut, and the text's UTF-8 bytes.
    /// </summary>
    private static (string Text, bool Cut, long Bytes) Prepare(CorpusDocument doc, int prefixChars)
    {
        long chars = doc.Paragraphs.Count - 1, bytes = chars;
        foreach (var p in doc.Paragraphs)
        {
            chars += p.Length;
            bytes += Encoding.UTF8.GetByteCount(p);
        }
        if (chars <= prefixChars) return (doc.Text, false, bytes);
        var sb = new StringBuilder(prefixChars);
        foreach (var p in doc.Paragraphs)
        {
            if (sb.Length > 0) sb.Append('\n');
            sb.Append(p, 0, Math.Min(p.Length, Math.Max(0, prefixChars - sb.Length)));
            if (sb.Length >= prefixChars) break;
        }
        for (int i = Math.Min(sb.Length, prefixChars) - 1; i > 0; i--)
            if (sb[i] is ' ' or '\n') return (sb.ToString(0, i), true, bytes);
        return (doc.Text, false, bytes); // no space to cut at: one long word
    }

    /// <summary>Runs <paramref name="source"/> on another thread, at most two items ahead of the consumer.</summary>
    private static IEnumerable<T> ReadAhead<T>(IEnumerable<T> source, CancellationToken ct)
    {
        using var queue = new BlockingCollection<T>(boundedCapacity: 2);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var producer = Task.Run(() =>
        {
            try
            {
                foreach (var item in source) queue.Add(item, stop.Token);
            }
            finally
            {
                queue.CompleteAdding();
            }
        }, CancellationToken.None);
        bool drained = false;
        try
        {
            foreach (var item in queue.GetConsumingEnumerable(stop.Token)) yield return item;
            drained = true;
        }
        finally
        {
            if (!drained)
            {
                // The consumer failed or stopped: unblock the reader and let the consumer's exception propagate.
                stop.Cancel();
                try
                {
                    producer.Wait(CancellationToken.None);
                }
                catch (AggregateException)
                {
                }
            }
        }
        producer.GetAwaiter().GetResult(); // a reader error (malformed file, cancellation) surfaces as itself
    }

    /// <summary>Appends samples: ids to the data file, running token offsets to the index file.</summary>
    private sealed class SampleWriter
    {
        private readonly FileStream _data, _index;
        private readonly bool _narrow;
        private readonly byte[] _buffer = new byte[1 << 20];
        private readonly byte[] _offset = new byte[8];

        public SampleWriter(FileStream data, FileStream index, bool narrow)
        {
            (_data, _index, _narrow) = (data, index, narrow);
            WriteOffset(0);
        }

        public long Samples { get; private set; }
        public long Tokens { get; private set; }

        public void Add(ReadOnlySpan<int> ids)
        {
            int width = _narrow ? 2 : 4;
            for (int start = 0; start < ids.Length;)
            {
                int n = Math.Min(ids.Length - start, _buffer.Length / width);
                var chunk = ids.Slice(start, n);
                if (_narrow)
                {
                    var target = MemoryMarshal.Cast<byte, ushort>(_buffer.AsSpan(0, n * 2));
                    for (int i = 0; i < n; i++) target[i] = (ushort)chunk[i];
                }
                else
                {
                    MemoryMarshal.AsBytes(chunk).CopyTo(_buffer);
                }
                _data.Write(_buffer, 0, n * width);
                start += n;
            }
            Samples++;
            Tokens += ids.Length;
            WriteOffset(Tokens);
        }

        private void WriteOffset(long value)
        {
            BinaryPrimitives.WriteInt64LittleEndian(_offset, value);
            _index.Write(_offset);
        }

        /// <summary>Appends the index (8-byte aligned); returns its byte offset.</summary>
        public long Finish()
        {
            long at = Align(_data.Position, 8);
            _data.Write(new byte[at - _data.Position]);
            _index.Position = 0;
            _index.CopyTo(_data);
            return at;
        }
    }

    /// <summary>
    /// Packs documents into samples <c>[CLS] a… [SEP] b… [SEP]</c> of <c>MaxLength</c> tokens: one [SEP] between two
    /// documents in a sample, documents split across samples. A sample is closed one token short when only the
    /// separator would still fit, so no sample has a [SEP] right after [CLS] or two in a row.
    /// </summary>
    private sealed class Packer(SampleWriter writer, int maxLength, int cls, int sep)
    {
        private readonly int[] _sample = new int[maxLength];
        private int _n;

        public void Add(ReadOnlySpan<int> document)
        {
            if (_n > 1)
            {
                if (_n + 3 > maxLength) Close(); // separator + one token + closing [SEP] do not fit
                else _sample[_n++] = sep;
            }
            foreach (int id in document)
            {
                if (_n == 0) _sample[_n++] = cls;
                _sample[_n++] = id;
                if (_n == maxLength - 1) Close();
            }
        }

        public void Finish()
        {
            if (_n > 1) Close();
        }

        private void Close()
        {
            _sample[_n++] = sep;
            writer.Add(_sample.AsSpan(0, _n));
            _n = 0;
        }
    }
}
