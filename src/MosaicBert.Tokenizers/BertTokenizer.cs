using System.Runtime.ExceptionServices;

namespace MosaicBert.Tokenizers;

/// <summary>
/// The BERT tokenizer: basic tokenization (clean-up, CJK, accents, lower-case, punctuation) + WordPiece, the
/// <c>[CLS] A [SEP] B [SEP]</c> template, truncation, padding and batches. With the default options and
/// bert-base-uncased's vocab.txt it gives the same ids, type ids and offsets as Hugging Face's
/// <c>BertWordPieceTokenizer(lowercase=True)</c>.
/// </summary>
/// <remarks>Instances are immutable and safe to use from many threads at once.</remarks>
public sealed class BertTokenizer : WordPieceTokenizer
{
    private BertTokenizer(WordPieceVocabulary vocabulary, BertOptions options, string sourceName)
        : base(vocabulary, options, CreatePreTokenizer(options),
            [options.ClassificationToken, options.SeparatorToken, options.PaddingToken, options.MaskingToken],
            options.SplitOnSpecialTokens, sourceName)
    {
        LowerCaseBeforeTokenization = options.LowerCaseBeforeTokenization;
        ApplyBasicTokenization = options.ApplyBasicTokenization;
        IndividuallyTokenizeCjk = options.IndividuallyTokenizeCjk;
        RemoveNonSpacingMarks = PreTokenizer.RemoveNonSpacingMarks;
        SplitOnSpecialTokens = options.SplitOnSpecialTokens;
        ClassificationToken = options.ClassificationToken;
        SeparatorToken = options.SeparatorToken;
        PaddingToken = options.PaddingToken;
        MaskingToken = options.MaskingToken;
        ClassificationTokenId = SpecialTokens[ClassificationToken];
        SeparatorTokenId = SpecialTokens[SeparatorToken];
        PaddingTokenId = SpecialTokens[PaddingToken];
        MaskingTokenId = SpecialTokens[MaskingToken];
    }

    private static BertPreTokenizer CreatePreTokenizer(BertOptions o) => o.ApplyBasicTokenization
        ? new BertPreTokenizer(o.CleanText, o.IndividuallyTokenizeCjk, o.RemoveNonSpacingMarks ?? o.LowerCaseBeforeTokenization,
            o.LowerCaseBeforeTokenization, splitOnPunctuation: true)
        : new BertPreTokenizer(cleanText: false, individuallyTokenizeCjk: false, removeNonSpacingMarks: false,
            o.LowerCaseBeforeTokenization, splitOnPunctuation: false);

    /// <summary>Loads vocab.txt (one token per line; the line number is the id).</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="VocabularyFormatException">
    /// The file is malformed (empty or repeated lines, invalid UTF-8) or lacks a special token; the message names
    /// the file and line.
    /// </exception>
    public static BertTokenizer Create(string vocabFilePath, BertOptions? options = null)
    {
        options ??= new BertOptions();
        return new BertTokenizer(WordPieceVocabulary.Load(vocabFilePath, options.ContinuingSubwordPrefix), options, vocabFilePath);
    }

    /// <summary>Loads a vocabulary from a stream.</summary>
    public static BertTokenizer Create(Stream vocabStream, BertOptions? options = null)
    {
        options ??= new BertOptions();
        return new BertTokenizer(WordPieceVocabulary.Load(vocabStream, "<stream>", options.ContinuingSubwordPrefix), options, "<stream>");
    }

    /// <summary>Creates a tokenizer over an already loaded vocabulary.</summary>
    public static BertTokenizer Create(WordPieceVocabulary vocabulary, BertOptions? options = null) =>
        new(vocabulary, options ?? new BertOptions(), "<vocabulary>");

    /// <summary>Loads vocab.txt without blocking the caller.</summary>
    public static Task<BertTokenizer> CreateAsync(string vocabFilePath, BertOptions? options = null,
        CancellationToken cancellationToken = default) =>
        Task.Run(() => Create(vocabFilePath, options), cancellationToken);

    /// <summary>Lower-cases before tokenization.</summary>
    public bool LowerCaseBeforeTokenization { get; }
    /// <summary>Runs BERT's basic tokenization.</summary>
    public bool ApplyBasicTokenization { get; }
    /// <summary>Makes every CJK ideograph a word of its own.</summary>
    public bool IndividuallyTokenizeCjk { get; }
    /// <summary>Strips accents.</summary>
    public bool RemoveNonSpacingMarks { get; }
    /// <summary>Recognises special tokens written in the text.</summary>
    public bool SplitOnSpecialTokens { get; }
    /// <summary>[CLS].</summary>
    public string ClassificationToken { get; }
    /// <summary>[SEP].</summary>
    public string SeparatorToken { get; }
    /// <summary>[PAD].</summary>
    public string PaddingToken { get; }
    /// <summary>[MASK].</summary>
    public string MaskingToken { get; }
    /// <summary>Id of [CLS].</summary>
    public int ClassificationTokenId { get; }
    /// <summary>Id of [SEP].</summary>
    public int SeparatorTokenId { get; }
    /// <summary>Id of [PAD].</summary>
    public int PaddingTokenId { get; }
    /// <summary>Id of [MASK].</summary>
    public int MaskingTokenId { get; }

    /// <summary>Ids of <paramref name="text"/> wrapped in [CLS] … [SEP].</summary>
    public override IReadOnlyList<int> EncodeToIds(string text) => EncodeToIds(text, addSpecialTokens: true);

    /// <summary>Ids of <paramref name="text"/>, wrapped in [CLS] … [SEP] when <paramref name="addSpecialTokens"/>.</summary>
    public IReadOnlyList<int> EncodeToIds(string text, bool addSpecialTokens) =>
        addSpecialTokens ? Encode(text).InputIds : base.EncodeToIds(text);

    /// <summary><c>[CLS] A [SEP]</c> or <c>[CLS] A [SEP] B [SEP]</c>.</summary>
    public IReadOnlyList<int> BuildInputsWithSpecialTokens(IEnumerable<int> tokenIds, IEnumerable<int>? additionalTokenIds = null)
    {
        ArgumentNullException.ThrowIfNull(tokenIds);
        var ids = new List<int> { ClassificationTokenId };
        ids.AddRange(tokenIds);
        ids.Add(SeparatorTokenId);
        if (additionalTokenIds is not null)
        {
            ids.AddRange(additionalTokenIds);
            ids.Add(SeparatorTokenId);
        }
        return ids;
    }

    /// <summary>Type ids for the template: 0 for [CLS] A [SEP], 1 for B [SEP].</summary>
    public IReadOnlyList<int> CreateTokenTypeIdsFromSequences(IEnumerable<int> tokenIds, IEnumerable<int>? additionalTokenIds = null)
    {
        ArgumentNullException.ThrowIfNull(tokenIds);
        var types = Enumerable.Repeat(0, tokenIds.Count() + 2);
        return additionalTokenIds is null ? types.ToArray() : types.Concat(Enumerable.Repeat(1, additionalTokenIds.Count() + 1)).ToArray();
    }

    /// <summary>1 where the template puts a special token, 0 for text tokens.</summary>
    public IReadOnlyList<int> GetSpecialTokensMask(IEnumerable<int> tokenIds, IEnumerable<int>? additionalTokenIds = null,
        bool alreadyHasSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(tokenIds);
        if (alreadyHasSpecialTokens)
        {
            if (additionalTokenIds is not null)
                throw new ArgumentException("additionalTokenIds must be null when the ids already hold special tokens.", nameof(additionalTokenIds));
            return tokenIds.Select(id => id == ClassificationTokenId || id == SeparatorTokenId ? 1 : 0).ToArray();
        }
        var mask = new List<int> { 1 };
        mask.AddRange(tokenIds.Select(_ => 0));
        mask.Add(1);
        if (additionalTokenIds is not null)
        {
            mask.AddRange(additionalTokenIds.Select(_ => 0));
            mask.Add(1);
        }
        return mask;
    }

    /// <summary>
    /// Encodes a text, or a pair, with the <c>[CLS] A [SEP] B [SEP]</c> template and optional truncation.
    /// </summary>
    /// <param name="text">First sequence.</param>
    /// <param name="textPair">Optional second sequence.</param>
    /// <param name="maxLength">Maximum number of tokens including special tokens; null for no limit.</param>
    /// <param name="truncation">How to shorten to <paramref name="maxLength"/> (Hugging Face semantics).</param>
    /// <param name="addSpecialTokens">Add [CLS]/[SEP]; when false the sequences are concatenated as they are.</param>
    /// <exception cref="ArgumentException">
    /// A lone surrogate in the text, or a truncation that cannot be done (the sequence it may shorten is too short,
    /// or <see cref="TruncationStrategy.OnlySecond"/> without a second sequence).
    /// </exception>
    public BertEncoding Encode(string text, string? textPair = null, int? maxLength = null,
        TruncationStrategy truncation = TruncationStrategy.LongestFirst, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var a = Encode(text, 0);
        var b = textPair is null ? null : Encode(textPair, 1);
        int na = a.Count, nb = b?.Count ?? 0;
        bool truncated = false;
        if (maxLength is int max && truncation != TruncationStrategy.DoNotTruncate)
        {
            int added = addSpecialTokens ? (b is null ? 2 : 3) : 0;
            if (max < added)
                throw new ArgumentOutOfRangeException(nameof(maxLength), $"maxLength {max} leaves no room for the {added} special tokens.");
            (na, nb, truncated) = Truncate(na, nb, b is not null, max - added, truncation, max);
        }
        int n = na + nb + (addSpecialTokens ? (b is null ? 2 : 3) : 0);
        var ids = new int[n];
        var types = new int[n];
        var special = new int[n];
        var offsets = new (int, int)[n];
        int p = 0;
        if (addSpecialTokens) Special(ClassificationTokenId, 0);
        Copy(a, na, 0);
        if (addSpecialTokens) Special(SeparatorTokenId, 0);
        if (b is not null)
        {
            Copy(b, nb, 1);
            if (addSpecialTokens) Special(SeparatorTokenId, 1);
        }
        return new BertEncoding(ids, types, special, offsets, truncated);

        void Special(int id, int type)
        {
            ids[p] = id;
            types[p] = type;
            special[p] = 1;
            p++;
        }
        void Copy(TokenBuffer src, int count, int type)
        {
            src.Ids.AsSpan(0, count).CopyTo(ids.AsSpan(p));
            types.AsSpan(p, count).Fill(type);
            for (int i = 0; i < count; i++) offsets[p + i] = (src.Starts[i], src.Ends[i]);
            p += count;
        }
    }

    /// <summary>
    /// Lengths to keep of the two sequences so that they fit <paramref name="budget"/> tokens (Hugging Face's rules).
    /// </summary>
    /// <remarks>
    /// LongestFirst on a pair, with n1 ≤ n2 the shorter and longer lengths (each capped at maxLength first): if only the longer must shrink it keeps
    /// budget − n1; if both must, the shorter keeps ⌊budget/2⌋ and the longer the rest (budget/2 rounded up).
    /// OnlyFirst/OnlySecond remove the whole excess from one sequence, which must keep at least one token.
    /// </remarks>
    internal static (int First, int Second, bool Truncated) Truncate(int n1, int n2, bool hasPair, int budget, TruncationStrategy strategy,
        int? maxLength = null)
    {
        if (n1 + n2 <= budget) return (n1, n2, false);
        int excess = n1 + n2 - budget;
        switch (strategy)
        {
            case TruncationStrategy.LongestFirst when !hasPair:
                return (budget, 0, true);
            case TruncationStrategy.LongestFirst:
            {
                // Measured on tokenizers 0.23 (tests/reference/probe_truncation.py, all n1, n2 < 24, maxLength 3..19):
                // the lengths it compares are first capped at maxLength itself. That only shows when both sequences
                // are that long: they then count as equal and the first one gets the smaller half.
                int cap = maxLength ?? int.MaxValue;
                int c1 = Math.Min(n1, cap), c2 = Math.Min(n2, cap);
                bool swap = c1 > c2;
                int shortLen = Math.Min(c1, c2), longLen;
                if (shortLen > budget) longLen = shortLen;
                else longLen = Math.Max(shortLen, budget - shortLen);
                if (shortLen + longLen > budget)
                {
                    shortLen = budget / 2;
                    longLen = shortLen + budget % 2;
                }
                return swap ? (longLen, shortLen, true) : (shortLen, longLen, true);
            }
            case TruncationStrategy.OnlyFirst:
                return n1 > excess ? (n1 - excess, n2, true)
                    : throw new ArgumentException($"Cannot truncate with OnlyFirst: the first sequence has {n1} tokens, {excess} must go, and it must keep at least one.");
            case TruncationStrategy.OnlySecond:
                if (!hasPair)
                    throw new ArgumentException("Cannot truncate with OnlySecond: there is no second sequence.");
                return n2 > excess ? (n1, n2 - excess, true)
                    : throw new ArgumentException($"Cannot truncate with OnlySecond: the second sequence has {n2} tokens, {excess} must go, and it must keep at least one.");
            default:
                return (n1, n2, false);
        }
    }

    /// <summary>
    /// Encodes many texts (or pairs) in parallel, without padding (Hugging Face's <c>encode_batch</c>).
    /// </summary>
    /// <param name="texts">First sequences.</param>
    /// <param name="textPairs">Second sequences (same count), or null.</param>
    /// <param name="maxLength">Maximum length including special tokens, or null.</param>
    /// <param name="truncation">Truncation strategy.</param>
    /// <param name="maxDegreeOfParallelism">Threads to use; null for all cores.</param>
    /// <exception cref="ArgumentException">An item cannot be encoded; the message names the item.</exception>
    public BertEncoding[] Encode(IReadOnlyList<string> texts, IReadOnlyList<string?>? textPairs = null, int? maxLength = null,
        TruncationStrategy truncation = TruncationStrategy.LongestFirst, int? maxDegreeOfParallelism = null)
    {
        ArgumentNullException.ThrowIfNull(texts);
        if (textPairs is not null && textPairs.Count != texts.Count)
            throw new ArgumentException($"textPairs has {textPairs.Count} items but texts has {texts.Count}.", nameof(textPairs));
        var encodings = new BertEncoding[texts.Count];
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = maxDegreeOfParallelism ?? -1 };
        try
        {
            // Ranges of items per task: per-item scheduling costs more than encoding a short sentence.
            Parallel.ForEach(System.Collections.Concurrent.Partitioner.Create(0, texts.Count, Math.Max(1, Math.Min(256, texts.Count / 64))),
                parallel, range =>
                {
                    for (int i = range.Item1; i < range.Item2; i++)
                    {
                        try
                        {
                            encodings[i] = Encode(texts[i], textPairs?[i], maxLength, truncation);
                        }
                        catch (ArgumentException e)
                        {
                            throw new ArgumentException($"Batch item {i}: {e.Message}", e);
                        }
                    }
                });
        }
        catch (AggregateException e)
        {
            // Report the first failing item as itself, not wrapped: callers catch ArgumentException.
            ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
        return encodings;
    }

    /// <summary>
    /// Encodes many texts (or pairs) in parallel into padded row-major buffers.
    /// </summary>
    /// <param name="texts">First sequences.</param>
    /// <param name="textPairs">Second sequences (same count), or null.</param>
    /// <param name="maxLength">Maximum length including special tokens; required for <see cref="PaddingStrategy.MaxLength"/>.</param>
    /// <param name="truncation">Truncation strategy.</param>
    /// <param name="padding">Pad to the longest row or to <paramref name="maxLength"/>.</param>
    /// <param name="maxDegreeOfParallelism">Threads to use; null for all cores.</param>
    public BertBatchEncoding EncodeBatch(IReadOnlyList<string> texts, IReadOnlyList<string?>? textPairs = null,
        int? maxLength = null, TruncationStrategy truncation = TruncationStrategy.LongestFirst,
        PaddingStrategy padding = PaddingStrategy.LongestInBatch, int? maxDegreeOfParallelism = null)
    {
        if (padding == PaddingStrategy.MaxLength && maxLength is null)
            throw new ArgumentException("PaddingStrategy.MaxLength needs maxLength.", nameof(padding));
        var encodings = Encode(texts, textPairs, maxLength, truncation, maxDegreeOfParallelism);
        int length = padding == PaddingStrategy.MaxLength ? maxLength!.Value : encodings.Select(e => e.Length).DefaultIfEmpty(0).Max();
        length = Math.Max(length, encodings.Select(e => e.Length).DefaultIfEmpty(0).Max());
        var ids = new int[texts.Count * length];
        var types = new int[ids.Length];
        var mask = new int[ids.Length];
        ids.AsSpan().Fill(PaddingTokenId);
        for (int i = 0; i < encodings.Length; i++)
        {
            var e = encodings[i];
            int row = i * length;
            e.Ids.CopyTo(ids, row);
            e.Types.CopyTo(types, row);
            mask.AsSpan(row, e.Length).Fill(1);
        }
        return new BertBatchEncoding(texts.Count, length, ids, types, mask, encodings);
    }
}
