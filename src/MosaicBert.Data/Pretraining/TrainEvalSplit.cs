namespace MosaicBert.Data.Pretraining;

/// <summary>
/// A deterministic split of a cache's samples into training and held-out evaluation samples, independent of any
/// order or seed of training: sample i gets the score <c>CounterRng.Draw(CounterRng.Key(seed, 3, 0, 0), i)</c> and
/// the evaluation samples are those with the smallest scores (ties by index) or, by fraction, those with a score
/// below <c>fraction·2^64</c>. Use a fixed seed so that runs with different training seeds evaluate on the same samples.
/// </summary>
/// <remarks>
/// With packing, the split is by sample: the parts of one long document may fall into both sets (no token is in
/// both). Without packing a sample is a document.
/// </remarks>
public sealed class TrainEvalSplit
{
    private TrainEvalSplit(int[] train, int[] eval) => (Train, Eval) = (train, eval);

    /// <summary>Training samples, ascending.</summary>
    public IReadOnlyList<int> Train { get; }
    /// <summary>Evaluation samples, ascending; never in <see cref="Train"/>.</summary>
    public IReadOnlyList<int> Eval { get; }

    /// <summary>Holds out exactly <paramref name="evalCount"/> samples (fewer than <paramref name="sampleCount"/>).</summary>
    public static TrainEvalSplit ByCount(int sampleCount, int evalCount, ulong seed = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(evalCount);
        if (evalCount >= sampleCount)
            throw new ArgumentOutOfRangeException(nameof(evalCount), $"Holding out {evalCount} of {sampleCount} samples leaves none to train on.");
        ulong key = CounterRng.Key(seed, CounterRng.EvalSplitStream, 0, 0);
        // Max-heap of the evalCount smallest (score, index) seen so far.
        var heap = new PriorityQueue<int, (ulong Score, int Index)>(evalCount + 1, Comparer<(ulong, int)>.Create((a, b) => b.CompareTo(a)));
        for (int i = 0; i < sampleCount && evalCount > 0; i++)
        {
            var score = (CounterRng.Draw(key, (ulong)i), i);
            if (heap.Count < evalCount) heap.Enqueue(i, score);
            else if (heap.TryPeek(out _, out var worst) && score.CompareTo(worst) < 0) heap.EnqueueDequeue(i, score);
        }
        var isEval = new bool[sampleCount];
        while (heap.TryDequeue(out int i, out _)) isEval[i] = true;
        return FromFlags(isEval);
    }

    /// <summary>Holds out about <paramref name="fraction"/> of the samples (each independently), at least one
    /// training sample remaining.</summary>
    public static TrainEvalSplit ByFraction(int sampleCount, double fraction, ulong seed = 0)
    {
        if (!(fraction is >= 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(fraction), $"fraction must be in [0, 1), not {fraction}.");
        ulong key = CounterRng.Key(seed, CounterRng.EvalSplitStream, 0, 0);
        ulong threshold = (ulong)(fraction * 18446744073709551616.0);
        var isEval = new bool[sampleCount];
        for (int i = 0; i < sampleCount; i++) isEval[i] = CounterRng.Draw(key, (ulong)i) < threshold;
        if (sampleCount > 0 && isEval.All(e => e))
            throw new ArgumentOutOfRangeException(nameof(fraction), $"Holding out {fraction} of {sampleCount} samples leaves none to train on.");
        return FromFlags(isEval);
    }

    private static TrainEvalSplit FromFlags(bool[] isEval)
    {
        var train = new List<int>(isEval.Length);
        var eval = new List<int>();
        for (int i = 0; i < isEval.Length; i++) (isEval[i] ? eval : train).Add(i);
        return new TrainEvalSplit([.. train], [.. eval]);
    }
}
