using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using MosaicBert.Checkpoints;
using MosaicBert.Model;
using MosaicBert.Pretraining;
using MosaicBert.Tensors;
using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Devices.Tests;

/// <summary>
/// The pretraining loop on the GPU: a run stopped part-way and resumed from its checkpoint gives exactly (bitwise) the
/// losses and final parameters of an uninterrupted run on the same device, and checkpoints written on the GPU have the
/// same files, tensors and layout as the CPU's and load on the CPU to the very same values.
/// </summary>
public sealed class GpuPretrainingTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mosaicbert-gpu-pretrain-");

    public void Dispose() => _dir.Delete(recursive: true);

    /// <summary>Deterministic MLM batches over a small vocabulary (a cyclic token pattern, 30% masked).</summary>
    private sealed class PatternSource : IMlmBatchSource
    {
        private long _next;

        public string Position
        {
            get => JsonSerializer.Serialize(new { next = _next });
            set => _next = JsonDocument.Parse(value).RootElement.GetProperty("next").GetInt64();
        }

        public MlmBatch Next(int batchSize) => Make(batchSize, _next++, 0.3);

        public static MlmBatch Make(int batchSize, long index, double ratio)
        {
            const int s = 16;
            var rng = new Random((int)index * 7919 + 1);
            var ids = new int[batchSize * s];
            var mask = new int[ids.Length];
            var labels = new int[ids.Length];
            Array.Fill(labels, -100);
            for (int b = 0; b < batchSize; b++)
            {
                int len = 6 + rng.Next(s - 6 + 1), start = 5 + rng.Next(40);
                for (int t = 0; t < len; t++)
                {
                    int cell = b * s + t;
                    mask[cell] = 1;
                    ids[cell] = t == 0 ? 2 : t == len - 1 ? 3 : 5 + (start + t) % 8;
                    if (t > 0 && t < len - 1 && rng.NextDouble() < ratio)
                    {
                        labels[cell] = ids[cell];
                        ids[cell] = 4;
                    }
                }
            }
            return new MlmBatch(batchSize, s, ids, mask, labels);
        }
    }

    private PretrainingOptions Options(string dir, long steps) => new()
    {
        OutputDir = dir, MaxSteps = steps, GlobalBatchSize = 16, MicroBatchSize = 8, LearningRate = 5e-3,
        WarmupFraction = 0.1, EvalInterval = 10, CheckpointInterval = 10, LogInterval = 5, Seed = 3, GradientClipNorm = 1.0,
        Vocab = "unused", Corpus = ["unused"],
    };

    private static readonly MosaicBertConfig s_config = new()
    {
        VocabSize = 64, HiddenSize = 64, NumAttentionHeads = 4, NumHiddenLayers = 2, IntermediateSize = 128,
    };

    private static MosaicBertModel Model(Backend backend)
    {
        var model = new MosaicBertModel(s_config, ModelHeads.MaskedLM, backend);
        model.InitializeWeights(11);
        return model;
    }

    private static IReadOnlyList<MlmBatch> Eval => [.. Enumerable.Range(0, 2).Select(i => PatternSource.Make(8, 1_000_000 + i, 0.15))];

    private sealed class Recorder(Action<StepReport>? then = null) : IProgress<StepReport>
    {
        public List<StepReport> Reports { get; } = [];

        public void Report(StepReport value)
        {
            Reports.Add(value);
            then?.Invoke(value);
        }
    }

    [Fact]
    public void StoppedAndResumedGpuRunEqualsUninterruptedRunBitwise()
    {
        var gpu = Gpu.Backend;
        string straightDir = Path.Combine(_dir.FullName, "straight"), resumedDir = Path.Combine(_dir.FullName, "resumed");
        var straight = new Recorder();
        float[] straightParameters;
        using (var model = Model(gpu))
        {
            new PretrainingRunner(Options(straightDir, 20), NullLogger.Instance).Run(model, new PatternSource(), Eval, straight, TestContext.Current.CancellationToken);
            straightParameters = Compare.Host(model.Parameters);
        }

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        var first = new Recorder(r => { if (r.Step == 13) cts.Cancel(); });
        using (var model = Model(gpu))
            Assert.Equal(13, new PretrainingRunner(Options(resumedDir, 20), NullLogger.Instance).Run(model, new PatternSource(), Eval, first, cts.Token));
        var second = new Recorder();
        float[] resumedParameters;
        using (var model = Model(gpu))
        {
            Assert.Equal(20, new PretrainingRunner(Options(resumedDir, 20), NullLogger.Instance).Run(model, new PatternSource(), Eval, second, TestContext.Current.CancellationToken));
            resumedParameters = Compare.Host(model.Parameters);
        }
        Assert.Equal(straight.Reports.Select(r => r.Loss), first.Reports.Concat(second.Reports).Select(r => r.Loss));
        Assert.Equal(straight.Reports.Select(r => r.EvalLoss), first.Reports.Concat(second.Reports).Select(r => r.EvalLoss));
        Assert.True(straightParameters.AsSpan().SequenceEqual(resumedParameters), "the resumed run's final parameters differ from the uninterrupted run's");
    }

    [Fact]
    public void GpuCheckpointsHaveTheCpuFormatAndLoadOnTheCpu()
    {
        var gpu = Gpu.Backend;
        string cpuDir = Path.Combine(_dir.FullName, "cpu"), gpuDir = Path.Combine(_dir.FullName, "gpu");
        using (var model = Model(new CpuBackend(threads: 4)))
            new PretrainingRunner(Options(cpuDir, 10), NullLogger.Instance).Run(model, new PatternSource(), Eval, null, TestContext.Current.CancellationToken);
        float[] gpuParameters, gpuM;
        using (var model = Model(gpu))
        {
            new PretrainingRunner(Options(gpuDir, 10), NullLogger.Instance).Run(model, new PatternSource(), Eval, null, TestContext.Current.CancellationToken);
            gpuParameters = Compare.Host(model.Parameters);
        }
        string cpuCheckpoint = TrainingCheckpoint.FindLatest(Path.Combine(cpuDir, "checkpoints"))!;
        string gpuCheckpoint = TrainingCheckpoint.FindLatest(Path.Combine(gpuDir, "checkpoints"))!;
        Assert.Equal(Path.GetFileName(cpuCheckpoint), Path.GetFileName(gpuCheckpoint));
        Assert.Equal(Directory.GetFiles(cpuCheckpoint).Select(Path.GetFileName).Order(), Directory.GetFiles(gpuCheckpoint).Select(Path.GetFileName).Order());
        Assert.Equal(File.ReadAllText(Path.Combine(cpuCheckpoint, "config.json")), File.ReadAllText(Path.Combine(gpuCheckpoint, "config.json")));
        foreach (var file in new[] { "model.safetensors", "optimizer.safetensors" })
        {
            using var c = SafeTensorsFile.Open(Path.Combine(cpuCheckpoint, file));
            using var g = SafeTensorsFile.Open(Path.Combine(gpuCheckpoint, file));
            Assert.Equal(c.TensorNames, g.TensorNames);
            foreach (var name in c.TensorNames)
            {
                Assert.Equal(c.GetInfo(name).DType, g.GetInfo(name).DType);
                Assert.Equal(c.GetInfo(name).Shape, g.GetInfo(name).Shape);
            }
            Assert.Equal(c.Metadata.Keys.Order(), g.Metadata.Keys.Order());
            Assert.Equal(new FileInfo(Path.Combine(cpuCheckpoint, file)).Length, new FileInfo(Path.Combine(gpuCheckpoint, file)).Length);
        }
        using (var opt = SafeTensorsFile.Open(Path.Combine(gpuCheckpoint, "optimizer.safetensors")))
            gpuM = opt.ReadFloat32("exp_avg");
        Assert.Contains(gpuM, x => x != 0);
        // The GPU's checkpoint on the CPU: the same values, bit for bit, and training resumes there.
        using var onCpu = PretrainedModel.Load(gpuCheckpoint, new CpuBackend(threads: 4));
        Assert.True(Compare.Host(onCpu.Parameters).AsSpan().SequenceEqual(gpuParameters), "the checkpoint read on the CPU differs from the GPU's parameters");
        using var resumed = Model(new CpuBackend(threads: 4));
        using var optimizer = new DecoupledAdamW(resumed);
        var state = TrainingCheckpoint.Load(gpuCheckpoint, resumed, optimizer);
        Assert.Equal(10, state.Step);
        Assert.True(Compare.Host(optimizer.M).AsSpan().SequenceEqual(gpuM));
    }
}
