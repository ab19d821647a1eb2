using MosaicBert.Tensors;

namespace MosaicBert.Distributed;

/// <summary>A slice [Offset, Offset + Length) of the gradient block, in elements.</summary>
/// <param name="Offset">First element.</param>
/// <param name="Length">Number of elements.</param>
public readonly record struct GradientRange(long Offset, long Length)
{
    /// <summary>One past the last element.</summary>
    public long End => Offset + Length;

    /// <summary>"[offset, end)".</summary>
    public override string ToString() => $"[{Offset}, {End})";
}

/// <summary>
/// Gradient averaging in buckets, for overlapping communication with the backward pass: the block is cut into
/// buckets in the order the backward pass finishes them; as soon as the training loop says a bucket is final
/// (<see cref="MarkReady(int)"/>, or <see cref="MarkReady(GradientRange)"/> for the parameters of one layer, as the
/// model's GradientsFinal callback reports them during the backward pass of a step's last micro-batch), its
/// all-reduce starts on the communication stream while the backward pass goes on; <see cref="WaitAll"/> before the
/// optimizer step makes the compute stream wait for all of them. <see cref="ReduceAll"/> is the non-overlapped form:
/// every bucket after the backward pass.
/// </summary>
/// <remarks>
/// Every rank must start the same collectives in the same order (NCCL matches them by order), so buckets start in
/// index order whatever order they become ready in: a bucket that is ready early waits for the ones before it.
/// </remarks>
public sealed class GradientBuckets
{
    private readonly ProcessGroup _group;
    private readonly Tensor _flat;
    private readonly GradientRange[] _buckets;
    private readonly long[] _readyElements;
    private int _next;

    /// <summary>Buckets <paramref name="buckets"/> (in the order they will be ready) over <paramref name="gradients"/>.</summary>
    public GradientBuckets(ProcessGroup group, Tensor gradients, IReadOnlyList<GradientRange> buckets)
    {
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(gradients);
        ArgumentNullException.ThrowIfNull(buckets);
        if (buckets.Count == 0) throw new ArgumentException("At least one bucket is needed.", nameof(buckets));
        long total = 0;
        foreach (var b in buckets)
        {
            if (b.Offset < 0 || b.Length <= 0 || b.End > gradients.Length)
                throw new ArgumentException($"Bucket {b} does not lie inside the gradient block of {gradients.Length} elements.", nameof(buckets));
            total += b.Length;
        }
        var sorted = buckets.OrderBy(b => b.Offset).ToArray();
        for (int i = 1; i < sorted.Length; i++)
            if (sorted[i].Offset < sorted[i - 1].End) throw new ArgumentException($"Buckets {sorted[i - 1]} and {sorted[i]} overlap.", nameof(buckets));
        if (total != gradients.Length)
            throw new ArgumentException($"The buckets cover {total} of the {gradients.Length} gradient elements; every gradient must be averaged.", nameof(buckets));
        _group = group;
        _flat = gradients.Reshape(checked((int)gradients.Length));
        _buckets = [.. buckets];
        _readyElements = new long[_buckets.Length];
    }

    /// <summary>
    /// Groups <paramref name="readyOrder"/> (the gradient ranges in the order the backward pass finishes them, e.g.
    /// the MLM head, layer L−1, …, layer 0, the embeddings) into buckets of at most <paramref name="maxElements"/>
    /// (a range larger than that is a bucket of its own); ranges are merged only when adjacent in memory, so each
    /// bucket is one contiguous all-reduce.
    /// </summary>
    public static GradientRange[] Plan(IEnumerable<GradientRange> readyOrder, long maxElements)
    {
        ArgumentNullException.ThrowIfNull(readyOrder);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxElements, 1);
        var buckets = new List<GradientRange>();
        foreach (var r in readyOrder)
        {
            if (r.Length <= 0) continue;
            if (buckets.Count > 0)
            {
                var last = buckets[^1];
                bool adjacent = r.End == last.Offset || last.End == r.Offset;
                if (adjacent && last.Length + r.Length <= maxElements)
                {
                    buckets[^1] = new GradientRange(Math.Min(last.Offset, r.Offset), last.Length + r.Length);
                    continue;
                }
            }
            buckets.Add(r);
        }
        return [.. buckets];
    }

    /// <summary>Number of buckets.</summary>
    public int Count => _buckets.Length;
    /// <summary>Bucket <paramref name="index"/>.</summary>
    public GradientRange this[int index] => _buckets[index];
    /// <summary>Buckets whose all-reduce has started in this step.</summary>
    public int Started => _next;

    /// <summary>Bucket <paramref name="bucket"/>'s gradients are final for this step (queued on the compute stream):
    /// start its all-reduce (and those of earlier buckets waiting for it).</summary>
    public void MarkReady(int bucket)
    {
        if (bucket < 0 || bucket >= _buckets.Length) throw new ArgumentOutOfRangeException(nameof(bucket), $"Bucket {bucket} is not in 0..{_buckets.Length - 1}.");
        if (_readyElements[bucket] == _buckets[bucket].Length) throw new InvalidOperationException($"Bucket {bucket} {_buckets[bucket]} was marked ready twice in one step.");
        _readyElements[bucket] = _buckets[bucket].Length;
        Launch();
    }

    /// <summary>The gradients in <paramref name="range"/> are final for this step (e.g. one layer's parameters): a
    /// bucket starts once all of it is final. The range must lie inside one bucket.</summary>
    public void MarkReady(GradientRange range)
    {
        int b = Array.FindIndex(_buckets, x => range.Offset >= x.Offset && range.End <= x.End);
        if (b < 0 || range.Length <= 0) throw new ArgumentException($"Range {range} does not lie inside one bucket.", nameof(range));
        _readyElements[b] += range.Length;
        if (_readyElements[b] > _buckets[b].Length)
            throw new InvalidOperationException($"Bucket {b} {_buckets[b]} was marked ready for more elements than it holds (a range marked twice).");
        Launch();
    }

    private void Launch()
    {
        while (_next < _buckets.Length && _readyElements[_next] == _buckets[_next].Length)
        {
            var b = _buckets[_next++];
            _group.StartAllReduceAverage(_flat.Rows(checked((int)b.Offset), checked((int)b.Length)));
        }
    }

    /// <summary>Every bucket must have started; makes later work wait for all of them and resets for the next step.</summary>
    /// <exception cref="InvalidOperationException">A bucket was never marked ready (its gradients would not be averaged).</exception>
    public void WaitAll()
    {
        if (_next < _buckets.Length)
        {
            int missing = _next;
            Array.Clear(_readyElements);
            _next = 0;
            throw new InvalidOperationException($"Bucket {missing} {_buckets[missing]} was never marked ready; its gradients were not averaged.");
        }
        _group.FinishPending();
        Array.Clear(_readyElements);
        _next = 0;
    }

    /// <summary>The non-overlapped form: starts every bucket not started yet, then <see cref="WaitAll"/>.</summary>
    public void ReduceAll()
    {
        for (int i = 0; i < _buckets.Length; i++) _readyElements[i] = _buckets[i].Length;
        Launch();
        WaitAll();
    }
}
