using Microsoft.Extensions.Logging;
using MosaicBert.Data;
using MosaicBert.Data.Pretraining;
using MosaicBert.Devices;
using MosaicBert.Model;
using MosaicBert.Tensors;
using MosaicBert.Tokenizers;

namespace MosaicBert.Pretraining;

/// <summary>
/// The standard data path of a run: corpus → token cache (built on all cores, reused by later runs) → held-out eval
/// samples → shuffled, dynamically masked training batches; and a freshly initialised model whose vocabulary is the
/// tokenizer's rounded up to a multiple of 64 (MosaicBERT's 30522 → 30528), on the options' device and precision.
/// The steps are public so that the ML.NET-style pretraining estimator composes the same ones.
/// </summary>
public sealed class CorpusDataFactory : IPretrainingDataFactory
{
    /// <inheritdoc/>
    public (MosaicBertModel Model, IMlmBatchSource Train, IReadOnlyList<MlmBatch> Eval) Create(PretrainingOptions o, ILogger logger)
    {
        // The device first: a GPU that cannot be used fails the run before minutes of tokenization.
        var backend = CreateBackend(o, logger);
        try
        {
            var tokenizer = BertTokenizer.Create(o.Vocab);
            var cache = OpenCache(o, tokenizer, logger); // read by the training source for the whole run
            var (train, eval) = CreateBatches(o, tokenizer, cache);
            return (CreateModel(o, tokenizer, logger, backend), train, eval);
        }
        catch
        {
            backend.Dispose();
            throw;
        }
    }

    /// <summary>Opens the token cache of <see cref="PretrainingOptions.Corpus"/>, building it when absent or stale.</summary>
    public static TokenCache OpenCache(PretrainingOptions o, BertTokenizer tokenizer, ILogger logger, CancellationToken cancellationToken = default)
    {
        var corpus = new TextCorpus(o.Corpus);
        var cache = TokenCache.OpenOrBuild(corpus, tokenizer, new TokenCacheOptions { MaxLength = o.SequenceLength, Packing = o.Packing },
            cancellationToken: cancellationToken);
        var built = cache.BuildResult;
        if (built is not null)
            logger.LogInformation(built.Reused
                ? "Token cache reused: {Samples} samples, {Tokens} tokens"
                : "Token cache built: {Samples} samples, {Tokens} tokens, {MBps:F1} MB/s of text", built.Samples, built.Tokens, built.TextMegabytesPerSecond);
        return cache;
    }

    /// <summary>
    /// Training batches (shuffled by <see cref="PretrainingOptions.Seed"/>, masked at <see cref="PretrainingOptions.MaskingRatio"/>)
    /// and the fixed evaluation batches (the <see cref="PretrainingOptions.EvalSamples"/> held-out samples, masked at
    /// <see cref="PretrainingOptions.EvalMaskingRatio"/>). The evaluation batches are materialised now; the training
    /// source reads <paramref name="cache"/> as it goes, so the cache must stay open while training.
    /// </summary>
    public static (IMlmBatchSource Train, IReadOnlyList<MlmBatch> Eval) CreateBatches(PretrainingOptions o, BertTokenizer tokenizer, TokenCache cache)
    {
        if (cache.Count <= o.EvalSamples)
            throw new InvalidOperationException($"The corpus gives {cache.Count} samples; EvalSamples ({o.EvalSamples}) must leave some for training.");
        var split = TrainEvalSplit.ByCount(cache.Count, o.EvalSamples, seed: 0);
        var sampler = new PretrainingSampler(split.Train, (ulong)o.Seed);
        var train = new PretrainingBatcher(cache, sampler,
            MlmMasker.ForTokenizer(tokenizer, o.MaskingRatio, (ulong)o.Seed), tokenizer.PaddingTokenId, maxDegreeOfParallelism: o.Threads);
        var eval = PretrainingBatcher.EvalBatches(cache, split.Eval, MlmMasker.ForTokenizer(tokenizer, o.EvalMaskingRatio, 0),
            tokenizer.PaddingTokenId, o.MicroBatchSize).Select(Convert).ToList();
        return (new BatcherSource(train, sampler), eval);
    }

    /// <summary>
    /// The model to train, on <paramref name="backend"/> (from <see cref="CreateBackend"/> when null; the model's
    /// owner disposes it): <see cref="PretrainingOptions.ModelConfig"/> or the preset (vocabulary rounded up to a
    /// multiple of 64) freshly initialised from the seed, or, with <paramref name="initialWeights"/>, the masked-LM model
    /// of that Hugging Face checkpoint directory (continued pretraining; a missing MLM head starts fresh).
    /// </summary>
    public static MosaicBertModel CreateModel(PretrainingOptions o, BertTokenizer tokenizer, ILogger logger, Backend? backend = null,
        string? initialWeights = null)
    {
        bool ownBackend = backend is null;
        backend ??= CreateBackend(o, logger);
        MosaicBertModel? model = null;
        try
        {
            var precision = BackendFactory.PrecisionFor(backend, ComputePrecisions.Parse(o.Precision));
            if (initialWeights is not null)
            {
                model = PretrainedModel.Load(initialWeights, backend, ModelHeads.MaskedLM, o.Seed, precision);
            }
            else
            {
                var config = o.ModelConfig is not null
                    ? MosaicBertConfig.FromJson(File.ReadAllText(o.ModelConfig), o.ModelConfig)
                    : MosaicBertConfig.Preset(o.Preset) with { VocabSize = (tokenizer.Vocabulary.Count + 63) / 64 * 64 };
                model = new MosaicBertModel(config, ModelHeads.MaskedLM, backend, precision);
                model.InitializeWeights(o.Seed);
            }
            var c = model.Config;
            if (c.VocabSize < tokenizer.Vocabulary.Count)
                throw new InvalidOperationException($"The model's vocab_size {c.VocabSize} is smaller than the tokenizer's {tokenizer.Vocabulary.Count} tokens.");
            logger.LogInformation("Model: {Architecture}, {Layers} layers, d={Hidden}, {Parameters:N0} parameters{Source}, on {Device}, {Precision}",
                c.Architecture, c.NumHiddenLayers, c.HiddenSize, model.Layout.Count, initialWeights is null ? "" : $", weights from {initialWeights}",
                BackendFactory.Describe(backend), model.Precision == ComputePrecision.BFloat16 ? "bf16" : "fp32");
            return model;
        }
        catch
        {
            model?.Dispose();
            if (ownBackend) backend.Dispose();
            throw;
        }
    }

    /// <summary>The backend of the options' Device and Precision (CPU fallback only when AllowCpuFallback).</summary>
    /// <remarks>Data parallel: with WORLD_SIZE &gt; 1, Device cuda means the GPU of this rank's LOCAL_RANK (torchrun's convention).</remarks>
    public static Backend CreateBackend(PretrainingOptions o, ILogger logger)
    {
        var device = DeviceSpec.Parse(o.Device);
        if (device.Kind == DeviceKind.Cuda && o.Device.Trim().Equals("cuda", StringComparison.OrdinalIgnoreCase)
            && MosaicBert.Distributed.DistributedEnvironment.FromEnvironment() is { WorldSize: > 1 } rank)
            device = DeviceSpec.Cuda(rank.DeviceOrdinal);
        return BackendFactory.Create(device, ComputePrecisions.Parse(o.Precision), o.Threads, o.AllowCpuFallback,
            DeviceOptionNames.PretrainingHost, message => logger.LogWarning("{Message}", message));
    }

    private static MlmBatch Convert(PretrainingBatch b) => new(b.BatchSize, b.SequenceLength, b.InputIds, b.AttentionMask, b.Labels);

    private sealed class BatcherSource(PretrainingBatcher batcher, PretrainingSampler sampler) : ISkippableBatchSource
    {
        public MlmBatch Next(int batchSize) => Convert(batcher.Next(batchSize));

        /// <summary>Another rank's samples: the global position moves on without reading or masking them.</summary>
        public void Skip(int samples)
        {
            var p = sampler.Position;
            long global = checked(p.Epoch * sampler.Count + p.Index + samples);
            sampler.Position = new SamplerPosition(global / sampler.Count, global % sampler.Count);
        }

        public string Position
        {
            get => batcher.Position;
            set => batcher.Position = value;
        }
    }
}
