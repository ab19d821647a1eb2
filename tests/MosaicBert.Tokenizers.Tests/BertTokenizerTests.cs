using System.Text;

namespace MosaicBert.Tokenizers.Tests;

/// <summary>Behaviour beyond the parity fixture: templates, truncation rules, batches, decoding, errors.</summary>
public sealed class BertTokenizerTests
{
    // A tiny vocabulary whose ids are easy to read.
    private static readonly string[] s_tiny =
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "a", "b", "c", "##b", ",", "!", "hello", "world", "é", "e"];

    private static BertTokenizer Tiny(BertOptions? options = null) =>
        BertTokenizer.Create(WordPieceVocabulary.FromTokens(s_tiny), options);

    private static BertTokenizer Real() => BertTokenizer.Create(SharedData.BertVocab);

    [Fact]
    public void GreedyLongestMatchFirstWithContinuations()
    {
        var t = Tiny();
        Assert.Equal(new[] { 2, 5, 6, 7, 3 }, t.EncodeToIds("unaffable"));
        // "unaffablex" has no complete split: the whole word is [UNK], spanning it.
        var tokens = t.EncodeToTokens("unaffablex hello");
        Assert.Equal(new[] { 1, 14 }, tokens.Select(x => x.Id));
        Assert.Equal(0..10, tokens[0].Offset);
        Assert.Equal(11..16, tokens[1].Offset);
    }

    [Fact]
    public void WordsOverMaxInputCharsBecomeUnknown()
    {
        var t = Tiny(new BertOptions { MaxInputCharsPerWord = 3 });
        Assert.Equal(new[] { 8, 11, 11 }, t.EncodeToIds("abb", addSpecialTokens: false));
        Assert.Equal(new[] { 1 }, t.EncodeToIds("abbb", addSpecialTokens: false));
    }

    [Fact]
    public void AccentsAreStrippedButOffsetsPointAtTheOriginalCharacters()
    {
        var t = Tiny();
        // "É" (precomposed) and "E\u0301" (decomposed) both become "e". Offsets point at the original chars the
        // token's chars came from: all of "É", but only "E" of "E\u0301" since the mark was dropped (as in HF).
        var tokens = t.EncodeToTokens("É E\u0301");
        Assert.Equal(new[] { 17, 17 }, tokens.Select(x => x.Id));
        Assert.Equal(0..1, tokens[0].Offset);
        Assert.Equal(2..3, tokens[1].Offset);
        var cased = Tiny(new BertOptions { LowerCaseBeforeTokenization = false });
        Assert.Equal(new[] { 16 }, cased.EncodeToIds("é", addSpecialTokens: false));
    }

    [Fact]
    public void SpecialTokensInTextAreKeptWhole()
    {
        var t = Tiny();
        Assert.Equal(new[] { 8, 4, 9 }, t.EncodeToIds("a[MASK]b", addSpecialTokens: false));
        var noSplit = Tiny(new BertOptions { SplitOnSpecialTokens = false });
        Assert.DoesNotContain(4, noSplit.EncodeToIds("a[MASK]b", addSpecialTokens: false));
    }

    [Fact]
    public void TemplateHelpersMatchEncodePair()
    {
        var t = Real();
        var a = t.EncodeToIds("hello world", addSpecialTokens: false);
        var b = t.EncodeToIds("good morning!", addSpecialTokens: false);
        var pair = t.Encode("hello world", "good morning!");
        Assert.Equal(t.BuildInputsWithSpecialTokens(a, b), pair.InputIds);
        Assert.Equal(t.CreateTokenTypeIdsFromSequences(a, b), pair.TokenTypeIds);
        Assert.Equal(t.GetSpecialTokensMask(a, b), pair.SpecialTokensMask);
        Assert.Equal(pair.SpecialTokensMask, t.GetSpecialTokensMask(pair.InputIds, alreadyHasSpecialTokens: true));
        Assert.Equal(new[] { 101, 7592, 2088, 102 }, t.EncodeToIds("hello world"));
    }

    [Theory]
    // Hugging Face's own table for longest_first with a budget of 7 (lengths 0, 2, 4 and 8).
    [InlineData(0, 0, 0, 0)] [InlineData(0, 2, 0, 2)] [InlineData(0, 4, 0, 4)] [InlineData(0, 8, 0, 7)]
    [InlineData(2, 0, 2, 0)] [InlineData(2, 2, 2, 2)] [InlineData(2, 4, 2, 4)] [InlineData(2, 8, 2, 5)]
    [InlineData(4, 0, 4, 0)] [InlineData(4, 2, 4, 2)] [InlineData(4, 4, 3, 4)] [InlineData(4, 8, 3, 4)]
    [InlineData(8, 0, 7, 0)] [InlineData(8, 2, 5, 2)] [InlineData(8, 4, 4, 3)] [InlineData(8, 8, 3, 4)]
    public void LongestFirstPairTruncation(int n1, int n2, int keep1, int keep2)
    {
        var (k1, k2, truncated) = BertTokenizer.Truncate(n1, n2, hasPair: true, budget: 7, TruncationStrategy.LongestFirst);
        Assert.Equal((keep1, keep2), (k1, k2));
        Assert.Equal(n1 + n2 > 7, truncated);
    }

    [Fact]
    public void OnlyFirstAndOnlySecondRefuseWhatTheyCannotDo()
    {
        Assert.Equal((3, 4, true), BertTokenizer.Truncate(5, 4, true, 7, TruncationStrategy.OnlyFirst));
        Assert.Equal((5, 2, true), BertTokenizer.Truncate(5, 4, true, 7, TruncationStrategy.OnlySecond));
        Assert.Throws<ArgumentException>(() => BertTokenizer.Truncate(2, 8, true, 7, TruncationStrategy.OnlyFirst));
        Assert.Throws<ArgumentException>(() => BertTokenizer.Truncate(8, 0, false, 7, TruncationStrategy.OnlySecond));
        var t = Real();
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Encode("a b", "c", maxLength: 2));
    }

    [Fact]
    public void TruncatedPairKeepsTemplateAndFlag()
    {
        var t = Real();
        var e = t.Encode("the quick brown fox jumps over the lazy dog", "a short one", maxLength: 10);
        Assert.Equal(10, e.Length);
        Assert.True(e.Truncated);
        Assert.Equal(101, e.InputIds[0]);
        Assert.Equal(102, e.InputIds[^1]);
        Assert.Equal(2, e.InputIds.Count(id => id == 102));
        Assert.False(t.Encode("short", maxLength: 10).Truncated);
    }

    [Fact]
    public void BatchIsPaddedRowMajorAndEqualsSingleEncodings()
    {
        var t = Real();
        string[] a = ["hello world", "a much longer first sentence with more tokens in it", ""];
        string?[] b = ["pair one", null, "only second"];
        var batch = t.EncodeBatch(a, b, maxLength: 12, maxDegreeOfParallelism: 2);
        Assert.Equal(3, batch.BatchSize);
        Assert.Equal(12, batch.SequenceLength);
        for (int i = 0; i < a.Length; i++)
        {
            var single = t.Encode(a[i], b[i], maxLength: 12);
            var row = batch.InputIds.Span.Slice(i * 12, 12);
            var mask = batch.AttentionMask.Span.Slice(i * 12, 12);
            var types = batch.TokenTypeIds.Span.Slice(i * 12, 12);
            Assert.Equal(single.InputIds, row[..single.Length].ToArray());
            Assert.Equal(single.TokenTypeIds, types[..single.Length].ToArray());
            Assert.All(row[single.Length..].ToArray(), id => Assert.Equal(t.PaddingTokenId, id));
            Assert.Equal(single.Length, mask.ToArray().Sum());
            Assert.All(types[single.Length..].ToArray(), x => Assert.Equal(0, x));
        }
        var fixedLength = t.EncodeBatch(["x"], maxLength: 16, padding: PaddingStrategy.MaxLength);
        Assert.Equal(16, fixedLength.SequenceLength);
        Assert.Throws<ArgumentException>(() => t.EncodeBatch(["x"], ["y", "z"]));
        var error = Assert.Throws<ArgumentException>(() => t.EncodeBatch(["ok", "bad \uD800"]));
        Assert.Contains("Batch item 1", error.Message);
    }

    [Fact]
    public void ParallelBatchEqualsSerialOnRealText()
    {
        var t = Real();
        var texts = Enumerable.Range(0, 300).Select(i => $"Sentence number {i}: naïve café — 東京 {new string('x', i % 120)}!").ToArray();
        var parallel = t.EncodeBatch(texts, maxDegreeOfParallelism: 4);
        var serial = t.EncodeBatch(texts, maxDegreeOfParallelism: 1);
        Assert.Equal(serial.InputIds.ToArray(), parallel.InputIds.ToArray());
        Assert.Equal(serial.AttentionMask.ToArray(), parallel.AttentionMask.ToArray());
    }

    [Fact]
    public void DecodeJoinsPiecesAndCleansUpSpaces()
    {
        var t = Real();
        var ids = t.EncodeToIds("Hello, world! It's unaffable.");
        Assert.Equal("[CLS] hello, world! it's unaffable. [SEP]", t.Decode(ids));
        Assert.Equal("hello, world! it's unaffable.", t.Decode(ids, skipSpecialTokens: true));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Decode([5, 999_999]));
    }

    [Fact]
    public void LoneSurrogatesAreRejectedWithTheirIndex()
    {
        var t = Real();
        var e = Assert.Throws<ArgumentException>(() => t.Encode("ok \uDC00 x"));
        Assert.Contains("U+DC00", e.Message);
        Assert.Contains("index 3", e.Message);
        Assert.Throws<ArgumentException>(() => t.Encode("end \uD83D"));
        // A valid pair is fine.
        Assert.Equal(3, t.Encode("😀").Length);
    }

    [Fact]
    public void WhitespaceOnlyAndEmptyTextsGiveOnlyTheTemplate()
    {
        var t = Real();
        Assert.Equal(new[] { 101, 102 }, t.EncodeToIds(""));
        Assert.Equal(new[] { 101, 102 }, t.EncodeToIds(" \t\n\u00A0\u200B "));
        Assert.Equal(0, t.CountTokens(" "));
    }

    [Fact]
    public void ConcurrentUseGivesTheSameResults()
    {
        var t = Real();
        string text = "Concurrency check: Ωμέγα, 中文, and emoji 😀 in one line.";
        var expected = t.Encode(text, "second part").InputIds;
        Parallel.For(0, 2000, new ParallelOptions { MaxDegreeOfParallelism = 4 }, _ =>
            Assert.Equal(expected, t.Encode(text, "second part").InputIds));
    }

    [Fact]
    public void BasicTokenizationOffSplitsOnWhitespaceOnly()
    {
        var t = Tiny(new BertOptions { ApplyBasicTokenization = false });
        // "a,b" is one word without punctuation splitting: no complete WordPiece split → [UNK].
        Assert.Equal(new[] { 1 }, t.EncodeToIds("a,b", addSpecialTokens: false));
        Assert.Equal(new[] { 8, 12 }, Tiny().EncodeToIds("a,", addSpecialTokens: false));
    }

    [Fact]
    public void PreTokenizerReportsNormalizedWordsWithSpans()
    {
        var pre = new BertPreTokenizer();
        var words = new List<(string, int, int)>();
        pre.Split("Héllo, 世界!", (w, s, e) => words.Add((w.ToString(), s, e)));
        Assert.Equal([("hello", 0, 5), (",", 5, 6), ("世", 7, 8), ("界", 8, 9), ("!", 9, 10)], words);
    }
}

/// <summary>Malformed vocabularies give errors that name the source and line.</summary>
public sealed class VocabularyTests
{
    private static Stream Text(string s) => new MemoryStream(Encoding.UTF8.GetBytes(s));

    [Fact]
    public void DuplicateLineIsReportedWithBothLines()
    {
        var e = Assert.Throws<VocabularyFormatException>(() => WordPieceVocabulary.Load(Text("[PAD]\na\nb\na\n"), "v.txt"));
        Assert.Equal("v.txt:4: token 'a' repeats line 2; a vocabulary holds each token once", e.Message);
        Assert.Equal(4, e.Line);
    }

    [Fact]
    public void EmptyLinesEmptyFilesAndBadUtf8AreErrors()
    {
        Assert.Equal(2, Assert.Throws<VocabularyFormatException>(() => WordPieceVocabulary.Load(Text("a\n\nb\n"), "v")).Line);
        Assert.Contains("empty", Assert.Throws<VocabularyFormatException>(() => WordPieceVocabulary.Load(Text(""), "v")).Message);
        var bad = new MemoryStream([(byte)'a', (byte)'\n', 0xFF, 0xFE, (byte)'\n']);
        var e = Assert.Throws<VocabularyFormatException>(() => WordPieceVocabulary.Load(bad, "v"));
        Assert.Equal("v:2: not valid UTF-8", e.Message);
    }

    [Fact]
    public void CrLfAndBomAreAccepted()
    {
        var v = WordPieceVocabulary.Load(Text("\uFEFF[PAD]\r\nhello\r\n"), "v");
        Assert.Equal(["[PAD]", "hello"], v.Tokens);
    }

    [Theory]
    [InlineData("[PAD]")] [InlineData("[UNK]")] [InlineData("[CLS]")] [InlineData("[SEP]")] [InlineData("[MASK]")]
    public void MissingSpecialTokenIsNamed(string missing)
    {
        var tokens = new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a" }.Where(t => t != missing);
        var e = Assert.Throws<VocabularyFormatException>(() => BertTokenizer.Create(Text(string.Join('\n', tokens))));
        Assert.Contains(missing, e.Message);
    }

    [Fact]
    public void MissingFileIsFileNotFound()
    {
        var e = Assert.Throws<FileNotFoundException>(() => BertTokenizer.Create("/nonexistent/vocab.txt"));
        Assert.Contains("/nonexistent/vocab.txt", e.Message);
    }

    [Fact]
    public void SaveIsAtomicAndRoundTrips()
    {
        var dir = Directory.CreateTempSubdirectory();
        try
        {
            var path = Path.Combine(dir.FullName, "vocab.txt");
            var v = WordPieceVocabulary.FromTokens(["[PAD]", "x", "##y"]);
            v.Save(path);
            Assert.Equal(v.Tokens, WordPieceVocabulary.Load(path).Tokens);
            Assert.Single(Directory.GetFiles(dir.FullName));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
