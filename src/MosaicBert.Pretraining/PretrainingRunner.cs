using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using MosaicBert.Distributed;
using MosaicBert.Model;
using MosaicBert.Tensors;

namespace MosaicBert.Pretraining;

/// <summary>A padded MLM micro-batch: row-major [B, S] arrays, labels −100 where there is no target.</summary>
public sealed record MlmBatch(int BatchSize, int SequenceLength, int[] InputIds, int[] AttentionMask, int[] Labels)
{
    /// <summary>Real (non-padding) tokens.</summary>
    public long RealTokens => AttentionMask.LongCount(m => m != 0);

    /// <summary>The model's unpadded form.</summary>
    public EncoderBatch ToEncoderBatch() => new(InputIds, [], AttentionMask, BatchSize, SequenceLength, Labels);
}

/// <summary>Where training micro-batches come from, with a position that a checkpoint can save and restore.</summary>
public interface IMlmBatchSource
{
    /// <summary>The next micro-batch of <paramref name="batchSize"/> samples (the data repeats in new epochs).</summary>
    MlmBatch Next(int batchSize);

    /// <summary>The position after the last batch returned, as JSON; setting it resumes exactly there.</summary>
    string Position { get; set; }
}

/// <summary>What one optimizer step did (for progress displays and metrics).</summary>
public sealed record StepReport(long Step, long TotalSteps, double Loss, double? MlmAccuracy, double LearningRate, double TokensPerSecond,
    double GradientNorm, TimeSpan Elapsed, TimeSpan? Remaining, double? EvalLoss);

/// <summary>
/// The pretraining loop, independent of hosting: build or resume the model, then for each step accumulate
/// micro-batches (mean MLM loss per micro-batch, scaled by 1/accumulation), optionally clip, take a decoupled AdamW
/// step on the Composer schedule, log, evaluate, checkpoint. Cancellation finishes the current step, writes a
/// checkpoint and returns.
/// </summary>
/// <remarks>
/// Data parallel (<paramref name="group"/> of world size W; one process when null): the step's micro-batches, in the
/// global order, are split between the ranks in contiguous runs (see <see cref="DataParallel"/>), the gradients are
/// averaged over the ranks before clipping and the optimizer step (in buckets, during the backward pass of the step's
/// last micro-batch unless <see cref="PretrainingOptions.OverlapGradientReduction"/> is false), and rank 0 alone
/// evaluates, reports progress, logs and writes metrics and checkpoints. Every rank loads the same checkpoint on resume.
/// </remarks>
public sealed class PretrainingRunner(PretrainingOptions options, ILogger logger, ProcessGroup? group = null)
{
    /// <summary>Runs (or resumes) training; returns the last step completed.</summary>
    /// <param name="model">The model to train (freshly initialised; a checkpoint in the output directory overrides it).</param>
    /// <param name="train">Training batches.</param>
    /// <param name="eval">Fixed evaluation batches (masked at the eval ratio).</param>
    /// <param name="progress">Receives a report after every step.</param>
    /// <param name="cancellationToken">Stops after the current step (a checkpoint is written).</param>
    public long Run(MosaicBertModel model, IMlmBatchSource train, IReadOnlyList<MlmBatch> eval, IProgress<StepReport>? progress,
        CancellationToken cancellationToken)
    {
        var o = options;
        // ---- data parallel (world size 1 takes the same path; its collectives are the identity) ----
        var world = group ?? new SingleProcessGroup();
        var shard = DataParallel.Shard(o, world);
        bool root = world.IsRoot;
        var log = root ? logger : NullLogger.Instance;
        // ---- end data parallel ----
        Directory.CreateDirectory(o.OutputDir);
        using var optimizer = new DecoupledAdamW(model, new AdamWOptions
        {
            LearningRate = (float)o.LearningRate, Beta1 = (float)o.Beta1, Beta2 = (float)o.Beta2,
            Epsilon = (float)o.Epsilon, WeightDecay = (float)o.WeightDecay,
        });
        long step = 0, samples = 0, tokens = 0;
        var trainCurve = new List<CurvePoint>();
        var evalCurve = new List<CurvePoint>();
        string checkpoints = Path.Combine(o.OutputDir, "checkpoints");
        if (TrainingCheckpoint.FindLatest(checkpoints) is string latest)
        {
            var state = TrainingCheckpoint.Load(latest, model, optimizer);
            (step, samples) = (state.Step, state.SamplesSeen);
            tokens = long.Parse(state.Extra["tokens_seen"], CultureInfo.InvariantCulture);
            train.Position = state.Extra["data_position"];
            if (root) ReadCurves(trainCurve, evalCurve, step);
            log.LogInformation("Resumed from {Checkpoint}: step {Step}, {Samples} samples, {Tokens} tokens", latest, step, samples, tokens);
        }
        DataParallel.Synchronize(world, model, step, samples, tokens);
        var buckets = DataParallel.GradientBuckets(world, model, o.GradientBucketElements);
        // Overlap: the last micro-batch of the step on this rank reports each gradient range as its backward pass
        // finishes it, and a bucket's all-reduce starts as soon as all of it is final (on the GPU on NCCL's stream,
        // while the backward pass goes on). Earlier micro-batches only accumulate: their sums are not final.
        bool overlap = DataParallel.Overlaps(o, world);
        GradientsFinal reportFinal = (offset, length) => buckets.MarkReady(new GradientRange(offset, length));
        int lastOwned = shard.FirstMicroBatch + shard.MicroBatchesPerRank - 1;
        if (world.WorldSize > 1)
            log.LogInformation("Data parallel: {World} ranks ({Kind}), {Buckets} gradient buckets, reduction {Mode}", world.WorldSize, world.Kind,
                buckets.Count, overlap ? "overlapped with the backward pass" : "after the backward pass");
        int accumulation = o.GlobalBatchSize / o.MicroBatchSize; // micro-batches per step, over all ranks
        long totalSteps = o.MaxSteps ?? long.MaxValue;
        // The schedule runs on samples (Composer); with a token budget the run length is estimated from the first
        // batch's tokens per sample and the schedule is re-based each step on the tokens seen.
        var metrics = root ? new StreamWriter(Path.Combine(o.OutputDir, "metrics.jsonl"), append: true) { AutoFlush = true } : null;
        using (metrics)
        {
            if (step == 0 && metrics is not null)
            {
                // The starting point of the curve: the untrained model's eval loss (≈ ln V).
                double initial = Evaluate(model, eval);
                evalCurve.Add(new CurvePoint(0, initial));
                metrics.WriteLine(JsonSerializer.Serialize(new { step = 0L, samples = 0L, tokens = 0L, eval_loss = initial }));
                log.LogInformation("step 0: eval MLM loss {EvalLoss:F4}", initial);
            }
            var clock = Stopwatch.StartNew();
            long startTokens = tokens, stepsThisRun = 0;
            while (step < totalSteps && (o.TokenBudget is null || tokens < o.TokenBudget))
            {
                model.ZeroGradients();
                double lossSum = 0;
                long correct = 0, predicted = 0, stepSamples = 0, stepTokens = 0;
                bool measureAccuracy = (step + 1) % o.LogInterval == 0;
                bool started = false; // the backward pass started the buckets' reductions
                for (int micro = 0; micro < accumulation; micro++)
                {
                    if (!shard.Owns(micro))
                    {
                        DataParallel.Skip(train, o.MicroBatchSize); // another rank's micro-batch
                        continue;
                    }
                    var batch = train.Next(o.MicroBatchSize);
                    var encoder = batch.ToEncoderBatch();
                    if (encoder.MaskedTokens.Length == 0) continue; // nothing to predict (tiny corpora); counts as seen
                    var dropout = new DropoutSettings(unchecked((ulong)o.Seed * 0x9E3779B97F4A7C15UL ^ (ulong)(step * accumulation + micro)));
                    // Scaled by 1/(this rank's micro-batches): the average over the ranks makes it 1/accumulation.
                    var hook = overlap && micro == lastOwned ? reportFinal : null;
                    lossSum += model.ForwardBackward(encoder, new TrainingObjective.MaskedLM(), dropout, 1f / shard.MicroBatchesPerRank, hook);
                    started = hook is not null;
                    if (measureAccuracy) (correct, predicted) = Add((correct, predicted), Accuracy(model, encoder));
                    stepSamples += batch.BatchSize;
                    stepTokens += batch.RealTokens;
                }
                // ---- data parallel: average the gradients, add up the step's statistics ----
                // A last micro-batch with nothing to predict ran no backward pass: then every bucket starts now.
                if (started) buckets.WaitAll();
                else buckets.ReduceAll();
                Span<double> stats = [lossSum, stepSamples, stepTokens, correct, predicted];
                world.AllReduceSum(stats);
                (lossSum, correct, predicted) = (stats[0], (long)stats[3], (long)stats[4]);
                samples += (long)stats[1];
                tokens += (long)stats[2];
                // ---- end data parallel ----
                // Clipping is decided on the device; the norm is read after the optimizer step is queued.
                var clippedNorm = o.GradientClipNorm is double clip ? optimizer.QueueClipGradients(clip) : null;
                float lr = LearningRate(o, samples - o.GlobalBatchSize, tokens, totalSteps);
                optimizer.Step(lr);
                double norm = clippedNorm?.Read() ?? double.NaN;
                step++;
                double loss = lossSum / accumulation;
                trainCurve.Add(new CurvePoint(step, loss));
                double? evalLoss = null;
                if (root && (step % o.EvalInterval == 0 || step == totalSteps))
                {
                    evalLoss = Evaluate(model, eval);
                    evalCurve.Add(new CurvePoint(step, evalLoss.Value));
                    log.LogInformation("step {Step}: eval MLM loss {EvalLoss:F4}", step, evalLoss);
                }
                double elapsed = clock.Elapsed.TotalSeconds;
                double tps = (tokens - startTokens) / Math.Max(elapsed, 1e-9);
                stepsThisRun++;
                TimeSpan? remaining = totalSteps == long.MaxValue ? null
                    : TimeSpan.FromSeconds(elapsed / stepsThisRun * (totalSteps - step));
                var report = new StepReport(step, totalSteps, loss, predicted > 0 ? (double)correct / predicted : null, lr, tps,
                    norm, clock.Elapsed, remaining, evalLoss);
                if (root) progress?.Report(report);
                if (metrics is not null && (step % o.LogInterval == 0 || evalLoss is not null))
                {
                    metrics.WriteLine(JsonSerializer.Serialize(new
                    {
                        step, samples, tokens, loss, mlm_accuracy = report.MlmAccuracy, lr, tokens_per_s = Math.Round(tps, 1),
                        grad_norm = double.IsNaN(norm) ? (double?)null : norm, eval_loss = evalLoss,
                    }));
                    TrainingCurvePlot.Write(Path.Combine(o.OutputDir, "training-curve.svg"), $"MosaicBERT pretraining ({o.Preset})", trainCurve, evalCurve);
                }
                bool stopping = DataParallel.AnyRank(world, cancellationToken.IsCancellationRequested);
                if (root && (step % o.CheckpointInterval == 0 || step == totalSteps || stopping || (o.TokenBudget is long b && tokens >= b)))
                {
                    var path = TrainingCheckpoint.Save(checkpoints, model, optimizer, new TrainingCheckpoint.State(step, samples,
                        new Dictionary<string, string>
                        {
                            ["tokens_seen"] = tokens.ToString(CultureInfo.InvariantCulture),
                            ["data_position"] = train.Position,
                            ["seed"] = o.Seed.ToString(CultureInfo.InvariantCulture),
                        }), o.KeepCheckpoints);
                    log.LogInformation("step {Step}: checkpoint {Path}", step, path);
                }
                if (stopping)
                {
                    log.LogInformation("Stopping at step {Step} as asked; resume by running the same command again", step);
                    break;
                }
            }
        }
        return step;
    }

    private static (long, long) Add((long, long) a, (long, long) b) => (a.Item1 + b.Item1, a.Item2 + b.Item2);

    /// <summary>lr for the step whose batch starts after <paramref name="samplesBefore"/> samples.</summary>
    private static float LearningRate(PretrainingOptions o, long samplesBefore, long tokensSeen, long totalSteps)
    {
        if (o.TokenBudget is long budget && o.MaxSteps is null)
        {
            // Progress in tokens: same shape as the sample schedule.
            var s = new LinearWarmupSchedule(o.LearningRate, (long)(o.WarmupFraction * budget), budget, o.AlphaF);
            return s.LearningRate(Math.Max(0, tokensSeen));
        }
        long total = totalSteps * o.GlobalBatchSize;
        var schedule = new LinearWarmupSchedule(o.LearningRate, (long)(o.WarmupFraction * total), total, o.AlphaF);
        return schedule.LearningRate(Math.Max(0, samplesBefore));
    }

    /// <summary>Fraction of masked tokens whose arg-max prediction is the label (host-side; called at log steps).</summary>
    private static (long Correct, long Total) Accuracy(MosaicBertModel model, EncoderBatch batch)
    {
        var logits = model.MaskedLMLogits(batch.MaskedTokens);
        int v = model.Config.VocabSize, k = batch.MaskedTokens.Length;
        var host = new float[(long)k * v];
        model.Backend.Download(logits, host);
        long correct = 0;
        for (int r = 0; r < k; r++)
        {
            var row = host.AsSpan(r * v, v);
            if (System.Numerics.Tensors.TensorPrimitives.IndexOfMax(row) == batch.MaskedLabels[r]) correct++;
        }
        return (correct, k);
    }

    /// <summary>Mean MLM loss over the evaluation batches (no dropout, no gradient use).</summary>
    public static double Evaluate(MosaicBertModel model, IReadOnlyList<MlmBatch> eval)
    {
        double sum = 0;
        long count = 0;
        foreach (var batch in eval)
        {
            var encoder = batch.ToEncoderBatch();
            int k = encoder.MaskedTokens.Length;
            if (k == 0) continue;
            model.Encode(encoder);
            var logits = model.MaskedLMLogits(encoder.MaskedTokens);
            using var labels = model.Backend.Allocate(DType.Int32, k);
            using var losses = model.Backend.Allocate(k);
            model.Backend.Upload(encoder.MaskedLabels, labels);
            model.Backend.CrossEntropy(logits, labels, losses);
            var host = new float[k];
            model.Backend.Download(losses, host);
            sum += host.Sum(x => (double)x);
            count += k;
        }
        return count == 0 ? double.NaN : sum / count;
    }

    /// <summary>Rebuilds the curves from metrics.jsonl up to <paramref name="step"/> (after a resume).</summary>
    private void ReadCurves(List<CurvePoint> train, List<CurvePoint> eval, long step)
    {
        var path = Path.Combine(options.OutputDir, "metrics.jsonl");
        if (!File.Exists(path)) return;
        var kept = new List<string>();
        foreach (var line in File.ReadLines(path))
        {
            try
            {
                using var doc = JsonDocument.Parse(line);
                long s = doc.RootElement.GetProperty("step").GetInt64();
                if (s > step) continue; // written after the checkpoint we resume from: that work is redone
                kept.Add(line);
                if (doc.RootElement.TryGetProperty("loss", out var l)) train.Add(new CurvePoint(s, l.GetDouble()));
                if (doc.RootElement.TryGetProperty("eval_loss", out var e) && e.ValueKind == JsonValueKind.Number)
                    eval.Add(new CurvePoint(s, e.GetDouble()));
            }
            catch (JsonException)
            {
                // A line cut by a kill: dropped.
            }
        }
        var tmp = path + ".tmp-" + Environment.ProcessId;
        File.WriteAllLines(tmp, kept);
        File.Move(tmp, path, overwrite: true);
    }
}
