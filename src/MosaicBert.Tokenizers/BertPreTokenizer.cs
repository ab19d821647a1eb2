using System.Runtime.CompilerServices;
using MosaicBert.Tokenizers.Unicode;

namespace MosaicBert.Tokenizers;

/// <summary>Receives one word, in normalized form, with the original UTF-16 span of each of its chars.</summary>
/// <param name="word">The normalized word (UTF-16).</param>
/// <param name="start">Original start offset of the word's first char.</param>
/// <param name="end">Original end offset (exclusive) of the word's last char.</param>
public delegate void WordCallback(ReadOnlySpan<char> word, int start, int end);

/// <summary>Consumes words; a struct so the hot loop is specialised and inlined, not called through a delegate.</summary>
internal interface IWordSink
{
    /// <param name="word">Normalized word.</param>
    /// <param name="starts">Per UTF-16 unit of <paramref name="word"/>: original start offset of the char it came from.</param>
    /// <param name="ends">Per UTF-16 unit: original end offset (exclusive).</param>
    void OnWord(ReadOnlySpan<char> word, ReadOnlySpan<int> starts, ReadOnlySpan<int> ends);
}

/// <summary>
/// BERT's basic tokenization, fused into one pass: clean-up, CJK splitting, accent stripping, lower-casing, then
/// splitting into words on whitespace and around punctuation. Every normalized char keeps the span of the original
/// char it came from, so tokens can report offsets into the caller's text.
/// </summary>
/// <remarks>
/// Order of operations, as in Hugging Face's BertNormalizer + BertPreTokenizer, applied per code point c:
/// clean (drop controls, whitespace → space) → CJK (pad with spaces) → strip accents (NFD, drop Mn, with canonical
/// reordering of the surviving marks) → lower-case → split (whitespace ends a word; punctuation is a word alone).
/// Each step is a function of one code point except the canonical reordering, which is handled where marks meet.
/// </remarks>
public sealed class BertPreTokenizer
{
    private enum AsciiAction : byte { Append, Skip, EndWord, Punctuation }

    private readonly BertUnicodeTable _table = BertUnicodeTable.Instance;
    private readonly AsciiAction[] _asciiAction = new AsciiAction[128];
    private readonly char[] _asciiMap = new char[128];

    [ThreadStatic] private static WordBuilder? t_callbackWord;

    /// <summary>Creates a pre-tokenizer with the given steps switched on (all on: bert-base-uncased).</summary>
    public BertPreTokenizer(bool cleanText = true, bool individuallyTokenizeCjk = true, bool removeNonSpacingMarks = true,
        bool lowerCase = true, bool splitOnPunctuation = true)
    {
        CleanText = cleanText;
        IndividuallyTokenizeCjk = individuallyTokenizeCjk;
        RemoveNonSpacingMarks = removeNonSpacingMarks;
        LowerCase = lowerCase;
        SplitOnPunctuation = splitOnPunctuation;
        for (int c = 0; c < 128; c++)
        {
            var cls = _table.ClassOf(c);
            _asciiMap[c] = lowerCase && c is >= 'A' and <= 'Z' ? (char)(c + 32) : (char)c;
            _asciiAction[c] =
                cleanText && cls.HasFlag(CharClass.Removed) ? AsciiAction.Skip
                : (cleanText && cls.HasFlag(CharClass.CleanSpace)) || cls.HasFlag(CharClass.Space) ? AsciiAction.EndWord
                : splitOnPunctuation && cls.HasFlag(CharClass.Punctuation) ? AsciiAction.Punctuation
                : AsciiAction.Append;
        }
    }

    /// <summary>Drops control characters and turns whitespace into spaces.</summary>
    public bool CleanText { get; }
    /// <summary>Makes every CJK ideograph a word of its own.</summary>
    public bool IndividuallyTokenizeCjk { get; }
    /// <summary>Strips accents (NFD, then drop non-spacing marks).</summary>
    public bool RemoveNonSpacingMarks { get; }
    /// <summary>Lower-cases.</summary>
    public bool LowerCase { get; }
    /// <summary>Makes every punctuation character a word of its own.</summary>
    public bool SplitOnPunctuation { get; }

    /// <summary>Splits <paramref name="text"/> into normalized words and calls <paramref name="onWord"/> for each.</summary>
    /// <exception cref="ArgumentException">The text holds a lone surrogate.</exception>
    public void Split(ReadOnlySpan<char> text, WordCallback onWord)
    {
        ArgumentNullException.ThrowIfNull(onWord);
        var word = t_callbackWord ??= new WordBuilder();
        var sink = new CallbackSink(onWord);
        Split(text, 0, word, ref sink);
    }

    /// <summary>Splits <paramref name="text"/> into normalized words.</summary>
    public List<string> Split(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var words = new List<string>();
        Split(text, (w, _, _) => words.Add(w.ToString()));
        return words;
    }

    private readonly struct CallbackSink(WordCallback callback) : IWordSink
    {
        public void OnWord(ReadOnlySpan<char> word, ReadOnlySpan<int> starts, ReadOnlySpan<int> ends) =>
            callback(word, starts[0], ends[^1]);
    }

    /// <summary>The fused loop. <paramref name="offset"/> is added to every reported offset.</summary>
    internal void Split<TSink>(ReadOnlySpan<char> text, int offset, WordBuilder word, ref TSink sink)
        where TSink : struct, IWordSink
    {
        word.Clear();
        int i = 0;
        while (i < text.Length)
        {
            char c = text[i];
            if (c < 128)
            {
                switch (_asciiAction[c])
                {
                    case AsciiAction.Append:
                        word.Append(_asciiMap[c], offset + i, offset + i + 1);
                        break;
                    case AsciiAction.EndWord:
                        Flush(word, ref sink);
                        break;
                    case AsciiAction.Punctuation:
                        Flush(word, ref sink);
                        word.Append(c, offset + i, offset + i + 1);
                        Flush(word, ref sink);
                        break;
                }
                i++;
                continue;
            }
            int cp = c;
            int width = 1;
            if (char.IsSurrogate(c))
            {
                if (!char.IsHighSurrogate(c) || i + 1 >= text.Length || !char.IsLowSurrogate(text[i + 1]))
                    throw new ArgumentException(
                        $"The text holds a lone surrogate U+{(int)c:X4} at UTF-16 index {offset + i}; it is not valid Unicode.", nameof(text));
                cp = char.ConvertToUtf32(c, text[i + 1]);
                width = 2;
            }
            NonAscii(cp, offset + i, offset + i + width, word, ref sink);
            i += width;
        }
        Flush(word, ref sink);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void NonAscii<TSink>(int cp, int start, int end, WordBuilder word, ref TSink sink) where TSink : struct, IWordSink
    {
        var cls = _table.ClassOf(cp);
        if (CleanText)
        {
            if ((cls & CharClass.Removed) != 0) return;
            if ((cls & CharClass.CleanSpace) != 0)
            {
                Flush(word, ref sink);
                return;
            }
        }
        bool cjk = IndividuallyTokenizeCjk && (cls & CharClass.Cjk) != 0;
        if (cjk) Flush(word, ref sink);
        if (RemoveNonSpacingMarks && _table.TryStrip(cp, out var stripped))
        {
            foreach (int s in stripped) LowerAndEmit(s, start, end, word, ref sink);
        }
        else
        {
            LowerAndEmit(cp, start, end, word, ref sink);
        }
        if (cjk) Flush(word, ref sink);
    }

    private void LowerAndEmit<TSink>(int cp, int start, int end, WordBuilder word, ref TSink sink) where TSink : struct, IWordSink
    {
        if (LowerCase && _table.TryLower(cp, out var lowered))
        {
            foreach (int l in lowered) Emit(l, start, end, word, ref sink);
        }
        else
        {
            Emit(cp, start, end, word, ref sink);
        }
    }

    private void Emit<TSink>(int cp, int start, int end, WordBuilder word, ref TSink sink) where TSink : struct, IWordSink
    {
        var cls = _table.ClassOf(cp);
        if ((cls & CharClass.Space) != 0)
        {
            Flush(word, ref sink);
        }
        else if (SplitOnPunctuation && (cls & CharClass.Punctuation) != 0)
        {
            Flush(word, ref sink);
            word.AppendCodePoint(cp, start, end);
            Flush(word, ref sink);
        }
        else if (RemoveNonSpacingMarks && _table.CombiningClass(cp) is int ccc and > 0)
        {
            // NFD orders adjacent non-starters by combining class (stable). Stripping removed the Mn marks; the
            // survivors (spacing marks with a non-zero class) still have to be put in canonical order.
            word.AppendCodePoint(cp, start, end);
            word.BubbleLastMark(ccc, _table);
        }
        else
        {
            word.AppendCodePoint(cp, start, end);
        }
    }

    private static void Flush<TSink>(WordBuilder word, ref TSink sink) where TSink : struct, IWordSink
    {
        if (word.Length == 0) return;
        sink.OnWord(word.Chars, word.Starts, word.Ends);
        word.Clear();
    }
}

/// <summary>A growable word: normalized chars plus, per char, the original span it came from.</summary>
internal sealed class WordBuilder
{
    private char[] _chars = new char[64];
    private int[] _starts = new int[64];
    private int[] _ends = new int[64];

    public int Length { get; private set; }
    public ReadOnlySpan<char> Chars => _chars.AsSpan(0, Length);
    public ReadOnlySpan<int> Starts => _starts.AsSpan(0, Length);
    public ReadOnlySpan<int> Ends => _ends.AsSpan(0, Length);

    public void Clear() => Length = 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Append(char c, int start, int end)
    {
        if (Length == _chars.Length) Grow();
        _chars[Length] = c;
        _starts[Length] = start;
        _ends[Length] = end;
        Length++;
    }

    public void AppendCodePoint(int cp, int start, int end)
    {
        if (cp < 0x10000)
        {
            Append((char)cp, start, end);
        }
        else
        {
            int v = cp - 0x10000;
            Append((char)(0xD800 + (v >> 10)), start, end);
            Append((char)(0xDC00 + (v & 0x3FF)), start, end);
        }
    }

    /// <summary>Moves the last code point left past preceding marks of a higher combining class.</summary>
    public void BubbleLastMark(int ccc, BertUnicodeTable table)
    {
        int w = char.IsLowSurrogate(_chars[Length - 1]) ? 2 : 1;
        int pos = Length - w;
        while (pos > 0)
        {
            int pw = char.IsLowSurrogate(_chars[pos - 1]) && pos >= 2 ? 2 : 1;
            int prev = pw == 2 ? char.ConvertToUtf32(_chars[pos - 2], _chars[pos - 1]) : _chars[pos - 1];
            if (table.CombiningClass(prev) <= ccc) break;
            Rotate(_chars, pos - pw, pw, w);
            Rotate(_starts, pos - pw, pw, w);
            Rotate(_ends, pos - pw, pw, w);
            pos -= pw;
        }
    }

    // Swaps the adjacent blocks [at, at+a) and [at+a, at+a+b).
    private static void Rotate<T>(T[] array, int at, int a, int b)
    {
        var span = array.AsSpan(at, a + b);
        Span<T> tmp = new T[a];
        span[..a].CopyTo(tmp);
        span[a..].CopyTo(span);
        tmp.CopyTo(span[b..]);
    }

    private void Grow()
    {
        int n = _chars.Length * 2;
        Array.Resize(ref _chars, n);
        Array.Resize(ref _starts, n);
        Array.Resize(ref _ends, n);
    }
}
