using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace MosaicBert.Tokenizers.Training;

/// <summary>
/// Learns a WordPiece vocabulary from text: starts from the alphabet and repeatedly merges the pair of adjacent
/// pieces with the highest likelihood score.
/// </summary>
/// <remarks>
/// <para>
/// Every word is a sequence of pieces, at first its characters: the first one as itself ("c"), the others with the
/// continuation prefix ("##c"). Each step merges the adjacent pair (a, b) with the highest score
/// <c>freq(ab) / (freq(a) · freq(b))</c> among pairs that occur at least <see cref="WordPieceTrainerOptions.MinPairFrequency"/>
/// times, where freq(ab) counts the adjacent occurrences of a then b and freq(x) the occurrences of piece x in the
/// current segmentation, every word weighted by its frequency. This is the WordPiece likelihood criterion (as
/// Hugging Face's course states it): under a unigram model over pieces the score is p(ab) / (p(a)·p(b)) up to a
/// constant, i.e. how much more often a and b occur together than if they were independent, the term whose log
/// the merge adds to the corpus log-likelihood per occurrence. Unlike BPE's raw pair frequency, it does not favour
/// pairs merely because their pieces are common. "x" + "##y" gives "xy", "##x" + "##y" gives "##xy".
/// </para>
/// <para>
/// The result depends on the corpus alone, never on the thread count: words are counted exactly, and ties of score
/// go to the pair whose merged token is smallest in ordinal order (then to the smaller piece ids, which are assigned
/// in a deterministic order).
/// </para>
/// <para>
/// Output order: the special tokens, the alphabet (word-initial characters by code point, then continuation
/// characters), the merged tokens in merge order, then "[unused0]", "[unused1]", ... when merges run out before
/// <see cref="WordPieceTrainerOptions.TargetVocabularySize"/> is reached; the count is always exactly that size.
/// </para>
/// </remarks>
public sealed class WordPieceTrainer
{
    private const int BatchSize = 256;
    private const long ReportEveryTexts = 100_000;
    private const int ReportEveryMerges = 1000;

    private readonly WordPieceTrainerOptions _options;

    /// <summary>Creates a trainer. The options are validated now and again at each call (they are mutable).</summary>
    /// <exception cref="ArgumentException">An option is invalid.</exception>
    public WordPieceTrainer(WordPieceTrainerOptions? options = null)
    {
        _options = options ?? new WordPieceTrainerOptions();
        _options.Validate();
    }

    /// <summary>The options in use.</summary>
    public WordPieceTrainerOptions Options => _options;

    /// <summary>
    /// Distinct words a counting thread keeps before folding them into the shared table: bounds memory per thread
    /// (a corpus with millions of distinct words is not held once per core). Internal so tests can force folding.
    /// </summary>
    internal int LocalFlushThreshold { get; set; } = 1 << 18;

    /// <summary>Splits <paramref name="texts"/> into words and trains on them.</summary>
    /// <exception cref="ArgumentException">An option is invalid, or a text is null.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public WordPieceVocabulary Train(IEnumerable<string> texts, IProgress<WordPieceTrainingProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var (counts, textsProcessed) = CountWordsCore(texts, progress, cancellationToken);
        return TrainCore(counts, textsProcessed, progress, cancellationToken);
    }

    /// <summary>
    /// Splits <paramref name="texts"/> into normalized words with <see cref="WordPieceTrainerOptions.PreTokenizer"/>
    /// and counts them, in parallel. Words longer than <see cref="WordPieceTrainerOptions.MaxWordLength"/> code points
    /// are left out. The texts are enumerated by one thread at a time, so any enumerable works; an exception it
    /// throws (e.g. a corrupt corpus file) comes out as itself. <paramref name="progress"/> is called from worker threads.
    /// </summary>
    public Dictionary<string, long> CountWords(IEnumerable<string> texts, IProgress<WordPieceTrainingProgress>? progress = null,
        CancellationToken cancellationToken = default) => CountWordsCore(texts, progress, cancellationToken).Counts;

    private (Dictionary<string, long> Counts, long Texts) CountWordsCore(IEnumerable<string> texts,
        IProgress<WordPieceTrainingProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(texts);
        _options.Validate();
        var preTokenizer = _options.PreTokenizer;
        int maxWordLength = _options.MaxWordLength;
        int target = _options.TargetVocabularySize;
        int flushThreshold = LocalFlushThreshold;

        var total = new Dictionary<string, long>(StringComparer.Ordinal);
        var gate = new object();
        long textsDone = 0;
        var parallel = new ParallelOptions
        {
            MaxDegreeOfParallelism = _options.MaxDegreeOfParallelism,
            CancellationToken = cancellationToken,
        };
        // NoBuffering: each worker takes one batch at a time, so no worker hoards texts while the others idle.
        var batches = Partitioner.Create(texts.Chunk(BatchSize), EnumerablePartitionerOptions.NoBuffering);
        try
        {
            Parallel.ForEach(batches, parallel,
                () => new WordCounter(preTokenizer, maxWordLength),
                (batch, _, counter) =>
                {
                    foreach (var text in batch)
                    {
                        if (text is null) throw new ArgumentException("The texts hold a null text.", nameof(texts));
                        counter.Add(text);
                    }
                    if (counter.Count >= flushThreshold) counter.FlushInto(total, gate);
                    long done = Interlocked.Add(ref textsDone, batch.Length);
                    if (progress is not null && done / ReportEveryTexts != (done - batch.Length) / ReportEveryTexts)
                        progress.Report(new(WordPieceTrainingStage.CountingWords, done, 0, 0, target));
                    return counter;
                },
                counter => counter.FlushInto(total, gate));
        }
        catch (AggregateException e) when (e.InnerExceptions.Count == 1)
        {
            // Parallel.ForEach wraps a failure of the body or of the source (e.g. a corrupt corpus file); rethrow it as is.
            ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
        progress?.Report(new(WordPieceTrainingStage.CountingWords, textsDone, 0, 0, target));
        return (total, textsDone);
    }

    /// <summary>
    /// Trains on words already normalized and counted (e.g. by <see cref="CountWords"/>). Words longer than
    /// <see cref="WordPieceTrainerOptions.MaxWordLength"/> code points are left out.
    /// </summary>
    /// <exception cref="ArgumentException">An option is invalid, a word is empty, or a count is not positive.</exception>
    public WordPieceVocabulary TrainFromWordCounts(IReadOnlyDictionary<string, long> wordCounts,
        IProgress<WordPieceTrainingProgress>? progress = null, CancellationToken cancellationToken = default) =>
        TrainCore(wordCounts, 0, progress, cancellationToken);

    private WordPieceVocabulary TrainCore(IReadOnlyDictionary<string, long> wordCounts, long textsProcessed,
        IProgress<WordPieceTrainingProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(wordCounts);
        _options.Validate();
        var merger = new Merger(_options, textsProcessed, progress, cancellationToken);
        merger.Load(wordCounts);
        return merger.Run();
    }

    internal static int CodePointCount(ReadOnlySpan<char> s)
    {
        int n = s.Length;
        foreach (char c in s)
            if (char.IsLowSurrogate(c)) n--;
        return n;
    }

    /// <summary>One counting thread's table of words.</summary>
    private sealed class WordCounter
    {
        private readonly Dictionary<string, long> _counts = new(StringComparer.Ordinal);
        private readonly Dictionary<string, long>.AlternateLookup<ReadOnlySpan<char>> _lookup;
        private readonly BertPreTokenizer _preTokenizer;
        private readonly WordCallback _onWord;
        private readonly int _maxWordLength;

        public WordCounter(BertPreTokenizer preTokenizer, int maxWordLength)
        {
            _preTokenizer = preTokenizer;
            _maxWordLength = maxWordLength;
            _lookup = _counts.GetAlternateLookup<ReadOnlySpan<char>>();
            _onWord = OnWord;
        }

        public int Count => _counts.Count;

        public void Add(string text) => _preTokenizer.Split(text, _onWord);

        private void OnWord(ReadOnlySpan<char> word, int start, int end)
        {
            if (word.Length > _maxWordLength && CodePointCount(word) > _maxWordLength) return;
            // Span lookup: a string is allocated only the first time this thread sees the word.
            CollectionsMarshal.GetValueRefOrAddDefault(_lookup, word, out _)++;
        }

        public void FlushInto(Dictionary<string, long> total, object gate)
        {
            if (_counts.Count == 0) return;
            lock (gate)
            {
                foreach (var (word, count) in _counts)
                    CollectionsMarshal.GetValueRefOrAddDefault(total, word, out _) += count;
            }
            _counts.Clear();
        }
    }

    /// <summary>An adjacent pair of pieces: how often it occurs and the words it may occur in.</summary>
    private sealed class Pair
    {
        public long Count;
        // Indices of words that held the pair when it was counted or created. May repeat and may be stale (the
        // word since changed); merging re-scans each word, so neither matters, and appending is all that is needed.
        public int[] Words = new int[2];
        public int WordCount;

        public void AddWord(int w)
        {
            if (WordCount > 0 && Words[WordCount - 1] == w) return;
            if (WordCount == Words.Length) Array.Resize(ref Words, Words.Length * 2);
            Words[WordCount++] = w;
        }
    }

    /// <summary>A heap entry: a pair with the counts its score was computed from.</summary>
    private readonly record struct Candidate(long Count, long LeftFreq, long RightFreq, int Left, int Right);

    /// <summary>Best candidate first: higher score, then smaller merged token (ordinal), then smaller ids.</summary>
    private sealed class CandidateOrder(Merger merger) : IComparer<Candidate>
    {
        public int Compare(Candidate x, Candidate y)
        {
            // Score x = cx / (lx·rx); x before y iff cx·(ly·ry) > cy·(lx·rx). Exact in 192 bits: no rounding can
            // flip a comparison, so ties are real ties and the result cannot depend on floating-point details.
            var sx = MulWide((ulong)x.Count, (UInt128)(ulong)y.LeftFreq * (ulong)y.RightFreq);
            var sy = MulWide((ulong)y.Count, (UInt128)(ulong)x.LeftFreq * (ulong)x.RightFreq);
            int c = sy.Hi.CompareTo(sx.Hi);
            if (c == 0) c = sy.Lo.CompareTo(sx.Lo);
            if (c != 0) return c;
            c = merger.CompareMerged(x.Left, x.Right, y.Left, y.Right);
            if (c != 0) return c;
            c = x.Left.CompareTo(y.Left);
            return c != 0 ? c : x.Right.CompareTo(y.Right);
        }

        private static (UInt128 Hi, ulong Lo) MulWide(ulong a, UInt128 b)
        {
            UInt128 lo = (UInt128)a * (ulong)b;
            UInt128 hi = (UInt128)a * (ulong)(b >> 64) + (lo >> 64);
            return (hi, (ulong)lo);
        }
    }

    /// <summary>The state of one training run.</summary>
    private sealed class Merger
    {
        private readonly WordPieceTrainerOptions _options;
        private readonly IProgress<WordPieceTrainingProgress>? _progress;
        private readonly CancellationToken _ct;
        private readonly long _textsProcessed;
        private readonly string _prefix;
        private readonly long _minPair;
        private readonly int _target;

        // Pieces. A piece is a body plus whether it continues a word; "##x" as a word-initial piece (from a word
        // that starts with "##") and the continuation of "x" are different pieces with one spelling, so pieces are
        // keyed by (body, flag), never by spelling, and a merge always yields a piece longer than both parts.
        private readonly List<string> _bodies = [];
        private readonly List<bool> _continues = [];
        private readonly List<long> _freq = [];
        private readonly List<HashSet<long>?> _eligibleOf = [];
        private readonly Dictionary<string, int> _initialIds = new(StringComparer.Ordinal);
        private readonly Dictionary<string, int> _continuationIds = new(StringComparer.Ordinal);

        // Words: pieces of word w are _symbols[_start[w] .. _start[w] + _length[w]); merges shrink them in place.
        private int[] _symbols = [];
        private int[] _start = [];
        private int[] _length = [];
        private long[] _wordFreq = [];
        private int[] _wordStamp = [];
        private int _stamp;

        private readonly Dictionary<long, Pair> _pairs = [];
        private int _eligibleCount;
        private readonly PriorityQueue<long, Candidate> _heap;

        private readonly List<string> _output = [];
        private readonly HashSet<string> _emitted = new(StringComparer.Ordinal);

        public Merger(WordPieceTrainerOptions options, long textsProcessed, IProgress<WordPieceTrainingProgress>? progress,
            CancellationToken ct)
        {
            _options = options;
            _textsProcessed = textsProcessed;
            _progress = progress;
            _ct = ct;
            _prefix = options.ContinuingSubwordPrefix;
            _minPair = options.MinPairFrequency;
            _target = options.TargetVocabularySize;
            _heap = new PriorityQueue<long, Candidate>(new CandidateOrder(this));
        }

        private int WordCount => _length.Length;

        private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

        private string Spell(int piece) => _continues[piece] ? _prefix + _bodies[piece] : _bodies[piece];

        /// <summary>Builds the alphabet and the words' initial segmentation.</summary>
        public void Load(IReadOnlyDictionary<string, long> wordCounts)
        {
            foreach (var t in _options.SpecialTokens)
                Emit(t);

            // Character statistics: total frequency, and the positions (initial / continuing) each occurs in.
            int maxLen = _options.MaxWordLength;
            var chars = new Dictionary<int, (long Freq, bool Initial, bool Continuing)>();
            foreach (var (word, count) in wordCounts)
            {
                if (string.IsNullOrEmpty(word))
                    throw new ArgumentException("The word counts hold an empty word.", nameof(wordCounts));
                if (count < 1)
                    throw new ArgumentException($"The word '{word}' has count {count}; counts must be positive.", nameof(wordCounts));
                if (CodePointCount(word) > maxLen) continue;
                bool first = true;
                foreach (var rune in word.EnumerateRunes())
                {
                    ref var s = ref CollectionsMarshal.GetValueRefOrAddDefault(chars, rune.Value, out _);
                    s = (checked(s.Freq + count), s.Initial || first, s.Continuing || !first);
                    first = false;
                }
            }
            _ct.ThrowIfCancellationRequested();

            // Most frequent characters first; the alphabet takes them while they fit the limit and the vocabulary.
            var ranked = chars.Where(kv => kv.Value.Freq >= _options.MinCharFrequency)
                .OrderByDescending(kv => kv.Value.Freq).ThenBy(kv => kv.Key).ToList();
            int room = _target - _output.Count;
            int limit = _options.AlphabetLimit ?? int.MaxValue;
            var kept = new List<(int Cp, bool Initial, bool Continuing)>();
            int units = 0;
            foreach (var (cp, s) in ranked)
            {
                int u = (s.Initial ? 1 : 0) + (s.Continuing ? 1 : 0);
                if (kept.Count == limit || units + u > room) break;
                kept.Add((cp, s.Initial, s.Continuing));
                units += u;
            }
            kept.Sort((a, b) => a.Cp.CompareTo(b.Cp));
            foreach (var k in kept)
                if (k.Initial) Emit(Spell(NewPiece(char.ConvertFromUtf32(k.Cp), continues: false, 0)));
            foreach (var k in kept)
                if (k.Continuing) Emit(Spell(NewPiece(char.ConvertFromUtf32(k.Cp), continues: true, 0)));

            // Segment the words into alphabet pieces; a word with a character outside the alphabet is left out.
            var symbols = new List<int>();
            var start = new List<int>();
            var length = new List<int>();
            var wordFreq = new List<long>();
            var scratch = new List<int>();
            var initial = _initialIds.GetAlternateLookup<ReadOnlySpan<char>>();
            var continuing = _continuationIds.GetAlternateLookup<ReadOnlySpan<char>>();
            Span<char> buf = stackalloc char[2];
            foreach (var (word, count) in wordCounts)
            {
                if (CodePointCount(word) > maxLen) continue;
                scratch.Clear();
                bool first = true, ok = true;
                foreach (var rune in word.EnumerateRunes())
                {
                    var body = buf[..rune.EncodeToUtf16(buf)];
                    if (!(first ? initial : continuing).TryGetValue(body, out int id))
                    {
                        ok = false;
                        break;
                    }
                    scratch.Add(id);
                    first = false;
                }
                if (!ok) continue;
                start.Add(symbols.Count);
                length.Add(scratch.Count);
                wordFreq.Add(count);
                symbols.AddRange(scratch);
                foreach (int id in scratch) _freq[id] += count;
            }
            _symbols = [.. symbols];
            _start = [.. start];
            _length = [.. length];
            _wordFreq = [.. wordFreq];
            _wordStamp = new int[_start.Length];
            _ct.ThrowIfCancellationRequested();

            for (int w = 0; w < WordCount; w++)
            {
                int s = _start[w], end = s + _length[w];
                for (int i = s; i + 1 < end; i++)
                    AddPair(_symbols[i], _symbols[i + 1], _wordFreq[w], w);
            }
            RebuildHeap();
        }

        private int NewPiece(string body, bool continues, long freq)
        {
            int id = _bodies.Count;
            _bodies.Add(body);
            _continues.Add(continues);
            _freq.Add(freq);
            _eligibleOf.Add(null);
            (continues ? _continuationIds : _initialIds).Add(body, id);
            return id;
        }

        private void Emit(string token)
        {
            if (_emitted.Add(token)) _output.Add(token);
        }

        public WordPieceVocabulary Run()
        {
            int merges = 0;
            Report(WordPieceTrainingStage.Merging);
            while (_output.Count < _target && TryPopBest(out int a, out int b))
            {
                if ((++merges & 255) == 0) _ct.ThrowIfCancellationRequested();
                int m = Merge(a, b);
                Emit(Spell(m));
                if (merges % ReportEveryMerges == 0) Report(WordPieceTrainingStage.Merging);
            }
            // Merges ran out (too little text, or every remaining pair is rarer than MinPairFrequency).
            for (int i = 0; _output.Count < _target; i++)
                Emit($"[unused{i}]");
            Report(WordPieceTrainingStage.Done);
            return WordPieceVocabulary.FromTokens(_output, _prefix);
        }

        private void Report(WordPieceTrainingStage stage) =>
            _progress?.Report(new(stage, _textsProcessed, WordCount, _output.Count, _target));

        private Candidate CandidateOf(long key, Pair p)
        {
            int l = (int)(key >> 32), r = (int)key;
            return new Candidate(p.Count, _freq[l], _freq[r], l, r);
        }

        /// <summary>
        /// Lazy invalidation: every change of a pair's count or of either piece's frequency pushes a fresh entry, so
        /// the heap always holds each eligible pair's current score; entries whose numbers no longer match are stale
        /// and skipped here.
        /// </summary>
        private bool TryPopBest(out int left, out int right)
        {
            while (_heap.TryDequeue(out long key, out var c))
            {
                if (_pairs.TryGetValue(key, out var p) && p.Count == c.Count && p.Count >= _minPair &&
                    _freq[c.Left] == c.LeftFreq && _freq[c.Right] == c.RightFreq)
                {
                    (left, right) = (c.Left, c.Right);
                    return true;
                }
            }
            (left, right) = (-1, -1);
            return false;
        }

        /// <summary>Merges every occurrence of (a, b), updating only the pairs next to each occurrence.</summary>
        private int Merge(int a, int b)
        {
            long key = Key(a, b);
            var pair = _pairs[key];
            string body = _bodies[a] + _bodies[b];
            var ids = _continues[a] ? _continuationIds : _initialIds;
            if (!ids.TryGetValue(body, out int m))
                m = NewPiece(body, _continues[a], 0);
            Debug.Assert(m != a && m != b);

            _stamp++;
            long merged = 0;
            int[] words = pair.Words;
            int wordCount = pair.WordCount;
            for (int k = 0; k < wordCount; k++)
            {
                int w = words[k];
                if (_wordStamp[w] == _stamp) continue;
                _wordStamp[w] = _stamp;
                int s = _start[w], end = s + _length[w];
                long f = _wordFreq[w];
                int read = s, write = s;
                while (read < end)
                {
                    if (read + 1 < end && _symbols[read] == a && _symbols[read + 1] == b)
                    {
                        // The left neighbour is the already rewritten output (it may be an m from this very word),
                        // the right neighbour is still input: pair counts stay exact for runs like "a a a".
                        if (write > s)
                        {
                            int l = _symbols[write - 1];
                            AddPair(l, a, -f, w);
                            AddPair(l, m, f, w);
                        }
                        if (read + 2 < end)
                        {
                            int r = _symbols[read + 2];
                            AddPair(b, r, -f, w);
                            AddPair(m, r, f, w);
                        }
                        _symbols[write++] = m;
                        read += 2;
                        merged += f;
                    }
                    else
                    {
                        _symbols[write++] = _symbols[read++];
                    }
                }
                _length[w] = write - s;
            }

            // Every occurrence is gone (m differs from a and b, so none can reappear).
            if (_pairs.Remove(key, out var removed) && removed.Count >= _minPair) SetEligible(key, a, b, false);
            _freq[a] -= merged;
            _freq[b] -= merged;
            _freq[m] += merged;

            // Scores that changed: pairs whose count changed all involve a, b or m, and so do pairs whose score
            // changed through freq(a), freq(b) or freq(m). Scores can rise (a piece got rarer), so a lazily
            // invalidated heap is only right if every such pair gets a fresh entry.
            PushPairsOf(a);
            if (b != a) PushPairsOf(b);
            PushPairsOf(m);
            if (_heap.Count > 4 * _eligibleCount + 1_000_000) RebuildHeap();
            return m;
        }

        private void PushPairsOf(int piece)
        {
            var set = _eligibleOf[piece];
            if (set is null) return;
            foreach (long key in set)
                _heap.Enqueue(key, CandidateOf(key, _pairs[key]));
        }

        private void RebuildHeap()
        {
            _heap.Clear();
            foreach (var (key, p) in _pairs)
                if (p.Count >= _minPair) _heap.Enqueue(key, CandidateOf(key, p));
        }

        private void AddPair(int left, int right, long delta, int word)
        {
            long key = Key(left, right);
            ref var p = ref CollectionsMarshal.GetValueRefOrAddDefault(_pairs, key, out bool exists);
            if (!exists) p = new Pair();
            long old = p!.Count;
            p.Count += delta;
            Debug.Assert(p.Count >= 0);
            if (delta > 0) p.AddWord(word);
            bool was = old >= _minPair, now = p.Count >= _minPair;
            if (p.Count == 0) _pairs.Remove(key);
            if (was != now) SetEligible(key, left, right, now);
        }

        private void SetEligible(long key, int left, int right, bool eligible)
        {
            if (eligible)
            {
                (_eligibleOf[left] ??= []).Add(key);
                (_eligibleOf[right] ??= []).Add(key);
                _eligibleCount++;
            }
            else
            {
                _eligibleOf[left]!.Remove(key);
                _eligibleOf[right]?.Remove(key);
                _eligibleCount--;
            }
        }

        /// <summary>Ordinal comparison of the tokens two merges would create, without building the strings.</summary>
        public int CompareMerged(int xl, int xr, int yl, int yr)
        {
            var xp = _continues[xl] ? _prefix.AsSpan() : default;
            var yp = _continues[yl] ? _prefix.AsSpan() : default;
            return CompareConcat(xp, _bodies[xl], _bodies[xr], yp, _bodies[yl], _bodies[yr]);
        }

        private static int CompareConcat(ReadOnlySpan<char> x0, ReadOnlySpan<char> x1, ReadOnlySpan<char> x2,
            ReadOnlySpan<char> y0, ReadOnlySpan<char> y1, ReadOnlySpan<char> y2)
        {
            int nx = x0.Length + x1.Length + x2.Length, ny = y0.Length + y1.Length + y2.Length;
            for (int i = 0, n = Math.Min(nx, ny); i < n; i++)
            {
                char cx = i < x0.Length ? x0[i] : i < x0.Length + x1.Length ? x1[i - x0.Length] : x2[i - x0.Length - x1.Length];
                char cy = i < y0.Length ? y0[i] : i < y0.Length + y1.Length ? y1[i - y0.Length] : y2[i - y0.Length - y1.Length];
                if (cx != cy) return cx.CompareTo(cy);
            }
            return nx.CompareTo(ny);
        }
    }
}
