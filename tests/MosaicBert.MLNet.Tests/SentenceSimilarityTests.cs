using MosaicBert.ML;
using MosaicBert.ML.Data;
using MosaicBert.ML.Trainers;
using static MosaicBert.MLNet.Tests.MosaicBertTestKit;

namespace MosaicBert.MLNet.Tests;

public sealed class SentenceSimilarityTests
{
    public sealed class ScoredPair
    {
        public string Sentence1 { get; set; } = "";

        public string Sentence2 { get; set; } = "";

        public float Label { get; set; }
    }

    /// <summary>The target is 1 plus 1.5 per "good" in either sentence (0 to 2 of them): 1, 2.5 or 4.</summary>
    private static ScoredPair[] Pairs(int count, int seed)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(i =>
        {
            var good = new[] { i % 3 >= 1, i % 3 == 2 };
            string Sentence(bool g)
            {
                var words = Enumerable.Range(0, random.Next(2, 6)).Select(_ => Fillers[random.Next(Fillers.Length)]).ToList();
                words.Insert(random.Next(words.Count + 1), g ? "good" : "bad");
                return string.Join(' ', words);
            }
            var swap = random.Next(2) == 0;
            return new ScoredPair { Sentence1 = Sentence(good[swap ? 1 : 0]), Sentence2 = Sentence(good[swap ? 0 : 1]), Label = 1 + 1.5f * good.Count(g => g) };
        })];
    }

    [Fact]
    public void LearnsARealValuedTargetOfAPair()
    {
        var ctx = new MLContext(seed: 1);
        var train = ctx.Data.LoadFromEnumerable(Pairs(384, seed: 1));
        var test = ctx.Data.LoadFromEnumerable(Pairs(120, seed: 2));
        var options = new SentenceSimilarityTrainer.SentenceSimilarityOptions
        {
            Config = TinyConfig, VocabPath = VocabPath, MaxSequenceLength = 32, BatchSize = 16, MaxEpochs = 6, LearningRate = 3e-3, Seed = 1,
            // Validation is watched (and logged) but the last parameters are kept: best-by-Spearman can pick an early
            // epoch that ranks well before the scale is learnt, and this test checks the scale too.
            ValidationSet = test, KeepBestModel = false,
        };
        var trainer = ctx.Regression.Trainers.SentenceSimilarity(options);
        Assert.True(trainer.GetOutputSchema(SchemaShape.Create(train.Schema)).TryFindColumn("Score", out var score));
        Assert.Equal(NumberDataViewType.Single, score.ItemType);

        using var model = trainer.Fit(train);
        var metrics = ctx.Regression.Evaluate(model.Transform(test));

        Assert.True(metrics.PearsonCorrelation > 0.9, $"Pearson {metrics.PearsonCorrelation}, MSE {metrics.MeanSquaredError}");
        Assert.True(metrics.MeanSquaredError < 0.25, $"MSE {metrics.MeanSquaredError} (label variance 1.5)");
        Assert.Equal(NumberDataViewType.Single, model.GetOutputSchema(test.Schema)["Score"].Type);
    }

    [Fact]
    public void ALabelThatIsNotSingleIsRejected()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(Reviews(4, seed: 1));
        var trainer = ctx.Regression.Trainers.SentenceSimilarity(new SentenceSimilarityTrainer.SentenceSimilarityOptions
        {
            Config = TinyConfig, VocabPath = VocabPath, LabelColumnName = "Sentiment", Sentence2ColumnName = null,
        });

        Assert.Contains("must be Single", Assert.Throws<ArgumentOutOfRangeException>(() => trainer.Fit(data)).Message);
    }
}
