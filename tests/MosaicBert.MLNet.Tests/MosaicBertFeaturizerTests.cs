using MosaicBert.ML;
using MosaicBert.ML.Data;
using MosaicBert.ML.Transforms;
using MosaicBert.Model;
using MosaicBert.Tensors.Cpu;
using MosaicBert.Tokenizers;
using static MosaicBert.MLNet.Tests.MosaicBertTestKit;

namespace MosaicBert.MLNet.Tests;

public sealed class MosaicBertFeaturizerTests
{
    public sealed class Pair
    {
        public string Sentence1 { get; set; } = "";

        public string Sentence2 { get; set; } = "";
    }

    private static readonly Lazy<string> s_checkpoint = new(() =>
    {
        // A Hugging Face layout checkpoint (with an MLM head, as pretraining writes it) and its vocab.txt.
        var dir = NewFolder();
        using var backend = new CpuBackend();
        using var model = new MosaicBertModel(TinyConfig, ModelHeads.MaskedLM, backend);
        model.InitializeWeights(seed: 7);
        PretrainedModel.Save(model, dir);
        File.Copy(VocabPath, Path.Combine(dir, "vocab.txt"));
        return dir;
    });

    private static float[][] Embed(MosaicBertPooling pooling, int maxLength, params (string A, string? B)[] rows)
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(rows.Select(r => new Pair { Sentence1 = r.A, Sentence2 = r.B ?? "" }));
        var options = new MosaicBertFeaturizerOptions { ModelPath = s_checkpoint.Value, Pooling = pooling, MaxSequenceLength = maxLength, BatchSize = 3 };
        var pair = rows.Any(r => r.B is not null);
        using var featurizer = ctx.Transforms.MosaicBert("Features", "Sentence1", pair ? "Sentence2" : null, options).Fit(data);
        var output = featurizer.Transform(data);
        Assert.Equal(new VectorDataViewType(NumberDataViewType.Single, 32), output.Schema["Features"].Type);
        return [.. output.GetColumn<float[]>("Features")];
    }

    [Fact]
    public void PoolsTheEncodersFinalHiddenStatesByMeanOrCls()
    {
        string[] texts = ["the movie was good", "bad", "a very long story of the actor with the book and the show"];
        var mean = Embed(MosaicBertPooling.Mean, 128, [.. texts.Select(t => (t, (string?)null))]);
        var cls = Embed(MosaicBertPooling.Cls, 128, [.. texts.Select(t => (t, (string?)null))]);

        // The same model run directly, one sentence at a time.
        using var backend = new CpuBackend();
        using var model = PretrainedModel.Load(s_checkpoint.Value, backend);
        var tokenizer = BertTokenizer.Create(VocabPath);
        for (var i = 0; i < texts.Length; i++)
        {
            var ids = tokenizer.Encode(texts[i]).InputIds.ToArray();
            var batch = new EncoderBatch(ids, [], [], 1, ids.Length);
            model.Encode(batch);
            var hidden = model.LastHiddenStatePadded(batch); // [1, S, 32], every position real
            var expectedMean = Enumerable.Range(0, 32).Select(j => Enumerable.Range(0, ids.Length).Average(t => hidden[t * 32 + j])).ToArray();
            Assert.Equal(expectedMean, mean[i], (a, b) => Math.Abs(a - b) < 1e-5);
            Assert.Equal(hidden[..32], cls[i], (a, b) => Math.Abs(a - b) < 1e-5);
        }
        Assert.NotEqual(mean[0], cls[0]);
    }

    [Fact]
    public void RowsAreTruncatedAtTheMaximumLength()
    {
        // [CLS] + 4 words + [SEP] = 6 tokens: the words after the fourth are cut, so they cannot change the embedding.
        var six = Embed(MosaicBertPooling.Mean, 6, ("the movie was very good and", null), ("the movie was very bad plot", null), ("the movie is very good and", null));
        Assert.Equal(six[0], six[1]);
        Assert.NotEqual(six[0], six[2]);
        var sixteen = Embed(MosaicBertPooling.Mean, 16, ("the movie was very good and", null), ("the movie was very bad plot", null));
        Assert.NotEqual(sixteen[0], sixteen[1]);

        // Longest first on a pair: 8 tokens leave 5 for the words; the long first sentence keeps 4, the second its 1.
        var pairs = Embed(MosaicBertPooling.Cls, 8, ("the movie was very good and", "plot"), ("the movie was very bad and", "plot"), ("the movie was very good and", "story"));
        Assert.Equal(pairs[0], pairs[1]);
        Assert.NotEqual(pairs[0], pairs[2]);
    }

    [Fact]
    public void APresetGivesRandomEmbeddingsOfItsHiddenSizeAndSavesAndLoads()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(Reviews(5, seed: 1));
        var estimator = ctx.Transforms.Text.MosaicBert("Features", "Sentence1", options: new MosaicBertFeaturizerOptions { Preset = "tiny", VocabPath = VocabPath, Seed = 3 });

        Assert.True(estimator.GetOutputSchema(SchemaShape.Create(data.Schema)).TryFindColumn("Features", out var shape));
        Assert.Equal(SchemaShape.Column.VectorKind.Vector, shape.Kind);
        using var featurizer = estimator.Fit(data);
        var features = featurizer.Transform(data).GetColumn<float[]>("Features");
        Assert.All(features, f => Assert.Equal(128, f.Length));
        Assert.Equal(128, featurizer.EmbeddingSize);

        var path = Path.Combine(NewFolder(), "featurizer.zip");
        ctx.Model.Save(featurizer, data.Schema, path);
        using var loaded = (MosaicBertFeaturizingTransformer)ctx.Model.Load(path, out _);
        Assert.Equal(features, loaded.Transform(data).GetColumn<float[]>("Features"));
        Assert.Equal(MosaicBertPooling.Mean, loaded.Pooling);
    }

    [Fact]
    public void MissingOrNonTextColumnsAreReported()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(Reviews(2, seed: 1));
        var estimator = ctx.Transforms.MosaicBert("Features", "Text", options: new MosaicBertFeaturizerOptions { Preset = "tiny", VocabPath = VocabPath });

        Assert.Contains("'Text' not found", Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Fit(data)).Message);
        Assert.Throws<ArgumentException>(() => ctx.Transforms.MosaicBert("Features", "Sentence1", options: new MosaicBertFeaturizerOptions { Preset = "tiny" }).Fit(data));
    }
}
