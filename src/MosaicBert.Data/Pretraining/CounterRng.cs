namespace MosaicBert.Data.Pretraining;

/// <summary>
/// The counter-based random numbers behind shuffling, masking and the eval split: every draw is a pure function of
/// (seed, stream, a, b, counter), so any sample's randomness can be recomputed alone, in any order, on any thread or
/// device. Everything is unsigned 64-bit arithmetic modulo 2^64.
/// </summary>
/// <remarks>
/// <code>
/// γ        = 0x9E3779B97F4A7C15
/// mix(z)   = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^ (z >> 31)
/// hash(x)  = mix(x + γ)                                  (SplitMix64's next() from state x)
/// key(seed, stream, a, b) = hash(hash(hash(hash(seed) ^ stream) ^ a) ^ b)
/// draw(k, n) = mix(k + (n + 1)·γ)                        (the n-th output, from 0, of SplitMix64 seeded with k)
/// below(r, m) = (r · m) >> 64  (128-bit product)         (an integer in [0, m); bias ≤ m / 2^64)
/// </code>
/// Streams: <see cref="MaskingStream"/> = 1 (a = epoch, b = sample index), <see cref="ShuffleStream"/> = 2
/// (a = epoch, b = 0), <see cref="EvalSplitStream"/> = 3 (a = b = 0). Signed inputs (epochs, indices, seeds) are
/// reinterpreted as their two's-complement bits.
/// </remarks>
public static class CounterRng
{
    /// <summary>SplitMix64's increment γ (2^64 / golden ratio).</summary>
    public const ulong Gamma = 0x9E3779B97F4A7C15UL;

    /// <summary>Stream id of MLM masking.</summary>
    public const ulong MaskingStream = 1;
    /// <summary>Stream id of the per-epoch shuffle.</summary>
    public const ulong ShuffleStream = 2;
    /// <summary>Stream id of the train/eval split.</summary>
    public const ulong EvalSplitStream = 3;

    /// <summary>SplitMix64's finalizer (Stafford's variant 13): a bijection of 64-bit values with full avalanche.</summary>
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary><c>mix(x + γ)</c>.</summary>
    public static ulong Hash(ulong x) => Mix(x + Gamma);

    /// <summary>The key of one random stream: <c>hash(hash(hash(hash(seed) ^ stream) ^ a) ^ b)</c>.</summary>
    public static ulong Key(ulong seed, ulong stream, ulong a, ulong b) => Hash(Hash(Hash(Hash(seed) ^ stream) ^ a) ^ b);

    /// <summary>The <paramref name="n"/>-th draw (from 0) of stream <paramref name="key"/>: <c>mix(key + (n + 1)·γ)</c>.</summary>
    public static ulong Draw(ulong key, ulong n) => Mix(key + (n + 1) * Gamma);

    /// <summary>Maps a draw to [0, <paramref name="m"/>) by the high half of the 128-bit product (Lemire, no rejection).</summary>
    public static ulong Below(ulong r, ulong m) => Math.BigMul(r, m, out _);
}
