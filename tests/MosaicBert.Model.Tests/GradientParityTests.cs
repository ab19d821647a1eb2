using MosaicBert.Checkpoints;
using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Model.Tests;

/// <summary>
/// Backward pass and optimizer against the PyTorch reference (float64 run of tests/reference/make_model_reference.py).
/// Tolerances (tests/reference/README.md measured PyTorch's own fp32 run against the same values):
/// parameter gradients 3e-5·scale (fp32 measured ≤ 2.8e-6·scale), losses 1e-5·scale, parameters after 10 AdamW steps
/// 2e-3 absolute (Adam normalises each update to ~lr, so tiny gradient differences become lr-sized parameter
/// differences; fp32 PyTorch itself is 1.7e-4 away), where scale = max(max|reference|, 0.01).
/// Key-bias gradients are zero in exact arithmetic (softmax is shift-invariant per query); they are compared inside
/// the fused Wqkv bias, whose scale comes from the Q and V parts, so their rounding noise is held to the same bound.
/// </summary>
public sealed class GradientParityTests
{
    private const double GradientTolerance = 3e-5;

    /// <summary>A model with the reference parameters of numerics/NAME.f64 (and the classifier of head "cls2." or
    /// "reg." when given), and the reference batch.</summary>
    internal static (MosaicBertModel Model, EncoderBatch Batch, SafeTensorsFile Reference) Load(string name, ModelHeads heads, string? head = null)
    {
        var reference = SafeTensorsFile.Open(SharedData.Fixture($"numerics/{name}.f64.safetensors"));
        var cfg = ReferenceConfig(reference, head == "reg." ? 1 : 2);
        var model = new MosaicBertModel(cfg, heads, new CpuBackend(threads: 2));
        PretrainedModel.LoadWeights(model, reference, allowMissingHeads: true, namePrefix: "param.");
        if (head is not null)
        {
            model.SetParameter("classifier.weight", reference.ReadFloat32(head + "param.classifier.weight"));
            model.SetParameter("classifier.bias", reference.ReadFloat32(head + "param.classifier.bias"));
        }
        var shape = reference.GetInfo("input.input_ids").Shape;
        int[] Ints(string n) => [.. reference.ReadInt64(n).Select(x => (int)x)];
        var batch = new EncoderBatch(Ints("input.input_ids"), Ints("input.token_type_ids"), Ints("input.attention_mask"),
            (int)shape[0], (int)shape[1], Ints("input.mlm_labels"));
        return (model, batch, reference);
    }

    internal static MosaicBertConfig ReferenceConfig(SafeTensorsFile reference, int labels)
    {
        var c = System.Text.Json.JsonDocument.Parse(reference.Metadata["config"]).RootElement;
        return new MosaicBertConfig
        {
            Architecture = c.GetProperty("classic").GetBoolean() ? EncoderArchitecture.Bert : EncoderArchitecture.MosaicBert,
            VocabSize = c.GetProperty("vocab_size").GetInt32(),
            HiddenSize = c.GetProperty("hidden_size").GetInt32(),
            NumHiddenLayers = c.GetProperty("num_hidden_layers").GetInt32(),
            NumAttentionHeads = c.GetProperty("num_attention_heads").GetInt32(),
            IntermediateSize = c.GetProperty("intermediate_size").GetInt32(),
            TypeVocabSize = c.GetProperty("type_vocab_size").GetInt32(),
            MaxPositionEmbeddings = c.GetProperty("max_position_embeddings").GetInt32(),
            LayerNormEps = (float)c.GetProperty("layer_norm_eps").GetDouble(),
            NumLabels = labels,
        };
    }

    /// <summary>The reference tensor(s) for one of our parameters: classic Q/K/V are fused, cls.predictions.bias renamed.</summary>
    internal static double[] ReferenceFor(SafeTensorsFile reference, string prefix, string name, bool classic)
    {
        if (classic && name.Contains(".attention.self.Wqkv.", StringComparison.Ordinal))
            return [.. new[] { "query", "key", "value" }.SelectMany(x => reference.ReadFloat64(prefix + name.Replace("Wqkv", x, StringComparison.Ordinal)))];
        if (classic && name == "cls.predictions.decoder.bias") return reference.ReadFloat64(prefix + "cls.predictions.bias");
        return reference.ReadFloat64(prefix + name);
    }

    internal static void Compare(string what, double[] expected, float[] actual, double relative, double absolute = 0)
    {
        Assert.Equal(expected.Length, actual.Length);
        double scale = Math.Max(expected.Max(Math.Abs), 0.01);
        double bound = relative * scale + absolute;
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= bound,
                $"{what}[{i}]: reference {expected[i]}, ours {actual[i]} (|diff| {Math.Abs(expected[i] - actual[i]):g3} > {bound:g3})");
    }

    [Theory]
    [InlineData("mosaic-h4")]
    [InlineData("mosaic-h3")]
    [InlineData("bert")]
    public void MaskedLMGradientsMatch(string name)
    {
        var (model, batch, reference) = Load(name, ModelHeads.MaskedLM);
        using (model)
        using (reference)
        {
            model.ZeroGradients();
            float loss = model.ForwardBackward(batch, new TrainingObjective.MaskedLM());
            Compare("mlm.loss", reference.ReadFloat64("mlm.loss"), [loss], 1e-5);
            bool classic = model.Config.Architecture == EncoderArchitecture.Bert;
            foreach (var p in model.Layout.Parameters)
            {
                var ours = new float[p.Length];
                model.Backend.Download(model.Gradient(p.Name), ours);
                Compare("grad." + p.Name, ReferenceFor(reference, "grad.", p.Name, classic), ours, GradientTolerance);
            }
        }
    }

    [Theory]
    [InlineData("mosaic-h4", "cls2.")]
    [InlineData("mosaic-h3", "reg.")]
    [InlineData("bert", "cls2.")]
    [InlineData("bert", "reg.")]
    public void ClassifierGradientsMatch(string name, string head)
    {
        var (model, batch, reference) = Load(name, ModelHeads.SequenceClassification, head);
        using (model)
        using (reference)
        {
            TrainingObjective objective = head == "reg."
                ? new TrainingObjective.Regression([.. reference.ReadFloat64("input.reg_labels").Select(x => (float)x)])
                : new TrainingObjective.Classification([.. reference.ReadInt64("input.cls2_labels").Select(x => (int)x)]);
            model.ZeroGradients();
            float loss = model.ForwardBackward(batch, objective);
            Compare(head + "loss", reference.ReadFloat64(head + "loss"), [loss], 1e-5);
            bool classic = model.Config.Architecture == EncoderArchitecture.Bert;
            foreach (var p in model.Layout.Parameters)
            {
                var ours = new float[p.Length];
                model.Backend.Download(model.Gradient(p.Name), ours);
                Compare(head + "grad." + p.Name, ReferenceFor(reference, head + "grad.", p.Name, classic), ours, GradientTolerance);
            }
        }
    }

    [Theory]
    [InlineData("mosaic-h4")]
    [InlineData("bert")]
    public void TenAdamWStepsMatch(string name)
    {
        var (model, batch, reference) = Load(name, ModelHeads.MaskedLM);
        using (model)
        using (reference)
        {
            var h = System.Text.Json.JsonDocument.Parse(reference.Metadata["adamw"]).RootElement;
            var options = new AdamWOptions
            {
                LearningRate = (float)h.GetProperty("lr").GetDouble(),
                Beta1 = (float)h.GetProperty("betas")[0].GetDouble(),
                Beta2 = (float)h.GetProperty("betas")[1].GetDouble(),
                Epsilon = (float)h.GetProperty("eps").GetDouble(),
                WeightDecay = (float)h.GetProperty("weight_decay").GetDouble(),
            };
            var schedule = new LinearWarmupSchedule(options.LearningRate, h.GetProperty("t_warmup_samples").GetInt64(),
                h.GetProperty("t_max_samples").GetInt64(), h.GetProperty("alpha_f").GetDouble());
            int steps = h.GetProperty("steps").GetInt32(), batchSize = h.GetProperty("batch_size").GetInt32();
            using var optimizer = new DecoupledAdamW(model, options);
            var lrs = new float[steps];
            var losses = new float[steps + 1];
            for (int s = 0; s < steps; s++)
            {
                model.ZeroGradients();
                losses[s] = model.ForwardBackward(batch, new TrainingObjective.MaskedLM());
                lrs[s] = schedule.LearningRate((long)s * batchSize);
                optimizer.Step(lrs[s]);
            }
            model.ZeroGradients();
            losses[steps] = model.ForwardBackward(batch, new TrainingObjective.MaskedLM());
            Compare("adamw.lr", reference.ReadFloat64("adamw.lr"), lrs, 1e-6);
            Compare("adamw.loss", reference.ReadFloat64("adamw.loss"), losses, 1e-5);
            bool classic = model.Config.Architecture == EncoderArchitecture.Bert;
            foreach (var p in model.Layout.Parameters)
                Compare("adamw.param." + p.Name, ReferenceFor(reference, "adamw.param.", p.Name, classic), model.GetParameter(p.Name), 0, 2e-3);
        }
    }
}
