namespace MosaicBert.Tokenizers;

/// <summary>A token with its id, its string and its span in the text it came from (UTF-16 units).</summary>
/// <param name="Id">Vocabulary id.</param>
/// <param name="Value">Token string (continuation pieces carry their prefix, e.g. <c>##ing</c>).</param>
/// <param name="Offset">Span in the original text; <c>0..0</c> for added special tokens such as [CLS].</param>
public readonly record struct EncodedToken(int Id, string Value, Range Offset);

/// <summary>One encoded sequence or pair, ready for a BERT model.</summary>
public sealed class BertEncoding
{
    internal BertEncoding(int[] inputIds, int[] tokenTypeIds, int[] specialTokensMask, (int Start, int End)[] offsets,
        bool truncated)
    {
        Ids = inputIds;
        Types = tokenTypeIds;
        InputIds = inputIds;
        TokenTypeIds = tokenTypeIds;
        SpecialTokensMask = specialTokensMask;
        Offsets = offsets;
        Truncated = truncated;
    }

    internal int[] Ids { get; }
    internal int[] Types { get; }

    /// <summary>Token ids, with [CLS]/[SEP] when special tokens were added.</summary>
    public IReadOnlyList<int> InputIds { get; }
    /// <summary>0 for the first sequence (and [CLS] and its [SEP]), 1 for the second sequence and its [SEP].</summary>
    public IReadOnlyList<int> TokenTypeIds { get; }
    /// <summary>1 for added special tokens, 0 for tokens of the text.</summary>
    public IReadOnlyList<int> SpecialTokensMask { get; }
    /// <summary>
    /// Per token, its span (UTF-16 units) in the sequence it came from (check <see cref="TokenTypeIds"/> for which);
    /// (0, 0) for added special tokens.
    /// </summary>
    public IReadOnlyList<(int Start, int End)> Offsets { get; }
    /// <summary>All ones: an unpadded encoding attends to every token.</summary>
    public IReadOnlyList<int> AttentionMask => Enumerable.Repeat(1, InputIds.Count).ToArray();
    /// <summary>Number of tokens.</summary>
    public int Length => Ids.Length;
    /// <summary>True when tokens were dropped to respect the maximum length.</summary>
    public bool Truncated { get; }
}

/// <summary>
/// A padded batch in row-major <c>[BatchSize, SequenceLength]</c> buffers, the layout a model consumes directly.
/// </summary>
public sealed class BertBatchEncoding
{
    internal BertBatchEncoding(int batchSize, int sequenceLength, int[] inputIds, int[] tokenTypeIds, int[] attentionMask,
        BertEncoding[] encodings)
    {
        BatchSize = batchSize;
        SequenceLength = sequenceLength;
        InputIds = inputIds;
        TokenTypeIds = tokenTypeIds;
        AttentionMask = attentionMask;
        Encodings = encodings;
    }

    /// <summary>Rows.</summary>
    public int BatchSize { get; }
    /// <summary>Padded length of every row.</summary>
    public int SequenceLength { get; }
    /// <summary>Token ids, padding id at padded positions.</summary>
    public ReadOnlyMemory<int> InputIds { get; }
    /// <summary>Token type ids, 0 at padded positions.</summary>
    public ReadOnlyMemory<int> TokenTypeIds { get; }
    /// <summary>1 for real tokens, 0 for padding.</summary>
    public ReadOnlyMemory<int> AttentionMask { get; }
    /// <summary>The unpadded encoding of each row (with offsets and truncation flags).</summary>
    public IReadOnlyList<BertEncoding> Encodings { get; }
}
