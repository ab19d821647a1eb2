using MosaicBert.Distributed;
using MosaicBert.Model;

namespace MosaicBert.Pretraining;

/// <summary>A batch source that can pass over samples without reading or masking them (another rank's share).</summary>
public interface ISkippableBatchSource : IMlmBatchSource
{
    /// <summary>Moves the position on by <paramref name="samples"/>, as <see cref="IMlmBatchSource.Next"/> of that many would.</summary>
    void Skip(int samples);
}

/// <summary>
/// How the pretraining loop splits a step between ranks. A step is GlobalBatchSize / MicroBatchSize micro-batches
/// taken from the data in the global order; rank r of W runs the contiguous run of micro-batches
/// [r·A/W, (r+1)·A/W) with A the micro-batches per step, and passes over the others'. The union of the ranks'
/// micro-batches is exactly the one-process step, micro-batch for micro-batch (same samples, same masking, same
/// dropout seeds), so the averaged gradient equals the one-process gradient up to the order of the sums, and the
/// data position after a step is the same on every rank and for every world size: a checkpoint resumes at any W that
/// divides the step into whole micro-batches per rank.
/// </summary>
public static class DataParallel
{
    /// <summary>Largest all-reduce bucket, in fp32 elements (25 M = 100 MB: DDP's default is 25 MB; larger buckets mean
    /// fewer launches, and NCCL reaches its bus bandwidth well below this).</summary>
    public const long BucketElements = 25L << 20;

    /// <summary>This rank's share of a step.</summary>
    /// <param name="FirstMicroBatch">The first of its micro-batches (index within the step).</param>
    /// <param name="MicroBatchesPerRank">How many micro-batches each rank runs per step.</param>
    public readonly record struct RankShare(int FirstMicroBatch, int MicroBatchesPerRank)
    {
        /// <summary>True when micro-batch <paramref name="micro"/> of the step is this rank's.</summary>
        public bool Owns(int micro) => micro >= FirstMicroBatch && micro < FirstMicroBatch + MicroBatchesPerRank;
    }

    /// <summary>This rank's share; the step must split into whole micro-batches per rank.</summary>
    /// <exception cref="InvalidOperationException">GlobalBatchSize is not a multiple of MicroBatchSize × world size.</exception>
    public static RankShare Shard(PretrainingOptions options, ProcessGroup group)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(group);
        long perStep = (long)options.MicroBatchSize * group.WorldSize;
        if (options.MicroBatchSize < 1 || options.GlobalBatchSize % perStep != 0)
            throw new InvalidOperationException(
                $"GlobalBatchSize {options.GlobalBatchSize} must be a multiple of MicroBatchSize {options.MicroBatchSize} × world size {group.WorldSize} = {perStep} " +
                "(global batch = world size × per-rank micro-batch × accumulation steps).");
        int accumulation = options.GlobalBatchSize / options.MicroBatchSize;
        int perRank = accumulation / group.WorldSize;
        return new RankShare(group.Rank * perRank, perRank);
    }

    /// <summary>Passes over <paramref name="samples"/> samples of <paramref name="source"/> (reading and dropping
    /// them when the source cannot skip).</summary>
    public static void Skip(IMlmBatchSource source, int samples)
    {
        if (source is ISkippableBatchSource skippable) skippable.Skip(samples);
        else source.Next(samples);
    }

    /// <summary>
    /// The gradient ranges in the order the backward pass finishes them — the model's
    /// <see cref="MosaicBertModel.GradientGroupsInBackwardOrder"/>: the MLM head's own parameters (its decoder is tied
    /// to the word embeddings), the classifier, the encoder layers from the last to the first, then the embeddings,
    /// which the tied decoder and the embedding lookup both write, and so are final last.
    /// </summary>
    public static IEnumerable<GradientRange> BackwardOrder(ParameterLayout layout) =>
        MosaicBertModel.GradientGroupsInBackwardOrder(layout).Select(g => new GradientRange(g.Offset, g.Length));

    /// <summary>Buckets of at most <paramref name="bucketElements"/> over the model's gradient block, in backward order.</summary>
    public static GradientBuckets GradientBuckets(ProcessGroup group, MosaicBertModel model, long bucketElements = BucketElements) =>
        new(group, model.Gradients, Distributed.GradientBuckets.Plan(BackwardOrder(model.Layout), bucketElements));

    /// <summary>True when <paramref name="options"/> ask for the reduction overlapped with the backward pass (by
    /// default whenever there is more than one rank: one rank has nothing to wait for).</summary>
    public static bool Overlaps(PretrainingOptions options, ProcessGroup group)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(group);
        return options.OverlapGradientReduction ?? group.WorldSize > 1;
    }

    /// <summary>
    /// Start of a run: every rank must stand at the same step (they loaded the same checkpoint, or none); then rank
    /// 0's parameters are copied to every rank, so all start bit-identical whatever their initialisation did.
    /// </summary>
    /// <exception cref="InvalidOperationException">The ranks resumed from different checkpoints.</exception>
    public static void Synchronize(ProcessGroup group, MosaicBertModel model, long step, long samples, long tokens)
    {
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(model);
        Span<double> sums = [step, samples, tokens, (double)step * step];
        group.AllReduceSum(sums);
        int w = group.WorldSize;
        // Equal values ⇔ Σx = W·x̄ and Σx² = W·x̄² (the variance is zero).
        if (sums[0] != (double)w * step || sums[1] != (double)w * samples || sums[2] != (double)w * tokens || sums[3] * w != sums[0] * sums[0])
            throw new InvalidOperationException(
                $"Rank {group.Rank} resumed at step {step} ({samples} samples, {tokens} tokens), but not every rank did (mean step {sums[0] / w}): " +
                "every rank must read the same OutputDir/checkpoints (a shared file system, or the same checkpoint copied to every host).");
        group.Broadcast(model.Parameters);
    }

    /// <summary>True on every rank when <paramref name="value"/> is true on any (e.g. a stop request that reached
    /// only some ranks).</summary>
    public static bool AnyRank(ProcessGroup group, bool value)
    {
        ArgumentNullException.ThrowIfNull(group);
        Span<double> flag = [value ? 1 : 0];
        group.AllReduceSum(flag);
        return flag[0] > 0;
    }
}
