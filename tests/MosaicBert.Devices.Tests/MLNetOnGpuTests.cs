using MosaicBert.ML;
using MosaicBert.ML.Data;
using MosaicBert.ML.Trainers;
using MosaicBert.ML.Transforms;
using MosaicBert.Model;

namespace MosaicBert.Devices.Tests;

/// <summary>
/// The ML.NET-style components with <c>Device = "cuda"</c>: the featurizer's embeddings match the CPU's, a classifier
/// fine-tuned on the GPU saves a model zip that loads on the CPU with the same predictions, and the context's
/// GpuDeviceId chooses the GPU when the options leave Device unset.
/// </summary>
public sealed class MLNetOnGpuTests : IDisposable
{
    private static readonly string[] s_words =
        ["the", "movie", "film", "was", "is", "a", "plot", "story", "actor", "very", "quite", "really", "and", "it", "this", "good", "bad"];

    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mosaicbert-mlnet-gpu-");

    public void Dispose() => _dir.Delete(recursive: true);

    private string Vocab()
    {
        var path = Path.Combine(_dir.FullName, "vocab.txt");
        File.WriteAllLines(path, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", .. s_words]);
        return path;
    }

    public sealed class Review
    {
        public string Sentence1 { get; set; } = "";

        public string Label { get; set; } = "";
    }

    private static Review[] Reviews(int count, int seed)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(i =>
        {
            var words = Enumerable.Range(0, random.Next(3, 12)).Select(_ => s_words[random.Next(s_words.Length - 2)]).ToList();
            words.Insert(random.Next(words.Count + 1), i % 2 == 0 ? "good" : "bad");
            return new Review { Sentence1 = string.Join(' ', words), Label = i % 2 == 0 ? "pos" : "neg" };
        })];
    }

    private static MosaicBertConfig Config => new() { VocabSize = 64, HiddenSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, IntermediateSize = 128 };

    public sealed class Vectors
    {
        public float[] Features { get; set; } = [];

        public float[] Score { get; set; } = [];
    }

    private static float[][] Column(IDataView data, string name) =>
        [.. new MLContext().Data.CreateEnumerable<Vectors>(data, reuseRowObject: false, ignoreMissingColumns: true).Select(v => name == "Score" ? v.Score : v.Features)];

    [Fact]
    public void FeaturizerOnTheGpuMatchesTheCpu()
    {
        Gpu.Require();
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(Reviews(100, seed: 2));
        float[][] Embed(string device)
        {
            using var featurizer = ctx.Transforms.MosaicBert("Features", "Sentence1", options: new MosaicBertFeaturizerOptions
            {
                Config = Config, VocabPath = Vocab(), Seed = 5, Device = device, BatchSize = 16,
            }).Fit(data);
            return Column(featurizer.Transform(data), "Features");
        }
        var cpu = Embed("cpu");
        var gpu = Embed("cuda");
        Compare.OfScale([.. cpu.SelectMany(x => x)], [.. gpu.SelectMany(x => x)], 5e-6, "featurizer embeddings");
    }

    [Fact]
    public void ClassifierTrainedOnTheGpuSavesAModelThatLoadsOnTheCpu()
    {
        Gpu.Require();
        var ctx = new MLContext(seed: 1);
        var logs = new List<string>();
        ctx.Log += (_, e) => { lock (logs) logs.Add(e.RawMessage); };
        var train = ctx.Data.LoadFromEnumerable(Reviews(256, seed: 3));
        var dev = ctx.Data.LoadFromEnumerable(Reviews(64, seed: 4));
        var labelMap = ctx.Transforms.Conversion.MapValueToKey("Label");
        var options = new TextClassificationTrainer.TextClassificationOptions
        {
            Config = Config, VocabPath = Vocab(), Seed = 7, Device = "cuda", MaxEpochs = 3, BatchSize = 32, LearningRate = 1e-3,
            MaxSequenceLength = 32, ValidationSet = labelMap.Fit(train).Transform(dev),
        };
        var zip = Path.Combine(_dir.FullName, "model.zip");
        float[][] onGpu;
        using (var model = (IDisposable)labelMap.Append(ctx.MulticlassClassification.Trainers.TextClassification(options)).Fit(train))
        {
            var transformer = (ITransformer)model;
            onGpu = Column(transformer.Transform(dev), "Score");
            var accuracy = ctx.MulticlassClassification.Evaluate(transformer.Transform(dev)).MacroAccuracy;
            Assert.True(accuracy >= 0.9, $"dev accuracy {accuracy:F3} after training on the GPU");
            ctx.Model.Save(transformer, train.Schema, zip);
        }
        Assert.Contains(logs, l => l.Contains("on cuda:0 (", StringComparison.Ordinal));

        var cpuContext = new MLContext(seed: 1);
        using (var loaded = (IDisposable)cpuContext.Model.Load(zip, out _))
        {
            var onCpu = Column(((ITransformer)loaded).Transform(dev), "Score");
            Compare.OfScale([.. onGpu.SelectMany(x => x)], [.. onCpu.SelectMany(x => x)], 1e-4, "class probabilities, GPU-trained model loaded on the CPU");
        }
        // The context's GpuDeviceId puts a loaded model on the GPU (the zip does not record a device).
        var gpuContext = new MLContext(seed: 1) { GpuDeviceId = 0, FallbackToCpu = false };
        using (var loaded = (IDisposable)gpuContext.Model.Load(zip, out _))
        {
            var again = Column(((ITransformer)loaded).Transform(dev), "Score");
            Compare.OfScale([.. onGpu.SelectMany(x => x)], [.. again.SelectMany(x => x)], 0, "class probabilities, reloaded on the GPU");
        }
    }
}
