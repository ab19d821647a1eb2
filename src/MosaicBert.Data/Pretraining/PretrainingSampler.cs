using System.Globalization;
using System.Text.Json;

namespace MosaicBert.Data.Pretraining;

/// <summary>
/// Where a data stream stands: the next global position is <see cref="Index"/> of epoch <see cref="Epoch"/>. It is
/// the same on every rank (ranks advance in lockstep), so one saved position resumes any world size.
/// </summary>
/// <param name="Epoch">Epoch, from 0.</param>
/// <param name="Index">Position within the epoch's global order, from 0.</param>
public readonly record struct SamplerPosition(long Epoch, long Index)
{
    /// <summary><c>{"epoch":E,"index":I}</c>.</summary>
    public string ToJson() => string.Create(CultureInfo.InvariantCulture, $"{{\"epoch\":{Epoch},\"index\":{Index}}}");

    /// <summary>Parses <see cref="ToJson"/>'s output (other fields are ignored).</summary>
    /// <exception cref="FormatException">Not such an object.</exception>
    public static SamplerPosition Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            return new SamplerPosition(root.GetProperty("epoch").GetInt64(), root.GetProperty("index").GetInt64());
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new FormatException($"Not a sampler position ({{\"epoch\":E,\"index\":I}}): {json}", e);
        }
    }
}

/// <summary>
/// A deterministic, endless order over a set of samples: each epoch is a seeded permutation, the next epoch follows
/// when one runs out. Rank r of w takes global positions r, r + w, r + 2w, … (across epoch boundaries), so the
/// global order is the same for any world size and the ranks' samples interleave back into it.
/// </summary>
/// <remarks>
/// The order of epoch e is Fisher–Yates over the sample ids in ascending order with
/// <c>k = CounterRng.Key(seed, 2, e, 0)</c>: for i = n − 1 down to 1, step s = n − 1 − i,
/// <c>j = CounterRng.Below(CounterRng.Draw(k, s), i + 1)</c>, swap items i and j. Not thread-safe.
/// </remarks>
public sealed class PretrainingSampler
{
    private readonly int[] _samples;
    private long _global; // next global position of rank 0, counted over all epochs
    private long _orderEpoch = -1;
    private int[] _order = [];

    /// <summary>Creates a sampler over <paramref name="samples"/> (e.g. the training part of a
    /// <see cref="TrainEvalSplit"/>; the sampler keeps its own copy).</summary>
    public PretrainingSampler(IReadOnlyList<int> samples, ulong seed, int rank = 0, int worldSize = 1)
    {
        ArgumentNullException.ThrowIfNull(samples);
        if (samples.Count == 0) throw new ArgumentException("The sampler needs at least one sample.", nameof(samples));
        ArgumentOutOfRangeException.ThrowIfLessThan(worldSize, 1);
        if (rank < 0 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), $"Rank {rank} is not in 0..{worldSize - 1}.");
        _samples = [.. samples];
        Array.Sort(_samples); // the permutation is defined over ascending ids, whatever order they came in
        Seed = seed;
        Rank = rank;
        WorldSize = worldSize;
    }

    /// <summary>Samples per epoch.</summary>
    public int Count => _samples.Length;
    /// <summary>The seed of the order.</summary>
    public ulong Seed { get; }
    /// <summary>This rank.</summary>
    public int Rank { get; }
    /// <summary>Number of ranks.</summary>
    public int WorldSize { get; }

    /// <summary>The global position of the next step (shared by all ranks); setting it resumes exactly there.</summary>
    public SamplerPosition Position
    {
        get => new(_global / _samples.Length, _global % _samples.Length);
        set
        {
            if (value.Epoch < 0 || value.Index < 0 || value.Index >= _samples.Length)
                throw new ArgumentOutOfRangeException(nameof(value), $"Position {value} is outside epochs of {_samples.Length} samples.");
            _global = checked(value.Epoch * _samples.Length + value.Index);
        }
    }

    /// <summary>This rank's next sample (its cache index) and the epoch it belongs to; the position moves on by
    /// <see cref="WorldSize"/>.</summary>
    public (int Sample, long Epoch) Next()
    {
        long g = _global + Rank;
        long epoch = g / _samples.Length;
        _global += WorldSize;
        return (Order(epoch)[g % _samples.Length], epoch);
    }

    /// <summary>The global order of an epoch (a new array).</summary>
    public int[] EpochOrder(long epoch) => [.. Order(epoch)];

    private int[] Order(long epoch)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(epoch);
        if (epoch == _orderEpoch) return _order;
        var order = _samples.ToArray();
        ulong key = CounterRng.Key(Seed, CounterRng.ShuffleStream, (ulong)epoch, 0);
        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = (int)CounterRng.Below(CounterRng.Draw(key, (ulong)(order.Length - 1 - i)), (ulong)i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        (_order, _orderEpoch) = (order, epoch);
        return order;
    }
}
