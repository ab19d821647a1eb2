using MosaicBert.Devices;
using MosaicBert.Model;

namespace MosaicBert.ML.Transforms;

/// <summary>How the featurizer turns token vectors into one vector per row.</summary>
public enum MosaicBertPooling
{
    /// <summary>The mean of the final hidden states of the row's real tokens (special tokens included), the usual
    /// sentence embedding.</summary>
    Mean,

    /// <summary>The final hidden state of the <c>[CLS]</c> token (the pooler input; an MLM checkpoint has no pooler,
    /// so no tanh layer is applied).</summary>
    Cls,
}

/// <summary>
/// The model settings shared by the MosaicBERT featurizer and trainers: where the model comes from (exactly one of
/// <see cref="ModelPath"/>, <see cref="Preset"/> and <see cref="Config"/>), the vocabulary, sequence length,
/// batch size and device.
/// </summary>
public abstract class MosaicBertModelOptions
{
    /// <summary>A Hugging Face checkpoint directory (config.json + model.safetensors or pytorch_model.bin, MosaicBERT
    /// or classic BERT names; e.g. a <c>mosaicbert pretrain</c> checkpoint), a model zip saved by
    /// <c>mlContext.Model.Save</c> (its first MosaicBERT model is used, e.g. to start from a fine-tuned model), or a
    /// hub repository <c>hf://org/name[@revision]</c> (e.g. <c>hf://mosaicml/mosaic-bert-base</c>), downloaded into
    /// the Hugging Face cache on first use (see <see cref="Hub"/>).</summary>
    public string? ModelPath { get; set; }

    /// <summary>Endpoint, cache folder, token, offline mode and download progress for <c>hf://</c> paths; null for
    /// the environment's (HF_ENDPOINT, HF_HUB_CACHE or HF_HOME, HF_TOKEN, HF_HUB_OFFLINE).</summary>
    public MosaicBert.Hub.HuggingFaceHubOptions? Hub { get; set; }

    /// <summary>A size preset (tiny, mini, small, medium, base, large) with random weights: training from scratch.
    /// For a featurizer this gives random embeddings, useful only for tests. The vocabulary size is the vocabulary
    /// file's, rounded up to a multiple of 64.</summary>
    public string? Preset { get; set; }

    /// <summary>A configuration with random weights (as <see cref="Preset"/>, with every size chosen); its
    /// <c>VocabSize</c> must cover the vocabulary.</summary>
    public MosaicBertConfig? Config { get; set; }

    /// <summary>The WordPiece vocabulary (vocab.txt, lower-cased BERT tokenization; a local path or
    /// <c>hf://org/name[@revision]/vocab.txt</c>). Default: the vocab.txt (or tokenizer.json) of
    /// <see cref="ModelPath"/>; required when it has none (mosaicml/mosaic-bert-base uses
    /// <c>hf://google-bert/bert-base-uncased/vocab.txt</c>) or the model is made from a preset or config.</summary>
    public string? VocabPath { get; set; }

    /// <summary>The most tokens per row, <c>[CLS]</c>/<c>[SEP]</c> included; longer rows are truncated longest-first
    /// (a pair loses tokens from its longer sentence first).</summary>
    public int MaxSequenceLength { get; set; } = 128;

    /// <summary>Rows per forward pass (and per optimizer step when training).</summary>
    public int BatchSize { get; set; } = 32;

    /// <summary>Where the model runs: "cpu", "cuda" (GPU 0) or "cuda:N". Null (the default) follows the context, as
    /// ML.NET does: <see cref="MLContext.GpuDeviceId"/> N gives "cuda:N", none gives "cpu". A GPU that cannot be used
    /// makes Fit fail saying why, unless the CPU fallback is allowed (<see cref="AllowCpuFallback"/>, or
    /// <see cref="MLContext.FallbackToCpu"/> when the GPU came from the context).</summary>
    public string? Device { get; set; }

    /// <summary>When <see cref="Device"/> names a GPU that cannot be used here (no driver, no device, no NVRTC or
    /// cuBLASLt), run on the CPU with a warning in <see cref="MLContext.Log"/> instead of failing. Default false.</summary>
    public bool AllowCpuFallback { get; set; }

    /// <summary>Arithmetic: "fp32" (default), or "bf16" where the build has it.</summary>
    public string Precision { get; set; } = "fp32";

    /// <summary>CPU threads for the kernels; null for all cores.</summary>
    public int? Threads { get; set; }

    /// <summary>Seed of the random initialisation (and, for trainers, of shuffling and dropout); null draws one from
    /// the <see cref="MLContext"/>.</summary>
    public int? Seed { get; set; }

    /// <summary>Checks the settings; messages name the option.</summary>
    internal virtual void Validate(string component)
    {
        var sources = (ModelPath is null ? 0 : 1) + (Preset is null ? 0 : 1) + (Config is null ? 0 : 1);
        if (sources != 1)
            throw new ArgumentException($"{component}: set exactly one of ModelPath (a checkpoint directory or model zip), Preset (e.g. \"small\", random weights) or Config{(sources == 0 ? "; pretrained weights come from a hub with ModelPath = \"hf://org/name\"" : "")}.");
        if (Preset is not null) _ = MosaicBertConfig.Preset(Preset);
        if (MaxSequenceLength < 5) throw new ArgumentOutOfRangeException(nameof(MaxSequenceLength), MaxSequenceLength, $"{component}: MaxSequenceLength must be at least 5 (room for [CLS] a [SEP] b [SEP]).");
        if (BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, $"{component}: BatchSize must be positive.");
        if (Threads is <= 0) throw new ArgumentOutOfRangeException(nameof(Threads), Threads, $"{component}: Threads must be positive (or null for all cores).");
        var device = DeviceSpec.Cpu;
        if (Device is not null && !DeviceSpec.TryParse(Device, out device, out string deviceError)) throw new ArgumentException($"{component}: {deviceError}");
        if (!ComputePrecisions.TryParse(Precision, out var precision, out string precisionError)) throw new ArgumentException($"{component}: {precisionError}");
        if (!BackendFactory.IsSupported(precision, device, out string unsupported)) throw new NotSupportedException($"{component}: {unsupported}");
    }
}

/// <summary>Options of <c>Transforms.MosaicBert</c> (the featurizer).</summary>
public sealed class MosaicBertFeaturizerOptions : MosaicBertModelOptions
{
    /// <summary>Mean (default) or <c>[CLS]</c> pooling.</summary>
    public MosaicBertPooling Pooling { get; set; } = MosaicBertPooling.Mean;
}
