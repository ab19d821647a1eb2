namespace MosaicBert.Model;

/// <summary>
/// A padded batch as users hold it ([B, S] ids, token types and attention mask) and its unpadded form: the real
/// tokens packed row after row (N of them), where each one sat in the padded grid, and the sequence boundaries.
/// </summary>
public sealed class EncoderBatch
{
    /// <summary>Unpads a batch. Masks may have holes; ALiBi distances are measured in padded columns, as the
    /// reference implementation does.</summary>
    /// <param name="inputIds">[B·S] row-major.</param>
    /// <param name="tokenTypeIds">[B·S], or empty for all zeros.</param>
    /// <param name="attentionMask">[B·S] of 0/1, or empty for all ones.</param>
    /// <param name="batchSize">B.</param>
    /// <param name="sequenceLength">S.</param>
    /// <param name="mlmLabels">[B·S] target ids at masked positions and −100 elsewhere, or empty.</param>
    public EncoderBatch(ReadOnlySpan<int> inputIds, ReadOnlySpan<int> tokenTypeIds, ReadOnlySpan<int> attentionMask,
        int batchSize, int sequenceLength, ReadOnlySpan<int> mlmLabels = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batchSize);
        ArgumentOutOfRangeException.ThrowIfNegative(sequenceLength);
        int cells = checked(batchSize * sequenceLength);
        Expect(inputIds.Length, cells, "input_ids");
        if (!tokenTypeIds.IsEmpty) Expect(tokenTypeIds.Length, cells, "token_type_ids");
        if (!attentionMask.IsEmpty) Expect(attentionMask.Length, cells, "attention_mask");
        if (!mlmLabels.IsEmpty) Expect(mlmLabels.Length, cells, "labels");
        BatchSize = batchSize;
        SequenceLength = sequenceLength;

        var indices = new List<int>(cells);
        CuSeqlens = new int[batchSize + 1];
        for (int b = 0; b < batchSize; b++)
        {
            for (int s = 0; s < sequenceLength; s++)
            {
                int m = attentionMask.IsEmpty ? 1 : attentionMask[b * sequenceLength + s];
                if (m is not (0 or 1)) throw new ArgumentException($"attention_mask[{b}, {s}] is {m}; it must be 0 or 1.");
                if (m == 1) indices.Add(b * sequenceLength + s);
            }
            CuSeqlens[b + 1] = indices.Count;
            if (CuSeqlens[b + 1] == CuSeqlens[b])
                throw new ArgumentException($"Sequence {b} has no real token (its attention_mask is all zeros).");
        }
        Indices = [.. indices];
        int n = Indices.Length;
        TokenIds = new int[n];
        TypeIds = new int[n];
        Positions = new int[n];
        for (int t = 0; t < n; t++)
        {
            int cell = Indices[t];
            TokenIds[t] = inputIds[cell];
            TypeIds[t] = tokenTypeIds.IsEmpty ? 0 : tokenTypeIds[cell];
            Positions[t] = cell % Math.Max(1, sequenceLength);
        }
        FirstTokens = new int[batchSize];
        for (int b = 0; b < batchSize; b++) FirstTokens[b] = CuSeqlens[b];
        if (!mlmLabels.IsEmpty)
        {
            var masked = new List<int>();
            var targets = new List<int>();
            for (int t = 0; t < n; t++)
            {
                int label = mlmLabels[Indices[t]];
                if (label == -100) continue;
                if (label < 0) throw new ArgumentException($"labels[{Indices[t] / sequenceLength}, {Indices[t] % sequenceLength}] is {label}; use −100 for positions without a target.");
                masked.Add(t);
                targets.Add(label);
            }
            MaskedTokens = [.. masked];
            MaskedLabels = [.. targets];
        }
    }

    private static void Expect(int actual, int expected, string name)
    {
        if (actual != expected) throw new ArgumentException($"{name} has {actual} elements; B·S = {expected}.");
    }

    /// <summary>B.</summary>
    public int BatchSize { get; }
    /// <summary>S (padded length).</summary>
    public int SequenceLength { get; }
    /// <summary>N, the number of real tokens.</summary>
    public int TokenCount => Indices.Length;
    /// <summary>[N] cell b·S + s of each real token, increasing.</summary>
    public int[] Indices { get; }
    /// <summary>[B+1] sequence b is tokens CuSeqlens[b] .. CuSeqlens[b+1]−1.</summary>
    public int[] CuSeqlens { get; }
    /// <summary>[N] token ids.</summary>
    public int[] TokenIds { get; }
    /// <summary>[N] token type ids.</summary>
    public int[] TypeIds { get; }
    /// <summary>[N] padded column s of each token (ALiBi distances and absolute positions use it).</summary>
    public int[] Positions { get; }
    /// <summary>[B] index (in 0..N) of each sequence's first real token: the [CLS] the pooler reads.</summary>
    public int[] FirstTokens { get; }
    /// <summary>Indices (in 0..N) of tokens with an MLM target, or empty.</summary>
    public int[] MaskedTokens { get; } = [];
    /// <summary>MLM target id of each masked token.</summary>
    public int[] MaskedLabels { get; } = [];
}
