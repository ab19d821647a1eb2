using System.Globalization;
using System.Text.Json;
using MosaicBert.Checkpoints;

namespace MosaicBert.Model;

/// <summary>
/// Training checkpoints: everything needed to continue a run exactly where it stopped. Each checkpoint is a directory
/// <c>step-NNNNNNNN/</c> holding a Hugging Face model (config.json + model.safetensors, loadable on its own), the
/// optimizer moments (optimizer.safetensors) and <c>trainer_state.json</c> (step, samples seen, and the caller's own
/// state such as the data position and seeds).
/// </summary>
/// <remarks>
/// Atomicity: a checkpoint is written into a temporary sibling directory and renamed into place, so a directory named
/// <c>step-*</c> is always complete; a run killed while writing leaves only a <c>.tmp-*</c> directory, which
/// <see cref="FindLatest"/> ignores and <see cref="Save"/> cleans up. An existing checkpoint is never overwritten.
/// </remarks>
public static class TrainingCheckpoint
{
    private const string Prefix = "step-";
    private const string StateFile = "trainer_state.json";
    private const string OptimizerFile = "optimizer.safetensors";

    /// <summary>The state saved beside the tensors.</summary>
    /// <param name="Step">Optimizer steps completed.</param>
    /// <param name="SamplesSeen">Training samples consumed.</param>
    /// <param name="Extra">Caller state (data position, seeds, options), as strings.</param>
    public sealed record State(long Step, long SamplesSeen, IReadOnlyDictionary<string, string> Extra);

    /// <summary>Writes a checkpoint for <paramref name="state"/> under <paramref name="directory"/> and keeps the
    /// newest <paramref name="keep"/> checkpoints.</summary>
    /// <returns>The checkpoint directory.</returns>
    /// <exception cref="IOException">A checkpoint for this step already exists (it is left untouched).</exception>
    public static string Save(string directory, MosaicBertModel model, DecoupledAdamW optimizer, State state, int keep = 3)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(keep, 1);
        Directory.CreateDirectory(directory);
        string name = Prefix + state.Step.ToString("D8", CultureInfo.InvariantCulture);
        string final = Path.Combine(directory, name);
        if (Directory.Exists(final))
            throw new IOException($"Checkpoint {final} already exists; refusing to overwrite it.");
        foreach (var stale in Directory.GetDirectories(directory, Prefix + "*.tmp-*")) Directory.Delete(stale, recursive: true);
        string tmp = final + ".tmp-" + Environment.ProcessId;
        try
        {
            PretrainedModel.Save(model, tmp);
            int p = (int)model.Layout.Count;
            var m = new float[p];
            var v = new float[p];
            model.Backend.Download(optimizer.M, m);
            model.Backend.Download(optimizer.V, v);
            new SafeTensorsWriter()
                .SetMetadata("step_count", optimizer.StepCount.ToString(CultureInfo.InvariantCulture))
                .SetMetadata("options", JsonSerializer.Serialize(optimizer.Options))
                .Add("exp_avg", m, [p])
                .Add("exp_avg_sq", v, [p])
                .Save(Path.Combine(tmp, OptimizerFile));
            var json = JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["step"] = state.Step,
                ["samples_seen"] = state.SamplesSeen,
                ["parameters"] = model.Layout.Count,
                ["extra"] = state.Extra,
            }, new JsonSerializerOptions { WriteIndented = true });
            File.WriteAllText(Path.Combine(tmp, StateFile), json);
            Directory.Move(tmp, final);
        }
        catch
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
            throw;
        }
        foreach (var old in List(directory).SkipLast(keep)) Directory.Delete(old, recursive: true);
        return final;
    }

    /// <summary>Complete checkpoints under <paramref name="directory"/>, oldest first.</summary>
    public static IReadOnlyList<string> List(string directory) => !Directory.Exists(directory) ? []
        : [.. Directory.GetDirectories(directory, Prefix + "*")
            .Where(d => !Path.GetFileName(d).Contains(".tmp-", StringComparison.Ordinal) && File.Exists(Path.Combine(d, StateFile)))
            .Order(StringComparer.Ordinal)];

    /// <summary>The newest complete checkpoint, or null.</summary>
    public static string? FindLatest(string directory) => List(directory).LastOrDefault();

    /// <summary>
    /// Restores parameters and optimizer state from a checkpoint into an existing model and optimizer of the same
    /// configuration.
    /// </summary>
    /// <exception cref="CheckpointFormatException">Files are missing, malformed or do not fit the model.</exception>
    public static State Load(string checkpoint, MosaicBertModel model, DecoupledAdamW optimizer)
    {
        using (var dir = CheckpointDirectory.Open(checkpoint))
            PretrainedModel.LoadWeights(model, dir.Tensors);
        string optimizerPath = Path.Combine(checkpoint, OptimizerFile);
        if (!File.Exists(optimizerPath)) throw new CheckpointFormatException(optimizerPath, "optimizer state is missing");
        using (var opt = SafeTensorsFile.Open(optimizerPath))
        {
            foreach (var (name, target) in new[] { ("exp_avg", optimizer.M), ("exp_avg_sq", optimizer.V) })
            {
                var info = opt.GetInfo(name);
                if (info.ElementCount != model.Layout.Count)
                    throw new CheckpointFormatException(optimizerPath, $"has {info.ElementCount} values; the model has {model.Layout.Count} parameters", name);
                model.Backend.Upload(opt.ReadFloat32(name), target);
            }
            optimizer.StepCount = int.Parse(opt.Metadata["step_count"], CultureInfo.InvariantCulture);
        }
        string statePath = Path.Combine(checkpoint, StateFile);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(statePath));
            var root = doc.RootElement;
            var extra = root.GetProperty("extra").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString() ?? "");
            return new State(root.GetProperty("step").GetInt64(), root.GetProperty("samples_seen").GetInt64(), extra);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FileNotFoundException)
        {
            throw new CheckpointFormatException(statePath, $"unreadable trainer state: {e.Message}", innerException: e);
        }
    }
}
