using MosaicBert.ML;
using MosaicBert.ML.Data;
using MosaicBert.ML.Trainers;
using MosaicBert.ML.Transforms;
using MosaicBert.Model;

namespace MosaicBert.MLNet.Tests;

/// <summary>
/// Fast MosaicBERT fixtures: a vocabulary of ~90 tokens written to a temporary folder, a d=32, 2-layer model, and
/// synthetic sentences whose label is whether they contain "good" or "bad".
/// </summary>
internal static class MosaicBertTestKit
{
    public static readonly string[] Fillers =
        ["the", "movie", "film", "was", "is", "a", "plot", "story", "actor", "very", "quite", "really", "and", "it", "this", "that", "show", "book", "of", "with"];

    private static readonly Lazy<string> s_folder = new(() =>
    {
        var folder = Directory.CreateTempSubdirectory("mosaicbert-mlnet-tests-").FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(folder, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        var letters = Enumerable.Range('a', 26).Select(c => ((char)c).ToString()).ToArray();
        File.WriteAllLines(Path.Combine(folder, "vocab.txt"),
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", .. Fillers, "good", "bad", "x", "y", "z", "no", "yes", .. letters.Where(l => l is not ("a" or "x" or "y" or "z")), .. letters.Select(l => "##" + l)]);
        return folder;
    });

    /// <summary>A vocab.txt covering the synthetic sentences (and any lower-case word, letter by letter).</summary>
    public static string VocabPath => Path.Combine(s_folder.Value, "vocab.txt");

    /// <summary>A fresh temporary folder for one test (deleted at process exit).</summary>
    public static string NewFolder() => Directory.CreateDirectory(Path.Combine(s_folder.Value, Guid.NewGuid().ToString("N"))).FullName;

    public static MosaicBertConfig TinyConfig => new() { VocabSize = 128, HiddenSize = 32, NumHiddenLayers = 2, NumAttentionHeads = 2, IntermediateSize = 64 };

    public sealed class Review
    {
        public string Sentence1 { get; set; } = "";

        public string Sentiment { get; set; } = "";
    }

    /// <summary>A row to predict: the label is unknown (empty text maps to key 0, "missing").</summary>
    public sealed class ReviewInput
    {
        public string Sentence1 { get; set; } = "";

        public string Sentiment { get; set; } = "";
    }

    public sealed class ReviewPrediction
    {
        [ColumnName("PredictedSentiment")] public string Sentiment { get; set; } = "";

        public float[] Score { get; set; } = [];
    }

    /// <summary>3–8 filler words with "good" (pos) or "bad" (neg) somewhere; balanced labels.</summary>
    public static Review[] Reviews(int count, int seed)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(i =>
        {
            var words = Enumerable.Range(0, random.Next(3, 9)).Select(_ => Fillers[random.Next(Fillers.Length)]).ToList();
            var positive = i % 2 == 0;
            words.Insert(random.Next(words.Count + 1), positive ? "good" : "bad");
            return new Review { Sentence1 = string.Join(' ', words), Sentiment = positive ? "pos" : "neg" };
        })];
    }

    public static TextClassificationTrainer.TextClassificationOptions ClassifierOptions() => new()
    {
        Config = TinyConfig,
        VocabPath = VocabPath,
        MaxSequenceLength = 32,
        BatchSize = 16,
        MaxEpochs = 4,
        LearningRate = 3e-3,
        WarmupFraction = 0.1,
        Seed = 1,
    };

    public static EstimatorChain<KeyToValueMappingTransformer> ClassifierPipeline(MLContext ctx, TextClassificationTrainer.TextClassificationOptions options) =>
        ctx.Transforms.Conversion.MapValueToKey("Label", "Sentiment", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
            .Append(ctx.MulticlassClassification.Trainers.TextClassification(options))
            .Append(ctx.Transforms.Conversion.MapKeyToValue("PredictedSentiment", "PredictedLabel"));
}
