using System.Collections.Concurrent;
using System.Numerics;
using System.Text;
using MosaicBert.Tokenizers.Training;

namespace MosaicBert.Tokenizers.Tests;

public sealed class WordPieceTrainerTests
{
    private static readonly string[] s_specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    // The word counts of the Hugging Face course's WordPiece chapter.
    private static Dictionary<string, long> CourseCorpus() =>
        new(StringComparer.Ordinal) { ["hug"] = 10, ["pug"] = 5, ["pun"] = 12, ["bun"] = 4, ["hugs"] = 5 };

    [Fact]
    public void FirstMergesFollowTheLikelihoodScoreAndOrdinalTieBreak()
    {
        // Segmentation: h ##u ##g (10), p ##u ##g (5), p ##u ##n (12), b ##u ##n (4), h ##u ##g ##s (5).
        // freq: h 15, p 17, b 4, ##u 36, ##g 20, ##n 16, ##s 5.
        // 1. Every pair with ##u scores 1/36 (e.g. ##u##g: 20/(36·20)); ##g##s scores 5/(20·5) = 1/20: "##gs" wins
        //    although ##u##g is 4 times as frequent (BPE would merge ##u##g first).
        // 2. Now ##g 15, ##gs 5. All six pairs score 1/36 (h##u 15/(15·36), ##u##gs 5/(36·5), ##u##g 15/(36·15),
        //    p##u 17/(17·36), ##u##n 16/(36·16), b##u 4/(4·36)): the tie goes to the smallest token, "##ug"
        //    (before "##ugs", "##un", "bu", "hu", "pu").
        // 3. ##u 21, ##ug 15. ##u##gs 5/(21·5), ##u##n 16/(21·16), b##u 4/(4·21) all score 1/21, ahead of
        //    h##ug 10/(15·15) = 2/45 and the rest: "##ugs" (before "##un", "bu").
        // 4. ##u 16, ##ugs 5. h##ugs 5/(15·5) = 1/15 beats ##u##n and b##u (1/16): "hugs".
        var options = new WordPieceTrainerOptions { VocabularySize = 16, PadToMultipleOf = 1 };
        var vocab = new WordPieceTrainer(options).TrainFromWordCounts(CourseCorpus(), null, Ct);
        string[] expected = [.. s_specials, "b", "h", "p", "##g", "##n", "##s", "##u", "##gs", "##ug", "##ugs", "hugs"];
        Assert.Equal(expected, vocab.Tokens);
    }

    [Fact]
    public void PairsRarerThanMinPairFrequencyAreNeverMerged()
    {
        // "ab" occurs twice, "cd" once: with MinPairFrequency 2 only "ab" can be merged, then merges run out.
        var counts = new Dictionary<string, long> { ["ab"] = 2, ["cd"] = 1 };
        var vocab = new WordPieceTrainer(new() { VocabularySize = 12, PadToMultipleOf = 1 }).TrainFromWordCounts(counts, null, Ct);
        Assert.Equal([.. s_specials, "a", "c", "##b", "##d", "ab", "[unused0]", "[unused1]"], vocab.Tokens);
    }

    [Fact]
    public void RunsOfOnePieceMergeLeftToRightWithoutOverlap()
    {
        // "a" (10) and "aaaaa" = a ##a ##a ##a ##a (1): freq a 11, ##a 4. a##a scores 1/(11·4), ##a##a 3/(4·4): ##a##a
        // is merged, left to right without overlap: a ##aa ##aa (not a ##aa ##a ##a or a ##a ##aa ##a). Then
        // ##aa##aa 1/(2·2) beats a##aa 1/(11·2): "##aaaa"; then a ##aaaa: "aaaaa".
        var counts = new Dictionary<string, long> { ["a"] = 10, ["aaaaa"] = 1 };
        var options = new WordPieceTrainerOptions { VocabularySize = 10, PadToMultipleOf = 1, MinPairFrequency = 1 };
        var vocab = new WordPieceTrainer(options).TrainFromWordCounts(counts, null, Ct);
        Assert.Equal([.. s_specials, "a", "##a", "##aa", "##aaaa", "aaaaa"], vocab.Tokens);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    [InlineData(3, 3)]
    [InlineData(4, 2)]
    [InlineData(5, 1)]
    public void IncrementalUpdatesMatchAFullRecountEveryMerge(int seed, int minPairFrequency)
    {
        var rng = new Random(seed);
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        while (counts.Count < 300)
        {
            // Few letters and skewed choice: many shared pairs, runs like "aaa", and many exact score ties.
            var word = new string(Enumerable.Range(0, rng.Next(1, 9)).Select(_ => "aabbcdeé"[rng.Next(8)]).ToArray());
            counts[word] = counts.GetValueOrDefault(word) + rng.Next(1, 20);
        }
        var options = new WordPieceTrainerOptions { VocabularySize = 200, PadToMultipleOf = 1, MinPairFrequency = minPairFrequency };
        var vocab = new WordPieceTrainer(options).TrainFromWordCounts(counts, null, Ct);
        Assert.Equal(NaiveTrain(counts, options), vocab.Tokens);
        Assert.Equal(200, vocab.Count);
    }

    [Fact]
    public void ResultDoesNotDependOnThreadCount()
    {
        var texts = SyntheticTexts(3000, seed: 11);
        string[]? reference = null;
        foreach (var (threads, flushThreshold) in new[] { (1, 1 << 18), (2, 1 << 18), (4, 1 << 18), (3, 7) })
        {
            var trainer = new WordPieceTrainer(new() { VocabularySize = 600, MaxDegreeOfParallelism = threads })
            {
                LocalFlushThreshold = flushThreshold,
            };
            var tokens = trainer.Train(texts, null, Ct).Tokens.ToArray();
            reference ??= tokens;
            Assert.Equal(reference, tokens);
        }
        Assert.Equal(640, reference!.Length);
        Assert.DoesNotContain("[unused0]", reference);
    }

    [Fact]
    public void CountWordsIsExactWithManyThreadsAndFrequentFolding()
    {
        var texts = SyntheticTexts(2000, seed: 5);
        var pre = new BertPreTokenizer();
        var expected = texts.SelectMany(t => pre.Split(t)).GroupBy(w => w, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => (long)g.Count(), StringComparer.Ordinal);
        var trainer = new WordPieceTrainer(new() { MaxDegreeOfParallelism = 4 }) { LocalFlushThreshold = 3 };
        var counts = trainer.CountWords(texts, null, Ct);
        Assert.Equal(expected.OrderBy(kv => kv.Key, StringComparer.Ordinal), counts.OrderBy(kv => kv.Key, StringComparer.Ordinal));
    }

    [Fact]
    public void SizeIsRoundedUpToAMultipleOf64AndFilledWithUnusedTokens()
    {
        Assert.Equal(30528, new WordPieceTrainerOptions { VocabularySize = 30522 }.TargetVocabularySize);
        Assert.Equal(64, new WordPieceTrainerOptions { VocabularySize = 64 }.TargetVocabularySize);
        Assert.Equal(128, new WordPieceTrainerOptions { VocabularySize = 65 }.TargetVocabularySize);

        var vocab = new WordPieceTrainer(new() { VocabularySize = 30 }).TrainFromWordCounts(CourseCorpus(), null, Ct);
        Assert.Equal(64, vocab.Count);
        // 5 specials + 7 characters + merges until no pair occurs twice; the rest is [unused0], [unused1], ...
        int firstUnused = vocab.IdOf("[unused0]");
        Assert.True(firstUnused > 12, $"[unused0] at {firstUnused}");
        for (int id = firstUnused; id < 64; id++)
            Assert.Equal($"[unused{id - firstUnused}]", vocab.Tokens[id]);
        Assert.DoesNotContain(vocab.Tokens.Take(firstUnused), t => t.StartsWith("[unused", StringComparison.Ordinal));
    }

    [Fact]
    public void SpecialTokensComeFirstInTheGivenOrderThenTheAlphabet()
    {
        string[] specials = ["[CLS]", "[SEP]", "<s>", "[PAD]", "[UNK]", "[MASK]"];
        var options = new WordPieceTrainerOptions { SpecialTokens = specials, VocabularySize = 100 };
        var vocab = new WordPieceTrainer(options).Train(["Zebra crossing, zebras cross.", "Über Ämter"], null, Ct);
        Assert.Equal(specials, vocab.Tokens.Take(specials.Length));
        // Word-initial characters by code point, then continuation characters (normalized: lower-case, no accents).
        string[] alphabet = [",", ".", "a", "c", "u", "z", "##a", "##b", "##e", "##g", "##i", "##m", "##n", "##o", "##r", "##s", "##t"];
        Assert.Equal(alphabet, vocab.Tokens.Skip(specials.Length).Take(alphabet.Length));
        Assert.DoesNotContain(vocab.Tokens.Skip(specials.Length + alphabet.Length), t => t.Length == 1 || t is ['#', '#', _]);
        Assert.Equal(128, vocab.Count);
    }

    [Fact]
    public void SavedVocabularyLoadsAndTokenizesTheCorpusWithoutUnknown()
    {
        string[] texts =
        [
            "The quick brown fox jumps over the lazy dog.",
            "Naïve café owners in Zürich serve crème brûlée; 東京 and 北京 are cities.",
            "Tokenization, tokenizer, tokenized: TOKENS! (2024) e-mail x@y.z",
            "The dog's owner said \"no\" — twice.",
        ];
        var vocab = new WordPieceTrainer(new() { VocabularySize = 150 }).Train(texts, null, Ct);
        var dir = Directory.CreateTempSubdirectory("wordpiece-trainer-");
        try
        {
            var path = Path.Combine(dir.FullName, "vocab.txt");
            vocab.Save(path);
            var loaded = WordPieceVocabulary.Load(path);
            Assert.Equal(vocab.Tokens, loaded.Tokens);

            var tokenizer = BertTokenizer.Create(path);
            int unk = loaded.IdOf("[UNK]");
            foreach (var text in texts)
            {
                var tokens = tokenizer.EncodeToTokens(text);
                Assert.NotEmpty(tokens);
                Assert.DoesNotContain(tokens, t => t.Id == unk);
            }
            // Merges made whole words of the frequent ones.
            Assert.Contains("the", loaded.Tokens);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void WordsOverMaxWordLengthAndRareCharactersAreLeftOut()
    {
        var counts = new Dictionary<string, long>
        {
            [new string('x', 101)] = 50,
            ["ab"] = 5,
            ["aq"] = 1, // 'q' occurs once: below MinCharFrequency, so "aq" is not trained on (it would be [UNK])
        };
        var options = new WordPieceTrainerOptions { VocabularySize = 9, PadToMultipleOf = 1, MinCharFrequency = 2 };
        var vocab = new WordPieceTrainer(options).TrainFromWordCounts(counts, null, Ct);
        Assert.Equal([.. s_specials, "a", "##b", "ab", "[unused0]"], vocab.Tokens);

        // AlphabetLimit keeps the most frequent characters: 'a' (6) and 'b' (5), not 'q' (1).
        options = new WordPieceTrainerOptions { VocabularySize = 8, PadToMultipleOf = 1, AlphabetLimit = 2 };
        Assert.Equal([.. s_specials, "a", "##b", "ab"], new WordPieceTrainer(options).TrainFromWordCounts(counts, null, Ct).Tokens);

        // A 100-code-point word (surrogate pairs count once) is kept.
        counts = new Dictionary<string, long> { [string.Concat(Enumerable.Repeat("😀", 100))] = 3 };
        options = new WordPieceTrainerOptions { VocabularySize = 8, PadToMultipleOf = 1 };
        Assert.Equal([.. s_specials, "😀", "##😀", "😀😀"], new WordPieceTrainer(options).TrainFromWordCounts(counts, null, Ct).Tokens);
    }

    [Fact]
    public void ReportsProgressAndHonoursCancellation()
    {
        var progress = new Collect();
        var vocab = new WordPieceTrainer(new() { VocabularySize = 64 }).Train(SyntheticTexts(200, 1), progress, Ct);
        var last = progress.Items.Last();
        Assert.Equal(WordPieceTrainingStage.Done, last.Stage);
        Assert.Equal(200, last.TextsProcessed);
        Assert.Equal(64, last.VocabularySize);
        Assert.Equal(vocab.Count, last.TargetVocabularySize);
        Assert.Contains(progress.Items, p => p.Stage == WordPieceTrainingStage.CountingWords);

        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => new WordPieceTrainer().Train(SyntheticTexts(10, 1), null, cts.Token));
        Assert.ThrowsAny<OperationCanceledException>(() => new WordPieceTrainer().TrainFromWordCounts(CourseCorpus(), null, cts.Token));
    }

    [Theory]
    [InlineData("size", "VocabularySize (5) must be at least the number of special tokens plus one (6)")]
    [InlineData("pad", "PadToMultipleOf (0) must be at least 1")]
    [InlineData("duplicate", "SpecialTokens lists '[CLS]' twice")]
    [InlineData("empty-special", "SpecialTokens[1] is empty")]
    [InlineData("spaced-special", "SpecialTokens[0] (' [X]') has surrounding whitespace")]
    [InlineData("prefix", "ContinuingSubwordPrefix must be non-empty")]
    [InlineData("pair", "MinPairFrequency (0) must be at least 1")]
    [InlineData("char", "MinCharFrequency (0) must be at least 1")]
    [InlineData("alphabet", "AlphabetLimit (0) must be at least 1")]
    [InlineData("word", "MaxWordLength (0) must be at least 1")]
    [InlineData("threads", "MaxDegreeOfParallelism (0) must be -1 (all cores) or at least 1")]
    public void InvalidOptionsAreRejectedWithAClearMessage(string which, string message)
    {
        var o = new WordPieceTrainerOptions();
        switch (which)
        {
            case "size": o.VocabularySize = 5; break;
            case "pad": o.PadToMultipleOf = 0; break;
            case "duplicate": o.SpecialTokens = ["[CLS]", "[SEP]", "[CLS]"]; break;
            case "empty-special": o.SpecialTokens = ["[CLS]", ""]; break;
            case "spaced-special": o.SpecialTokens = [" [X]"]; break;
            case "prefix": o.ContinuingSubwordPrefix = ""; break;
            case "pair": o.MinPairFrequency = 0; break;
            case "char": o.MinCharFrequency = 0; break;
            case "alphabet": o.AlphabetLimit = 0; break;
            case "word": o.MaxWordLength = 0; break;
            case "threads": o.MaxDegreeOfParallelism = 0; break;
        }
        var e = Assert.Throws<ArgumentException>(() => new WordPieceTrainer(o));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OptionsChangedAfterConstructionAreValidatedAgain()
    {
        var options = new WordPieceTrainerOptions();
        var trainer = new WordPieceTrainer(options);
        options.VocabularySize = 5;
        Assert.Throws<ArgumentException>(() => trainer.TrainFromWordCounts(CourseCorpus(), null, Ct));
        Assert.Throws<ArgumentException>(() => trainer.Train(["text"], null, Ct));
    }

    [Fact]
    public void InvalidInputIsRejected()
    {
        var trainer = new WordPieceTrainer();
        var e = Assert.Throws<ArgumentException>(() => trainer.TrainFromWordCounts(new Dictionary<string, long> { ["ok"] = 0 }, null, Ct));
        Assert.Contains("'ok' has count 0", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<ArgumentException>(() => trainer.TrainFromWordCounts(new Dictionary<string, long> { [""] = 1 }, null, Ct));
        Assert.Contains("empty word", e.Message, StringComparison.Ordinal);
        // A failure inside the parallel loop surfaces as itself, not as an AggregateException.
        e = Assert.Throws<ArgumentException>(() => trainer.Train(["fine", null!, "fine"], null, Ct));
        Assert.Contains("null text", e.Message, StringComparison.Ordinal);
    }

    private sealed class Collect : IProgress<WordPieceTrainingProgress>
    {
        private readonly ConcurrentQueue<WordPieceTrainingProgress> _items = new();
        public IReadOnlyList<WordPieceTrainingProgress> Items => [.. _items];
        public void Report(WordPieceTrainingProgress value) => _items.Enqueue(value);
    }

    /// <summary>Sentences from a small Zipf-like lexicon with capitals and punctuation: many repeated words.</summary>
    private static List<string> SyntheticTexts(int count, int seed)
    {
        var rng = new Random(seed);
        string[] syllables = ["ka", "to", "ri", "mon", "es", "la", "qu", "ion", "ter", "ba", "sé", "ün", "st", "a", "e"];
        var lexicon = Enumerable.Range(0, 400)
            .Select(_ => string.Concat(Enumerable.Range(0, rng.Next(1, 5)).Select(_ => syllables[rng.Next(syllables.Length)])))
            .ToArray();
        var texts = new List<string>(count);
        var sb = new StringBuilder();
        for (int i = 0; i < count; i++)
        {
            sb.Clear();
            int n = rng.Next(3, 15);
            for (int k = 0; k < n; k++)
            {
                double u = rng.NextDouble();
                var w = lexicon[(int)(u * u * u * lexicon.Length)];
                sb.Append(k == 0 ? char.ToUpperInvariant(w[0]) + w[1..] : w).Append(rng.Next(8) == 0 ? ", " : " ");
            }
            texts.Add(sb.Append('.').ToString());
        }
        return texts;
    }

    /// <summary>
    /// The algorithm as specified, with every count recomputed from scratch before each merge: the reference for
    /// the trainer's incremental updates (no alphabet limits; the corpus must not contain the prefix).
    /// </summary>
    private static List<string> NaiveTrain(Dictionary<string, long> counts, WordPieceTrainerOptions o)
    {
        const string P = "##";
        var output = new List<string>(o.SpecialTokens);
        var pieces = new List<string>();
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        int Piece(string s)
        {
            if (!ids.TryGetValue(s, out int id))
            {
                ids[s] = id = pieces.Count;
                pieces.Add(s);
                if (!output.Contains(s)) output.Add(s);
            }
            return id;
        }
        var words = counts.Select(kv => (Symbols: kv.Key.EnumerateRunes().Select((r, i) => (i == 0 ? "" : P) + r).ToList(), Freq: kv.Value)).ToList();
        foreach (var s in words.Select(w => w.Symbols[0]).Distinct().OrderBy(s => char.ConvertToUtf32(s, 0))) Piece(s);
        foreach (var s in words.SelectMany(w => w.Symbols.Skip(1)).Distinct().OrderBy(s => char.ConvertToUtf32(s, 2))) Piece(s);
        var seqs = words.Select(w => (Ids: w.Symbols.Select(s => ids[s]).ToList(), w.Freq)).ToList();

        while (output.Count < o.TargetVocabularySize)
        {
            var pairs = new Dictionary<(int, int), long>();
            var freq = new Dictionary<int, long>();
            foreach (var (seq, f) in seqs)
            {
                for (int i = 0; i < seq.Count; i++)
                {
                    freq[seq[i]] = freq.GetValueOrDefault(seq[i]) + f;
                    if (i + 1 < seq.Count) pairs[(seq[i], seq[i + 1])] = pairs.GetValueOrDefault((seq[i], seq[i + 1])) + f;
                }
            }
            (int A, int B, long C)? best = null;
            string Merged(int a, int b) => pieces[a] + pieces[b][P.Length..];
            foreach (var ((a, b), c) in pairs)
            {
                if (c < o.MinPairFrequency) continue;
                if (best is not { } x) { best = (a, b, c); continue; }
                var lhs = new BigInteger(c) * freq[x.A] * freq[x.B];
                var rhs = new BigInteger(x.C) * freq[a] * freq[b];
                int cmp = lhs.CompareTo(rhs);
                if (cmp == 0) cmp = -string.CompareOrdinal(Merged(a, b), Merged(x.A, x.B));
                if (cmp == 0) cmp = -(a != x.A ? a.CompareTo(x.A) : b.CompareTo(x.B));
                if (cmp > 0) best = (a, b, c);
            }
            if (best is not { } m) break;
            int merged = Piece(Merged(m.A, m.B));
            foreach (var (seq, _) in seqs)
            {
                for (int i = 0; i + 1 < seq.Count; i++)
                {
                    if (seq[i] == m.A && seq[i + 1] == m.B)
                    {
                        seq[i] = merged;
                        seq.RemoveAt(i + 1);
                    }
                }
            }
        }
        for (int i = 0; output.Count < o.TargetVocabularySize; i++) output.Add($"[unused{i}]");
        return output;
    }
}
