using MosaicBert.Model;
using static MosaicBert.Tensors.Cuda.Tests.Both;

namespace MosaicBert.Tensors.Cuda.Tests;

/// <summary>
/// The whole model under bf16 mixed precision on the GPU against the fp32 model on the CPU, from the same weights and
/// batches (dropout on, the same masks on both). Metric: the relative L2 error ‖gpu − cpu‖ / ‖cpu‖ of each tensor.
/// Tolerances (bf16 keeps 8 significant bits, 2⁻⁹ ≈ 0.2% per rounding, and every layer rounds its activations a few
/// times): hidden states and logits 2%, loss 1%, every parameter gradient 5% (gradients pass through all layers
/// backwards in bf16). The fp32 model on the GPU must match the CPU to fp32 rounding (1e-4).
/// </summary>
public sealed class Bf16ModelTests
{
    private static CudaBackend G => Gpu.Backend;

    private static EncoderBatch Batch(MosaicBertConfig c, int seed, int batch = 4, int seq = 32)
    {
        var r = new Random(seed);
        int cells = batch * seq;
        var ids = new int[cells];
        var types = new int[cells];
        var mask = new int[cells];
        var labels = Enumerable.Repeat(-100, cells).ToArray();
        for (int b = 0; b < batch; b++)
        {
            int length = b == 0 ? seq : r.Next(8, seq + 1);
            for (int s = 0; s < length; s++)
            {
                int cell = b * seq + s;
                mask[cell] = 1;
                ids[cell] = r.Next(5, c.VocabSize);
                types[cell] = s >= length / 2 ? 1 : 0;
                if (r.NextDouble() < 0.3 || s == 1)
                {
                    labels[cell] = ids[cell];
                    ids[cell] = 103;
                }
            }
        }
        return new EncoderBatch(ids, types, mask, batch, seq, labels);
    }

    private static double RelativeL2(float[] expected, float[] actual)
    {
        double num = 0, den = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(float.IsFinite(actual[i]), $"non-finite value {actual[i]} at {i}");
            double e = (double)actual[i] - expected[i];
            num += e * e;
            den += (double)expected[i] * expected[i];
        }
        return Math.Sqrt(num / Math.Max(den, 1e-60));
    }

    private static void Near(float[] expected, float[] actual, double tolerance, string what)
    {
        double error = RelativeL2(expected, actual);
        Assert.True(error <= tolerance, $"{what}: relative L2 error {error:E2} > {tolerance:E1}");
    }

    private static MosaicBertConfig Config()
    {
        var c = MosaicBertConfig.Preset("tiny");
        return c with { VocabSize = 512, NumLabels = 3 };
    }

    [Theory]
    [InlineData(ComputePrecision.BFloat16, 0.02, 0.01, 0.05)]
    [InlineData(ComputePrecision.Float32, 1e-4, 1e-5, 1e-4)]
    public void ActivationsLossAndGradientsTrackTheFp32CpuModel(ComputePrecision precision, double actTol, double lossTol, double gradTol)
    {
        _ = G;
        var c = Config();
        var heads = ModelHeads.MaskedLM | ModelHeads.SequenceClassification;
        using var cpu = new MosaicBertModel(c, heads, Ref);
        using var gpu = new MosaicBertModel(c, heads, G, precision);
        cpu.InitializeWeights(3);
        gpu.InitializeWeights(3);
        var batch = Batch(c, 5);
        var dropout = new DropoutSettings(11);

        Near(Host(cpu.Encode(batch)), Host(gpu.Encode(batch)), actTol, $"{precision} final hidden states");
        Near(Host(cpu.MaskedLMLogits(batch.MaskedTokens)), Host(gpu.MaskedLMLogits(batch.MaskedTokens)), actTol, $"{precision} MLM logits");

        foreach (TrainingObjective objective in new TrainingObjective[]
                 { new TrainingObjective.MaskedLM(), new TrainingObjective.Classification([0, 2, 1, 1]) })
        {
            cpu.ZeroGradients();
            gpu.ZeroGradients();
            float lc = cpu.ForwardBackward(batch, objective, dropout);
            float lg = gpu.ForwardBackward(batch, objective, dropout);
            Assert.True(Math.Abs(lg - lc) <= lossTol * Math.Abs(lc), $"{precision} {objective}: loss GPU {lg} vs CPU {lc}");
            foreach (var p in cpu.Layout.Parameters)
            {
                var expected = Host(cpu.Gradient(p.Name));
                if (expected.All(v => v == 0)) continue;   // unused by this objective
                Near(expected, Host(gpu.Gradient(p.Name)), gradTol, $"{precision} {objective}: gradient of {p.Name}");
            }
        }
    }

    [Fact]
    public void AQueuedStepEqualsTheWaitingStep()
    {
        _ = G;
        var c = Config();
        using var waiting = new MosaicBertModel(c, ModelHeads.MaskedLM, G, ComputePrecision.BFloat16);
        using var queued = new MosaicBertModel(c, ModelHeads.MaskedLM, G, ComputePrecision.BFloat16);
        waiting.InitializeWeights(4);
        queued.InitializeWeights(4);
        var options = new AdamWOptions { LearningRate = 1e-3f };
        using var optWaiting = new DecoupledAdamW(waiting, options);
        using var optQueued = new DecoupledAdamW(queued, options);
        var losses = new List<DeferredScalar>();
        var norms = new List<DeferredScalar>();
        for (int s = 0; s < 3; s++)
        {
            var batch = Batch(c, 20 + s);
            var dropout = new DropoutSettings((ulong)s);
            waiting.ZeroGradients();
            queued.ZeroGradients();
            float lw = waiting.ForwardBackward(batch, new TrainingObjective.MaskedLM(), dropout);
            double nw = optWaiting.ClipGradients(0.05);
            optWaiting.Step(1e-3f);
            losses.Add(queued.QueueForwardBackward(batch, new TrainingObjective.MaskedLM(), dropout));
            norms.Add(optQueued.QueueClipGradients(0.05));
            optQueued.Step(1e-3f);
            // Read one step late: the values stay valid after the next step has overwritten the workspace.
            if (s > 0)
            {
                Assert.True(Math.Abs(losses[s - 1].Read() - _previousLoss) <= 1e-6 * Math.Abs(_previousLoss), "queued loss");
                Assert.Equal(_previousNorm, norms[s - 1].Read());
            }
            (_previousLoss, _previousNorm) = (lw, nw);
            Assert.Equal(Host(waiting.Parameters), Host(queued.Parameters));
        }
    }

    private double _previousLoss, _previousNorm;

    [Fact]
    public void Bf16TrainingLossesTrackTheFp32CpuRun()
    {
        _ = G;
        var c = MosaicBertConfig.Preset("mini") with { VocabSize = 2048 };
        using var cpu = new MosaicBertModel(c, ModelHeads.MaskedLM, Ref);
        using var gpu = new MosaicBertModel(c, ModelHeads.MaskedLM, G, ComputePrecision.BFloat16);
        cpu.InitializeWeights(1);
        gpu.InitializeWeights(1);
        var options = new AdamWOptions { LearningRate = 1e-3f };
        using var optCpu = new DecoupledAdamW(cpu, options);
        using var optGpu = new DecoupledAdamW(gpu, options);
        // A small repeated pool of batches, so the loss falls clearly within 50 steps (memorisation).
        var batches = Enumerable.Range(0, 4).Select(i => Batch(c, 100 + i, batch: 16, seq: 64)).ToArray();
        int steps = 50;
        var lossesCpu = new double[steps];
        var lossesGpu = new double[steps];
        for (int s = 0; s < steps; s++)
        {
            var dropout = new DropoutSettings((ulong)s);
            cpu.ZeroGradients();
            gpu.ZeroGradients();
            lossesCpu[s] = cpu.ForwardBackward(batches[s % 4], new TrainingObjective.MaskedLM(), dropout);
            lossesGpu[s] = gpu.ForwardBackward(batches[s % 4], new TrainingObjective.MaskedLM(), dropout);
            optCpu.ClipGradients(1.0);
            optGpu.ClipGradients(1.0);
            float lr = 1e-3f * Math.Min(1f, (s + 1) / 10f);
            optCpu.Step(lr);
            optGpu.Step(lr);
        }
        Assert.True(lossesCpu[^1] < lossesCpu[0] - 0.5, $"the run must learn: CPU loss {lossesCpu[0]:F3} → {lossesCpu[^1]:F3}");
        // Per step the two runs differ by batch noise that grows as the trajectories drift apart; the loss curve (means
        // over windows of ten steps) is what must agree within 1%.
        double worst = 0;
        for (int s = 0; s < steps; s++) worst = Math.Max(worst, Math.Abs(lossesGpu[s] - lossesCpu[s]) / lossesCpu[s]);
        var windows = Enumerable.Range(0, steps / 10).Select(w =>
            Math.Abs(lossesGpu[(w * 10)..(w * 10 + 10)].Average() - lossesCpu[(w * 10)..(w * 10 + 10)].Average()) / lossesCpu[(w * 10)..(w * 10 + 10)].Average()).ToArray();
        TestContext.Current.SendDiagnosticMessage(
            $"bf16 vs fp32 CPU, {steps} steps of mini: worst per-step loss difference {worst:P2}, ten-step windows " +
            $"{string.Join(", ", windows.Select(x => x.ToString("P2")))}; CPU {lossesCpu[0]:F4} → {lossesCpu[^1]:F4}, GPU {lossesGpu[0]:F4} → {lossesGpu[^1]:F4}");
        Assert.True(worst <= 0.04, $"per-step loss differs by up to {worst:P2} (> 4%)");
        Assert.True(windows.Max() <= 0.01, $"a ten-step window's mean loss differs by {windows.Max():P2} (> 1%)");
    }
}
