using MosaicBert.Checkpoints;
using MosaicBert.Devices;
using MosaicBert.Model;
using MosaicBert.Tensors;

namespace MosaicBert.Cli;

/// <summary>
/// <c>mosaicbert forward</c>: runs a checkpoint on a batch stored as safetensors and writes the outputs as
/// safetensors, in the layout Hugging Face models return.
/// </summary>
internal static class ForwardCommand
{
    /// <summary>Runs the verb; failures become <see cref="CliException"/>s naming the file and tensor.</summary>
    /// <param name="modelDir">Directory with config.json and model.safetensors or pytorch_model.bin.</param>
    /// <param name="inputPath">int64 input_ids [B,S]; optional attention_mask and token_type_ids of the same shape.</param>
    /// <param name="outputPath">Receives last_hidden_state [B,S,H] (zeros at padding) and logits ([B,S,V] for a masked
    /// LM, [B,num_labels] for sequence classification); written atomically.</param>
    /// <param name="device">Where to run: "cpu", "cuda" or "cuda:N" (see <see cref="DeviceSpec"/>).</param>
    /// <param name="precision">"fp32" (or "bf16" where the build has it).</param>
    /// <param name="allowCpuFallback">Run on the CPU, with a warning, when CUDA is asked for but unusable.</param>
    /// <param name="threads">CPU threads; null for all cores.</param>
    /// <param name="stderr">Where the summary goes.</param>
    public static int Run(string modelDir, string inputPath, string outputPath, string device, string precision, bool allowCpuFallback,
        int? threads, TextWriter stderr)
    {
        try
        {
            return RunCore(modelDir, inputPath, outputPath, device, precision, allowCpuFallback, threads, stderr);
        }
        catch (CliException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return ExitCodes.InputError;
        }
    }

    private static int RunCore(string modelDir, string inputPath, string outputPath, string device, string precision, bool allowCpuFallback,
        int? threads, TextWriter stderr)
    {
        if (!Directory.Exists(modelDir)) throw new CliException($"{modelDir}: model directory not found");
        if (!File.Exists(inputPath)) throw new CliException($"{inputPath}: input file not found");
        var started = System.Diagnostics.Stopwatch.StartNew();
        using var backend = CreateBackend(device, precision, allowCpuFallback, threads, stderr);
        MosaicBertModel model;
        try
        {
            model = PretrainedModel.Load(modelDir, backend, precision: BackendFactory.PrecisionFor(backend, ComputePrecisions.Parse(precision, "--precision")));
        }
        catch (Exception e) when (e is CheckpointFormatException or IOException or UnauthorizedAccessException)
        {
            throw new CliException(e.Message);
        }
        using (model)
        {
            EncoderBatch batch;
            int b, s;
            try
            {
                using var input = SafeTensorsFile.Open(inputPath);
                (b, s, var ids) = Read(input, "input_ids", null);
                var mask = input.Tensors.ContainsKey("attention_mask") ? Read(input, "attention_mask", (b, s)).Values : [];
                var types = input.Tensors.ContainsKey("token_type_ids") ? Read(input, "token_type_ids", (b, s)).Values : [];
                var unknown = input.TensorNames.FirstOrDefault(n => n is not ("input_ids" or "attention_mask" or "token_type_ids"));
                if (unknown is not null)
                    throw new CliException($"{inputPath}: unexpected tensor '{unknown}'; expected input_ids, attention_mask, token_type_ids");
                batch = new EncoderBatch(ids, types, mask, b, s);
            }
            catch (Exception e) when (e is CheckpointFormatException or KeyNotFoundException)
            {
                throw new CliException(e.Message);
            }
            catch (ArgumentException e)
            {
                throw new CliException($"{inputPath}: {e.Message}");
            }
            try
            {
                model.Encode(batch);
            }
            catch (ArgumentOutOfRangeException e)
            {
                throw new CliException($"{inputPath}: {e.Message.Split(" (Parameter")[0]}");
            }
            var hidden = model.LastHiddenStatePadded(batch);
            var writer = new SafeTensorsWriter();
            writer.SetMetadata("format", "pt");
            writer.Add("last_hidden_state", hidden, [b, s, model.Config.HiddenSize]);
            if (model.Layout.Heads.HasFlag(ModelHeads.SequenceClassification))
            {
                writer.Add("logits", Download(model, model.ClassifierLogits()), [b, model.Config.NumLabels]);
            }
            else if (model.Layout.Heads.HasFlag(ModelHeads.MaskedLM))
            {
                int v = model.Config.VocabSize;
                var packed = Download(model, model.MaskedLMLogits());
                var padded = new float[(long)b * s * v];
                for (int t = 0; t < batch.TokenCount; t++) Array.Copy(packed, (long)t * v, padded, (long)batch.Indices[t] * v, v);
                writer.Add("logits", padded, [b, s, v]);
            }
            try
            {
                writer.Save(outputPath);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new CliException($"{outputPath}: cannot write: {e.Message}");
            }
            stderr.WriteLine($"wrote {outputPath}: {model.Config.Architecture} {model.Layout.Heads}, batch {b}×{s}, {batch.TokenCount} tokens, {started.Elapsed.TotalSeconds:F2} s on {BackendFactory.Describe(backend)}");
            return ExitCodes.Success;
        }
    }

    /// <summary>The backend of <c>--device</c>; an unusable device or precision is an input error naming the reason.</summary>
    internal static Backend CreateBackend(string device, string precision, bool allowCpuFallback, int? threads, TextWriter stderr)
    {
        try
        {
            return BackendFactory.Create(DeviceSpec.Parse(device, "--device"), ComputePrecisions.Parse(precision, "--precision"), threads,
                allowCpuFallback, DeviceOptionNames.CommandLine, message => stderr.WriteLine($"warning: {message}"));
        }
        catch (Exception e) when (e is DeviceUnavailableException or NotSupportedException or ArgumentException)
        {
            throw new CliException(e.Message);
        }
    }

    private static float[] Download(MosaicBertModel model, Tensor t)
    {
        var host = new float[t.Length];
        model.Backend.Download(t, host);
        return host;
    }

    private static (int B, int S, int[] Values) Read(SafeTensorsFile file, string name, (int B, int S)? expected)
    {
        var info = file.GetInfo(name);
        if (info.DType is not (TensorDType.Int64 or TensorDType.Int32))
            throw new CliException($"{file.SourcePath}: tensor '{name}' must be int64, not {info.DType}");
        if (info.Shape.Count != 2)
            throw new CliException($"{file.SourcePath}: tensor '{name}' must have shape [B, S], not [{string.Join(", ", info.Shape)}]");
        int b = checked((int)info.Shape[0]), s = checked((int)info.Shape[1]);
        if (expected is { } e && (e.B, e.S) != (b, s))
            throw new CliException($"{file.SourcePath}: tensor '{name}' has shape [{b}, {s}] but input_ids has [{e.B}, {e.S}]");
        var values = file.ReadInt64(name);
        var ints = new int[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            if (values[i] is < int.MinValue or > int.MaxValue)
                throw new CliException($"{file.SourcePath}: tensor '{name}' holds {values[i]} at {i}, out of range");
            ints[i] = (int)values[i];
        }
        return (b, s, ints);
    }
}
