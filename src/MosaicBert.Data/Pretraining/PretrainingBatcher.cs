using System.Globalization;
using System.Text.Json;

namespace MosaicBert.Data.Pretraining;

/// <summary>How wide a batch's rows are.</summary>
public enum SequencePadding
{
    /// <summary>Every batch is [B, MaxLength] (the recipe: fixed shapes).</summary>
    MaxLength,
    /// <summary>[B, longest sample in the batch]: less padding for short documents.</summary>
    LongestInBatch,
}

/// <summary>
/// A padded MLM micro-batch in row-major <c>[BatchSize, SequenceLength]</c> arrays: what
/// <c>new MosaicBert.Model.EncoderBatch(InputIds, TokenTypeIds, AttentionMask, BatchSize, SequenceLength, Labels)</c>
/// takes.
/// </summary>
public sealed class PretrainingBatch
{
    internal PretrainingBatch(int batchSize, int sequenceLength, int[] sampleIndices, long[] epochs)
    {
        BatchSize = batchSize;
        SequenceLength = sequenceLength;
        InputIds = new int[batchSize * sequenceLength];
        TokenTypeIds = new int[InputIds.Length];
        AttentionMask = new int[InputIds.Length];
        Labels = new int[InputIds.Length];
        SampleIndices = sampleIndices;
        Epochs = epochs;
    }

    /// <summary>B.</summary>
    public int BatchSize { get; }
    /// <summary>S.</summary>
    public int SequenceLength { get; }
    /// <summary>[B·S] masked ids; [PAD] at padding.</summary>
    public int[] InputIds { get; }
    /// <summary>[B·S] all 0 (single-segment samples).</summary>
    public int[] TokenTypeIds { get; }
    /// <summary>[B·S] 1 for tokens, 0 for padding.</summary>
    public int[] AttentionMask { get; }
    /// <summary>[B·S] original id at selected positions, −100 elsewhere (padding included).</summary>
    public int[] Labels { get; }
    /// <summary>[B] cache index of each row's sample.</summary>
    public int[] SampleIndices { get; }
    /// <summary>[B] epoch each row's sample was drawn in (its masking key).</summary>
    public long[] Epochs { get; }
    /// <summary>Real (non-padding) tokens.</summary>
    public long RealTokens { get; internal set; }
    /// <summary>Positions with a label.</summary>
    public long MaskedTokens { get; internal set; }
}

/// <summary>
/// Training micro-batches: the sampler's next samples read from the cache, masked per (epoch, sample index), padded.
/// Its <see cref="Position"/> (JSON) goes into a checkpoint; setting it on a fresh batcher over the same data and seeds
/// continues with exactly the batches that would have followed. Not thread-safe (one per rank).
/// </summary>
public sealed class PretrainingBatcher
{
    private readonly TokenCache _cache;
    private readonly PretrainingSampler _sampler;
    private readonly MlmMasker _masker;
    private readonly SequencePadding _padding;
    private readonly int _padId;
    private readonly ParallelOptions _parallel;

    /// <summary>Creates a batcher.</summary>
    /// <param name="cache">The samples.</param>
    /// <param name="sampler">The order (over training samples only).</param>
    /// <param name="masker">Training masking (30%).</param>
    /// <param name="padTokenId">Id of [PAD].</param>
    /// <param name="padding">Row width.</param>
    /// <param name="maxDegreeOfParallelism">Threads that mask rows; null for all cores. The result does not depend on it.</param>
    public PretrainingBatcher(TokenCache cache, PretrainingSampler sampler, MlmMasker masker, int padTokenId,
        SequencePadding padding = SequencePadding.MaxLength, int? maxDegreeOfParallelism = null)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentNullException.ThrowIfNull(sampler);
        ArgumentNullException.ThrowIfNull(masker);
        (_cache, _sampler, _masker, _padId, _padding) = (cache, sampler, masker, padTokenId, padding);
        _parallel = new ParallelOptions { MaxDegreeOfParallelism = maxDegreeOfParallelism ?? -1 };
    }

    /// <summary>
    /// The position after the last batch, as JSON: <c>{"epoch":E,"index":I,"samples":N,"seed":S}</c>. Setting it
    /// checks that the sampler has the same sample count and seed (else the order would differ) and resumes there.
    /// </summary>
    /// <exception cref="FormatException">Not a position.</exception>
    /// <exception cref="InvalidOperationException">The position belongs to other data or another seed.</exception>
    public string Position
    {
        get
        {
            var p = _sampler.Position;
            return string.Create(CultureInfo.InvariantCulture, $"{{\"epoch\":{p.Epoch},\"index\":{p.Index},\"samples\":{_sampler.Count},\"seed\":{_sampler.Seed}}}");
        }
        set
        {
            var position = SamplerPosition.Parse(value);
            using var doc = JsonDocument.Parse(value);
            if (doc.RootElement.TryGetProperty("samples", out var n) && n.GetInt64() != _sampler.Count)
                throw new InvalidOperationException($"The saved data position is for {n.GetInt64()} training samples; this run has {_sampler.Count}. Resuming would not continue the same order.");
            if (doc.RootElement.TryGetProperty("seed", out var s) && s.GetUInt64() != _sampler.Seed)
                throw new InvalidOperationException($"The saved data position is for seed {s.GetUInt64()}; this run's seed is {_sampler.Seed}.");
            _sampler.Position = position;
        }
    }

    /// <summary>The next <paramref name="batchSize"/> samples of this rank, masked and padded.</summary>
    public PretrainingBatch Next(int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var samples = new int[batchSize];
        var epochs = new long[batchSize];
        for (int b = 0; b < batchSize; b++) (samples[b], epochs[b]) = _sampler.Next();
        return Assemble(_cache, samples, epochs, _masker, _padId, _padding, _parallel);
    }

    /// <summary>
    /// Fixed evaluation batches: <paramref name="samples"/> in the order given, <paramref name="batchSize"/> per batch
    /// (the last may be smaller), masked by <paramref name="masker"/> in epoch 0 — build that masker with the eval
    /// probability (0.15) and a fixed seed so every evaluation scores the same masked tokens.
    /// </summary>
    public static IReadOnlyList<PretrainingBatch> EvalBatches(TokenCache cache, IReadOnlyList<int> samples, MlmMasker masker,
        int padTokenId, int batchSize, SequencePadding padding = SequencePadding.MaxLength)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentNullException.ThrowIfNull(samples);
        ArgumentNullException.ThrowIfNull(masker);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var batches = new List<PretrainingBatch>();
        var parallel = new ParallelOptions();
        for (int start = 0; start < samples.Count; start += batchSize)
        {
            int n = Math.Min(batchSize, samples.Count - start);
            var ids = new int[n];
            for (int b = 0; b < n; b++) ids[b] = samples[start + b];
            batches.Add(Assemble(cache, ids, new long[n], masker, padTokenId, padding, parallel));
        }
        return batches;
    }

    private static PretrainingBatch Assemble(TokenCache cache, int[] samples, long[] epochs, MlmMasker masker, int padId,
        SequencePadding padding, ParallelOptions parallel)
    {
        int width = cache.MaxLength;
        if (padding == SequencePadding.LongestInBatch)
        {
            width = 0;
            foreach (int s in samples) width = Math.Max(width, cache.GetLength(s));
        }
        var batch = new PretrainingBatch(samples.Length, width, samples, epochs);
        batch.InputIds.AsSpan().Fill(padId);
        batch.Labels.AsSpan().Fill(MlmMasker.IgnoreLabel);
        var masked = new long[samples.Length];
        var lengths = new int[samples.Length];
        // Rows are independent (each one's randomness is keyed by its own sample and epoch), so threads cannot
        // change the result.
        Parallel.For(0, samples.Length, parallel, b =>
        {
            var row = new Range(b * width, (b + 1) * width);
            int length = cache.GetLength(samples[b]);
            Span<int> tokens = length <= 1024 ? stackalloc int[length] : new int[length];
            cache.CopySample(samples[b], tokens);
            masked[b] = masker.Mask(tokens, epochs[b], samples[b], batch.InputIds.AsSpan(row), batch.Labels.AsSpan(row));
            batch.AttentionMask.AsSpan(row)[..length].Fill(1);
            lengths[b] = length;
        });
        batch.RealTokens = lengths.Sum(l => (long)l);
        batch.MaskedTokens = masked.Sum();
        return batch;
    }
}
