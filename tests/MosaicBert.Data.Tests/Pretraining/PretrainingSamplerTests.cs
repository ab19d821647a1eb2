using MosaicBert.Data.Pretraining;

namespace MosaicBert.Data.Tests.Pretraining;

public sealed class PretrainingSamplerTests
{
    [Fact]
    public void EachEpochIsASeededPermutationAndEpochsFollowEachOther()
    {
        var ids = Enumerable.Range(0, 50).Select(i => i * 3).ToArray();
        var s = new PretrainingSampler(ids, seed: 9);
        var e0 = s.EpochOrder(0);
        var e1 = s.EpochOrder(1);
        Assert.Equal(ids, e0.Order());
        Assert.Equal(ids, e1.Order());
        Assert.NotEqual(e0, e1);
        Assert.NotEqual(ids, e0);
        Assert.Equal(e0, new PretrainingSampler(ids.Reverse().ToArray(), seed: 9).EpochOrder(0)); // input order is irrelevant
        Assert.NotEqual(e0, new PretrainingSampler(ids, seed: 10).EpochOrder(0));

        var drawn = Enumerable.Range(0, 120).Select(_ => s.Next()).ToList();
        Assert.Equal(e0.Concat(e1).Concat(s.EpochOrder(2).Take(20)), drawn.Select(d => d.Sample));
        Assert.Equal(Enumerable.Repeat(0L, 50).Concat(Enumerable.Repeat(1L, 50)).Concat(Enumerable.Repeat(2L, 20)), drawn.Select(d => d.Epoch));
        Assert.Equal(new SamplerPosition(2, 20), s.Position);
    }

    [Fact]
    public void GoldenOrderFromTheDocumentedFisherYates()
    {
        // From an independent Python implementation of the PretrainingSampler remarks.
        var s = new PretrainingSampler(Enumerable.Range(0, 10).ToArray(), seed: 17);
        Assert.Equal([3, 8, 6, 4, 2, 0, 1, 5, 7, 9], s.EpochOrder(0));
        Assert.Equal([1, 5, 9, 2, 3, 0, 6, 7, 4, 8], s.EpochOrder(1));
    }

    [Fact]
    public void ShardsInterleaveIntoTheGlobalOrderForAnyWorldSize()
    {
        var ids = Enumerable.Range(0, 23).ToArray(); // not a multiple of the world size: shards cross epochs
        var global = new PretrainingSampler(ids, 4);
        var expected = Enumerable.Range(0, 23 * 3 + 5).Select(_ => global.Next()).ToList();
        foreach (int world in new[] { 2, 3, 4 })
        {
            var ranks = Enumerable.Range(0, world).Select(r => new PretrainingSampler(ids, 4, r, world)).ToArray();
            var union = new List<(int, long)>();
            while (union.Count < expected.Count)
                foreach (var r in ranks) union.Add(r.Next());
            Assert.Equal(expected, union.Take(expected.Count));
            Assert.All(ranks, r => Assert.Equal(ranks[0].Position, r.Position)); // one shared position
        }
        // A position saved at world size 3 resumes at world size 2 at the same global place.
        var three = Enumerable.Range(0, 3).Select(r => new PretrainingSampler(ids, 4, r, 3)).ToArray();
        for (int step = 0; step < 10; step++) foreach (var r in three) r.Next();
        var saved = SamplerPosition.Parse(three[0].Position.ToJson());
        var two = Enumerable.Range(0, 2).Select(r => new PretrainingSampler(ids, 4, r, 2) { Position = saved }).ToArray();
        Assert.Equal(expected.Skip(30).Take(6), Enumerable.Range(0, 3).SelectMany(_ => two.Select(r => r.Next())));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PretrainingSampler(ids, 4, 2, 2));
    }

    [Fact]
    public void PositionsRoundTripThroughJsonAndAreChecked()
    {
        var p = new SamplerPosition(3, 17);
        Assert.Equal("{\"epoch\":3,\"index\":17}", p.ToJson());
        Assert.Equal(p, SamplerPosition.Parse(p.ToJson()));
        Assert.Throws<FormatException>(() => SamplerPosition.Parse("{\"epoch\":1}"));
        Assert.Throws<FormatException>(() => SamplerPosition.Parse("not json"));
        var s = new PretrainingSampler([1, 2, 3], 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => s.Position = new SamplerPosition(0, 3));
        Assert.Throws<ArgumentException>(() => new PretrainingSampler([], 0));
    }

    [Fact]
    public void TheEvalSplitIsDeterministicDisjointAndComplete()
    {
        var a = TrainEvalSplit.ByCount(1000, 37, seed: 1);
        Assert.Equal(37, a.Eval.Count);
        Assert.Empty(a.Train.Intersect(a.Eval));
        Assert.Equal(Enumerable.Range(0, 1000), a.Train.Concat(a.Eval).Order());
        Assert.Equal(a.Eval, TrainEvalSplit.ByCount(1000, 37, seed: 1).Eval);
        Assert.NotEqual(a.Eval, TrainEvalSplit.ByCount(1000, 37, seed: 2).Eval);
        Assert.True(a.Eval.Max() - a.Eval.Min() > 500, "held-out samples spread over the corpus");
        // More held out by the same seed keeps the smaller set (smallest scores first).
        Assert.Subset(TrainEvalSplit.ByCount(1000, 100, seed: 1).Eval.ToHashSet(), a.Eval.ToHashSet());

        var f = TrainEvalSplit.ByFraction(10_000, 0.05, seed: 1);
        Assert.InRange(f.Eval.Count, 500 - 4 * 22, 500 + 4 * 22);
        Assert.Empty(f.Train.Intersect(f.Eval));
        Assert.Equal(10_000, f.Train.Count + f.Eval.Count);
        Assert.Throws<ArgumentOutOfRangeException>(() => TrainEvalSplit.ByCount(10, 10));
        Assert.Empty(TrainEvalSplit.ByCount(10, 0).Eval);
    }
}
