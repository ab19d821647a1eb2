using Microsoft.Extensions.Options;
using MosaicBert.Devices;

namespace MosaicBert.Pretraining;

/// <summary>
/// Everything a pretraining run is configured by, bound from the "Pretraining" section of appsettings.json, the
/// command line (<c>--Pretraining:MaxSteps 1000</c>, or <c>--MaxSteps 1000</c> through the pretraining host) and
/// environment variables (<c>MOSAICBERT_Pretraining__MaxSteps</c>). Defaults follow the MosaicBERT recipe (spec §3).
/// </summary>
public sealed class PretrainingOptions
{
    /// <summary>Configuration section name.</summary>
    public const string Section = "Pretraining";

    /// <summary>Model size: tiny, mini, small, medium, base or large.</summary>
    public string Preset { get; set; } = "tiny";
    /// <summary>Optional config.json that replaces the preset.</summary>
    public string? ModelConfig { get; set; }
    /// <summary>vocab.txt of the tokenizer (bert-base-uncased's for the recipe).</summary>
    public string Vocab { get; set; } = "";
    /// <summary>Corpus files or directories (plain text, JSONL/JSONL.gz with "text", WikiExtractor).</summary>
    public string[] Corpus { get; set; } = [];
    /// <summary>Where checkpoints, metrics.jsonl and the training-curve plot go.</summary>
    public string OutputDir { get; set; } = "runs/pretrain";
    /// <summary>Tokens per sample, [CLS] and [SEP] included.</summary>
    public int SequenceLength { get; set; } = 128;
    /// <summary>Fraction of tokens selected for the MLM loss in training (80% [MASK], 10% random, 10% kept).</summary>
    public double MaskingRatio { get; set; } = 0.30;
    /// <summary>Masking fraction for evaluation (the recipe evaluates at 15%).</summary>
    public double EvalMaskingRatio { get; set; } = 0.15;
    /// <summary>Concatenate documents into full samples instead of truncating each document (MosaicBERT truncates).</summary>
    public bool Packing { get; set; }
    /// <summary>Samples per optimizer step.</summary>
    public int GlobalBatchSize { get; set; } = 256;
    /// <summary>Samples per forward/backward pass; the global batch is accumulated from micro-batches.</summary>
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
    /// <summary>Clip the global gradient norm to this value; none when unset (the recipe does not clip).</summary>
    public double? GradientClipNorm { get; set; }
    /// <summary>Optimizer steps to run; or set <see cref="TokenBudget"/>.</summary>
    public long? MaxSteps { get; set; }
    /// <summary>Real (unpadded) training tokens to consume; the run ends after the step that reaches it.</summary>
    public long? TokenBudget { get; set; }
    /// <summary>fp32, or bf16 (CUDA only, where the build has it; see <see cref="BackendFactory.IsSupported"/>).</summary>
    public string Precision { get; set; } = "fp32";
    /// <summary>Seed of initialisation, data order, masking and dropout.</summary>
    public int Seed { get; set; } = 17;
    /// <summary>Steps between checkpoints.</summary>
    public int CheckpointInterval { get; set; } = 500;
    /// <summary>How many checkpoints to keep.</summary>
    public int KeepCheckpoints { get; set; } = 3;
    /// <summary>Steps between evaluations.</summary>
    public int EvalInterval { get; set; } = 100;
    /// <summary>Held-out samples evaluated each time.</summary>
    public int EvalSamples { get; set; } = 256;
    /// <summary>Steps between metric lines.</summary>
    public int LogInterval { get; set; } = 10;
    /// <summary>cpu, cuda (GPU 0) or cuda:N.</summary>
    public string Device { get; set; } = "cpu";
    /// <summary>When Device is a GPU that cannot be used here, train on the CPU (with a warning) instead of failing.</summary>
    public bool AllowCpuFallback { get; set; }
    /// <summary>CPU threads (kernels on the CPU backend, and tokenization and batching); all cores when unset.</summary>
    public int? Threads { get; set; }
    /// <summary>
    /// Data parallel: average each gradient bucket across the ranks during the backward pass of the step's last
    /// micro-batch, as soon as its gradients are final (true), or every bucket after the backward pass (false). The
    /// results are the same bits either way. Unset: overlapped when the world size is above 1.
    /// </summary>
    public bool? OverlapGradientReduction { get; set; }
    /// <summary>Data parallel: largest gradient all-reduce bucket, in fp32 elements (default 25 M = 100 MB).</summary>
    public long GradientBucketElements { get; set; } = DataParallel.BucketElements;
}

/// <summary>Checks <see cref="PretrainingOptions"/> at start; every message names the option.</summary>
public sealed class PretrainingOptionsValidator : IValidateOptions<PretrainingOptions>
{
    private static readonly string[] Presets = ["tiny", "mini", "small", "medium", "base", "large"];

    /// <inheritdoc/>
    public ValidateOptionsResult Validate(string? name, PretrainingOptions o)
    {
        var errors = new List<string>();
        void Require(bool ok, string message)
        {
            if (!ok) errors.Add(message);
        }
        Require(o.ModelConfig is not null || Presets.Contains(o.Preset, StringComparer.OrdinalIgnoreCase),
            $"Preset '{o.Preset}' is unknown; use one of {string.Join(", ", Presets)} or set ModelConfig.");
        Require(o.ModelConfig is null || File.Exists(o.ModelConfig), $"ModelConfig '{o.ModelConfig}' does not exist.");
        Require(o.Vocab.Length > 0, "Vocab is required (path of vocab.txt).");
        Require(o.Vocab.Length == 0 || File.Exists(o.Vocab), $"Vocab '{o.Vocab}' does not exist.");
        Require(o.Corpus.Length > 0, "Corpus is required (one or more files or directories).");
        foreach (var c in o.Corpus) Require(File.Exists(c) || Directory.Exists(c), $"Corpus path '{c}' does not exist.");
        Require(o.OutputDir.Length > 0, "OutputDir is required.");
        Require(o.SequenceLength is >= 8 and <= 8192, $"SequenceLength must be in 8..8192, not {o.SequenceLength}.");
        Require(o.MaskingRatio is > 0 and < 1, $"MaskingRatio must be in (0, 1), not {o.MaskingRatio}.");
        Require(o.EvalMaskingRatio is > 0 and < 1, $"EvalMaskingRatio must be in (0, 1), not {o.EvalMaskingRatio}.");
        Require(o.MicroBatchSize >= 1, $"MicroBatchSize must be at least 1, not {o.MicroBatchSize}.");
        Require(o.GlobalBatchSize >= 1, $"GlobalBatchSize must be at least 1, not {o.GlobalBatchSize}.");
        Require(o.MicroBatchSize < 1 || o.GlobalBatchSize % o.MicroBatchSize == 0,
            $"GlobalBatchSize {o.GlobalBatchSize} must be a multiple of MicroBatchSize {o.MicroBatchSize}.");
        Require(o.LearningRate > 0, $"LearningRate must be positive, not {o.LearningRate}.");
        Require(o.Beta1 is >= 0 and < 1, $"Beta1 must be in [0, 1), not {o.Beta1}.");
        Require(o.Beta2 is >= 0 and < 1, $"Beta2 must be in [0, 1), not {o.Beta2}.");
        Require(o.Epsilon > 0, $"Epsilon must be positive, not {o.Epsilon}.");
        Require(o.WeightDecay >= 0, $"WeightDecay must be ≥ 0, not {o.WeightDecay}.");
        Require(o.WarmupFraction is >= 0 and < 1, $"WarmupFraction must be in [0, 1), not {o.WarmupFraction}.");
        Require(o.AlphaF is >= 0 and <= 1, $"AlphaF must be in [0, 1], not {o.AlphaF}.");
        Require(o.GradientClipNorm is null or > 0, $"GradientClipNorm must be positive when set, not {o.GradientClipNorm}.");
        Require(o.MaxSteps is not null || o.TokenBudget is not null, "Set MaxSteps or TokenBudget to say how long to train.");
        Require(o.MaxSteps is null or >= 1, $"MaxSteps must be at least 1, not {o.MaxSteps}.");
        Require(o.TokenBudget is null or >= 1, $"TokenBudget must be at least 1, not {o.TokenBudget}.");
        bool deviceOk = DeviceSpec.TryParse(o.Device, out var device, out string deviceError);
        Require(deviceOk, deviceError);
        if (!ComputePrecisions.TryParse(o.Precision, out var precision, out string precisionError)) errors.Add(precisionError);
        else if (deviceOk && !BackendFactory.IsSupported(precision, device, out string unsupported)) errors.Add(unsupported);
        Require(o.CheckpointInterval >= 1, $"CheckpointInterval must be at least 1, not {o.CheckpointInterval}.");
        Require(o.KeepCheckpoints >= 1, $"KeepCheckpoints must be at least 1, not {o.KeepCheckpoints}.");
        Require(o.EvalInterval >= 1, $"EvalInterval must be at least 1, not {o.EvalInterval}.");
        Require(o.EvalSamples >= 1, $"EvalSamples must be at least 1, not {o.EvalSamples}.");
        Require(o.LogInterval >= 1, $"LogInterval must be at least 1, not {o.LogInterval}.");
        Require(o.Threads is null or >= 1, $"Threads must be at least 1, not {o.Threads}.");
        Require(o.GradientBucketElements >= 1, $"GradientBucketElements must be at least 1, not {o.GradientBucketElements}.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
