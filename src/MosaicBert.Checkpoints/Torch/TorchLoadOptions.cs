namespace MosaicBert.Checkpoints.Torch;

/// <summary>Options for <see cref="TorchStateDict.Load(string, TorchLoadOptions?)"/>.</summary>
public sealed record TorchLoadOptions
{
    /// <summary>The defaults: strict allow-list, Composer prefix stripped.</summary>
    public static TorchLoadOptions Default { get; } = new();

    /// <summary>
    /// When false (the default) a pickle GLOBAL that is not on the allow-list fails the load. When true it becomes an
    /// inert placeholder: nothing is imported or executed either way, the object is simply not reconstructed. Needed
    /// for full Composer training checkpoints, whose optimizer/RNG state holds numpy arrays and other Python objects
    /// next to the model weights; only tensors are ever returned.
    /// </summary>
    public bool AllowUnknownGlobals { get; init; }

    /// <summary>
    /// For a Composer checkpoint (<c>state → model</c>) whose keys all start with <c>model.</c>, drop that prefix so
    /// the names match the Hugging Face state dict (default true).
    /// </summary>
    public bool StripComposerModelPrefix { get; init; } = true;

    /// <summary>Largest accepted <c>data.pkl</c> (default 256 MiB); a state dict's pickle is normally a few hundred KB.</summary>
    public long MaxPickleBytes { get; init; } = 256L << 20;
}
