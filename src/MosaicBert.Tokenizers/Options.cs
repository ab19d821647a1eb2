namespace MosaicBert.Tokenizers;

/// <summary>Options of a <see cref="WordPieceTokenizer"/> (names and defaults as in Microsoft.ML.Tokenizers).</summary>
public class WordPieceOptions
{
    /// <summary>Token emitted for a word that cannot be split into vocabulary pieces. Default <c>[UNK]</c>.</summary>
    public string UnknownToken { get; set; } = "[UNK]";

    /// <summary>Prefix that marks a piece continuing a word. Default <c>##</c>.</summary>
    public string ContinuingSubwordPrefix { get; set; } = "##";

    /// <summary>Words longer than this many code points (after normalization) become <see cref="UnknownToken"/>. Default 100.</summary>
    public int MaxInputCharsPerWord { get; set; } = 100;

    /// <summary>
    /// Extra tokens, beyond the ones the tokenizer itself defines, that are matched verbatim in the raw text
    /// (before normalization) and never split. Each must be in the vocabulary.
    /// </summary>
    public IReadOnlyList<string>? SpecialTokens { get; set; }
}

/// <summary>Options of a <see cref="BertTokenizer"/>. The defaults give bert-base-uncased behaviour.</summary>
public sealed class BertOptions : WordPieceOptions
{
    /// <summary>Lower-case the text. Default true (uncased models).</summary>
    public bool LowerCaseBeforeTokenization { get; set; } = true;

    /// <summary>
    /// Run BERT's basic tokenization (clean-up, CJK splitting, accent stripping, punctuation splitting) before
    /// WordPiece. When false only whitespace splits words. Default true.
    /// </summary>
    public bool ApplyBasicTokenization { get; set; } = true;

    /// <summary>Remove control characters and turn whitespace characters into spaces. Default true.</summary>
    public bool CleanText { get; set; } = true;

    /// <summary>Recognise the special tokens ([CLS], [SEP], [MASK], ...) written literally in the text. Default true.</summary>
    public bool SplitOnSpecialTokens { get; set; } = true;

    /// <summary>Separator token. Default <c>[SEP]</c>.</summary>
    public string SeparatorToken { get; set; } = "[SEP]";

    /// <summary>Padding token. Default <c>[PAD]</c>.</summary>
    public string PaddingToken { get; set; } = "[PAD]";

    /// <summary>Classification token put first. Default <c>[CLS]</c>.</summary>
    public string ClassificationToken { get; set; } = "[CLS]";

    /// <summary>Mask token for masked-language modelling. Default <c>[MASK]</c>.</summary>
    public string MaskingToken { get; set; } = "[MASK]";

    /// <summary>Make every CJK ideograph a word of its own. Default true.</summary>
    public bool IndividuallyTokenizeCjk { get; set; } = true;

    /// <summary>
    /// Strip accents (canonical decomposition, then drop non-spacing marks). <c>null</c> (the default) follows
    /// <see cref="LowerCaseBeforeTokenization"/>, as Hugging Face's BertNormalizer does.
    /// </summary>
    public bool? RemoveNonSpacingMarks { get; set; }
}

/// <summary>How a sequence or a pair is shortened to a maximum length (Hugging Face's strategies).</summary>
public enum TruncationStrategy
{
    /// <summary>Remove tokens from the longer sequence first, then from both (HF <c>longest_first</c>).</summary>
    LongestFirst,
    /// <summary>Remove tokens from the first sequence only; an error when it is too short (HF <c>only_first</c>).</summary>
    OnlyFirst,
    /// <summary>Remove tokens from the second sequence only; an error when it is too short (HF <c>only_second</c>).</summary>
    OnlySecond,
    /// <summary>Never truncate; the maximum length is then only used for padding.</summary>
    DoNotTruncate,
}

/// <summary>How a batch is padded.</summary>
public enum PaddingStrategy
{
    /// <summary>Pad every row to the longest row of the batch.</summary>
    LongestInBatch,
    /// <summary>Pad every row to the maximum length.</summary>
    MaxLength,
}
