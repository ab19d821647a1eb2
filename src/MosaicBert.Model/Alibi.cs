namespace MosaicBert.Model;

/// <summary>ALiBi head slopes (Press et al.; the rule MosaicBERT copies).</summary>
public static class Alibi
{
    /// <summary>
    /// Slope m_h of each head: for a power of two H, m_k = 2^(−8k/H), k = 1..H. Otherwise, with P the largest power of
    /// two below H: the P slopes for P heads, then the slopes for 2P heads at even 0-based indices (2^(−4(2j+1)/P)),
    /// the first H − P of them. The bias added to a score is −m_h·|i − j|.
    /// </summary>
    public static double[] Slopes(int heads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(heads, 1);
        int p = 1 << (int)Math.Floor(Math.Log2(heads));
        var slopes = new double[heads];
        for (int k = 0; k < p; k++) slopes[k] = Math.Pow(2, -8.0 * (k + 1) / p);
        for (int j = 0; j < heads - p; j++) slopes[p + j] = Math.Pow(2, -4.0 * (2 * j + 1) / p);
        return slopes;
    }
}
