using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text;

namespace MosaicBert.Tokenizers;

/// <summary>Base of the tokenizers (shape of Microsoft.ML.Tokenizers' <c>Tokenizer</c>).</summary>
public abstract class Tokenizer
{
    /// <summary>Token ids of <paramref name="text"/>.</summary>
    public virtual IReadOnlyList<int> EncodeToIds(string text) => EncodeToTokens(text).Select(t => t.Id).ToArray();

    /// <summary>Tokens of <paramref name="text"/> with their offsets in it.</summary>
    public abstract IReadOnlyList<EncodedToken> EncodeToTokens(string text);

    /// <summary>Number of tokens of <paramref name="text"/>.</summary>
    public virtual int CountTokens(string text) => EncodeToIds(text).Count;

    /// <summary>Text of a list of ids.</summary>
    public abstract string Decode(IEnumerable<int> ids);
}

/// <summary>
/// WordPiece: each word is split greedily into the longest vocabulary pieces from the left; pieces after the first
/// carry <see cref="ContinuingSubwordPrefix"/>. A word with no complete split, or longer than
/// <see cref="MaxInputCharsPerWord"/>, becomes <see cref="UnknownToken"/>.
/// </summary>
/// <remarks>Plain WordPiece splits words on whitespace only; <see cref="BertTokenizer"/> adds BERT's basic tokenization.</remarks>
public class WordPieceTokenizer : Tokenizer
{
    private readonly BertPreTokenizer _preTokenizer;
    private readonly string[] _specialTokensByLength; // longest first, for leftmost-longest matching
    private readonly SearchValues<char>? _specialTokenFirstChars;
    private readonly Dictionary<string, int> _specialTokens;
    private readonly HashSet<int> _specialIds;

    [ThreadStatic] private static Scratch? t_scratch;

    /// <summary>Creates a tokenizer over a loaded vocabulary.</summary>
    protected WordPieceTokenizer(WordPieceVocabulary vocabulary, WordPieceOptions options, BertPreTokenizer preTokenizer,
        IEnumerable<string> ownSpecialTokens, bool splitOnSpecialTokens, string sourceName)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        ArgumentNullException.ThrowIfNull(options);
        if (options.MaxInputCharsPerWord < 1)
            throw new ArgumentOutOfRangeException(nameof(options), $"MaxInputCharsPerWord must be at least 1, not {options.MaxInputCharsPerWord}.");
        Vocabulary = vocabulary;
        _preTokenizer = preTokenizer;
        UnknownToken = options.UnknownToken;
        ContinuingSubwordPrefix = options.ContinuingSubwordPrefix;
        MaxInputCharsPerWord = options.MaxInputCharsPerWord;
        UnknownTokenId = RequireToken(vocabulary, UnknownToken, sourceName);

        _specialTokens = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var token in ownSpecialTokens.Prepend(UnknownToken).Concat(options.SpecialTokens ?? []))
            _specialTokens[token] = RequireToken(vocabulary, token, sourceName);
        _specialIds = [.. _specialTokens.Values];
        _specialTokensByLength = splitOnSpecialTokens
            ? [.. _specialTokens.Keys.OrderByDescending(t => t.Length).ThenBy(t => t, StringComparer.Ordinal)]
            : [];
        if (_specialTokensByLength.Length > 0)
            _specialTokenFirstChars = SearchValues.Create([.. _specialTokensByLength.Select(t => t[0]).Distinct()]);
    }

    /// <summary>Creates a plain WordPiece tokenizer (whitespace splitting, no normalization).</summary>
    public static WordPieceTokenizer Create(string vocabFilePath, WordPieceOptions? options = null)
    {
        options ??= new WordPieceOptions();
        return new WordPieceTokenizer(WordPieceVocabulary.Load(vocabFilePath, options.ContinuingSubwordPrefix), options,
            PlainPreTokenizer, [], splitOnSpecialTokens: true, vocabFilePath);
    }

    /// <summary>Creates a plain WordPiece tokenizer from a vocabulary stream.</summary>
    public static WordPieceTokenizer Create(Stream vocabStream, WordPieceOptions? options = null)
    {
        options ??= new WordPieceOptions();
        return new WordPieceTokenizer(WordPieceVocabulary.Load(vocabStream, "<stream>", options.ContinuingSubwordPrefix), options,
            PlainPreTokenizer, [], splitOnSpecialTokens: true, "<stream>");
    }

    private static BertPreTokenizer PlainPreTokenizer => new(cleanText: false, individuallyTokenizeCjk: false,
        removeNonSpacingMarks: false, lowerCase: false, splitOnPunctuation: false);

    private protected static int RequireToken(WordPieceVocabulary vocabulary, string token, string sourceName)
    {
        if (string.IsNullOrEmpty(token))
            throw new ArgumentException("A special token must not be empty.");
        int id = vocabulary.IdOf(token);
        return id >= 0 ? id
            : throw new VocabularyFormatException(sourceName, null, $"required special token {token} is not in the vocabulary");
    }

    /// <summary>The vocabulary.</summary>
    public WordPieceVocabulary Vocabulary { get; }
    /// <summary>Token for words that cannot be split.</summary>
    public string UnknownToken { get; }
    /// <summary>Id of <see cref="UnknownToken"/>.</summary>
    public int UnknownTokenId { get; }
    /// <summary>Prefix of continuation pieces.</summary>
    public string ContinuingSubwordPrefix { get; }
    /// <summary>Longer words become <see cref="UnknownToken"/>.</summary>
    public int MaxInputCharsPerWord { get; }
    /// <summary>Special tokens (matched verbatim in text when splitting on special tokens is on) and their ids.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens => _specialTokens;
    /// <summary>The normalization and word splitting in front of WordPiece.</summary>
    public BertPreTokenizer PreTokenizer => _preTokenizer;

    /// <summary>True when <paramref name="id"/> is one of <see cref="SpecialTokens"/>.</summary>
    public bool IsSpecialTokenId(int id) => _specialIds.Contains(id);

    /// <summary>Token string of an id.</summary>
    public string IdToToken(int id) => (uint)id < (uint)Vocabulary.Count
        ? Vocabulary.Tokens[id]
        : throw new ArgumentOutOfRangeException(nameof(id), $"Token id {id} is outside the vocabulary (0..{Vocabulary.Count - 1}).");

    /// <summary>Id of a token string, or null.</summary>
    public int? TokenToId(string token) => Vocabulary.IdOf(token) is int id and >= 0 ? id : null;

    /// <inheritdoc/>
    public override IReadOnlyList<int> EncodeToIds(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var buffer = Encode(text, 0);
        return buffer.Ids.AsSpan(0, buffer.Count).ToArray();
    }

    /// <inheritdoc/>
    public override IReadOnlyList<EncodedToken> EncodeToTokens(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var b = Encode(text, 0);
        var tokens = new EncodedToken[b.Count];
        for (int i = 0; i < b.Count; i++)
            tokens[i] = new EncodedToken(b.Ids[i], Vocabulary.Tokens[b.Ids[i]], b.Starts[i]..b.Ends[i]);
        return tokens;
    }

    /// <inheritdoc/>
    public override int CountTokens(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return Encode(text, 0).Count;
    }

    /// <inheritdoc/>
    public override string Decode(IEnumerable<int> ids) => Decode(ids, skipSpecialTokens: false);

    /// <summary>
    /// Text of a list of ids: pieces are joined, continuation pieces without their prefix and without a space, and
    /// the spaces BERT's tokenization put before punctuation and contractions are removed (Hugging Face's WordPiece
    /// decoder with clean-up).
    /// </summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            if (skipSpecialTokens && _specialIds.Contains(id)) continue;
            string token = IdToToken(id);
            if (ContinuingSubwordPrefix.Length > 0 && token.StartsWith(ContinuingSubwordPrefix, StringComparison.Ordinal))
            {
                sb.Append(token, ContinuingSubwordPrefix.Length, token.Length - ContinuingSubwordPrefix.Length);
            }
            else
            {
                if (sb.Length > 0) sb.Append(' ');
                sb.Append(token);
            }
        }
        return CleanUpTokenization(sb);
    }

    private static string CleanUpTokenization(StringBuilder sb) => sb
        .Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
        .Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re")
        .ToString();

    /// <summary>
    /// Encodes one text into the calling thread's scratch buffer <paramref name="slot"/> (0 or 1), without special
    /// tokens around it. The buffer stays valid until the same thread encodes into the same slot again.
    /// </summary>
    private protected TokenBuffer Encode(ReadOnlySpan<char> text, int slot)
    {
        var scratch = t_scratch ??= new Scratch();
        var output = slot == 0 ? scratch.First : scratch.Second;
        output.Clear();
        var sink = new WordPieceSink(this, output);
        if (_specialTokenFirstChars is null)
        {
            _preTokenizer.Split(text, 0, scratch.Word, ref sink);
            return output;
        }
        int segment = 0;
        int i = 0;
        while (i < text.Length)
        {
            int next = text[i..].IndexOfAny(_specialTokenFirstChars);
            if (next < 0) break;
            i += next;
            string? match = null;
            foreach (var token in _specialTokensByLength)
            {
                if (text[i..].StartsWith(token, StringComparison.Ordinal))
                {
                    match = token;
                    break;
                }
            }
            if (match is null)
            {
                i++;
                continue;
            }
            _preTokenizer.Split(text[segment..i], segment, scratch.Word, ref sink);
            output.Add(_specialTokens[match], i, i + match.Length);
            i += match.Length;
            segment = i;
        }
        _preTokenizer.Split(text[segment..], segment, scratch.Word, ref sink);
        return output;
    }

    /// <summary>Greedy longest-match-first split of one normalized word.</summary>
    private void WordPiece(ReadOnlySpan<char> word, ReadOnlySpan<int> starts, ReadOnlySpan<int> ends, TokenBuffer output)
    {
        int codePoints = word.Length;
        for (int k = 0; k < word.Length; k++)
            if (char.IsLowSurrogate(word[k])) codePoints--;
        if (codePoints > MaxInputCharsPerWord)
        {
            output.Add(UnknownTokenId, starts[0], ends[^1]);
            return;
        }
        int mark = output.Count;
        int start = 0;
        while (start < word.Length)
        {
            // Nothing longer than the longest vocabulary entry can match, so start there instead of at the word end.
            int limit = start == 0 ? Vocabulary.MaxTokenLength : Vocabulary.MaxContinuationLength;
            int end = Math.Min(word.Length, start + limit);
            if (end < word.Length && char.IsLowSurrogate(word[end])) end--;
            int id = -1;
            while (end > start)
            {
                var piece = word[start..end];
                id = start == 0 ? Vocabulary.IdOf(piece) : Vocabulary.ContinuationIdOf(piece);
                if (id >= 0) break;
                end -= end - start >= 2 && char.IsLowSurrogate(word[end - 1]) ? 2 : 1;
            }
            if (id < 0)
            {
                output.Count = mark;
                output.Add(UnknownTokenId, starts[0], ends[^1]);
                return;
            }
            output.Add(id, starts[start], ends[end - 1]);
            start = end;
        }
    }

    private readonly struct WordPieceSink(WordPieceTokenizer tokenizer, TokenBuffer output) : IWordSink
    {
        public void OnWord(ReadOnlySpan<char> word, ReadOnlySpan<int> starts, ReadOnlySpan<int> ends) =>
            tokenizer.WordPiece(word, starts, ends, output);
    }

    private sealed class Scratch
    {
        public readonly WordBuilder Word = new();
        public readonly TokenBuffer First = new();
        public readonly TokenBuffer Second = new();
    }
}

/// <summary>Growable parallel arrays of token ids and original offsets.</summary>
internal sealed class TokenBuffer
{
    public int[] Ids = new int[256];
    public int[] Starts = new int[256];
    public int[] Ends = new int[256];
    public int Count;

    public void Clear() => Count = 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(int id, int start, int end)
    {
        if (Count == Ids.Length) Grow();
        Ids[Count] = id;
        Starts[Count] = start;
        Ends[Count] = end;
        Count++;
    }

    private void Grow()
    {
        int n = Ids.Length * 2;
        Array.Resize(ref Ids, n);
        Array.Resize(ref Starts, n);
        Array.Resize(ref Ends, n);
    }
}
