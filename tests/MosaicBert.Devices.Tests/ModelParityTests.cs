using MosaicBert.Model;
using MosaicBert.Tensors;
using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Devices.Tests;

/// <summary>
/// The whole model in fp32 on the GPU against the CPU backend, tiny preset (2 layers, d=128, the full 30,528-token
/// vocabulary), one ragged batch with MLM labels, training-mode dropout (its masks are bitwise equal on both backends):
/// every activation the model exposes, the MLM logits and loss, the classifier logits, the whole gradient block for
/// both objectives, and the losses of 10 AdamW steps. GEMMs sum in another order on the GPU, so results agree to fp32
/// rounding, not bitwise.
/// </summary>
/// <remarks>Tolerances, as fractions of each tensor's largest magnitude: activations and logits 5e-6, gradients 1e-5;
/// losses 1e-6 relative, and 1e-5 over 10 AdamW steps. Measured on an H100: worst activation 5.5e-7 (layer 1's MLP
/// output), worst gradient 6.8e-7, losses of one step equal, of 10 AdamW steps within 9.2e-8.</remarks>
public sealed class ModelParityTests
{
    private const double ActivationTolerance = 5e-6, GradientTolerance = 1e-5, LossTolerance = 1e-6, AdamWLossTolerance = 1e-5;
    private static readonly CpuBackend s_cpu = new(threads: Math.Min(Environment.ProcessorCount, 8));
    private static readonly MosaicBertConfig s_tiny = MosaicBertConfig.Preset("tiny") with { NumLabels = 3 };
    private const ModelHeads Heads = ModelHeads.MaskedLM | ModelHeads.SequenceClassification;

    /// <summary>The same freshly initialised model on the CPU and on the GPU.</summary>
    private static (MosaicBertModel Cpu, MosaicBertModel Gpu) Pair(int seed = 7)
    {
        var gpu = Gpu.Backend;
        var cpu = new MosaicBertModel(s_tiny, Heads, s_cpu);
        cpu.InitializeWeights(seed);
        var model = new MosaicBertModel(s_tiny, Heads, gpu);
        gpu.Upload(Compare.Host(cpu.Parameters), model.Parameters);
        return (cpu, model);
    }

    /// <summary>B = 4 sequences of 48, 31, 17 and 40 real tokens padded to 48, pairs with type 1 after the middle, 30%
    /// of the inner tokens masked (labels = the original ids).</summary>
    internal static EncoderBatch Batch(int seed, int vocab = 30522)
    {
        int[] lengths = [48, 31, 17, 40];
        const int s = 48;
        var rng = new Random(seed);
        int b = lengths.Length;
        var ids = new int[b * s];
        var types = new int[b * s];
        var mask = new int[b * s];
        var labels = new int[b * s];
        Array.Fill(labels, -100);
        for (int i = 0; i < b; i++)
        {
            for (int t = 0; t < lengths[i]; t++)
            {
                int cell = i * s + t;
                mask[cell] = 1;
                ids[cell] = t == 0 ? 101 : t == lengths[i] - 1 ? 102 : 1000 + rng.Next(vocab - 1000);
                types[cell] = t > lengths[i] / 2 ? 1 : 0;
                if (t > 0 && t < lengths[i] - 1 && rng.NextDouble() < 0.3)
                {
                    labels[cell] = ids[cell];
                    ids[cell] = 103;
                }
            }
        }
        return new EncoderBatch(ids, types, mask, b, s, labels);
    }

    private static readonly DropoutSettings s_dropout = new(12345);

    [Fact]
    public void ActivationsAndLogitsMatchTheCpu()
    {
        var (cpu, gpu) = Pair();
        using (cpu)
        using (gpu)
        {
            var batch = Batch(1);
            Compare.OfScale(Compare.Host(cpu.Encode(batch, s_dropout)), Compare.Host(gpu.Encode(batch, s_dropout)), ActivationTolerance, "final hidden states");
            var expected = cpu.ActivationsByReferenceName();
            var actual = gpu.ActivationsByReferenceName();
            Assert.Equal(expected.Keys, actual.Keys);
            Assert.Equal(2 + 10 * s_tiny.NumHiddenLayers, expected.Count);
            foreach (var (name, tensor) in expected)
                Compare.OfScale(Compare.Host(tensor.Rows(0, batch.TokenCount)), Compare.Host(actual[name].Rows(0, batch.TokenCount)), ActivationTolerance, name);
            Compare.OfScale(Compare.Host(cpu.MaskedLMLogits(batch.MaskedTokens)), Compare.Host(gpu.MaskedLMLogits(batch.MaskedTokens)), ActivationTolerance, "MLM logits");
            Compare.OfScale(Compare.Host(cpu.ClassifierLogits()), Compare.Host(gpu.ClassifierLogits()), ActivationTolerance, "classifier logits");
            // Inference mode (no dropout) too: what the featurizer and `forward` run.
            Compare.OfScale(Compare.Host(cpu.Encode(batch)), Compare.Host(gpu.Encode(batch)), ActivationTolerance, "final hidden states, inference");
            Compare.OfScale(cpu.LastHiddenStatePadded(batch), gpu.LastHiddenStatePadded(batch), ActivationTolerance, "last_hidden_state, padded");
        }
    }

    public static TheoryData<string> Objectives => ["mlm", "classification"];

    [Theory]
    [MemberData(nameof(Objectives))]
    public void LossAndEveryGradientMatchTheCpu(string objective)
    {
        var (cpu, gpu) = Pair();
        using (cpu)
        using (gpu)
        {
            var batch = Batch(2);
            TrainingObjective target = objective == "mlm" ? new TrainingObjective.MaskedLM() : new TrainingObjective.Classification([0, 2, 1, 2]);
            cpu.ZeroGradients();
            gpu.ZeroGradients();
            float expectedLoss = cpu.ForwardBackward(batch, target, s_dropout);
            float actualLoss = gpu.ForwardBackward(batch, target, s_dropout);
            Compare.Relative(expectedLoss, actualLoss, LossTolerance, $"{objective} loss");
            float[] expected = Compare.Host(cpu.Gradients), actual = Compare.Host(gpu.Gradients);
            int nonZero = 0;
            foreach (var p in cpu.Layout.Parameters)
            {
                var e = expected.AsSpan((int)p.Offset, (int)p.Length).ToArray();
                if (e.Any(x => x != 0)) nonZero++;
                Compare.OfScale(e, actual.AsSpan((int)p.Offset, (int)p.Length).ToArray(), GradientTolerance, $"{objective} gradient of {p.Name}");
            }
            // MLM reaches everything but the pooler and classifier (4 tensors); classification everything but the MLM head (5).
            Assert.Equal(cpu.Layout.Parameters.Count - (objective == "mlm" ? 4 : 5), nonZero);
        }
    }

    [Fact]
    public void TenAdamWStepsGiveTheSameLosses()
    {
        var (cpu, gpu) = Pair(seed: 3);
        using (cpu)
        using (gpu)
        {
            var options = new AdamWOptions { LearningRate = 1e-3f, WeightDecay = 1e-5f };
            using var cpuOptimizer = new DecoupledAdamW(cpu, options);
            using var gpuOptimizer = new DecoupledAdamW(gpu, options);
            var schedule = new LinearWarmupSchedule(1e-3, 2, 10, 0.02);
            for (int step = 0; step < 10; step++)
            {
                var batch = Batch(100 + step);
                var dropout = new DropoutSettings((ulong)(1000 + step));
                float lr = schedule.LearningRate(step + 1);
                double[] losses = new double[2], norms = new double[2];
                foreach (var (model, optimizer, i) in new[] { (cpu, cpuOptimizer, 0), (gpu, gpuOptimizer, 1) })
                {
                    model.ZeroGradients();
                    losses[i] = model.ForwardBackward(batch, new TrainingObjective.MaskedLM(), dropout);
                    norms[i] = optimizer.ClipGradients(1.0);
                    optimizer.Step(lr);
                }
                Compare.Relative(losses[0], losses[1], AdamWLossTolerance, $"AdamW step {step + 1} loss");
                Compare.Relative(norms[0], norms[1], GradientTolerance, $"AdamW step {step + 1} gradient norm");
            }
        }
    }

    [Fact]
    public void GpuResultsAreBitwiseRepeatable()
    {
        // Two models on the GPU (other buffers, so other addresses), the same step: the kernels use fixed reduction
        // orders and cuBLASLt the same algorithm, so losses and gradients are equal bit for bit. Exact resumption on the
        // GPU rests on this.
        var (cpu, first) = Pair(seed: 5);
        cpu.Dispose();
        using (first)
        {
            using var second = new MosaicBertModel(s_tiny, Heads, Gpu.Backend);
            Gpu.Backend.Copy(first.Parameters, second.Parameters);
            var batch = Batch(9);
            float[][] gradients = new float[2][];
            float[] losses = new float[2];
            int k = 0;
            foreach (var model in new[] { first, second })
            {
                model.ZeroGradients();
                losses[k] = model.ForwardBackward(batch, new TrainingObjective.MaskedLM(), s_dropout);
                gradients[k++] = Compare.Host(model.Gradients);
            }
            Assert.Equal(BitConverter.SingleToInt32Bits(losses[0]), BitConverter.SingleToInt32Bits(losses[1]));
            for (int i = 0; i < gradients[0].Length; i++)
                if (BitConverter.SingleToInt32Bits(gradients[0][i]) != BitConverter.SingleToInt32Bits(gradients[1][i]))
                    Assert.Fail($"gradient element {i} differs between two identical GPU steps: {gradients[0][i]:R} vs {gradients[1][i]:R}");
        }
    }
}
