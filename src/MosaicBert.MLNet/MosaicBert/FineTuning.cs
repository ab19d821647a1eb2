using System.Diagnostics;
using MosaicBert.ML.Data;
using MosaicBert.ML.Transforms;
using MosaicBert.Model;
using MosaicBert.Tensors;
using MosaicBert.Tokenizers;

namespace MosaicBert.ML.Trainers;

/// <summary>The text of the rows to train or evaluate on.</summary>
internal sealed record TextRows(string[] Sentence1, string[]? Sentence2)
{
    public int Count => Sentence1.Length;

    /// <summary>The given rows' text columns.</summary>
    public static TextRows Read(IDataView data, string sentence1, string? sentence2, int[] rows)
    {
        MosaicBertTransformer.CheckTextColumns(data.Schema, sentence1, sentence2);
        var s1 = ColumnarDataView.Values<string>(data, data.Schema[sentence1]);
        var s2 = sentence2 is null ? null : ColumnarDataView.Values<string>(data, data.Schema[sentence2]);
        return new([.. rows.Select(r => s1[r])], s2 is null ? null : [.. rows.Select(r => s2[r])]);
    }
}

/// <summary>What a task contributes to the loop: the objective of a batch, and validation metrics from outputs.</summary>
/// <param name="Objective">The training objective for the given training rows.</param>
/// <param name="Evaluate">Validation metrics (by name) from the model's outputs on the validation rows.</param>
/// <param name="MetricName">The metric that selects the best parameters (higher is better).</param>
internal sealed record FineTuningTask(Func<int[], TrainingObjective> Objective, Func<float[][], IReadOnlyDictionary<string, double>> Evaluate, string MetricName);

/// <summary>
/// The fine-tuning loop shared by the trainers (spec §4): DecoupledAdamW, linear warm-up then linear decay to 0,
/// dropout on (seeded per step), rows shuffled each epoch with the seed, gradient clipping, evaluation on the
/// validation set after each epoch (and every EvaluationInterval steps) keeping the best parameters; progress to
/// IProgress and the log; the cancellation token checked between steps.
/// </summary>
internal static class FineTuning
{
    public static MosaicBertEncoder Train(MLContext context, MosaicBertTrainerOptions o, string component, int numLabels,
        TextRows train, TextRows? validation, FineTuningTask task)
    {
        var cancellation = o.CancellationToken;
        cancellation.ThrowIfCancellationRequested();
        if (train.Count == 0) throw new InvalidOperationException($"{component} cannot train: the training data has no rows with a label.");
        if (validation is { Count: 0 }) throw new InvalidOperationException($"{component}: the validation set has no rows with a label.");
        var seed = o.Seed ?? context.NextSeed();
        var encoder = MosaicBertEncoder.Create(context, o, ModelHeads.SequenceClassification, numLabels, seed, component);
        try
        {
            var clock = Stopwatch.StartNew();
            var trainEncodings = Tokenize(context, encoder, train, o.MaxSequenceLength, component, "training");
            var validationEncodings = validation is null ? null : Tokenize(context, encoder, validation, o.MaxSequenceLength, component, "validation");

            var n = train.Count;
            long stepsPerEpoch = (n + o.BatchSize - 1) / o.BatchSize;
            var totalSteps = o.MaxSteps > 0 ? Math.Min(stepsPerEpoch * o.MaxEpochs, o.MaxSteps) : stepsPerEpoch * o.MaxEpochs;
            var epochs = (int)((totalSteps + stepsPerEpoch - 1) / stepsPerEpoch);
            var schedule = new LinearWarmupSchedule(o.LearningRate, (long)Math.Round(o.WarmupFraction * totalSteps), totalSteps, AlphaF: 0);
            var model = encoder.Model;
            using var optimizer = new DecoupledAdamW(model, new AdamWOptions
            {
                LearningRate = (float)o.LearningRate,
                Beta1 = 0.9f,
                Beta2 = 0.98f,
                Epsilon = 1e-6f,
                WeightDecay = (float)(o.WeightDecay ?? o.LearningRate / 10),
            });
            context.WriteLog(ChannelMessageKind.Info, component,
                $"Training on {n} rows{(validation is null ? "" : $", validating on {validation.Count}")}: {epochs} epoch(s), {totalSteps} steps of {o.BatchSize}, lr {o.LearningRate:G3}, seed {seed}.");

            var random = new Random(seed);
            var order = Enumerable.Range(0, n).ToArray();
            // The best parameters so far stay on the model's device (a device-to-device copy per improvement, no host
            // round trip through PCIe on a GPU).
            Tensor? best = null;
            double bestValue = double.NaN;
            string bestAt = "";
            long step = 0, examples = 0, evaluatedAt = -1;
            double lossSum = 0, lastLoss = double.NaN;
            int lossCount = 0, epoch = 0;
            float lr = 0;

            try
            {
                for (epoch = 1; epoch <= epochs; epoch++)
                {
                    if (o.Shuffle) random.Shuffle(order);
                    for (var start = 0; start < n && step < totalSteps; start += o.BatchSize)
                    {
                        cancellation.ThrowIfCancellationRequested();
                        var rows = order[start..Math.Min(n, start + o.BatchSize)];
                        var batch = encoder.ToBatch([.. rows.Select(r => trainEncodings[r])]);
                        model.ZeroGradients();
                        var dropout = new DropoutSettings(unchecked((ulong)seed * 0x9E3779B97F4A7C15UL ^ (ulong)step));
                        lossSum += model.ForwardBackward(batch, task.Objective(rows), dropout);
                        lossCount++;
                        if (o.GradientClipNorm is double clip && clip > 0) optimizer.QueueClipGradients(clip);
                        lr = schedule.LearningRate(step);
                        optimizer.Step(lr);
                        step++;
                        examples += rows.Length;
                        if (validationEncodings is not null && o.EvaluationInterval > 0 && step % o.EvaluationInterval == 0) Evaluate();
                        else if (step % o.LogInterval == 0) Report(null);
                    }
                    if (validationEncodings is not null && evaluatedAt != step) Evaluate();
                }
                epoch = epochs;
                if (best is not null)
                {
                    model.Backend.Copy(best, model.Parameters);
                    context.WriteLog(ChannelMessageKind.Info, component, $"Kept the parameters of {bestAt} ({task.MetricName} {bestValue:F4} on the validation set).");
                }
            }
            finally
            {
                best?.Dispose();
            }
            encoder.ReleaseTrainingState();
            context.WriteLog(ChannelMessageKind.Info, component, $"Training done in {clock.Elapsed.TotalSeconds:F1} s ({step} steps).");
            return encoder;

            void Evaluate()
            {
                var outputs = encoder.Infer(validationEncodings!, o.BatchSize, EncoderOutput.Logits, cancellation);
                var metrics = task.Evaluate(outputs);
                evaluatedAt = step;
                var value = metrics[task.MetricName];
                // NaN (e.g. a correlation of constant predictions) never beats a number, but the first result is kept.
                if (o.KeepBestModel && (best is null || value > bestValue || (double.IsNaN(bestValue) && !double.IsNaN(value))))
                {
                    best ??= model.Backend.Allocate((int)model.Layout.Count);
                    model.Backend.Copy(model.Parameters, best);
                    bestValue = value;
                    bestAt = $"epoch {epoch}, step {step}";
                }
                Report(metrics);
            }

            void Report(IReadOnlyDictionary<string, double>? metrics)
            {
                if (lossCount > 0) lastLoss = lossSum / lossCount;
                lossSum = 0;
                lossCount = 0;
                var elapsed = clock.Elapsed;
                context.ReportProgress(component, new TrainingProgress(epoch, epochs, step, totalSteps, lastLoss, lr,
                    examples / Math.Max(elapsed.TotalSeconds, 1e-9), elapsed, metrics), o.Progress);
            }
        }
        catch
        {
            encoder.Dispose();
            throw;
        }
    }

    private static BertEncoding[] Tokenize(MLContext context, MosaicBertEncoder encoder, TextRows rows, int maxLength, string component, string what)
    {
        var encodings = encoder.Tokenize(rows.Sentence1, rows.Sentence2, maxLength);
        var truncated = encodings.Count(e => e.Truncated);
        if (truncated > 0)
            context.WriteLog(ChannelMessageKind.Info, component, $"{truncated} of {encodings.Length} {what} rows were truncated to {maxLength} tokens (longest first).");
        return encodings;
    }

    /// <summary>The index of the largest value (the first on ties).</summary>
    public static int ArgMax(float[] values)
    {
        var best = 0;
        for (var j = 1; j < values.Length; j++) if (values[j] > values[best]) best = j;
        return best;
    }
}
