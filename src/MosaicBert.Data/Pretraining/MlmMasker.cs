using MosaicBert.Tokenizers;

namespace MosaicBert.Data.Pretraining;

/// <summary>Settings of <see cref="MlmMasker"/>.</summary>
public sealed record MlmMaskingOptions
{
    /// <summary>Probability that a maskable token is selected (0.30 to train MosaicBERT, 0.15 to evaluate).</summary>
    public double Probability { get; init; } = 0.30;
    /// <summary>Seed of the masking stream.</summary>
    public ulong Seed { get; init; }
    /// <summary>Id of [MASK].</summary>
    public required int MaskTokenId { get; init; }
    /// <summary>Random replacements are uniform in [0, RandomTokenCount): the tokenizer's vocabulary size (30522 for
    /// bert-base-uncased), not the model's padded embedding rows (30528).</summary>
    public required int RandomTokenCount { get; init; }
    /// <summary>Ids that are never selected.</summary>
    public required IReadOnlyCollection<int> NeverMaskIds { get; init; }
    /// <summary>Share of selected tokens replaced by [MASK].</summary>
    public double MaskFraction { get; init; } = 0.8;
    /// <summary>Share of selected tokens replaced by a random id (the rest keep their id).</summary>
    public double RandomFraction { get; init; } = 0.1;
}

/// <summary>
/// Dynamic MLM masking (Hugging Face's <c>DataCollatorForLanguageModeling</c> as MosaicBERT configures it), computed
/// per sample from (seed, epoch, sample index) alone, so the same sample in the same epoch is masked identically in
/// any batch, order, thread or process — a resumed run recomputes exactly the masks it would have used.
/// </summary>
/// <remarks>
/// <para>
/// For a sample with cache index <c>i</c> in epoch <c>e</c>, <c>k = CounterRng.Key(Seed, 1, e, i)</c>. For the token
/// at position <c>t</c> (0 = [CLS]) whose id is not in <see cref="MlmMaskingOptions.NeverMaskIds"/>:
/// <c>u = CounterRng.Draw(k, 2t)</c>; it is selected when <c>(u &gt;&gt; 40) &lt; ⌊p·2^24⌋</c>. A selected token with
/// <c>a = (u &gt;&gt; 16) &amp; 0xFFFFFF</c> becomes [MASK] when <c>a &lt; ⌊MaskFraction·2^24⌋</c>, else a random id
/// <c>CounterRng.Below(CounterRng.Draw(k, 2t + 1), RandomTokenCount)</c> when
/// <c>a &lt; ⌊MaskFraction·2^24⌋ + ⌊RandomFraction·2^24⌋</c>, else keeps its id; its label is its original id. Every
/// other label is −100. A random id may equal the original or a special id, as in Hugging Face.
/// </para>
/// <para>
/// <see cref="ForTokenizer"/> never selects any of the tokenizer's special ids ([PAD], [UNK], [CLS], [SEP], [MASK]):
/// Hugging Face's collator marks <c>all_special_ids</c>, which include [UNK] and [MASK], not only [CLS]/[SEP]/[PAD].
/// </para>
/// </remarks>
public sealed class MlmMasker
{
    /// <summary>Label of positions without a target (PyTorch's cross-entropy ignore index).</summary>
    public const int IgnoreLabel = -100;

    private readonly bool[] _never;
    private readonly ulong _select, _mask, _maskOrRandom;

    /// <summary>Creates a masker.</summary>
    public MlmMasker(MlmMaskingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!(options.Probability is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(options), $"Probability must be in [0, 1], not {options.Probability}.");
        if (!(options.MaskFraction >= 0 && options.RandomFraction >= 0 && options.MaskFraction + options.RandomFraction <= 1))
            throw new ArgumentOutOfRangeException(nameof(options), $"MaskFraction {options.MaskFraction} and RandomFraction {options.RandomFraction} must be ≥ 0 with a sum ≤ 1.");
        ArgumentOutOfRangeException.ThrowIfLessThan(options.RandomTokenCount, 1, nameof(options));
        ArgumentNullException.ThrowIfNull(options.NeverMaskIds, nameof(options));
        Options = options;
        _never = new bool[options.NeverMaskIds.DefaultIfEmpty(-1).Max() + 1];
        foreach (int id in options.NeverMaskIds)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(id, nameof(options));
            _never[id] = true;
        }
        _select = Threshold(options.Probability);
        _mask = Threshold(options.MaskFraction);
        _maskOrRandom = _mask + Threshold(options.RandomFraction);
    }

    private static ulong Threshold(double fraction) => (ulong)(fraction * (1 << 24));

    /// <summary>A masker for <paramref name="tokenizer"/>: [MASK] from it, random ids over its vocabulary, its special
    /// ids never selected.</summary>
    public static MlmMasker ForTokenizer(BertTokenizer tokenizer, double probability, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return new MlmMasker(new MlmMaskingOptions
        {
            Probability = probability,
            Seed = seed,
            MaskTokenId = tokenizer.MaskingTokenId,
            RandomTokenCount = tokenizer.Vocabulary.Count,
            NeverMaskIds = [.. tokenizer.SpecialTokens.Values.Distinct()],
        });
    }

    /// <summary>The settings.</summary>
    public MlmMaskingOptions Options { get; }

    /// <summary>
    /// Masks one sample: writes the model's input ids and the labels (both the sample's length); returns how many
    /// positions were selected.
    /// </summary>
    /// <param name="tokens">The sample as stored ([CLS] … [SEP], unpadded).</param>
    /// <param name="epoch">Epoch of this use of the sample (masks change every epoch: dynamic masking).</param>
    /// <param name="sampleIndex">The sample's index in the token cache (not its position in a batch).</param>
    /// <param name="inputIds">Receives the masked ids.</param>
    /// <param name="labels">Receives the original id at selected positions, −100 elsewhere.</param>
    public int Mask(ReadOnlySpan<int> tokens, long epoch, long sampleIndex, Span<int> inputIds, Span<int> labels)
    {
        if (inputIds.Length < tokens.Length || labels.Length < tokens.Length)
            throw new ArgumentException($"inputIds and labels must hold the sample's {tokens.Length} tokens.");
        ulong key = CounterRng.Key(Options.Seed, CounterRng.MaskingStream, (ulong)epoch, (ulong)sampleIndex);
        int selected = 0;
        for (int t = 0; t < tokens.Length; t++)
        {
            int id = tokens[t];
            inputIds[t] = id;
            labels[t] = IgnoreLabel;
            if ((uint)id < (uint)_never.Length && _never[id]) continue;
            ulong u = CounterRng.Draw(key, 2 * (ulong)t);
            if (u >> 40 >= _select) continue;
            selected++;
            labels[t] = id;
            ulong a = (u >> 16) & 0xFFFFFF;
            if (a < _mask) inputIds[t] = Options.MaskTokenId;
            else if (a < _maskOrRandom) inputIds[t] = (int)CounterRng.Below(CounterRng.Draw(key, 2 * (ulong)t + 1), (ulong)Options.RandomTokenCount);
        }
        return selected;
    }
}
