using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using MosaicBert.Checkpoints;
using MosaicBert.ML.Data;
using MosaicBert.ML.Transforms;
using MosaicBert.Model;
using MosaicBert.Pretraining;
using MosaicBert.Tokenizers;

namespace MosaicBert.ML.Trainers;

/// <summary>
/// Pretrains MosaicBERT by masked language modelling on a text column (the MosaicBERT recipe, spec §3); made by
/// <c>mlContext.Pretraining.MosaicBert(options)</c>. <see cref="Fit(IDataView)"/> runs the same data path and training
/// loop as the <c>mosaicbert pretrain</c> host (token cache, 30% dynamic masking with 80/10/10, unpadded batches,
/// gradient accumulation, DecoupledAdamW on the warm-up/linear-decay schedule, evaluation, metrics.jsonl and the
/// training-curve plot, atomic checkpoints) and returns a <see cref="PretrainedMosaicBertTransformer"/> whose
/// <see cref="PretrainedMosaicBertTransformer.ModelPath"/> the featurizer and the fine-tuning trainers start from.
/// </summary>
/// <remarks>
/// <para>
/// Everything lives in <see cref="Options.OutputDirectory"/>: <c>data/corpus.jsonl</c> (the text column, one
/// <c>{"text": …}</c> document per row) and its token cache, <c>checkpoints/step-N/</c>, <c>metrics.jsonl</c>,
/// <c>training-curve.svg</c>, and after training <c>model/</c> (config.json, model.safetensors, vocab.txt).
/// </para>
/// <para>
/// Stopping and resuming: when the cancellation token fires, the current step finishes, a checkpoint is written and
/// Fit throws <see cref="OperationCanceledException"/>. Calling Fit again with the same options and data resumes from
/// the newest checkpoint and reproduces the losses of an uninterrupted run exactly. A Fit on other data into a
/// directory that holds checkpoints is refused (start a new directory from the old model with
/// <see cref="Options.ModelPath"/> instead).
/// </para>
/// </remarks>
public sealed partial class MosaicBertPretrainingTrainer : IEstimator<PretrainedMosaicBertTransformer>
{
    internal const string Component = "MosaicBertPretraining";
    private const string CorpusFileName = "corpus.jsonl";
    private const string ModelDirectoryName = "model";
    private const string VocabFileName = "vocab.txt";
    private readonly MLContext _context;
    private readonly Options _options;

    /// <summary>
    /// Options of <see cref="MosaicBertPretrainingTrainer"/>. Defaults follow the MosaicBERT recipe (sequence length
    /// 128, masking 0.3, batch 256, lr 5e-4, β 0.9/0.98, ε 1e-6, weight decay 1e-5, 6% warm-up, decay to 0.02·lr),
    /// as the pretraining host's options do; the names are the ML.NET-side ones (<c>BatchSize</c> is the host's
    /// GlobalBatchSize, <c>MaxSequenceLength</c> its SequenceLength, <c>OutputDirectory</c> its OutputDir).
    /// </summary>
    public sealed class Options
    {
        /// <summary>The text column to learn from; each row is one document (truncated to
        /// <see cref="MaxSequenceLength"/> tokens unless <see cref="Packing"/>).</summary>
        public string TextColumnName { get; set; } = "Text";

        /// <summary>Where checkpoints, metrics, the plot, the tokenized data and the final model go (required).</summary>
        public string OutputDirectory { get; set; } = "";

        /// <summary>Continue pretraining from this Hugging Face checkpoint directory (config.json +
        /// model.safetensors, e.g. an earlier result's <see cref="PretrainedMosaicBertTransformer.ModelPath"/>). One of
        /// ModelPath, <see cref="Preset"/> and <see cref="Config"/> is required.</summary>
        public string? ModelPath { get; set; }

        /// <summary>Train from scratch at a size preset: tiny, mini, small, medium, base or large (the vocabulary
        /// size is the vocabulary file's, rounded up to a multiple of 64).</summary>
        public string? Preset { get; set; }

        /// <summary>Train from scratch with this configuration (its VocabSize must cover the vocabulary).</summary>
        public MosaicBertConfig? Config { get; set; }

        /// <summary>The WordPiece vocabulary (vocab.txt). Default: <see cref="ModelPath"/>'s vocab.txt; required
        /// with a preset or configuration.</summary>
        public string? VocabPath { get; set; }

        /// <summary>Tokens per sample, [CLS] and [SEP] included.</summary>
        public int MaxSequenceLength { get; set; } = 128;

        /// <summary>Fraction of tokens chosen for the MLM loss (80% [MASK], 10% random, 10% kept).</summary>
        public double MaskingRatio { get; set; } = 0.30;

        /// <summary>Masking fraction of the evaluation samples (the recipe evaluates at 15%).</summary>
        public double EvalMaskingRatio { get; set; } = 0.15;

        /// <summary>Concatenate rows into full samples instead of truncating each row.</summary>
        public bool Packing { get; set; }

        /// <summary>Samples per optimizer step (the global batch).</summary>
        public int BatchSize { get; set; } = 256;

        /// <summary>Samples per forward/backward pass; <see cref="BatchSize"/> is accumulated from micro-batches and
        /// must be a multiple of it.</summary>
        public int MicroBatchSize { get; set; } = 32;

        /// <summary>Peak learning rate.</summary>
        public double LearningRate { get; set; } = 5e-4;

        /// <summary>Adam β1.</summary>
        public double Beta1 { get; set; } = 0.9;

        /// <summary>Adam β2.</summary>
        public double Beta2 { get; set; } = 0.98;

        /// <summary>Adam ε.</summary>
        public double Epsilon { get; set; } = 1e-6;

        /// <summary>Decoupled weight decay (not multiplied by the learning rate).</summary>
        public double WeightDecay { get; set; } = 1e-5;

        /// <summary>Fraction of the run spent warming up linearly from 0.</summary>
        public double WarmupFraction { get; set; } = 0.06;

        /// <summary>Final learning-rate multiplier of the linear decay.</summary>
        public double AlphaF { get; set; } = 0.02;

        /// <summary>Clip the global gradient norm to this value; null (the recipe) for no clipping.</summary>
        public double? GradientClipNorm { get; set; }

        /// <summary>Optimizer steps to run; or set <see cref="TokenBudget"/>.</summary>
        public long? MaxSteps { get; set; }

        /// <summary>Real (unpadded) training tokens to consume; the run ends after the step that reaches it.</summary>
        public long? TokenBudget { get; set; }

        /// <summary>Steps between checkpoints (one is also written at the end and when stopped).</summary>
        public int CheckpointInterval { get; set; } = 500;

        /// <summary>How many checkpoints to keep (the newest).</summary>
        public int KeepCheckpoints { get; set; } = 3;

        /// <summary>Fraction of the rows' samples held out for evaluation (a fixed choice, whatever the seed).</summary>
        public double EvalFraction { get; set; } = 0.05;

        /// <summary>At most this many held-out samples (an evaluation runs over all of them).</summary>
        public int MaxEvalSamples { get; set; } = 256;

        /// <summary>Steps between evaluations (also at the last step).</summary>
        public int EvalInterval { get; set; } = 100;

        /// <summary>Steps between progress reports and metric lines.</summary>
        public int LogInterval { get; set; } = 10;

        /// <summary>Seed of initialisation, data order, masking and dropout. Null: the seed of the checkpoint being
        /// resumed, or one drawn from the <see cref="MLContext"/> for a new run.</summary>
        public int? Seed { get; set; }

        /// <summary>The device, passed to the pretraining loop as is ("cpu"; see the host's Device option).</summary>
        public string Device { get; set; } = "cpu";

        /// <summary>fp32, or bf16 (CUDA only).</summary>
        public string Precision { get; set; } = "fp32";

        /// <summary>CPU threads; null for all cores.</summary>
        public int? Threads { get; set; }

        /// <summary>The embedding column that the returned transformer's <c>Transform</c> adds.</summary>
        public string FeatureColumnName { get; set; } = "Features";

        /// <summary>Receives a <see cref="TrainingProgress"/> every <see cref="LogInterval"/> steps and after each
        /// evaluation (<c>ValidationMetrics["MlmLoss"]</c>); the same line goes to <see cref="MLContext.Log"/>.</summary>
        public IProgress<TrainingProgress>? Progress { get; set; }

        /// <summary>Stops the run after the current step with a checkpoint (Fit then throws
        /// <see cref="OperationCanceledException"/>); combined with the token given to Fit, if any.</summary>
        public CancellationToken CancellationToken { get; set; }
    }

    internal MosaicBertPretrainingTrainer(MLContext context, Options options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _context = context;
        _options = options;
        Validate(options);
    }

    /// <summary>Pretrains on <paramref name="input"/>'s text column (or resumes); see the class remarks.</summary>
    /// <exception cref="ArgumentException">Invalid options (every problem is named).</exception>
    /// <exception cref="ArgumentOutOfRangeException">The text column is missing or not text.</exception>
    /// <exception cref="InvalidOperationException">Too little data, or the output directory holds a run on other data.</exception>
    /// <exception cref="OperationCanceledException">Cancelled: the checkpoint of the last step is written.</exception>
    public PretrainedMosaicBertTransformer Fit(IDataView input) => Fit(input, CancellationToken.None);

    /// <summary>As <see cref="Fit(IDataView)"/>, with a cancellation token (in addition to the options' one).</summary>
    public PretrainedMosaicBertTransformer Fit(IDataView input, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(input);
        var o = _options;
        var vocab = Validate(o);
        MosaicBertTransformer.CheckTextColumns(input.Schema, o.TextColumnName, null);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, o.CancellationToken);
        var cancel = linked.Token;
        cancel.ThrowIfCancellationRequested();

        var output = Path.GetFullPath(o.OutputDirectory);
        var checkpoints = Path.Combine(output, "checkpoints");
        var resumeFrom = TrainingCheckpoint.FindLatest(checkpoints);
        var texts = ColumnarDataView.Values<string>(input, input.Schema[o.TextColumnName]);
        var corpus = WriteCorpus(texts, Path.Combine(output, "data"), resumeFrom);
        int seed = o.Seed ?? (resumeFrom is null ? _context.NextSeed() : CheckpointSeed(resumeFrom));
        var h = HostOptions(o, vocab, seed);
        h.Preset = o.Preset ?? (o.Config is null ? "from " + Path.GetFileName(Path.TrimEndingDirectorySeparator(o.ModelPath!)) : "custom"); // names the plot
        h.OutputDir = output;
        h.Corpus = [corpus];
        if (o.Config is { } config)
        {
            h.ModelConfig = Path.Combine(output, "data", "config.json");
            File.WriteAllText(h.ModelConfig, config.ToJson());
        }

        var logger = new ContextLogger(_context);
        var tokenizer = BertTokenizer.Create(vocab);
        using var cache = CorpusDataFactory.OpenCache(h, tokenizer, logger, cancel);
        h.EvalSamples = Math.Clamp((int)Math.Round(o.EvalFraction * cache.Count), 1, o.MaxEvalSamples);
        var (train, eval) = CorpusDataFactory.CreateBatches(h, tokenizer, cache);
        var model = CorpusDataFactory.CreateModel(h, tokenizer, logger, initialWeights: o.ModelPath);
        try
        {
            _context.WriteLog(ChannelMessageKind.Info, Component, FormattableString.Invariant(
                $"{(resumeFrom is null ? "Pretraining" : "Resuming from " + resumeFrom + ":")} {texts.Length} rows → {cache.Count} samples ({h.EvalSamples} held out), {model.Layout.Count:N0} parameters, seed {seed}, output {output}."));
            var progress = new ProgressAdapter(_context, o, trainSamples: cache.Count - h.EvalSamples, tokensPerSample: (double)cache.TokenCount / cache.Count);
            long step = new PretrainingRunner(h, logger).Run(model, train, eval, progress, cancel);
            var latest = TrainingCheckpoint.FindLatest(checkpoints)!;
            if (cancel.IsCancellationRequested && (o.MaxSteps is not long max || step < max))
                throw new OperationCanceledException(
                    $"{Component} stopped at step {step}; checkpoint {latest}. Fit again with the same options and data to resume.", cancel);
            double evalLoss = progress.LastEvalLoss ?? PretrainingRunner.Evaluate(model, eval);
            var modelPath = ExportModel(model, vocab, Path.Combine(output, ModelDirectoryName));
            _context.WriteLog(ChannelMessageKind.Info, Component, FormattableString.Invariant($"Done at step {step}: eval MLM loss {evalLoss:F4}; model {modelPath}."));
            return new PretrainedMosaicBertTransformer(_context, modelPath, latest, model.Config, step, evalLoss, o.TextColumnName,
                o.FeatureColumnName, o.MaxSequenceLength, o.MicroBatchSize, o.Threads);
        }
        finally
        {
            model.Dispose();
            model.Backend.Dispose();
        }
    }

    /// <summary>Adds nothing to the schema: the trainer's product is a model; its transformer adds the embedding column.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        MosaicBertTransformer.CheckTextColumns(inputSchema, _options.TextColumnName, null);
        return new SchemaShape([.. inputSchema, new SchemaShape.Column(_options.FeatureColumnName, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Single, isKey: false)]);
    }

    // ------------------------------------------------------------------ options

    /// <summary>
    /// Checks the options; returns the vocabulary path. The training options are checked by the pretraining host's
    /// own validator (so both report the same rules), with its option names replaced by these; the corpus checks do
    /// not apply (the corpus is the data given to Fit).
    /// </summary>
    private static string Validate(Options o)
    {
        var errors = new List<string>();
        if (string.IsNullOrEmpty(o.TextColumnName)) errors.Add("TextColumnName is required.");
        if (string.IsNullOrEmpty(o.FeatureColumnName)) errors.Add("FeatureColumnName is required.");
        int sources = (o.ModelPath is null ? 0 : 1) + (o.Preset is null ? 0 : 1) + (o.Config is null ? 0 : 1);
        if (sources != 1)
            errors.Add("Set exactly one of ModelPath (a checkpoint directory to continue from), Preset (e.g. \"base\", from scratch) or Config (from scratch).");
        if (o.ModelPath is { } m && !File.Exists(Path.Combine(m, CheckpointDirectory.ConfigFileName)))
            errors.Add($"ModelPath '{m}' is not a checkpoint directory (it has no {CheckpointDirectory.ConfigFileName}).");
        if (o.Config is { } c)
        {
            try
            {
                c.Validate();
            }
            catch (ArgumentException e)
            {
                errors.Add($"Config is invalid: {e.Message}");
            }
        }
        string vocab = o.VocabPath ?? (o.ModelPath is { } dir && File.Exists(Path.Combine(dir, VocabFileName)) ? Path.Combine(dir, VocabFileName) : "");
        if (o.VocabPath is null && o.ModelPath is not null && vocab.Length == 0)
            errors.Add($"ModelPath '{o.ModelPath}' has no {VocabFileName}; set VocabPath.");
        if (!(o.EvalFraction is > 0 and < 1)) errors.Add($"EvalFraction must be in (0, 1), not {o.EvalFraction}.");
        if (o.MaxEvalSamples < 1) errors.Add($"MaxEvalSamples must be at least 1, not {o.MaxEvalSamples}.");

        var h = HostOptions(o, vocab, o.Seed ?? 0);
        var host = new PretrainingOptionsValidator().Validate(null, h);
        if (host.Failed)
        {
            foreach (var failure in host.Failures!)
            {
                if (failure.StartsWith("Corpus", StringComparison.Ordinal)) continue;
                if (o.VocabPath is null && o.ModelPath is not null && failure.StartsWith("Vocab is required", StringComparison.Ordinal)) continue; // said above
                errors.Add(HostNames().Replace(failure, n => n.Value switch
                {
                    "OutputDir" => nameof(Options.OutputDirectory),
                    "SequenceLength" => nameof(Options.MaxSequenceLength),
                    "GlobalBatchSize" => nameof(Options.BatchSize),
                    "Vocab" => nameof(Options.VocabPath),
                    _ => "Config",
                }));
            }
        }
        if (errors.Count > 0) throw new ArgumentException($"{Component}: {string.Join(" ", errors)}");
        return vocab;
    }

    [GeneratedRegex(@"\b(OutputDir|SequenceLength|GlobalBatchSize|Vocab|ModelConfig)\b")]
    private static partial Regex HostNames();

    /// <summary>The pretraining host's options for these (corpus, config file and eval count are set by Fit).</summary>
    private static PretrainingOptions HostOptions(Options o, string vocab, int seed) => new()
    {
        // Without a preset (ModelPath or Config) the host's validator still wants a valid one; Fit renames it.
        Preset = o.Preset ?? "base",
        Vocab = vocab,
        OutputDir = o.OutputDirectory,
        SequenceLength = o.MaxSequenceLength,
        MaskingRatio = o.MaskingRatio,
        EvalMaskingRatio = o.EvalMaskingRatio,
        Packing = o.Packing,
        GlobalBatchSize = o.BatchSize,
        MicroBatchSize = o.MicroBatchSize,
        LearningRate = o.LearningRate,
        Beta1 = o.Beta1,
        Beta2 = o.Beta2,
        Epsilon = o.Epsilon,
        WeightDecay = o.WeightDecay,
        WarmupFraction = o.WarmupFraction,
        AlphaF = o.AlphaF,
        GradientClipNorm = o.GradientClipNorm,
        MaxSteps = o.MaxSteps,
        TokenBudget = o.TokenBudget,
        Precision = o.Precision,
        Seed = seed,
        CheckpointInterval = o.CheckpointInterval,
        KeepCheckpoints = o.KeepCheckpoints,
        EvalInterval = o.EvalInterval,
        EvalSamples = 1,
        LogInterval = o.LogInterval,
        Device = o.Device,
        Threads = o.Threads,
    };

    private static int CheckpointSeed(string checkpoint)
    {
        var path = Path.Combine(checkpoint, "trainer_state.json");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            return int.Parse(doc.RootElement.GetProperty("extra").GetProperty("seed").GetString()!, CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or IOException)
        {
            throw new CheckpointFormatException(path, $"no seed to resume with ({e.Message}); set Options.Seed", innerException: e);
        }
    }

    // ------------------------------------------------------------------ files

    /// <summary>
    /// Writes the rows as JSON Lines (<c>{"text": …}</c>, the corpus format the token cache reads) to
    /// <c>data/corpus.jsonl</c>. Identical content leaves the file untouched, so its token cache is reused; other
    /// content replaces it (atomically) unless checkpoints exist, whose data position would no longer mean anything.
    /// </summary>
    private static string WriteCorpus(string[] texts, string directory, string? checkpoint)
    {
        Directory.CreateDirectory(directory);
        var path = Path.Combine(directory, CorpusFileName);
        var tmp = $"{path}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        try
        {
            byte[] hash;
            using (var file = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            using (var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
            {
                var newline = "\n"u8.ToArray();
                foreach (var text in texts)
                {
                    var line = JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, string> { ["text"] = text ?? "" });
                    file.Write(line);
                    file.Write(newline);
                    sha.AppendData(line);
                    sha.AppendData(newline);
                }
                hash = sha.GetHashAndReset();
                file.Flush(flushToDisk: true);
            }
            if (File.Exists(path))
            {
                using var existing = File.OpenRead(path);
                if (SHA256.HashData(existing).AsSpan().SequenceEqual(hash)) return path;
                if (checkpoint is not null)
                    throw new InvalidOperationException(
                        $"{Component}: '{Path.GetDirectoryName(directory)}' holds checkpoints (newest {checkpoint}) of a run on other data; " +
                        "use another OutputDirectory (set ModelPath to that run's model to continue from it), or delete the directory.");
            }
            else if (checkpoint is not null)
            {
                throw new InvalidOperationException($"{Component}: '{Path.GetDirectoryName(directory)}' holds checkpoints (newest {checkpoint}) but not the data they were trained on ({path}); use another OutputDirectory.");
            }
            File.Move(tmp, path, overwrite: true);
            return path;
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    /// <summary>Saves the model (Hugging Face layout) and the vocabulary to <paramref name="target"/>, replacing an
    /// earlier export only once the new one is complete.</summary>
    private static string ExportModel(MosaicBertModel model, string vocab, string target)
    {
        var tmp = $"{target}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        var old = $"{target}.old-{Environment.ProcessId}-{Guid.NewGuid():N}";
        try
        {
            PretrainedModel.Save(model, tmp);
            File.Copy(vocab, Path.Combine(tmp, VocabFileName));
            if (Directory.Exists(target)) Directory.Move(target, old);
            Directory.Move(tmp, target);
            if (Directory.Exists(old)) Directory.Delete(old, recursive: true);
            return target;
        }
        catch
        {
            if (!Directory.Exists(target) && Directory.Exists(old)) Directory.Move(old, target);
            if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
            throw;
        }
    }

    // ------------------------------------------------------------------ progress and logs

    /// <summary>The loop's step reports as <see cref="TrainingProgress"/>, every LogInterval steps and at evaluations.</summary>
    private sealed class ProgressAdapter(MLContext context, Options o, int trainSamples, double tokensPerSample) : IProgress<StepReport>
    {
        private long _firstStep = -1;
        private double _lossSum;
        private int _lossCount;

        public double? LastEvalLoss { get; private set; }

        public void Report(StepReport r)
        {
            if (_firstStep < 0) _firstStep = r.Step - 1;
            _lossSum += r.Loss;
            _lossCount++;
            if (r.EvalLoss is double e) LastEvalLoss = e;
            if (r.Step % o.LogInterval != 0 && r.EvalLoss is null && r.Step != r.TotalSteps) return;
            long samples = r.Step * o.BatchSize;
            int epoch = (int)Math.Min(int.MaxValue, samples / trainSamples + 1);
            long plannedSamples = r.TotalSteps != long.MaxValue ? r.TotalSteps * o.BatchSize
                : (long)Math.Ceiling((o.TokenBudget ?? 0) / tokensPerSample);
            int epochs = (int)Math.Clamp((plannedSamples + trainSamples - 1) / trainSamples, epoch, int.MaxValue);
            var metrics = r.EvalLoss is double loss ? new Dictionary<string, double> { ["MlmLoss"] = loss } : null;
            double perSecond = (r.Step - _firstStep) * o.BatchSize / Math.Max(r.Elapsed.TotalSeconds, 1e-9);
            context.ReportProgress(Component, new TrainingProgress(epoch, epochs, r.Step, r.TotalSteps, _lossSum / _lossCount, r.LearningRate,
                perSecond, r.Elapsed, metrics), o.Progress);
            (_lossSum, _lossCount) = (0, 0);
        }
    }

    /// <summary>The loop's ILogger messages into <see cref="MLContext.Log"/>.</summary>
    private sealed class ContextLogger(MLContext context) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var kind = logLevel switch
            {
                LogLevel.Trace or LogLevel.Debug => ChannelMessageKind.Trace,
                LogLevel.Information => ChannelMessageKind.Info,
                LogLevel.Warning => ChannelMessageKind.Warning,
                _ => ChannelMessageKind.Error,
            };
            context.WriteLog(kind, Component, formatter(state, exception));
        }
    }
}
