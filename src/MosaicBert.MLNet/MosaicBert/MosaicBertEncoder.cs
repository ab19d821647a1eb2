using MosaicBert.Devices;
using MosaicBert.Model;
using MosaicBert.Tensors;
using MosaicBert.Tokenizers;

namespace MosaicBert.ML.Transforms;

/// <summary>What a forward pass produces per row.</summary>
internal enum EncoderOutput
{
    /// <summary>Mean of the final hidden states of the row's tokens [d].</summary>
    Mean,

    /// <summary>Final hidden state of the first token, [CLS] [d].</summary>
    Cls,

    /// <summary>Classifier (or regressor) outputs [num_labels].</summary>
    Logits,
}

/// <summary>
/// A MosaicBERT model with its tokenizer and backend, as the featurizer and the trainers' transformers hold it.
/// Inference is thread-safe: the model's activation workspace is shared, and a backend is used by one thread at a time
/// (the CPU backend's kernels use all its threads; a GPU backend is one stream), so forward passes run one at a time
/// under a lock; tokenization and pooling run outside it, on the host.
/// </summary>
internal sealed class MosaicBertEncoder : IDisposable
{
    private const int VocabularyMultiple = 64; // MosaicBERT pads the embedding matrix to a multiple of 64 rows
    private const string VocabFileName = "vocab.txt";

    private readonly Lock _gate = new();
    private readonly Backend _backend;
    private bool _disposed;

    private MosaicBertEncoder(MosaicBertModel model, BertTokenizer tokenizer, Backend backend)
    {
        if (tokenizer.Vocabulary.Count > model.Config.VocabSize)
            throw new ArgumentException($"The vocabulary has {tokenizer.Vocabulary.Count} tokens but the model only {model.Config.VocabSize} embedding rows.");
        Model = model;
        Tokenizer = tokenizer;
        _backend = backend;
    }

    /// <summary>The model. Used directly only by the training loop, before any transformer shares the encoder.</summary>
    public MosaicBertModel Model { get; private set; }

    public BertTokenizer Tokenizer { get; }

    /// <summary>
    /// Makes the model of a featurizer (<paramref name="heads"/> None) or trainer (SequenceClassification with
    /// <paramref name="numLabels"/> outputs) from the options' model source.
    /// </summary>
    public static MosaicBertEncoder Create(MLContext context, MosaicBertModelOptions options, ModelHeads heads, int numLabels, int seed, string component)
    {
        options.Validate(component);
        var backend = CreateBackend(context, options.Device, options.AllowCpuFallback, options.Precision, options.Threads, component);
        string? extracted = null;
        try
        {
            string? directory = null, hubVocab = null;
            if (options.ModelPath is { } path)
            {
                if (MosaicBert.Hub.HubReference.IsHubPath(path)) (directory, hubVocab) = HubModelSource.ResolveModel(context, path, options.Hub, component);
                else if (Directory.Exists(path)) directory = path;
                else if (File.Exists(path)) directory = extracted = ModelArchive.ExtractModelDirectory(path);
                else throw new FileNotFoundException($"{component}: ModelPath '{path}' is neither a checkpoint directory nor a model zip.", path);
            }
            var vocab = HubModelSource.ResolveFile(options.VocabPath, options.Hub, component) ?? hubVocab
                ?? (directory is not null && File.Exists(Path.Combine(directory, VocabFileName)) ? Path.Combine(directory, VocabFileName) : null)
                ?? throw new ArgumentException(directory is null
                    ? $"{component}: VocabPath is required for a model made from a preset or configuration."
                    : $"{component}: '{options.ModelPath}' has no {VocabFileName}{(hubVocab is null && directory is not null && MosaicBert.Hub.HubReference.IsHubPath(options.ModelPath) ? " or tokenizer.json; set VocabPath (MosaicBERT checkpoints use bert-base-uncased's: " + HubModelSource.BertBaseUncasedVocab + ")" : "; set VocabPath")}.");
            var tokenizer = HubModelSource.CreateTokenizer(vocab);
            var precision = BackendFactory.PrecisionFor(backend, ComputePrecisions.Parse(options.Precision));
            var model = directory is null
                ? FromScratch(options, tokenizer, heads, numLabels, seed, backend, precision)
                : FromCheckpoint(directory, heads, numLabels, seed, backend, precision);
            var c = model.Config;
            if (c.Architecture == EncoderArchitecture.Bert && options.MaxSequenceLength > c.MaxPositionEmbeddings)
                throw new ArgumentOutOfRangeException(nameof(options), $"{component}: MaxSequenceLength {options.MaxSequenceLength} exceeds this BERT model's {c.MaxPositionEmbeddings} positions.");
            context.WriteLog(ChannelMessageKind.Info, component,
                $"Model: {options.ModelPath ?? "preset " + (options.Preset ?? "(custom config)") + " with random weights"}; {c.Architecture}, L={c.NumHiddenLayers}, d={c.HiddenSize}, H={c.NumAttentionHeads}, {model.Layout.Count:N0} parameters; vocabulary {vocab} ({tokenizer.Vocabulary.Count} tokens); on {BackendFactory.Describe(backend)}, {options.Precision}.");
            return new MosaicBertEncoder(model, tokenizer, backend);
        }
        catch
        {
            backend.Dispose();
            throw;
        }
        finally
        {
            if (extracted is not null) ModelArchive.TryDeleteDirectory(extracted);
        }
    }

    private static MosaicBertModel FromScratch(MosaicBertModelOptions options, BertTokenizer tokenizer, ModelHeads heads, int numLabels, int seed, Backend backend,
        ComputePrecision precision)
    {
        var config = options.Config
            ?? MosaicBertConfig.Preset(options.Preset!) with { VocabSize = (tokenizer.Vocabulary.Count + VocabularyMultiple - 1) / VocabularyMultiple * VocabularyMultiple };
        if (heads.HasFlag(ModelHeads.SequenceClassification)) config = config with { NumLabels = numLabels };
        var model = new MosaicBertModel(config.Validate(), heads, backend, precision);
        model.InitializeWeights(seed);
        return model;
    }

    private static MosaicBertModel FromCheckpoint(string directory, ModelHeads heads, int numLabels, int seed, Backend backend,
        ComputePrecision precision)
    {
        if (!heads.HasFlag(ModelHeads.SequenceClassification)) return PretrainedModel.Load(directory, backend, heads, seed, precision);
        // The recipe (spec §4) loads the encoder and the pooler when the checkpoint has one, and always starts with a
        // fresh classifier: a checkpoint's classifier belongs to another task (or has another number of labels).
        using var loaded = PretrainedModel.Load(directory, backend, ModelHeads.SequenceClassification, seed);
        var model = new MosaicBertModel(loaded.Config with { NumLabels = numLabels }, ModelHeads.SequenceClassification, backend, precision);
        model.InitializeWeights(seed);
        foreach (var p in model.Layout.Parameters)
        {
            // A copy on the device itself (no host round trip when the backend is a GPU).
            if (!p.Name.StartsWith("classifier.", StringComparison.Ordinal)) backend.Copy(loaded.Parameter(p.Name), model.Parameter(p.Name));
        }
        return model;
    }

    /// <summary>
    /// After training: swaps the model for a copy holding only the parameters, so that the gradients, the optimizer's
    /// view of them and the backward-pass buffers (together several times the parameters) are released.
    /// </summary>
    public void ReleaseTrainingState()
    {
        var fresh = new MosaicBertModel(Model.Config, Model.Layout.Heads, _backend, Model.Precision);
        _backend.Copy(Model.Parameters, fresh.Parameters);
        Model.Dispose();
        Model = fresh;
    }

    /// <summary>
    /// The backend of a device option, or of the context (<see cref="MLContext.GpuDeviceId"/>, with
    /// <see cref="MLContext.FallbackToCpu"/>) when the option is null. Fallbacks are logged as warnings.
    /// </summary>
    /// <exception cref="DeviceUnavailableException">The GPU cannot be used and no fallback is allowed.</exception>
    internal static Backend CreateBackend(MLContext context, string? device, bool allowCpuFallback, string precision, int? threads, string component)
    {
        DeviceSpec spec;
        DeviceOptionNames names;
        bool fallback;
        if (device is not null)
        {
            spec = DeviceSpec.Parse(device);
            names = DeviceOptionNames.Properties;
            fallback = allowCpuFallback;
        }
        else if (context.GpuDeviceId is int gpu)
        {
            spec = DeviceSpec.Cuda(gpu);
            names = new DeviceOptionNames("Device (from MLContext.GpuDeviceId)", "MLContext.GpuDeviceId = null or Device = \"cpu\"", "set MLContext.FallbackToCpu = true");
            fallback = context.FallbackToCpu || allowCpuFallback;
        }
        else
        {
            spec = DeviceSpec.Cpu;
            names = DeviceOptionNames.Properties;
            fallback = false;
        }
        try
        {
            return BackendFactory.Create(spec, ComputePrecisions.Parse(precision), threads, fallback, names,
                message => context.WriteLog(ChannelMessageKind.Warning, component, message));
        }
        catch (DeviceUnavailableException e)
        {
            throw new DeviceUnavailableException(e.Device, e.Reason, $"{component}: {e.Message}");
        }
    }

    /// <summary>Reads a model saved by <see cref="Save"/> (heads from the tensor names) onto the context's device
    /// (<see cref="MLContext.GpuDeviceId"/>; the saved files do not depend on the device they were trained on).</summary>
    public static MosaicBertEncoder Load(string directory, MLContext context, string component)
    {
        var backend = CreateBackend(context, null, false, "fp32", null, component);
        try
        {
            var tokenizer = BertTokenizer.Create(Path.Combine(directory, VocabFileName));
            return new MosaicBertEncoder(PretrainedModel.Load(directory, backend), tokenizer, backend);
        }
        catch
        {
            backend.Dispose();
            throw;
        }
    }

    /// <summary>Writes config.json, model.safetensors and vocab.txt (a Hugging Face model directory).</summary>
    public void Save(string directory)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            PretrainedModel.Save(Model, directory);
        }
        Tokenizer.Vocabulary.Save(Path.Combine(directory, VocabFileName));
    }

    /// <summary>Tokenizes rows (in parallel) with longest-first truncation to <paramref name="maxLength"/>.</summary>
    public BertEncoding[] Tokenize(IReadOnlyList<string> sentence1, IReadOnlyList<string>? sentence2, int maxLength) =>
        Tokenizer.Encode(sentence1, sentence2, maxLength, TruncationStrategy.LongestFirst);

    /// <summary>A padded batch of encodings (padded to the longest; execution is unpadded anyway).</summary>
    public EncoderBatch ToBatch(IReadOnlyList<BertEncoding> encodings)
    {
        int b = encodings.Count, s = encodings.Max(e => e.Length);
        var ids = new int[b * s];
        var types = new int[b * s];
        var mask = new int[b * s];
        ids.AsSpan().Fill(Tokenizer.PaddingTokenId);
        for (var i = 0; i < b; i++)
        {
            var e = encodings[i];
            for (var t = 0; t < e.Length; t++)
            {
                ids[i * s + t] = e.InputIds[t];
                types[i * s + t] = e.TokenTypeIds[t];
                mask[i * s + t] = 1;
            }
        }
        return new EncoderBatch(ids, types, mask, b, s);
    }

    /// <summary>Runs the model on texts, <paramref name="batchSize"/> rows per forward pass; one vector per row.</summary>
    public float[][] Infer(IReadOnlyList<string> sentence1, IReadOnlyList<string>? sentence2, int maxLength, int batchSize, EncoderOutput output)
    {
        var results = new float[sentence1.Count][];
        for (var start = 0; start < results.Length; start += batchSize)
        {
            var count = Math.Min(batchSize, results.Length - start);
            // Tokenizing per batch keeps memory bounded and runs outside the model lock.
            var encodings = Tokenize(Slice(sentence1, start, count), sentence2 is null ? null : Slice(sentence2, start, count), maxLength);
            Forward(encodings, output).CopyTo(results, start);
        }
        return results;
    }

    /// <summary>Runs the model on encodings, <paramref name="batchSize"/> rows per forward pass.</summary>
    public float[][] Infer(IReadOnlyList<BertEncoding> encodings, int batchSize, EncoderOutput output, CancellationToken cancellationToken = default)
    {
        var results = new float[encodings.Count][];
        for (var start = 0; start < results.Length; start += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Forward(Slice(encodings, start, Math.Min(batchSize, results.Length - start)), output).CopyTo(results, start);
        }
        return results;
    }

    private float[][] Forward(IReadOnlyList<BertEncoding> encodings, EncoderOutput output)
    {
        var batch = ToBatch(encodings);
        var results = new float[batch.BatchSize][];
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var hidden = Model.Encode(batch);
            if (output == EncoderOutput.Logits)
            {
                int k = Model.Config.NumLabels;
                var logits = new float[batch.BatchSize * k];
                _backend.Download(Model.ClassifierLogits(), logits);
                for (var i = 0; i < results.Length; i++) results[i] = logits[(i * k)..((i + 1) * k)];
                return results;
            }
            int d = Model.Config.HiddenSize;
            var states = new float[batch.TokenCount * d];
            _backend.Download(hidden, states);
            for (var i = 0; i < results.Length; i++)
            {
                int first = batch.CuSeqlens[i], end = output == EncoderOutput.Cls ? first + 1 : batch.CuSeqlens[i + 1];
                var pooled = new float[d];
                for (var t = first; t < end; t++)
                {
                    for (var j = 0; j < d; j++) pooled[j] += states[t * d + j];
                }
                if (end - first > 1)
                {
                    for (var j = 0; j < d; j++) pooled[j] /= end - first;
                }
                results[i] = pooled;
            }
        }
        return results;
    }

    private static IReadOnlyList<T> Slice<T>(IReadOnlyList<T> list, int start, int count) =>
        list is T[] array ? new ArraySegment<T>(array, start, count) : list.Skip(start).Take(count).ToArray();

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            Model.Dispose();
            _backend.Dispose();
        }
    }
}
