using System.Security.Cryptography;
using System.Text;
using MosaicBert.Data.Pretraining;
using MosaicBert.Tokenizers;

namespace MosaicBert.Data.Tests.Pretraining;

public sealed class TokenCacheTests : IDisposable
{
    private readonly PretrainingFixture _f = new();

    public void Dispose() => _f.Dispose();

    private static CancellationToken Ct => PretrainingFixture.Ct;

    private TokenCache Build(string corpusPath, TokenCacheOptions? options = null, BertTokenizer? tokenizer = null) =>
        TokenCache.OpenOrBuild(new TextCorpus(corpusPath), tokenizer ?? _f.Tokenizer,
            options ?? new TokenCacheOptions { CachePath = _f.Path("cache/c.tokens") }, cancellationToken: Ct);

    /// <summary>Short, long (truncated) and pathological documents: long [UNK] words defeat the prefix shortcut,
    /// one has no space at all, one is only control characters (no token).</summary>
    private List<string> MixedDocuments()
    {
        var docs = new List<string> { "the cat sat on the mat .", PretrainingFixture.Words(400, 1), "dog", PretrainingFixture.Words(40, 2) };
        docs.Add(string.Join(' ', Enumerable.Range(0, 30).Select(i => new string((char)('a' + i % 26), 150))) + " " + PretrainingFixture.Words(200, 3));
        docs.Add(new string('q', 5000));
        docs.Add("\u0001\u0002");
        docs.Add(PretrainingFixture.Words(125, 4) + "\n" + PretrainingFixture.Words(300, 5));
        return docs;
    }

    [Fact]
    public void SamplesEqualTheTokenizersTruncatedEncodingOfEachDocument()
    {
        var path = _f.WriteDocuments("corpus/a.txt", MixedDocuments());
        using var cache = Build(path);
        var docs = new TextCorpus(path).ReadDocuments(Ct).ToList();
        var expected = docs.Select(d => _f.Tokenizer.Encode(d.Text, maxLength: 128).InputIds.ToArray()).Where(e => e.Length > 2).ToList();
        Assert.Equal(expected.Count, cache.Count);
        for (int i = 0; i < cache.Count; i++) Assert.Equal(expected[i], cache.GetSample(i));
        Assert.Equal(7, cache.Count); // the control-character document gives no token and no sample
        var r = cache.BuildResult;
        Assert.False(r.Reused);
        Assert.Equal((8L, 1L, 7L), (r.Documents, r.SkippedDocuments, r.Samples));
        Assert.Equal(expected.Sum(e => (long)e.Length), r.Tokens);
        Assert.Equal(docs.Sum(d => (long)Encoding.UTF8.GetByteCount(d.Text)), r.TextBytes);
        Assert.True(r.TextMegabytesPerSecond > 0);
        Assert.Equal(2, cache.BytesPerToken);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheFileIsTheSameForAnyThreadCountAcrossManyBatches(bool packing)
    {
        // 9,000 short documents and some long ones: several read-ahead batches.
        var docs = Enumerable.Range(0, 9000).Select(i => i % 1000 == 0 ? PretrainingFixture.Words(3000, i) : PretrainingFixture.Words(1 + i % 5, i));
        var path = _f.WriteDocuments("corpus/a.txt", docs);
        var files = new[] { 1, 2, 4 }.Select(threads =>
        {
            var cachePath = _f.Path($"cache/t{threads}.tokens");
            using var cache = Build(path, new TokenCacheOptions { CachePath = cachePath, Packing = packing, MaxLength = 64, MaxDegreeOfParallelism = threads });
            Assert.Equal(9000, cache.BuildResult.Documents);
            // Concurrent readers see the same samples as a single one.
            var samples = Enumerable.Range(0, cache.Count).Select(cache.GetSample).ToArray();
            Parallel.For(0, cache.Count, i => Assert.Equal(samples[i], cache.GetSample(i)));
            return File.ReadAllBytes(cachePath);
        }).ToList();
        Assert.Equal(files[0], files[1]);
        Assert.Equal(files[0], files[2]);
    }

    [Fact]
    public void LongDocumentsAreTruncatedTo128WithClsAndSep()
    {
        var path = _f.WriteDocuments("corpus/a.txt", [PretrainingFixture.Words(400, 7), PretrainingFixture.Words(3, 8)]);
        using var cache = Build(path);
        var full = _f.Tokenizer.EncodeToIds(PretrainingFixture.Words(400, 7), addSpecialTokens: false);
        var first = cache.GetSample(0);
        Assert.Equal(128, first.Length);
        Assert.Equal([PretrainingFixture.Cls, .. full.Take(126), PretrainingFixture.Sep], first);
        int shortLength = _f.Tokenizer.EncodeToIds(PretrainingFixture.Words(3, 8)).Count;
        Assert.Equal(shortLength, cache.GetLength(1));
        Assert.Equal(128, cache.MaxLength);
        Assert.Equal(128 + shortLength, cache.TokenCount);
    }

    [Fact]
    public void PackingConcatenatesDocumentsIntoFullSamplesSeparatedBySep()
    {
        var docs = Enumerable.Range(0, 60).Select(i => PretrainingFixture.Words(1 + i * 7 % 23, i)).ToList();
        var path = _f.WriteDocuments("corpus/a.txt", docs);
        const int max = 16;
        using var cache = Build(path, new TokenCacheOptions { MaxLength = max, Packing = true, CachePath = _f.Path("cache/p.tokens") });
        Assert.True(cache.Packing);
        var samples = Enumerable.Range(0, cache.Count).Select(cache.GetSample).ToList();
        foreach (var s in samples)
        {
            Assert.Equal(PretrainingFixture.Cls, s[0]);
            Assert.Equal(PretrainingFixture.Sep, s[^1]);
            Assert.NotEqual(PretrainingFixture.Sep, s[1]);
            for (int t = 1; t < s.Length - 1; t++) Assert.False(s[t] == PretrainingFixture.Sep && s[t + 1] == PretrainingFixture.Sep);
        }
        Assert.All(samples.SkipLast(1), s => Assert.InRange(s.Length, max - 1, max));
        Assert.Contains(samples, s => s.Length == max);
        // The text tokens, in order, are all the documents' tokens; separators fall exactly at document boundaries.
        var stream = new List<int>();
        foreach (var s in samples) stream.AddRange(s[1..^1]);
        var docTokens = docs.Select(d => _f.Tokenizer.EncodeToIds(d, addSpecialTokens: false)).ToList();
        Assert.Equal(docTokens.SelectMany(t => t), stream.Where(t => t != PretrainingFixture.Sep));
        var boundaries = new HashSet<int>();
        int at = 0;
        foreach (var t in docTokens) boundaries.Add(at += t.Count);
        int seen = 0;
        foreach (var t in stream)
        {
            if (t == PretrainingFixture.Sep) Assert.Contains(seen, boundaries);
            else seen++;
        }
    }

    [Fact]
    public void SecondOpenReusesTheCacheAndAChangedCorpusRebuildsIt()
    {
        var path = _f.WriteDocuments("corpus/a.txt", [PretrainingFixture.Words(10, 1), PretrainingFixture.Words(20, 2)]);
        int[] first;
        using (var cache = Build(path)) first = cache.GetSample(1);
        var stamp = File.GetLastWriteTimeUtc(_f.Path("cache/c.tokens"));
        using (var again = Build(path))
        {
            Assert.True(again.BuildResult.Reused);
            Assert.Null(again.BuildResult.RebuildReason);
            Assert.Equal((2L, 2L), (again.BuildResult.Documents, again.BuildResult.Samples));
            Assert.Equal(first, again.GetSample(1));
        }
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(_f.Path("cache/c.tokens")));

        File.AppendAllText(path, "\ncat dog\n");
        var strict = new TokenCacheOptions { CachePath = _f.Path("cache/c.tokens"), OnMismatch = TokenCacheMismatch.Throw };
        var e = Assert.Throws<TokenCacheMismatchException>(() => Build(path, strict));
        Assert.Contains("a.txt changed", e.Message, StringComparison.Ordinal);
        using (var rebuilt = Build(path))
        {
            Assert.False(rebuilt.BuildResult.Reused);
            Assert.Contains("corpus differs", rebuilt.BuildResult.RebuildReason, StringComparison.Ordinal);
            Assert.Equal(3, rebuilt.Count);
        }
        _f.WriteDocuments("corpus/b.txt", ["on the mat"]);
        using var withNewFile = TokenCache.OpenOrBuild(new TextCorpus(_f.Path("corpus")), _f.Tokenizer,
            new TokenCacheOptions { CachePath = _f.Path("cache/c.tokens") }, cancellationToken: Ct);
        Assert.Contains("b.txt added", withNewFile.BuildResult.RebuildReason, StringComparison.Ordinal);
        Assert.Equal(4, withNewFile.Count);
    }

    [Fact]
    public void OtherOptionsOrVocabularyRebuildOrThrowAsChosen()
    {
        var path = _f.WriteDocuments("corpus/a.txt", [PretrainingFixture.Words(30, 1), "zebra zebra"]);
        Build(path).Dispose();
        var cachePath = _f.Path("cache/c.tokens");
        var other = _f.OtherTokenizer(); // "zebra" becomes one token
        var e = Assert.Throws<TokenCacheMismatchException>(() => Build(path, new() { CachePath = cachePath, OnMismatch = TokenCacheMismatch.Throw }, other));
        Assert.Contains("vocabulary/tokenizer differ", e.Message, StringComparison.Ordinal);
        Assert.Contains(cachePath, e.Message, StringComparison.Ordinal);
        Assert.Throws<TokenCacheMismatchException>(() => Build(path, new() { CachePath = cachePath, MaxLength = 16, OnMismatch = TokenCacheMismatch.Throw }));
        Assert.Throws<TokenCacheMismatchException>(() => Build(path, new() { CachePath = cachePath, Packing = true, OnMismatch = TokenCacheMismatch.Throw }));

        using (var rebuilt = Build(path, new() { CachePath = cachePath }, other))
        {
            Assert.Contains("vocabulary/tokenizer differ", rebuilt.BuildResult.RebuildReason, StringComparison.Ordinal);
            Assert.Equal(other.Encode("zebra zebra", maxLength: 128).InputIds, rebuilt.GetSample(1));
            Assert.Equal(4, rebuilt.GetLength(1));
        }
        using var shorter = Build(path, new() { CachePath = cachePath, MaxLength = 16 });
        Assert.Contains("max length 128 in the cache, 16 asked", shorter.BuildResult.RebuildReason, StringComparison.Ordinal);
        Assert.Equal(16, shorter.GetLength(0));
    }

    [Fact]
    public void AFailedOrCancelledBuildLeavesTheOldCacheAndNoPartialFile()
    {
        var dir = _f.Path("corpus");
        _f.WriteDocuments("corpus/a.txt", [PretrainingFixture.Words(30, 1), PretrainingFixture.Words(30, 2)]);
        var cachePath = _f.Path("cache/c.tokens");
        Build(dir).Dispose();
        var before = SHA256.HashData(File.ReadAllBytes(cachePath));

        // A second file that fails to parse half-way through the build.
        var bad = new StringBuilder();
        for (int i = 0; i < 50; i++) bad.Append($"<doc id=\"{i}\" title=\"T\">\nT\n{PretrainingFixture.Words(50, i)}\n</doc>\n");
        bad.Append("text outside a document\n");
        _f.Write("corpus/b.wiki", bad.ToString());
        foreach (int threads in new[] { 1, 2 })
        {
            var e = Assert.Throws<CorpusFormatException>(() => Build(dir, new() { CachePath = cachePath, MaxDegreeOfParallelism = threads }));
            Assert.Contains("b.wiki", e.Message, StringComparison.Ordinal);
            Assert.Equal(before, SHA256.HashData(File.ReadAllBytes(cachePath)));
            Assert.Equal([cachePath], _f.FilesUnder("cache"));
        }

        // Cancelled from the progress callback after the first batch; also on a first build (no file at all).
        File.Delete(_f.Path("corpus/b.wiki"));
        _f.WriteDocuments("corpus/b.txt", ["cat"]);
        foreach (var target in new[] { cachePath, _f.Path("cache/new.tokens") })
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            Assert.ThrowsAny<OperationCanceledException>(() => TokenCache.OpenOrBuild(new TextCorpus(dir), _f.Tokenizer,
                new TokenCacheOptions { CachePath = target }, new CancelOnReport(cts), cts.Token));
        }
        Assert.Equal(before, SHA256.HashData(File.ReadAllBytes(cachePath)));
        Assert.Equal([cachePath], _f.FilesUnder("cache"));
    }

    private sealed class CancelOnReport(CancellationTokenSource cts) : IProgress<TokenCacheProgress>
    {
        public void Report(TokenCacheProgress value) => cts.Cancel();
    }

    [Fact]
    public void AFileThatIsNotACompleteCacheIsRebuiltOrRefused()
    {
        var path = _f.WriteDocuments("corpus/a.txt", [PretrainingFixture.Words(30, 1)]);
        var cachePath = _f.Path("cache/c.tokens");
        _f.Write("cache/c.tokens", "not a cache at all");
        Assert.Throws<InvalidDataException>(() => TokenCache.Open(cachePath));
        Assert.Throws<TokenCacheMismatchException>(() => Build(path, new() { CachePath = cachePath, OnMismatch = TokenCacheMismatch.Throw }));
        using (var cache = Build(path)) Assert.Contains("not a token cache", cache.BuildResult.RebuildReason, StringComparison.Ordinal);

        var bytes = File.ReadAllBytes(cachePath);
        File.WriteAllBytes(cachePath, bytes[..^8]);
        var e = Assert.Throws<InvalidDataException>(() => TokenCache.Open(cachePath));
        Assert.Contains("damaged", e.Message, StringComparison.Ordinal);
        using (var cache = Build(path)) Assert.Contains("damaged", cache.BuildResult.RebuildReason, StringComparison.Ordinal);
        using var opened = TokenCache.Open(cachePath);
        Assert.True(opened.BuildResult.Reused);
        Assert.Equal(_f.Tokenizer.Encode(PretrainingFixture.Words(30, 1), maxLength: 128).InputIds, opened.GetSample(0));
    }

    [Fact]
    public void AnEmptyCorpusOrOneWithoutTokensIsAnErrorAndWritesNothing()
    {
        var empty = _f.Write("corpus/empty.txt", "\n \n\n");
        var e = Assert.Throws<CorpusFormatException>(() => Build(empty));
        Assert.Contains("empty", e.Message, StringComparison.Ordinal);
        var noTokens = _f.Write("corpus2/controls.txt", "\u0001\u0002\n\n\u0003\n");
        e = Assert.Throws<CorpusFormatException>(() => Build(noTokens));
        Assert.Contains("no document gives any token", e.Message, StringComparison.Ordinal);
        Assert.Empty(_f.FilesUnder("cache"));
        Assert.Throws<ArgumentOutOfRangeException>(() => Build(noTokens, new TokenCacheOptions { MaxLength = 2 }));
    }

    [Fact]
    public void LargeVocabulariesStoreInt32Ids()
    {
        var tokens = new List<string> { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" };
        tokens.AddRange(Enumerable.Range(0, 70_000).Select(i => $"w{i}"));
        var tokenizer = BertTokenizer.Create(_f.Write("big-vocab.txt", string.Join('\n', tokens) + "\n"));
        var path = _f.WriteDocuments("corpus/a.txt", ["w0 w69999 w65535 w65536 w123"]);
        using var cache = Build(path, tokenizer: tokenizer);
        Assert.Equal(4, cache.BytesPerToken);
        Assert.Equal([2, 5, 70_004, 65_540, 65_541, 128, 3], cache.GetSample(0));
    }

    [Fact]
    public void TheDefaultPathLiesInAHiddenDirectoryNextToTheCorpusThatTheCorpusSkips()
    {
        var dir = _f.Path("corpus");
        _f.WriteDocuments("corpus/a.txt", [PretrainingFixture.Words(30, 1)]);
        string cachePath;
        using (var cache = TokenCache.OpenOrBuild(new TextCorpus(dir), _f.Tokenizer, cancellationToken: Ct))
        {
            cachePath = cache.Path;
            Assert.Equal(System.IO.Path.Combine(dir, ".mosaicbert-cache"), System.IO.Path.GetDirectoryName(cachePath));
            Assert.EndsWith(".tokens", cachePath, StringComparison.Ordinal);
        }
        Assert.Equal([System.IO.Path.Combine(dir, "a.txt")], new TextCorpus(dir).Files);
        using (var again = TokenCache.OpenOrBuild(new TextCorpus(dir), _f.Tokenizer, cancellationToken: Ct))
        {
            Assert.True(again.BuildResult.Reused);
            Assert.Equal(cachePath, again.Path);
        }
        Assert.NotEqual(cachePath, TokenCache.DefaultPath(new TextCorpus(dir), _f.Tokenizer, new TokenCacheOptions { Packing = true }));
        Assert.NotEqual(cachePath, TokenCache.DefaultPath(new TextCorpus(dir), _f.OtherTokenizer(), new TokenCacheOptions()));
    }

    [Fact]
    public void RealWikipediaFileMatchesTheTokenizerInBothModes()
    {
        var wiki = SharedData.Get("corpus/enwiki-2015-wikiextractor/AA/wiki_00.gz");
        var tokenizer = BertTokenizer.Create(SharedData.BertVocab);
        var docs = new TextCorpus(wiki).ReadDocuments(Ct).ToList();
        using (var cache = TokenCache.OpenOrBuild(new TextCorpus(wiki), tokenizer, new() { CachePath = _f.Path("cache/wiki.tokens") }, cancellationToken: Ct))
        {
            Assert.Equal(docs.Count, cache.Count);
            for (int i = 0; i < docs.Count; i++) Assert.Equal(tokenizer.Encode(docs[i].Text, maxLength: 128).InputIds, cache.GetSample(i));
            Assert.Equal(35, Enumerable.Range(0, cache.Count).Count(i => cache.GetLength(i) == 128)); // 3 stubs are shorter
            Assert.Equal(docs.Sum(d => (long)Encoding.UTF8.GetByteCount(d.Text)), cache.BuildResult.TextBytes);
        }
        using var packed = TokenCache.OpenOrBuild(new TextCorpus(wiki), tokenizer,
            new() { CachePath = _f.Path("cache/wiki-packed.tokens"), Packing = true }, cancellationToken: Ct);
        var expected = docs.SelectMany(d => tokenizer.EncodeToIds(d.Text, addSpecialTokens: false)).ToList();
        var stream = Enumerable.Range(0, packed.Count).SelectMany(i => packed.GetSample(i)[1..^1]).Where(t => t != tokenizer.SeparatorTokenId);
        Assert.Equal(expected, stream);
        Assert.True(packed.Count >= expected.Count / 126);
    }
}
