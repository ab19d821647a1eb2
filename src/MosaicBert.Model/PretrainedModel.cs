using MosaicBert.Checkpoints;
using MosaicBert.Tensors;

namespace MosaicBert.Model;

/// <summary>
/// Hugging Face checkpoints in and out: a directory with config.json and model.safetensors or pytorch_model.bin,
/// in MosaicBERT's names (spec §2.3) or classic BERT's (separate query/key/value, <c>cls.predictions.bias</c>).
/// </summary>
public static class PretrainedModel
{
    /// <summary>
    /// Loads a checkpoint directory. The architecture comes from config.json and the tensor names (a fused
    /// <c>Wqkv</c> means MosaicBERT); the heads from the tensor names (<c>cls.predictions.*</c>: masked LM,
    /// <c>classifier.*</c>: sequence classification) unless <paramref name="heads"/> asks for others, in which
    /// case parameters the checkpoint lacks (a new pooler and classifier) keep a fresh initialisation.
    /// </summary>
    /// <exception cref="CheckpointFormatException">Unreadable files, or tensors that do not fit the configuration;
    /// the message names the file and the tensor.</exception>
    public static MosaicBertModel Load(string directory, Backend backend, ModelHeads? heads = null, int initSeed = 0,
        ComputePrecision precision = ComputePrecision.Float32)
    {
        using var dir = CheckpointDirectory.Open(directory);
        if (dir.ConfigPath is null)
            throw new CheckpointFormatException(Path.Combine(directory, CheckpointDirectory.ConfigFileName), "config.json is missing");
        var names = dir.Tensors.TensorNames;
        bool fused = names.Any(n => n.EndsWith("attention.self.Wqkv.weight", StringComparison.Ordinal));
        bool separate = names.Any(n => n.EndsWith("attention.self.query.weight", StringComparison.Ordinal));
        if (fused && separate)
            throw new CheckpointFormatException(dir.WeightsPath, "the checkpoint holds both fused Wqkv and separate query/key/value weights");
        MosaicBertConfig config;
        try
        {
            config = MosaicBertConfig.FromJson(File.ReadAllText(dir.ConfigPath), dir.ConfigPath,
                fused ? EncoderArchitecture.MosaicBert : separate ? EncoderArchitecture.Bert : null);
        }
        catch (FormatException e)
        {
            throw new CheckpointFormatException(dir.ConfigPath, e.Message.StartsWith(dir.ConfigPath + ": ", StringComparison.Ordinal)
                ? e.Message[(dir.ConfigPath.Length + 2)..] : e.Message, innerException: e);
        }
        var found = ModelHeads.None;
        if (names.Any(n => n.StartsWith("cls.predictions.", StringComparison.Ordinal))) found |= ModelHeads.MaskedLM;
        if (names.Any(n => n.StartsWith("classifier.", StringComparison.Ordinal))) found |= ModelHeads.SequenceClassification;
        if (found.HasFlag(ModelHeads.SequenceClassification))
            config = config with { NumLabels = (int)dir.Tensors.GetInfo("classifier.weight").Shape[0] };
        var model = new MosaicBertModel(config, heads ?? found, backend, precision);
        try
        {
            model.InitializeWeights(initSeed);
            LoadWeights(model, dir.Tensors, allowMissingHeads: heads is not null);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Copies a checkpoint's tensors into a model. Every model parameter must be found (except head parameters when
    /// <paramref name="allowMissingHeads"/>), every tensor must be used or be a known extra (buffers, the tied
    /// decoder weight, the next-sentence head), and every shape must match.
    /// </summary>
    /// <param name="model">Destination.</param>
    /// <param name="tensors">Source checkpoint.</param>
    /// <param name="allowMissingHeads">Head parameters absent from the checkpoint keep their current values.</param>
    /// <param name="namePrefix">Only tensors whose names start with this are read, with the prefix removed (e.g.
    /// "model." for Composer checkpoints).</param>
    public static void LoadWeights(MosaicBertModel model, ICheckpointTensors tensors, bool allowMissingHeads = false, string namePrefix = "")
    {
        var source = new Dictionary<string, string>(StringComparer.Ordinal);
        var names = tensors.TensorNames.Where(n => n.StartsWith(namePrefix, StringComparison.Ordinal)).ToList();
        // A bare BertModel is saved without the "bert." prefix.
        bool bare = !names.Any(n => n[namePrefix.Length..].StartsWith("bert.", StringComparison.Ordinal)) &&
            tensors.Tensors.ContainsKey(namePrefix + "embeddings.word_embeddings.weight");
        foreach (var file in names)
        {
            var name = file[namePrefix.Length..];
            source[bare && (name.StartsWith("embeddings.", StringComparison.Ordinal) || name.StartsWith("encoder.", StringComparison.Ordinal) || name.StartsWith("pooler.", StringComparison.Ordinal))
                ? "bert." + name : name] = file;
        }
        var used = new HashSet<string>(StringComparer.Ordinal);
        var missing = new List<string>();
        bool classic = model.Config.Architecture == EncoderArchitecture.Bert;

        foreach (var p in model.Layout.Parameters)
        {
            string[] parts = Sources(p.Name, classic, source);
            if (parts.Length == 0)
            {
                if (allowMissingHeads && IsHead(p.Name)) continue;
                missing.Add(p.Name);
                continue;
            }
            var values = new float[p.Length];
            long offset = 0;
            foreach (var part in parts)
            {
                var file = source[part];
                var info = tensors.GetInfo(file);
                long expected = parts.Length == 1 ? p.Length : p.Length / parts.Length;
                var expectedShape = parts.Length == 1 ? p.Shape : [p.Shape[0] / parts.Length, .. p.Shape[1..]];
                if (info.ElementCount != expected || !info.Shape.Select(x => (int)x).SequenceEqual(expectedShape))
                    throw new CheckpointFormatException(tensors.SourcePath,
                        $"has shape [{string.Join(", ", info.Shape)}] but the configuration needs [{string.Join(", ", expectedShape)}]", file);
                tensors.ReadFloat32(file, values.AsSpan((int)offset, (int)expected));
                offset += expected;
                used.Add(part);
            }
            model.SetParameter(p.Name, values);
        }
        if (missing.Count > 0)
            throw new CheckpointFormatException(tensors.SourcePath,
                $"is missing ({missing.Count} parameter(s) missing: {string.Join(", ", missing.Take(5))}{(missing.Count > 5 ? ", ..." : "")})", missing[0]);
        var unknown = source.Keys.Where(k => !used.Contains(k) && !IsKnownExtra(k)).ToList();
        if (unknown.Count > 0)
            throw new CheckpointFormatException(tensors.SourcePath,
                $"is not a parameter of this {model.Config.Architecture} model with heads {model.Layout.Heads} ({unknown.Count} unknown tensor(s): {string.Join(", ", unknown.Take(5))})", source[unknown[0]]);
    }

    private static bool IsHead(string name) =>
        name.StartsWith("cls.", StringComparison.Ordinal) || name.StartsWith("classifier.", StringComparison.Ordinal) ||
        name.StartsWith("bert.pooler.", StringComparison.Ordinal);

    // Buffers and tied or unused heads that checkpoints carry and the model does not need.
    private static bool IsKnownExtra(string name) =>
        name.EndsWith(".position_ids", StringComparison.Ordinal) || name.EndsWith(".token_type_ids", StringComparison.Ordinal) ||
        name == "cls.predictions.decoder.weight" || name.StartsWith("cls.seq_relationship.", StringComparison.Ordinal) ||
        name.StartsWith("bert.pooler.", StringComparison.Ordinal) || name.StartsWith("cls.", StringComparison.Ordinal) ||
        name.StartsWith("classifier.", StringComparison.Ordinal);

    /// <summary>Checkpoint names that make up one model parameter (several when classic Q/K/V are fused).</summary>
    private static string[] Sources(string name, bool classic, Dictionary<string, string> source)
    {
        if (source.ContainsKey(name)) return [name];
        if (classic && name.Contains(".attention.self.Wqkv.", StringComparison.Ordinal))
        {
            string[] parts = [.. new[] { "query", "key", "value" }.Select(x => name.Replace("Wqkv", x, StringComparison.Ordinal))];
            return parts.All(source.ContainsKey) ? parts : [];
        }
        if (name == "cls.predictions.decoder.bias" && source.ContainsKey("cls.predictions.bias")) return ["cls.predictions.bias"];
        return [];
    }

    /// <summary>
    /// Writes the model as a Hugging Face checkpoint: config.json and model.safetensors (MosaicBERT names, or
    /// classic BERT names with Q/K/V split), both written atomically. The tied decoder weight is not duplicated.
    /// </summary>
    public static void Save(MosaicBertModel model, string directory)
    {
        Directory.CreateDirectory(directory);
        var writer = new SafeTensorsWriter();
        writer.SetMetadata("format", "pt");
        bool classic = model.Config.Architecture == EncoderArchitecture.Bert;
        foreach (var p in model.Layout.Parameters)
        {
            var values = model.GetParameter(p.Name);
            long[] shape = [.. p.Shape.Select(x => (long)x)];
            if (classic && p.Name.Contains(".attention.self.Wqkv.", StringComparison.Ordinal))
            {
                int third = values.Length / 3;
                long[] partShape = [shape[0] / 3, .. shape[1..]];
                string[] names = ["query", "key", "value"];
                for (int i = 0; i < 3; i++)
                    writer.Add(p.Name.Replace("Wqkv", names[i], StringComparison.Ordinal), values[(i * third)..((i + 1) * third)], partShape);
            }
            else
            {
                writer.Add(classic && p.Name == "cls.predictions.decoder.bias" ? "cls.predictions.bias" : p.Name, values, shape);
            }
        }
        writer.Save(Path.Combine(directory, "model.safetensors"));
        var json = model.Config.ToJson();
        var configPath = Path.Combine(directory, CheckpointDirectory.ConfigFileName);
        var tmp = configPath + ".tmp-" + Environment.ProcessId;
        File.WriteAllText(tmp, json);
        File.Move(tmp, configPath, overwrite: true);
    }
}
