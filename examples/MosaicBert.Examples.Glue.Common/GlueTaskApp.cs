using System.Diagnostics;
using System.Globalization;
using MosaicBert.ML;
using MosaicBert.ML.Data;
using MosaicBert.ML.Glue;
using MosaicBert.ML.Trainers;
using MosaicBert.ML.Transforms;

namespace MosaicBert.Examples.Glue;

/// <summary>A task's GLUE files are not where the options say.</summary>
public sealed class GlueDataMissingException(string message) : Exception(message);

/// <summary>One task's outcome: dev metrics (MNLI has two: matched and mismatched) and what training took.</summary>
public sealed record GlueRunResult(GlueTask Task, IReadOnlyList<GlueResult> Results, int TrainRows, int DevRows, long Steps, TimeSpan TrainTime, string ModelZip);

/// <summary>A row to predict (the sentences only; Sentence2 stays empty for single-sentence tasks).</summary>
public sealed class GlueInput
{
    public string Sentence1 { get; set; } = "";

    public string Sentence2 { get; set; } = "";
}

/// <summary>A classification prediction: the label text (after MapKeyToValue) and the class probabilities.</summary>
public sealed class GluePrediction
{
    public string PredictedLabel { get; set; } = "";

    public float[] Score { get; set; } = [];
}

/// <summary>An STS-B prediction.</summary>
public sealed class GlueScore
{
    public float Score { get; set; }
}

/// <summary>
/// One GLUE task end to end as an ML.NET user writes it: load the TSVs, build MapValueToKey → TextClassification →
/// MapKeyToValue (SentenceSimilarity for STS-B), fit with the dev set as validation set, evaluate with the task's
/// metrics, save the model zip, load it back and predict a few dev sentences with a prediction engine.
/// </summary>
public static class GlueTaskApp
{
    private sealed class LabelRow
    {
        public string Label { get; set; } = "";
    }

    private sealed class LastProgress : IProgress<TrainingProgress>
    {
        public long Steps { get; private set; }

        public void Report(TrainingProgress value) => Steps = value.Step;
    }

    /// <summary>The preset trained from scratch when neither --model nor --preset is given.</summary>
    public const string DefaultPreset = "mini";

    /// <summary>The recipe's learning rate, batch size and epochs (spec §4; WNLI, outside the recipe, gets RTE's).</summary>
    public static (double LearningRate, int BatchSize, int Epochs) Recipe(GlueTask task) => task switch
    {
        GlueTask.Mnli or GlueTask.MnliMismatched => (5e-5, 48, 3),
        GlueTask.Qqp => (3e-5, 16, 5),
        GlueTask.Qnli => (1e-5, 16, 10),
        GlueTask.Sst2 => (3e-5, 16, 3),
        GlueTask.Cola => (5e-5, 32, 10),
        GlueTask.StsB => (3e-5, 32, 10),
        GlueTask.Mrpc => (8e-5, 32, 10),
        _ => (1e-5, 16, 3),
    };

    /// <summary>The entry point of a task's app: parses the options, runs, returns the exit code (0 done, 1 bad
    /// options or input, 2 data not found).</summary>
    public static int Main(GlueTask task, string[] args)
    {
        var program = $"MosaicBert.Examples.Glue.{task}";
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.WriteLine(GlueExampleOptions.Usage(program, runner: false));
            return 0;
        }
        try
        {
            Run(task, GlueExampleOptions.Parse(args, runner: false), Console.Out);
            return 0;
        }
        catch (GlueDataMissingException e)
        {
            Console.Error.WriteLine(e.Message);
            return 2;
        }
        catch (Exception e) when (e is ArgumentException or FileNotFoundException or FormatException or NotSupportedException or MosaicBert.Devices.DeviceUnavailableException)
        {
            Console.Error.WriteLine(e.Message);
            return 1;
        }
    }

    /// <summary>Whether the task's train and dev files are present (what the runner checks before running it).</summary>
    public static bool HasData(GlueTask task, GlueExampleOptions options, out string detail)
    {
        try
        {
            _ = Files(task, FindGlueDirectory(options.DataDirectory));
            detail = "";
            return true;
        }
        catch (GlueDataMissingException e)
        {
            detail = e.Message;
            return false;
        }
    }

    /// <summary>Runs one task (see the class summary) and returns its dev metrics.</summary>
    /// <exception cref="GlueDataMissingException">A train or dev file is missing.</exception>
    public static GlueRunResult Run(GlueTask task, GlueExampleOptions o, TextWriter output)
    {
        var info = GlueTaskInfo.Get(task);
        var glue = FindGlueDirectory(o.DataDirectory);
        var (trainPath, devFiles) = Files(task, glue);

        var ctx = new MLContext(seed: o.Seed);
        ctx.Log += (_, e) =>
        {
            if (e.Kind >= ChannelMessageKind.Warning || (e.Kind == ChannelMessageKind.Info && e.Source is "TextClassification" or "SentenceSimilarity"))
                output.WriteLine($"  [{e.Source}] {e.RawMessage}");
        };
        var train = ctx.Data.LoadGlue(task, trainPath);
        if (o.Limit is int limit) train = ctx.Data.TakeRows(ctx.Data.ShuffleRows(train, o.Seed), limit);
        var devs = devFiles.Select(f => (f.Task, Data: o.EvalLimit is int n ? ctx.Data.TakeRows(ctx.Data.LoadGlue(f.Task, f.Path), n) : ctx.Data.LoadGlue(f.Task, f.Path))).ToArray();

        // Hyperparameters: the recipe's when fine-tuning a checkpoint; from scratch, the settings measured on SST-2
        // (examples/GLUE.md): mini, 2 epochs, batch 32, lr 5e-4 (a random model needs a far larger rate).
        var recipe = Recipe(task);
        var scratch = o.ModelPath is null;
        var progress = new LastProgress();
        void Configure(MosaicBertTrainerOptions t)
        {
            t.ModelPath = o.ModelPath;
            t.Preset = scratch ? o.Preset ?? DefaultPreset : null;
            t.VocabPath = o.VocabPath ?? (scratch ? DefaultVocab(glue) : null);
            t.MaxEpochs = o.Epochs ?? (scratch ? 2 : recipe.Epochs);
            t.MaxSteps = o.MaxSteps ?? 0;
            t.BatchSize = o.BatchSize ?? (scratch ? 32 : recipe.BatchSize);
            t.LearningRate = o.LearningRate ?? (scratch ? 5e-4 : recipe.LearningRate);
            t.WeightDecay = task == GlueTask.Rte ? t.LearningRate : null; // the recipe's one exception to wd = lr/10
            t.MaxSequenceLength = o.MaxLength;
            t.EvaluationInterval = o.EvalEvery ?? 0;
            t.Threads = o.Threads;
            t.Device = o.Device;
            t.AllowCpuFallback = o.AllowCpuFallback;
            t.Precision = o.Precision;
            t.Seed = o.Seed;
            t.Sentence1ColumnName = "Sentence1";
            t.Sentence2ColumnName = info.IsSentencePair ? "Sentence2" : null;
            t.LogInterval = 100;
            t.Progress = progress;
        }

        var trainRows = (int)train.GetRowCount()!.Value;
        output.WriteLine($"== {info.Name}: {(scratch ? $"preset {o.Preset ?? DefaultPreset} from scratch (random weights)" : $"fine-tuning {o.ModelPath}")}, " +
            $"{trainRows} training rows, dev {string.Join(" + ", devs.Select(d => d.Data.GetRowCount()))} rows, device {o.Device} ==");
        var clock = Stopwatch.StartNew();
        ITransformer model;
        if (info.IsRegression)
        {
            var options = new SentenceSimilarityTrainer.SentenceSimilarityOptions();
            Configure(options);
            options.ValidationSet = devs[0].Data;
            model = new EstimatorChain<ITransformer>().Append(ctx.Regression.Trainers.SentenceSimilarity(options)).Fit(train);
        }
        else
        {
            // The keys come from the task's label set in GLUE's class order, whatever subset of rows is used.
            var labels = ctx.Data.LoadFromEnumerable(info.LabelValues.Select(v => new LabelRow { Label = v }));
            var labelMap = ctx.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue, keyData: labels);
            var options = new TextClassificationTrainer.TextClassificationOptions();
            Configure(options);
            options.ValidationSet = labelMap.Fit(train).Transform(devs[0].Data);
            // The label mapping needs the label, so it is left out when scoring new sentences (GetModelFor(Scoring)).
            model = new EstimatorChain<ITransformer>()
                .Append(labelMap, TransformerScope.TrainTest)
                .Append(ctx.MulticlassClassification.Trainers.TextClassification(options))
                .Append(ctx.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
                .Fit(train);
        }
        var trainTime = clock.Elapsed;
        try
        {
            var results = devs.Select(d => Evaluate(ctx, model, d.Task, d.Data, output)).ToList();
            var zip = Path.GetFullPath(o.OutputPath ?? Path.Combine("runs", "glue", info.DirectoryName, "model.zip"));
            ctx.Model.Save(model, train.Schema, zip);
            output.WriteLine($"Saved {zip} ({new FileInfo(zip).Length / 1e6:F1} MB); training took {trainTime.TotalSeconds:F0} s.");
            PredictWithSavedModel(ctx, zip, info, devs[0].Data, output);
            return new GlueRunResult(task, results, trainRows, devs.Sum(d => (int)d.Data.GetRowCount()!.Value), progress.Steps, trainTime, zip);
        }
        finally
        {
            (model as IDisposable)?.Dispose();
        }
    }

    private static GlueResult Evaluate(MLContext ctx, ITransformer model, GlueTask task, IDataView dev, TextWriter output)
    {
        var scored = model.Transform(dev);
        GlueResult result;
        if (GlueTaskInfo.Get(task).IsRegression)
        {
            double[] labels = [.. scored.GetColumn<float>("Label").Select(v => (double)v)];
            double[] scores = [.. scored.GetColumn<float>("Score").Select(v => (double)v)];
            result = GlueMetrics.Evaluate(task, labels, scores);
            var m = ctx.Regression.Evaluate(scored);
            output.WriteLine(FormattableString.Invariant($"MSE {m.MeanSquaredError:F4}, Pearson {m.PearsonCorrelation:F4}, Spearman {m.SpearmanCorrelation:F4}"));
        }
        else
        {
            var keys = scored.GetColumn<uint>("Label");
            var scores = scored.GetColumn<float[]>("Score");
            int[] rows = [.. Enumerable.Range(0, keys.Count).Where(r => keys[r] != 0)];
            result = GlueMetrics.Evaluate(task, [.. rows.Select(r => (int)keys[r] - 1)], [.. rows.Select(r => ArgMax(scores[r]))]);
            output.Write(ctx.MulticlassClassification.Evaluate(scored).ConfusionMatrix.GetFormattedConfusionTable());
        }
        output.WriteLine(result);
        return result;
    }

    /// <summary>Loads the zip back and predicts the first dev rows with a prediction engine on the scoring chain.</summary>
    private static void PredictWithSavedModel(MLContext ctx, string zip, GlueTaskInfo info, IDataView dev, TextWriter output)
    {
        using var loaded = (TransformerChain<ITransformer>)ctx.Model.Load(zip, out _);
        var scoring = loaded.GetModelFor(TransformerScope.Scoring);
        var sample = ctx.Data.TakeRows(dev, 3);
        var inputs = ctx.Data.CreateEnumerable<GlueInput>(sample, reuseRowObject: false, ignoreMissingColumns: true).ToList();
        var truths = info.IsRegression
            ? sample.GetColumn<float>("Label").Select(v => v.ToString("F2", CultureInfo.InvariantCulture)).ToList()
            : [.. sample.GetColumn<string>("Label")];
        using var classifier = info.IsRegression ? null : ctx.Model.CreatePredictionEngine<GlueInput, GluePrediction>(scoring);
        using var regressor = info.IsRegression ? ctx.Model.CreatePredictionEngine<GlueInput, GlueScore>(scoring) : null;
        for (var i = 0; i < inputs.Count; i++)
        {
            var predicted = regressor is not null
                ? regressor.Predict(inputs[i]).Score.ToString("F2", CultureInfo.InvariantCulture)
                : classifier!.Predict(inputs[i]) is var p ? FormattableString.Invariant($"{p.PredictedLabel} (p={p.Score.Max():F2})") : "";
            var text = info.IsSentencePair ? $"\"{Clip(inputs[i].Sentence1)}\" / \"{Clip(inputs[i].Sentence2)}\"" : $"\"{Clip(inputs[i].Sentence1)}\"";
            output.WriteLine($"  {text} -> {predicted}, label {truths[i]}");
        }
    }

    private static string Clip(string s) => s.Length <= 70 ? s : s[..67] + "...";

    private static int ArgMax(float[] values)
    {
        var best = 0;
        for (var j = 1; j < values.Length; j++) if (values[j] > values[best]) best = j;
        return best;
    }

    /// <summary>The train file and the dev file(s) of a task (MNLI: matched and mismatched), checked to exist.</summary>
    private static (string Train, (GlueTask Task, string Path)[] Dev) Files(GlueTask task, string glue)
    {
        var train = GlueTaskInfo.Get(task).GetFilePath(glue, GlueSplit.Train);
        (GlueTask, string)[] dev = [.. (task == GlueTask.Mnli ? [GlueTask.Mnli, GlueTask.MnliMismatched] : new[] { task })
            .Select(t => (t, GlueTaskInfo.Get(t).GetFilePath(glue, GlueSplit.Dev)))];
        var missing = dev.Select(d => d.Item2).Prepend(train).Where(p => !File.Exists(p)).ToList();
        return missing.Count == 0
            ? (train, dev)
            : throw new GlueDataMissingException($"{GlueTaskInfo.Get(task).DirectoryName}: data not found: {string.Join(", ", missing)} (set --data-dir or GLUE_DIR).");
    }

    /// <summary>--data-dir, else $GLUE_DIR, else the first ../shared/datasets/glue above the current or the app's folder.</summary>
    public static string FindGlueDirectory(string? directory)
    {
        if (directory is not null)
            return Directory.Exists(directory) ? directory : throw new GlueDataMissingException($"--data-dir '{directory}' does not exist.");
        if (Environment.GetEnvironmentVariable("GLUE_DIR") is { Length: > 0 } env) return env;
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "..", "shared", "datasets", "glue");
                if (Directory.Exists(candidate)) return Path.GetFullPath(candidate);
            }
        }
        throw new GlueDataMissingException("GLUE data not found: pass --data-dir, set GLUE_DIR, or put it at ../shared/datasets/glue.");
    }

    private static string DefaultVocab(string glue)
    {
        var vocab = Path.GetFullPath(Path.Combine(glue, "..", "vocab", "bert-base-uncased-vocab.txt"));
        return File.Exists(vocab) ? vocab : throw new ArgumentException($"No vocabulary: pass --vocab (looked for {vocab}).");
    }
}
