namespace MosaicBert.Tokenizers.Training;

/// <summary>Options of a <see cref="WordPieceTrainer"/>. The defaults give a bert-base-uncased-like vocabulary.</summary>
public sealed class WordPieceTrainerOptions
{
    /// <summary>
    /// Wanted number of tokens, special tokens included. The vocabulary gets exactly this many rounded up to a
    /// multiple of <see cref="PadToMultipleOf"/> (30522 → 30528, as MosaicBERT pads its embedding table).
    /// Default 30522.
    /// </summary>
    public int VocabularySize { get; set; } = 30522;

    /// <summary>The vocabulary size is rounded up to a multiple of this (1: no rounding). Default 64.</summary>
    public int PadToMultipleOf { get; set; } = 64;

    /// <summary>Tokens put first, in this order. Default <c>[PAD] [UNK] [CLS] [SEP] [MASK]</c>.</summary>
    public IReadOnlyList<string> SpecialTokens { get; set; } = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

    /// <summary>Prefix of pieces that continue a word. Default <c>##</c>.</summary>
    public string ContinuingSubwordPrefix { get; set; } = "##";

    /// <summary>A pair of adjacent pieces is merged only when it occurs at least this often. Default 2.</summary>
    public long MinPairFrequency { get; set; } = 2;

    /// <summary>
    /// A character enters the alphabet only when it occurs (in any position, counted over the word frequencies) at
    /// least this often. Words holding a left-out character are not trained on: WordPiece maps them to [UNK] whole.
    /// Default 1 (every character seen).
    /// </summary>
    public long MinCharFrequency { get; set; } = 1;

    /// <summary>
    /// At most this many distinct characters (the most frequent ones) make up the alphabet; null: no limit.
    /// Each kept character contributes its word-initial form, its continuation form, or both, as they occur.
    /// </summary>
    public int? AlphabetLimit { get; set; }

    /// <summary>Words longer than this many code points are skipped (BERT maps them to [UNK]). Default 100.</summary>
    public int MaxWordLength { get; set; } = 100;

    /// <summary>Threads used to count words; -1 (the default) uses every core. The result does not depend on it.</summary>
    public int MaxDegreeOfParallelism { get; set; } = -1;

    /// <summary>Splits texts into normalized words. Default: bert-base-uncased's (lower-casing, accent stripping).</summary>
    public BertPreTokenizer PreTokenizer { get; set; } = new();

    /// <summary><see cref="VocabularySize"/> rounded up to a multiple of <see cref="PadToMultipleOf"/>.</summary>
    public int TargetVocabularySize
    {
        get
        {
            long m = Math.Max(1, PadToMultipleOf);
            long rounded = (VocabularySize + m - 1) / m * m;
            return rounded > int.MaxValue ? throw new ArgumentException(
                $"VocabularySize ({VocabularySize}) rounded up to a multiple of {PadToMultipleOf} overflows an int.") : (int)rounded;
        }
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid option.</summary>
    public void Validate()
    {
        const string Param = "options";
        if (SpecialTokens is null)
            throw new ArgumentException("SpecialTokens must not be null (use an empty list for none).", Param);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < SpecialTokens.Count; i++)
        {
            var t = SpecialTokens[i];
            if (string.IsNullOrWhiteSpace(t))
                throw new ArgumentException($"SpecialTokens[{i}] is empty or whitespace; a vocabulary line must hold a token.", Param);
            if (t.AsSpan().IndexOfAny(['\n', '\r']) >= 0 || t != t.Trim())
                throw new ArgumentException($"SpecialTokens[{i}] ('{t}') has surrounding whitespace or a line break; vocab.txt could not hold it.", Param);
            if (!seen.Add(t))
                throw new ArgumentException($"SpecialTokens lists '{t}' twice.", Param);
        }
        if (PadToMultipleOf < 1)
            throw new ArgumentException($"PadToMultipleOf ({PadToMultipleOf}) must be at least 1.", Param);
        if (VocabularySize < SpecialTokens.Count + 1)
            throw new ArgumentException(
                $"VocabularySize ({VocabularySize}) must be at least the number of special tokens plus one ({SpecialTokens.Count + 1}).", Param);
        _ = TargetVocabularySize;
        if (string.IsNullOrEmpty(ContinuingSubwordPrefix) || ContinuingSubwordPrefix.Any(char.IsWhiteSpace))
            throw new ArgumentException(
                "ContinuingSubwordPrefix must be non-empty and hold no whitespace; without it word-initial and continuation pieces would collide.", Param);
        if (MinPairFrequency < 1)
            throw new ArgumentException($"MinPairFrequency ({MinPairFrequency}) must be at least 1.", Param);
        if (MinCharFrequency < 1)
            throw new ArgumentException($"MinCharFrequency ({MinCharFrequency}) must be at least 1.", Param);
        if (AlphabetLimit is < 1)
            throw new ArgumentException($"AlphabetLimit ({AlphabetLimit}) must be at least 1, or null for no limit.", Param);
        if (MaxWordLength < 1)
            throw new ArgumentException($"MaxWordLength ({MaxWordLength}) must be at least 1.", Param);
        if (MaxDegreeOfParallelism is 0 or < -1)
            throw new ArgumentException($"MaxDegreeOfParallelism ({MaxDegreeOfParallelism}) must be -1 (all cores) or at least 1.", Param);
        if (PreTokenizer is null)
            throw new ArgumentException("PreTokenizer must not be null.", Param);
    }
}

/// <summary>What a <see cref="WordPieceTrainer"/> is doing.</summary>
public enum WordPieceTrainingStage
{
    /// <summary>Splitting texts into words and counting them.</summary>
    CountingWords,
    /// <summary>Merging pairs of pieces into new tokens.</summary>
    Merging,
    /// <summary>The vocabulary is complete.</summary>
    Done,
}

/// <summary>Progress of a training run.</summary>
/// <param name="Stage">What is being done.</param>
/// <param name="TextsProcessed">Texts split and counted so far (0 when training from word counts).</param>
/// <param name="DistinctWords">Distinct words trained on (known from the merging stage on; 0 before).</param>
/// <param name="VocabularySize">Tokens so far (specials, alphabet, merges; known from the merging stage on).</param>
/// <param name="TargetVocabularySize">Tokens the vocabulary will have.</param>
public readonly record struct WordPieceTrainingProgress(
    WordPieceTrainingStage Stage, long TextsProcessed, int DistinctWords, int VocabularySize, int TargetVocabularySize);
