using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Model.Tests;

/// <summary>
/// Exact resumption: training k steps, checkpointing, restoring into a fresh model and optimizer and continuing must
/// give the same losses and parameters, bit for bit, as an uninterrupted run (CPU kernels are deterministic for any
/// thread count, dropout masks depend only on their seed).
/// </summary>
public sealed class TrainingCheckpointTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mosaicbert-ckpt-");

    public void Dispose() => _dir.Delete(recursive: true);

    private static MosaicBertConfig Config => new()
    {
        VocabSize = 64, HiddenSize = 16, NumAttentionHeads = 4, NumHiddenLayers = 2, IntermediateSize = 24, HiddenDropoutProb = 0.1f,
    };

    private static EncoderBatch Batch(int step)
    {
        var rng = new Random(step);
        var ids = Enumerable.Range(0, 4 * 10).Select(i => i % 10 == 0 ? 2 : rng.Next(5, 64)).ToArray();
        var mask = Enumerable.Range(0, 40).Select(i => i % 10 < 10 - (i / 10) ? 1 : 0).ToArray();
        var labels = Enumerable.Range(0, 40).Select(i => i % 10 != 0 && mask[i] == 1 && rng.NextDouble() < 0.3 ? ids[i] : -100).ToArray();
        labels[1] = ids[1];
        return new EncoderBatch(ids, [], mask, 4, 10, labels);
    }

    private static float Step(MosaicBertModel model, DecoupledAdamW optimizer, int step)
    {
        model.ZeroGradients();
        float loss = model.ForwardBackward(Batch(step), new TrainingObjective.MaskedLM(), new DropoutSettings((ulong)step));
        optimizer.ClipGradients(1.0);
        optimizer.Step(1e-2f);
        return loss;
    }

    [Fact]
    public void ResumedRunEqualsUninterruptedRun()
    {
        var options = new AdamWOptions { LearningRate = 1e-2f, WeightDecay = 0.01f };
        float[] straight;
        float[] finalParams;
        using (var model = new MosaicBertModel(Config, ModelHeads.MaskedLM, new CpuBackend(threads: 2)))
        using (var opt = new DecoupledAdamW(model, options))
        {
            model.InitializeWeights(5);
            straight = [.. Enumerable.Range(0, 8).Select(s => Step(model, opt, s))];
            finalParams = new float[model.Layout.Count];
            model.Backend.Download(model.Parameters, finalParams);
        }

        var resumed = new float[8];
        using (var model = new MosaicBertModel(Config, ModelHeads.MaskedLM, new CpuBackend(threads: 1)))
        using (var opt = new DecoupledAdamW(model, options))
        {
            model.InitializeWeights(5);
            for (int s = 0; s < 5; s++) resumed[s] = Step(model, opt, s);
            TrainingCheckpoint.Save(_dir.FullName, model, opt, new TrainingCheckpoint.State(5, 20, new Dictionary<string, string> { ["data"] = "{\"epoch\":0,\"index\":20}" }));
        }
        using (var model = new MosaicBertModel(Config, ModelHeads.MaskedLM, new CpuBackend(threads: 2)))
        using (var opt = new DecoupledAdamW(model, options))
        {
            var latest = TrainingCheckpoint.FindLatest(_dir.FullName)!;
            var state = TrainingCheckpoint.Load(latest, model, opt);
            Assert.Equal(5, state.Step);
            Assert.Equal(20, state.SamplesSeen);
            Assert.Equal("{\"epoch\":0,\"index\":20}", state.Extra["data"]);
            for (int s = 5; s < 8; s++) resumed[s] = Step(model, opt, s);
            var p = new float[model.Layout.Count];
            model.Backend.Download(model.Parameters, p);
            Assert.Equal(straight, resumed);
            Assert.Equal(finalParams, p);
        }
    }

    [Fact]
    public void IncompleteCheckpointsAreIgnoredAndOldOnesPruned()
    {
        using var model = new MosaicBertModel(Config, ModelHeads.MaskedLM, new CpuBackend(threads: 1));
        using var opt = new DecoupledAdamW(model);
        model.InitializeWeights(1);
        var empty = new Dictionary<string, string>();
        for (int s = 1; s <= 4; s++) TrainingCheckpoint.Save(_dir.FullName, model, opt, new TrainingCheckpoint.State(s, s, empty), keep: 2);
        Assert.Equal(["step-00000003", "step-00000004"], TrainingCheckpoint.List(_dir.FullName).Select(Path.GetFileName));
        // A run killed while writing step 5 leaves a temporary directory: it is not a checkpoint.
        Directory.CreateDirectory(Path.Combine(_dir.FullName, "step-00000005.tmp-999"));
        Assert.EndsWith("step-00000004", TrainingCheckpoint.FindLatest(_dir.FullName));
        // An existing checkpoint is never overwritten.
        Assert.Throws<IOException>(() => TrainingCheckpoint.Save(_dir.FullName, model, opt, new TrainingCheckpoint.State(4, 4, empty)));
        // Every checkpoint is also a Hugging Face model directory.
        using var exported = PretrainedModel.Load(TrainingCheckpoint.FindLatest(_dir.FullName)!, new CpuBackend(threads: 1));
        Assert.Equal(model.GetParameter("cls.predictions.decoder.bias"), exported.GetParameter("cls.predictions.decoder.bias"));
    }
}
