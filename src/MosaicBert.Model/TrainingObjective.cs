namespace MosaicBert.Model;

/// <summary>What a training step minimises.</summary>
public abstract record TrainingObjective
{
    private TrainingObjective()
    {
    }

    /// <summary>Mean cross-entropy over the masked tokens of the batch (<see cref="EncoderBatch.MaskedTokens"/>).</summary>
    public sealed record MaskedLM : TrainingObjective;

    /// <summary>Mean cross-entropy of the classifier over the sequences; labels in 0..num_labels−1.</summary>
    public sealed record Classification(int[] Labels) : TrainingObjective;

    /// <summary>Mean squared error of a single-output head over the sequences (num_labels = 1).</summary>
    public sealed record Regression(float[] Targets) : TrainingObjective;
}

/// <summary>Dropout for one forward pass: on when training, with a seed that makes the masks reproducible.</summary>
/// <param name="Seed">Base seed; each dropout site derives its own stream from it.</param>
public readonly record struct DropoutSettings(ulong Seed)
{
    /// <summary>The seed of dropout site <paramref name="site"/> (a different stream per site).</summary>
    public ulong SiteSeed(int site) => Seed ^ (0x9E3779B97F4A7C15UL * (ulong)(site + 1));
}
