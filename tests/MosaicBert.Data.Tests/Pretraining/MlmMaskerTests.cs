using MosaicBert.Data.Pretraining;

namespace MosaicBert.Data.Tests.Pretraining;

public sealed class MlmMaskerTests
{
    private const int Vocab = 30522, Mask = 103, Cls = 101, Sep = 102, Unk = 100, Pad = 0;

    private static MlmMasker Masker(double p, ulong seed) => new(new MlmMaskingOptions
    {
        Probability = p, Seed = seed, MaskTokenId = Mask, RandomTokenCount = Vocab, NeverMaskIds = [Pad, Unk, Cls, Sep, Mask],
    });

    /// <summary>[CLS] 126 tokens [SEP], with some [UNK]/[MASK] inside that must never be selected.</summary>
    private static int[][] Samples(int count)
    {
        var rng = new Random(5);
        return [.. Enumerable.Range(0, count).Select(_ =>
        {
            var s = new int[128];
            for (int t = 1; t < 127; t++) s[t] = rng.Next(50) == 0 ? (rng.Next(2) == 0 ? Unk : Mask) : rng.Next(1000, Vocab);
            (s[0], s[127]) = (Cls, Sep);
            return s;
        })];
    }

    [Theory]
    [InlineData(0.30)]
    [InlineData(0.15)]
    public void SelectionRateAnd80_10_10SplitMatchTheRecipe(double p)
    {
        var masker = Masker(p, 17);
        long eligible = 0, selected = 0, masked = 0, random = 0, kept = 0;
        var ids = new int[128];
        var labels = new int[128];
        int minRandom = int.MaxValue, maxRandom = -1;
        var samples = Samples(2000);
        for (int i = 0; i < samples.Length; i++)
        {
            var s = samples[i];
            int n = masker.Mask(s, epoch: 3, sampleIndex: i, ids, labels);
            Assert.Equal(n, labels.Count(l => l != MlmMasker.IgnoreLabel));
            for (int t = 0; t < s.Length; t++)
            {
                bool special = s[t] is Cls or Sep or Unk or Mask;
                if (!special) eligible++;
                if (labels[t] == MlmMasker.IgnoreLabel)
                {
                    Assert.Equal(s[t], ids[t]); // unselected positions are untouched
                    continue;
                }
                Assert.False(special, $"special id {s[t]} selected");
                Assert.Equal(s[t], labels[t]);
                selected++;
                if (ids[t] == Mask) masked++;
                else if (ids[t] == s[t]) kept++;
                else
                {
                    random++;
                    Assert.InRange(ids[t], 0, Vocab - 1);
                    (minRandom, maxRandom) = (Math.Min(minRandom, ids[t]), Math.Max(maxRandom, ids[t]));
                }
            }
        }
        AssertWithin4Sigma(selected, eligible, p);
        // A random replacement equals the original or [MASK] with probability ~1/30522: inside the tolerance.
        AssertWithin4Sigma(masked, selected, 0.8);
        AssertWithin4Sigma(random, selected, 0.1);
        AssertWithin4Sigma(kept, selected, 0.1);
        Assert.True(minRandom < 1000 && maxRandom > Vocab - 1000, $"random ids span {minRandom}..{maxRandom}");
    }

    private static void AssertWithin4Sigma(long hits, long trials, double p)
    {
        double sigma = Math.Sqrt(trials * p * (1 - p));
        Assert.True(Math.Abs(hits - trials * p) <= 4 * sigma, $"{hits} of {trials}: expected {trials * p:F0} ± {4 * sigma:F0}");
    }

    [Fact]
    public void MasksDependOnlyOnSeedEpochAndSampleIndex()
    {
        var s = Samples(1)[0];
        (int[], int[]) Run(MlmMasker m, long epoch, long index)
        {
            var ids = new int[s.Length];
            var labels = new int[s.Length];
            m.Mask(s, epoch, index, ids, labels);
            return (ids, labels);
        }
        var a = Masker(0.3, 17);
        var (ids1, labels1) = Run(a, 1, 42);
        var (ids2, labels2) = Run(Masker(0.3, 17), 1, 42);
        Assert.Equal(ids1, ids2);
        Assert.Equal(labels1, labels2);
        Assert.NotEqual(Run(a, 1, 42).Item2, Run(a, 2, 42).Item2);
        Assert.NotEqual(Run(a, 1, 42).Item2, Run(a, 1, 43).Item2);
        Assert.NotEqual(Run(a, 1, 42).Item2, Run(Masker(0.3, 18), 1, 42).Item2);
        // Larger buffers are fine; only the sample's length is written.
        var longIds = Enumerable.Repeat(-7, 200).ToArray();
        a.Mask(s, 1, 42, longIds, new int[200]);
        Assert.Equal(Run(a, 1, 42).Item1, longIds[..128]);
        Assert.Equal(-7, longIds[128]);
        Assert.Throws<ArgumentException>(() => a.Mask(s, 1, 42, new int[10], new int[128]));
    }

    /// <summary>Values from an independent Python implementation of the documented algorithm (CounterRng remarks,
    /// MlmMasker remarks): another implementation (e.g. a GPU kernel) reproduces these.</summary>
    [Fact]
    public void GoldenValuesFromTheDocumentedAlgorithm()
    {
        // SplitMix64 seeded with 0: its well-known first outputs.
        Assert.Equal(0xE220A8397B1DCDAFUL, CounterRng.Draw(0, 0));
        Assert.Equal(0x6E789E6AA1B965F4UL, CounterRng.Draw(0, 1));
        Assert.Equal(0x06C45D188009454FUL, CounterRng.Draw(0, 2));

        int[] sample = [2, .. Enumerable.Range(10, 30), 3];
        var masker = new MlmMasker(new MlmMaskingOptions { Probability = 0.3, Seed = 17, MaskTokenId = 4, RandomTokenCount = 1000, NeverMaskIds = [0, 1, 2, 3, 4] });
        var ids = new int[sample.Length];
        var labels = new int[sample.Length];
        masker.Mask(sample, epoch: 2, sampleIndex: 5, ids, labels);
        Assert.Equal([2, 4, 11, 12, 4, 14, 15, 16, 17, 18, 4, 4, 21, 566, 4, 24, 25, 26, 4, 28, 29, 4, 31, 32, 33, 34, 35, 36, 37, 38, 39, 3], ids);
        const int X = MlmMasker.IgnoreLabel;
        Assert.Equal([X, 10, X, X, 13, X, X, X, X, X, 19, 20, X, 22, 23, X, 25, X, 27, X, X, 30, X, X, X, 34, X, X, X, X, X, X], labels);
    }

    [Fact]
    public void ForTokenizerNeverSelectsAnySpecialToken()
    {
        using var f = new PretrainingFixture();
        var masker = MlmMasker.ForTokenizer(f.Tokenizer, 1.0, 1);
        int[] sample = [PretrainingFixture.Cls, 5, PretrainingFixture.Unk, PretrainingFixture.MaskId, 6, PretrainingFixture.Sep, PretrainingFixture.Pad];
        var ids = new int[sample.Length];
        var labels = new int[sample.Length];
        Assert.Equal(2, masker.Mask(sample, 0, 0, ids, labels));
        Assert.Equal([-100, 5, -100, -100, 6, -100, -100], labels);
        Assert.Equal(f.Tokenizer.Vocabulary.Count, masker.Options.RandomTokenCount);
        Assert.Throws<ArgumentOutOfRangeException>(() => Masker(1.5, 0));
    }
}
