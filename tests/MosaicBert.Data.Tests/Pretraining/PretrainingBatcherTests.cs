using MosaicBert.Data.Pretraining;

namespace MosaicBert.Data.Tests.Pretraining;

public sealed class PretrainingBatcherTests : IDisposable
{
    private readonly PretrainingFixture _f = new();
    private readonly TokenCache _cache;

    public PretrainingBatcherTests()
    {
        // 40 documents of 1..60 words: samples of many lengths, some truncated at 32.
        var docs = Enumerable.Range(0, 40).Select(i => PretrainingFixture.Words(1 + i * 13 % 60, i));
        var path = _f.WriteDocuments("corpus/a.txt", docs);
        _cache = TokenCache.OpenOrBuild(new TextCorpus(path), _f.Tokenizer,
            new TokenCacheOptions { MaxLength = 32, CachePath = _f.Path("cache/c.tokens") }, cancellationToken: PretrainingFixture.Ct);
    }

    public void Dispose()
    {
        _cache.Dispose();
        _f.Dispose();
    }

    private PretrainingBatcher Batcher(IReadOnlyList<int> train, int? threads = null, SequencePadding padding = SequencePadding.MaxLength,
        int rank = 0, int world = 1) =>
        new(_cache, new PretrainingSampler(train, 17, rank, world), MlmMasker.ForTokenizer(_f.Tokenizer, 0.3, 17), PretrainingFixture.Pad, padding, threads);

    private static void AssertSame(PretrainingBatch a, PretrainingBatch b)
    {
        Assert.Equal((a.BatchSize, a.SequenceLength), (b.BatchSize, b.SequenceLength));
        Assert.Equal(a.InputIds, b.InputIds);
        Assert.Equal(a.Labels, b.Labels);
        Assert.Equal(a.AttentionMask, b.AttentionMask);
        Assert.Equal(a.SampleIndices, b.SampleIndices);
        Assert.Equal(a.Epochs, b.Epochs);
    }

    [Fact]
    public void BatchesArePaddedMaskedRowsOfTheSampledSamples()
    {
        var batch = Batcher(Enumerable.Range(0, _cache.Count).ToArray()).Next(8);
        Assert.Equal((8, 32), (batch.BatchSize, batch.SequenceLength));
        Assert.All(batch.TokenTypeIds, t => Assert.Equal(0, t));
        long real = 0;
        for (int b = 0; b < 8; b++)
        {
            var sample = _cache.GetSample(batch.SampleIndices[b]);
            var row = new Range(b * 32, (b + 1) * 32);
            var ids = batch.InputIds[row];
            var labels = batch.Labels[row];
            var mask = batch.AttentionMask[row];
            Assert.Equal(Enumerable.Repeat(1, sample.Length).Concat(Enumerable.Repeat(0, 32 - sample.Length)), mask);
            Assert.All(ids[sample.Length..], id => Assert.Equal(PretrainingFixture.Pad, id));
            Assert.All(labels[sample.Length..], l => Assert.Equal(-100, l));
            for (int t = 0; t < sample.Length; t++)
                Assert.Equal(sample[t], labels[t] == -100 ? ids[t] : labels[t]);
            real += sample.Length;
        }
        Assert.Equal(real, batch.RealTokens);
        Assert.Equal(batch.Labels.Count(l => l != -100), batch.MaskedTokens);
        Assert.True(batch.MaskedTokens > 0);

        var narrow = Batcher(Enumerable.Range(0, _cache.Count).ToArray(), padding: SequencePadding.LongestInBatch).Next(3);
        Assert.Equal(narrow.SampleIndices.Max(i => _cache.GetLength(i)), narrow.SequenceLength);
    }

    [Fact]
    public void BatchesDoNotDependOnThreadsOrOnWhichBatchASampleLandsIn()
    {
        var train = Enumerable.Range(0, _cache.Count).ToArray();
        var one = Batcher(train, threads: 1);
        var many = Batcher(train, threads: 4);
        var small = Batcher(train, threads: 2);
        for (int i = 0; i < 6; i++)
        {
            var a = one.Next(16); // crosses epoch boundaries (40 samples)
            AssertSame(a, many.Next(16));
            // The same samples fetched as batches of 4 and 12: identical rows.
            var b1 = small.Next(4);
            var b2 = small.Next(12);
            Assert.Equal(a.InputIds, b1.InputIds.Concat(b2.InputIds));
            Assert.Equal(a.Labels, b1.Labels.Concat(b2.Labels));
        }
        // A row equals its sample masked alone with its (epoch, index) key.
        var batch = Batcher(train).Next(40);
        var masker = MlmMasker.ForTokenizer(_f.Tokenizer, 0.3, 17);
        for (int b = 0; b < 40; b++)
        {
            var s = _cache.GetSample(batch.SampleIndices[b]);
            var ids = new int[s.Length];
            var labels = new int[s.Length];
            masker.Mask(s, batch.Epochs[b], batch.SampleIndices[b], ids, labels);
            Assert.Equal(ids, batch.InputIds[(b * 32)..(b * 32 + s.Length)]);
            Assert.Equal(labels, batch.Labels[(b * 32)..(b * 32 + s.Length)]);
        }
    }

    [Fact]
    public void ASavedPositionResumesWithExactlyTheSameBatches()
    {
        var split = TrainEvalSplit.ByCount(_cache.Count, 5, seed: 3);
        var original = Batcher(split.Train);
        for (int i = 0; i < 7; i++) original.Next(6);
        string saved = original.Position;
        Assert.Equal($"{{\"epoch\":1,\"index\":7,\"samples\":35,\"seed\":17}}", saved);
        var expected = Enumerable.Range(0, 9).Select(_ => original.Next(6)).ToList();

        var resumed = Batcher(split.Train);
        resumed.Position = saved;
        foreach (var e in expected) AssertSame(e, resumed.Next(6));
        Assert.Equal(original.Position, resumed.Position);

        var otherData = Batcher(split.Train.Skip(1).ToArray());
        Assert.Throws<InvalidOperationException>(() => otherData.Position = saved);
        var otherSeed = new PretrainingBatcher(_cache, new PretrainingSampler(split.Train, 18), MlmMasker.ForTokenizer(_f.Tokenizer, 0.3, 17), 0);
        Assert.Throws<InvalidOperationException>(() => otherSeed.Position = saved);
        Assert.Throws<FormatException>(() => resumed.Position = "{}");
    }

    [Fact]
    public void EvalSamplesAreNeverTrainedOnAndEvalBatchesAreFixed()
    {
        var split = TrainEvalSplit.ByCount(_cache.Count, 6, seed: 0);
        var train = Batcher(split.Train);
        var seen = new HashSet<int>();
        for (int i = 0; i < 10; i++) seen.UnionWith(train.Next(16).SampleIndices);
        Assert.Equal(split.Train.ToHashSet(), seen);

        var evalMasker = MlmMasker.ForTokenizer(_f.Tokenizer, 0.15, 1234);
        var a = PretrainingBatcher.EvalBatches(_cache, split.Eval, evalMasker, PretrainingFixture.Pad, batchSize: 4);
        var b = PretrainingBatcher.EvalBatches(_cache, split.Eval, MlmMasker.ForTokenizer(_f.Tokenizer, 0.15, 1234), PretrainingFixture.Pad, batchSize: 4);
        Assert.Equal([4, 2], a.Select(x => x.BatchSize));
        Assert.Equal(split.Eval, a.SelectMany(x => x.SampleIndices));
        for (int i = 0; i < a.Count; i++) AssertSame(a[i], b[i]);
        Assert.All(a.SelectMany(x => x.Epochs), e => Assert.Equal(0, e));
    }
}
