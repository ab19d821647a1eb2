using MosaicBert.ML.Data;
using MosaicBert.ML.Glue;
using MosaicBert.ML.Transforms;

namespace MosaicBert.ML.Trainers;

/// <summary>
/// The fine-tuning settings shared by <see cref="TextClassificationTrainer"/> and
/// <see cref="SentenceSimilarityTrainer"/>. Defaults follow the MosaicBERT GLUE recipe (spec §4): DecoupledAdamW
/// (β 0.9/0.98, ε 1e-6, weight decay lr/10), linear warm-up over 6% of the steps then linear decay to 0, sequence
/// length 256, dropout 0.1, gradient clipping at norm 1. Training from scratch (a preset) needs a larger learning
/// rate than fine-tuning a pretrained checkpoint (e.g. 1e-4 to 5e-4 instead of 1e-5 to 8e-5).
/// </summary>
public abstract class MosaicBertTrainerOptions : MosaicBertModelOptions
{
    private protected MosaicBertTrainerOptions() => MaxSequenceLength = 256;

    /// <summary>The label column: a key (classification, map it with MapValueToKey) or Single (regression).</summary>
    public string LabelColumnName { get; set; } = "Label";

    /// <summary>The score column produced.</summary>
    public string ScoreColumnName { get; set; } = "Score";

    /// <summary>The first (or only) text column.</summary>
    public string Sentence1ColumnName { get; set; } = "Sentence1";

    /// <summary>The second text column of sentence-pair tasks, or null.</summary>
    public string? Sentence2ColumnName { get; set; }

    /// <summary>Passes over the training data.</summary>
    public int MaxEpochs { get; set; } = 3;

    /// <summary>Stop after this many optimizer steps (the schedule spans them); 0 for no limit.</summary>
    public int MaxSteps { get; set; }

    /// <summary>Peak learning rate.</summary>
    public double LearningRate { get; set; } = 5e-5;

    /// <summary>Decoupled weight decay (Composer's: parameters shrink by (lr_t/lr)·wd per step); null for
    /// <see cref="LearningRate"/>/10, the recipe's choice.</summary>
    public double? WeightDecay { get; set; }

    /// <summary>Fraction of the steps spent warming the learning rate up from 0 (0.06 in the recipe).</summary>
    public double WarmupFraction { get; set; } = 0.06;

    /// <summary>Gradients are scaled down to this global L2 norm when above it; null or 0 to not clip.</summary>
    public double? GradientClipNorm { get; set; } = 1.0;

    /// <summary>Shuffle the rows each epoch (seeded). The recipe's code does not, by accident; ML.NET does not either.</summary>
    public bool Shuffle { get; set; } = true;

    /// <summary>Rows to evaluate on (same columns, label already mapped) during training; null for none.</summary>
    public IDataView? ValidationSet { get; set; }

    /// <summary>The validation metric that picks the best parameters: Accuracy (default), F1Score (two classes,
    /// positive = second key) or MatthewsCorrelation for classification; SpearmanCorrelation (default) or
    /// PearsonCorrelation for regression.</summary>
    public GlueMetricKind? ValidationMetric { get; set; }

    /// <summary>Evaluate every this many steps as well as after each epoch; 0 for after each epoch only.</summary>
    public int EvaluationInterval { get; set; }

    /// <summary>With a validation set, end with the parameters that scored best on it (true) or with the last ones.</summary>
    public bool KeepBestModel { get; set; } = true;

    /// <summary>Report progress every this many steps.</summary>
    public int LogInterval { get; set; } = 50;

    /// <summary>Receives a <see cref="TrainingProgress"/> every <see cref="LogInterval"/> steps and after each
    /// evaluation (also written to <see cref="MLContext.Log"/>). Called on the training thread.</summary>
    public IProgress<TrainingProgress>? Progress { get; set; }

    /// <summary>Checked before every step and every evaluation batch: Fit then throws
    /// <see cref="OperationCanceledException"/>.</summary>
    public CancellationToken CancellationToken { get; set; }

    internal override void Validate(string component)
    {
        base.Validate(component);
        ArgumentException.ThrowIfNullOrEmpty(LabelColumnName);
        ArgumentException.ThrowIfNullOrEmpty(ScoreColumnName);
        ArgumentException.ThrowIfNullOrEmpty(Sentence1ColumnName);
        if (MaxEpochs <= 0) throw new ArgumentOutOfRangeException(nameof(MaxEpochs), MaxEpochs, $"{component}: MaxEpochs must be positive.");
        if (MaxSteps < 0) throw new ArgumentOutOfRangeException(nameof(MaxSteps), MaxSteps, $"{component}: MaxSteps must be 0 (no limit) or positive.");
        if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, $"{component}: LearningRate must be positive.");
        if (WeightDecay is < 0) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, $"{component}: WeightDecay must not be negative.");
        if (!(WarmupFraction is >= 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(WarmupFraction), WarmupFraction, $"{component}: WarmupFraction must be in [0, 1).");
        if (GradientClipNorm is < 0) throw new ArgumentOutOfRangeException(nameof(GradientClipNorm), GradientClipNorm, $"{component}: GradientClipNorm must not be negative.");
        if (EvaluationInterval < 0) throw new ArgumentOutOfRangeException(nameof(EvaluationInterval), EvaluationInterval, $"{component}: EvaluationInterval must not be negative.");
        if (LogInterval <= 0) throw new ArgumentOutOfRangeException(nameof(LogInterval), LogInterval, $"{component}: LogInterval must be positive.");
    }
}
