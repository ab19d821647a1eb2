using MosaicBert.Tensors;

namespace MosaicBert.Model;

/// <summary>Hyperparameters of <see cref="DecoupledAdamW"/> (MosaicBERT pretraining values by default, spec §3).</summary>
public sealed record AdamWOptions
{
    /// <summary>Peak learning rate lr₀.</summary>
    public float LearningRate { get; init; } = 5e-4f;
    /// <summary>β1.</summary>
    public float Beta1 { get; init; } = 0.9f;
    /// <summary>β2.</summary>
    public float Beta2 { get; init; } = 0.98f;
    /// <summary>ε.</summary>
    public float Epsilon { get; init; } = 1e-6f;
    /// <summary>Decoupled weight decay, applied to every parameter as θ·(1 − (lr_t/lr₀)·wd).</summary>
    public float WeightDecay { get; init; } = 1e-5f;

    /// <summary>Checks the values; the message names the field.</summary>
    public AdamWOptions Validate()
    {
        if (!(LearningRate >= 0)) throw new ArgumentException($"LearningRate must be ≥ 0, not {LearningRate}.");
        if (!(Beta1 is >= 0 and < 1)) throw new ArgumentException($"Beta1 must be in [0, 1), not {Beta1}.");
        if (!(Beta2 is >= 0 and < 1)) throw new ArgumentException($"Beta2 must be in [0, 1), not {Beta2}.");
        if (!(Epsilon > 0)) throw new ArgumentException($"Epsilon must be > 0, not {Epsilon}.");
        if (!(WeightDecay >= 0)) throw new ArgumentException($"WeightDecay must be ≥ 0, not {WeightDecay}.");
        return this;
    }
}

/// <summary>
/// Composer's DecoupledAdamW over the model's whole parameter block: decay θ ← θ·(1 − (lr_t/lr₀)·wd) — not multiplied
/// by lr as in torch.optim.AdamW — then the bias-corrected Adam step with lr_t. State (m, v, step) lives on the
/// model's backend and can be saved and restored for exact resumption.
/// </summary>
public sealed class DecoupledAdamW : IDisposable
{
    private readonly MosaicBertModel _model;

    /// <summary>Creates the optimizer with zero moments.</summary>
    public DecoupledAdamW(MosaicBertModel model, AdamWOptions? options = null)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        Options = (options ?? new AdamWOptions()).Validate();
        M = model.Backend.Allocate((int)model.Layout.Count);
        V = model.Backend.Allocate((int)model.Layout.Count);
    }

    /// <summary>Hyperparameters.</summary>
    public AdamWOptions Options { get; }
    /// <summary>First moments, laid out like the parameters.</summary>
    public Tensor M { get; }
    /// <summary>Second moments.</summary>
    public Tensor V { get; }
    /// <summary>Steps taken so far (the bias corrections use StepCount + 1 for the next step).</summary>
    public int StepCount { get; set; }

    /// <summary>
    /// Scales the gradients so that their global L2 norm is at most <paramref name="maxNorm"/>.
    /// </summary>
    /// <returns>The norm before clipping.</returns>
    public double ClipGradients(double maxNorm) => QueueClipGradients(maxNorm).Read();

    /// <summary>
    /// <see cref="ClipGradients"/> without waiting: on a GPU the decision is taken on the device, and the norm is read
    /// (waiting) only when the caller asks for it — so the optimizer step can be queued behind the clipping.
    /// </summary>
    public DeferredScalar QueueClipGradients(double maxNorm) => _model.Backend.ClipByGlobalNorm(_model.Gradients, maxNorm);

    /// <summary>One update with learning rate <paramref name="learningRate"/> (e.g. from a schedule).</summary>
    public void Step(float learningRate)
    {
        StepCount++;
        float decay = Options.LearningRate > 0 ? learningRate / Options.LearningRate * Options.WeightDecay : 0;
        if (_model.ComputeParameters is { } compute)
        {
            // Mixed precision: the same update, also writing the bf16 compute copy (fused on CUDA).
            _model.Backend.AdamW(_model.MasterParameters, _model.Gradients, M, V, learningRate, Options.Beta1, Options.Beta2,
                Options.Epsilon, decay, StepCount, compute);
            _model.ComputeParametersRefreshed();
            return;
        }
        _model.Backend.AdamW(_model.MasterParameters, _model.Gradients, M, V, learningRate, Options.Beta1, Options.Beta2,
            Options.Epsilon, decay, StepCount);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        M.Dispose();
        V.Dispose();
    }
}

/// <summary>
/// Composer's LinearWithWarmupScheduler, evaluated on samples seen: a multiplier rising linearly from 0 to 1 over the
/// warm-up, then falling linearly to <see cref="AlphaF"/> at the end of training (spec §3, §6.4).
/// </summary>
/// <param name="PeakLearningRate">lr₀.</param>
/// <param name="WarmupSamples">Samples of warm-up (6% of the run in the recipe).</param>
/// <param name="TotalSamples">Samples of the whole run.</param>
/// <param name="AlphaF">Final multiplier (0.02 in the recipe).</param>
public sealed record LinearWarmupSchedule(double PeakLearningRate, long WarmupSamples, long TotalSamples, double AlphaF = 0.02)
{
    /// <summary>The learning rate for a batch that starts after <paramref name="samplesSeen"/> samples.</summary>
    public float LearningRate(long samplesSeen)
    {
        if (samplesSeen < WarmupSamples) return (float)(PeakLearningRate * samplesSeen / WarmupSamples);
        double span = Math.Max(1, TotalSamples - WarmupSamples);
        double frac = Math.Min(1, (samplesSeen - WarmupSamples) / span);
        return (float)(PeakLearningRate * (1 + (AlphaF - 1) * frac));
    }
}
