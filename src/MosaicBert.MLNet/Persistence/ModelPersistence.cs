using System.Collections.Concurrent;
using System.Globalization;
using System.IO.Compression;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using MosaicBert.ML.Data;
using MosaicBert.ML.Trainers;
using MosaicBert.ML.Transforms;

namespace MosaicBert.ML;

/// <summary>
/// A transformer that <see cref="ModelOperationsCatalog.Save(ITransformer, DataViewSchema?, string)"/> can write
/// (ML.NET's <c>ICanSaveModel</c>, whose save context outsiders cannot use; this one is public). A transformer writes
/// its parameters as JSON into <see cref="ModelSaveContext.Parameters"/> and any files (weights, vocabulary) into
/// <see cref="ModelSaveContext.Directory"/>; the loader registered under <see cref="LoaderName"/> with
/// <see cref="ModelLoaders.Register"/> reads them back.
/// </summary>
public interface IPersistableTransformer : ITransformer
{
    /// <summary>The name its loader is registered under; written to the manifest.</summary>
    string LoaderName { get; }

    /// <summary>Writes the transformer's parameters and files.</summary>
    void Save(ModelSaveContext context);
}

/// <summary>Where a transformer saves itself: JSON parameters (into the manifest) and a folder for files (into the zip).</summary>
public sealed class ModelSaveContext
{
    private readonly string _root;

    private ModelSaveContext(string root, string relativeDirectory)
    {
        _root = root;
        RelativeDirectory = relativeDirectory;
    }

    /// <summary>The transformer's parameters, stored in the manifest.</summary>
    public JsonObject Parameters { get; } = [];

    /// <summary>The zip folder of this transformer's files (e.g. <c>model/001</c>).</summary>
    public string RelativeDirectory { get; }

    /// <summary>The folder to write this transformer's files to (created on first use); it becomes
    /// <see cref="RelativeDirectory"/> in the zip.</summary>
    public string Directory => System.IO.Directory.CreateDirectory(Path.Combine(_root, RelativeDirectory)).FullName;

    /// <summary>Saves a nested transformer (e.g. a chain's step) into sub-folder <paramref name="name"/>; returns the
    /// node to store in <see cref="Parameters"/> and pass to <see cref="ModelLoadContext.LoadNested"/>.</summary>
    /// <exception cref="NotSupportedException">The transformer is not <see cref="IPersistableTransformer"/>.</exception>
    public JsonObject SaveNested(ITransformer transformer, string name) => SaveNode(transformer, _root, $"{RelativeDirectory}/{name}");

    internal static JsonObject SaveNode(ITransformer transformer, string root, string relativeDirectory)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        if (transformer is not IPersistableTransformer persistable)
            throw new NotSupportedException($"{transformer.GetType().Name} cannot be saved: it does not implement {nameof(IPersistableTransformer)}.");
        var context = new ModelSaveContext(root, relativeDirectory);
        persistable.Save(context);
        return new JsonObject { ["loader"] = persistable.LoaderName, ["directory"] = relativeDirectory, ["parameters"] = context.Parameters };
    }
}

/// <summary>What a loader reads a transformer from: its parameters, its folder of files, and the context loading it.</summary>
public sealed class ModelLoadContext
{
    private readonly string _root;
    private readonly string _loader;

    internal string LoaderName => _loader;

    internal ModelLoadContext(MLContext context, string root, JsonObject node)
    {
        _root = root;
        Context = context;
        _loader = node["loader"]?.GetValue<string>() ?? throw new FormatException("Model manifest: a step has no 'loader'.");
        var relative = node["directory"]?.GetValue<string>() ?? throw new FormatException($"Model manifest: step '{_loader}' has no 'directory'.");
        Directory = Path.GetFullPath(Path.Combine(root, relative));
        if (!Directory.StartsWith(Path.GetFullPath(root), StringComparison.Ordinal))
            throw new FormatException($"Model manifest: step '{_loader}' points outside the archive ('{relative}').");
        Parameters = node["parameters"] as JsonObject ?? [];
    }

    /// <summary>The context the model is loaded into (for logging and seeds).</summary>
    public MLContext Context { get; }

    /// <summary>The parameters the transformer saved.</summary>
    public JsonObject Parameters { get; }

    /// <summary>The folder holding the transformer's files (absent when it saved none).</summary>
    public string Directory { get; }

    /// <summary>A required parameter.</summary>
    /// <exception cref="FormatException">It is missing or of another type.</exception>
    public T Get<T>(string name)
    {
        var node = Parameters[name] ?? throw new FormatException($"Model manifest: step '{_loader}' has no parameter '{name}'.");
        try
        {
            return node.Deserialize<T>() ?? throw new FormatException($"Model manifest: step '{_loader}' parameter '{name}' is null.");
        }
        catch (JsonException e)
        {
            throw new FormatException($"Model manifest: step '{_loader}' parameter '{name}' is not a {typeof(T).Name}: {e.Message}", e);
        }
    }

    /// <summary>An optional parameter (default when absent or null).</summary>
    public T? GetOrDefault<T>(string name) => Parameters[name] is null ? default : Get<T>(name);

    /// <summary>Loads a transformer saved with <see cref="ModelSaveContext.SaveNested"/>.</summary>
    public ITransformer LoadNested(JsonObject node) => ModelLoaders.Load(new ModelLoadContext(Context, _root, node));
}

/// <summary>
/// The loaders of saved transformers, by <see cref="IPersistableTransformer.LoaderName"/> (ML.NET's
/// <c>LoadableClass</c> registry, public). This library's transformers are registered already.
/// </summary>
public static class ModelLoaders
{
    private static readonly ConcurrentDictionary<string, Func<ModelLoadContext, ITransformer>> s_loaders = new(StringComparer.Ordinal)
    {
        [TransformerChainPersistence.LoaderName] = TransformerChainPersistence.Load,
        [ValueToKeyMappingTransformer.LoaderName] = ValueToKeyMappingTransformer.Load,
        [KeyToValueMappingTransformer.LoaderName] = KeyToValueMappingTransformer.Load,
        [MosaicBertFeaturizingTransformer.LoaderName] = MosaicBertFeaturizingTransformer.Load,
        [TextClassificationTransformer.LoaderName] = TextClassificationTransformer.Load,
        [SentenceSimilarityTransformer.LoaderName] = SentenceSimilarityTransformer.Load,
    };

    /// <summary>Registers (or replaces) the loader of transformers saved under <paramref name="loaderName"/>.</summary>
    public static void Register(string loaderName, Func<ModelLoadContext, ITransformer> load)
    {
        ArgumentException.ThrowIfNullOrEmpty(loaderName);
        ArgumentNullException.ThrowIfNull(load);
        s_loaders[loaderName] = load;
    }

    internal static ITransformer Load(ModelLoadContext context)
    {
        return s_loaders.TryGetValue(context.LoaderName, out var load)
            ? load(context)
            : throw new FormatException($"Model manifest: no loader is registered for '{context.LoaderName}' (register it with ModelLoaders.Register before loading).");
    }
}

/// <summary>Saving and loading of <see cref="TransformerChain{TLastTransformer}"/>: its steps, in order, with their scopes.</summary>
internal static class TransformerChainPersistence
{
    public const string LoaderName = "TransformerChain";

    public static void Save(ModelSaveContext context, IReadOnlyList<ITransformer> transformers, IReadOnlyList<TransformerScope> scopes)
    {
        var steps = new JsonArray();
        for (var i = 0; i < transformers.Count; i++)
        {
            var node = context.SaveNested(transformers[i], i.ToString("000", CultureInfo.InvariantCulture));
            node["scope"] = scopes[i].ToString();
            steps.Add(node);
        }
        context.Parameters["steps"] = steps;
    }

    public static ITransformer Load(ModelLoadContext context)
    {
        var steps = context.Parameters["steps"] as JsonArray ?? throw new FormatException("Model manifest: a TransformerChain has no 'steps'.");
        var transformers = new List<ITransformer>();
        var scopes = new List<TransformerScope>();
        foreach (var step in steps.OfType<JsonObject>())
        {
            scopes.Add(Enum.Parse<TransformerScope>(step["scope"]?.GetValue<string>() ?? nameof(TransformerScope.Everything)));
            transformers.Add(context.LoadNested(step));
        }
        return new TransformerChain<ITransformer>(transformers, scopes);
    }
}

/// <summary>
/// The model zip: <c>manifest.json</c> (format and library versions, the input schema, the tree of steps with their
/// parameters) and each step's files under its folder (e.g. <c>model/001/config.json</c>, <c>model.safetensors</c>,
/// <c>vocab.txt</c>).
/// </summary>
internal static class ModelArchive
{
    public const string Format = "MosaicBert.ML.Model";
    public const int FormatVersion = 1;
    private const string ManifestName = "manifest.json";

    private static readonly AsyncLocal<Action<string>?> s_beforeCommit = new();

    /// <summary>Test hook: runs after the temporary zip is complete and before it replaces the target (to simulate a
    /// crash at the worst moment). Async-local, so that it only affects the test that sets it.</summary>
    internal static Action<string>? BeforeCommit
    {
        get => s_beforeCommit.Value;
        set => s_beforeCommit.Value = value;
    }

    private static readonly JsonSerializerOptions s_indented = new() { WriteIndented = true };

    /// <summary>Writes the zip to a temporary file next to <paramref name="path"/>, flushes it to disk and renames it
    /// over <paramref name="path"/>: a failure (or a killed process) leaves the previous file as it was.</summary>
    public static void Save(ITransformer model, DataViewSchema? inputSchema, string path)
    {
        var full = Path.GetFullPath(path);
        var directory = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(directory);
        var temp = Path.Combine(directory, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Save(model, inputSchema, file);
                file.Flush(flushToDisk: true);
            }
            BeforeCommit?.Invoke(temp);
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    public static void Save(ITransformer model, DataViewSchema? inputSchema, Stream stream)
    {
        // Steps write their files into a staging folder first (checkpoint writers want paths), then it is zipped.
        var staging = Directory.CreateTempSubdirectory("mosaicbert-save-").FullName;
        try
        {
            var root = ModelSaveContext.SaveNode(model, staging, "model");
            var version = typeof(ModelArchive).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";
            var manifest = new JsonObject
            {
                ["format"] = Format,
                ["formatVersion"] = FormatVersion,
                ["library"] = new JsonObject { ["name"] = "MosaicBert.MLNet", ["version"] = version, ["dotnet"] = Environment.Version.ToString() },
                ["inputSchema"] = inputSchema is null ? null : SchemaJson.WriteSchema(inputSchema),
                ["model"] = root,
            };
            using var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true);
            using (var writer = new StreamWriter(zip.CreateEntry(ManifestName).Open()))
                writer.Write(manifest.ToJsonString(s_indented));
            foreach (var file in Directory.EnumerateFiles(staging, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            {
                var name = Path.GetRelativePath(staging, file).Replace(Path.DirectorySeparatorChar, '/');
                // Weights hardly compress; compressing them would only cost time.
                var level = name.EndsWith(".safetensors", StringComparison.Ordinal) ? CompressionLevel.NoCompression : CompressionLevel.Optimal;
                zip.CreateEntryFromFile(file, name, level);
            }
        }
        finally
        {
            TryDeleteDirectory(staging);
        }
    }

    public static ITransformer Load(MLContext context, Stream stream, out DataViewSchema inputSchema)
    {
        var staging = Directory.CreateTempSubdirectory("mosaicbert-load-").FullName;
        try
        {
            // ExtractToDirectory refuses entries that would land outside the folder ("zip slip").
            ZipFile.ExtractToDirectory(stream, staging);
            var manifestPath = Path.Combine(staging, ManifestName);
            if (!File.Exists(manifestPath)) throw new FormatException($"Not a model zip: it has no {ManifestName}.");
            var manifest = JsonNode.Parse(File.ReadAllText(manifestPath)) as JsonObject ?? throw new FormatException($"{ManifestName} is not a JSON object.");
            if (manifest["format"]?.GetValue<string>() != Format)
                throw new FormatException($"{ManifestName}: format is '{manifest["format"]}', not '{Format}'.");
            var formatVersion = manifest["formatVersion"]?.GetValue<int>() ?? 0;
            if (formatVersion > FormatVersion)
                throw new FormatException($"{ManifestName}: format version {formatVersion} is newer than this library reads ({FormatVersion}); update MosaicBert.MLNet.");
            inputSchema = manifest["inputSchema"] is JsonArray schema ? SchemaJson.ReadSchema(schema) : new DataViewSchema.Builder().ToSchema();
            var root = manifest["model"] as JsonObject ?? throw new FormatException($"{ManifestName} has no 'model'.");
            return ModelLoaders.Load(new ModelLoadContext(context, staging, root));
        }
        finally
        {
            TryDeleteDirectory(staging);
        }
    }

    /// <summary>Extracts the first MosaicBERT model folder (config.json + model.safetensors) of a model zip into a new
    /// temporary folder, for starting from a saved model (the caller deletes it).</summary>
    public static string ExtractModelDirectory(string zipPath)
    {
        using var zip = ZipFile.OpenRead(zipPath);
        var folder = zip.Entries.Select(e => e.FullName)
            .Where(n => n.EndsWith("/config.json", StringComparison.Ordinal))
            .Select(n => n[..^"config.json".Length])
            .Where(f => zip.GetEntry(f + "model.safetensors") is not null)
            .Order(StringComparer.Ordinal).FirstOrDefault()
            ?? throw new FormatException($"'{zipPath}' holds no MosaicBERT model (a folder with config.json and model.safetensors).");
        var target = Directory.CreateTempSubdirectory("mosaicbert-model-").FullName;
        foreach (var entry in zip.Entries.Where(e => e.FullName.StartsWith(folder, StringComparison.Ordinal) && e.FullName.Length > folder.Length && !e.FullName[folder.Length..].Contains('/')))
            entry.ExtractToFile(Path.Combine(target, entry.Name));
        return target;
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    internal static void TryDeleteDirectory(string path)
    {
        try
        {
            Directory.Delete(path, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

/// <summary>Column types, key values and schemas as JSON, for the manifest.</summary>
internal static class SchemaJson
{
    /// <summary>"String", "Boolean", "Single", ..., "Key&lt;N&gt;", "Vector&lt;Single&gt;", "Vector&lt;Single, N&gt;".</summary>
    public static string TypeName(DataViewType type) => type switch
    {
        TextDataViewType => "String",
        BooleanDataViewType => "Boolean",
        NumberDataViewType n => n.RawType.Name,
        KeyDataViewType k => $"Key<{k.Count}>",
        VectorDataViewType { IsKnownSize: true } v => $"Vector<{TypeName(v.ItemType)}, {v.Size}>",
        VectorDataViewType v => $"Vector<{TypeName(v.ItemType)}>",
        _ => throw new NotSupportedException($"Column type {type} cannot be saved."),
    };

    public static DataViewType ParseType(string name)
    {
        if (name.StartsWith("Vector<", StringComparison.Ordinal) && name.EndsWith('>'))
        {
            var inner = name[7..^1];
            var comma = inner.LastIndexOf(',');
            // A comma inside the item type would belong to it (keys have none, so only a trailing size counts).
            if (comma > 0 && int.TryParse(inner[(comma + 1)..], NumberStyles.Integer, CultureInfo.InvariantCulture, out var size))
                return new VectorDataViewType((PrimitiveDataViewType)ParseType(inner[..comma].Trim()), size);
            return new VectorDataViewType((PrimitiveDataViewType)ParseType(inner));
        }
        if (name.StartsWith("Key<", StringComparison.Ordinal) && name.EndsWith('>')
            && ulong.TryParse(name[4..^1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var count))
            return new KeyDataViewType(typeof(uint), count);
        return name switch
        {
            "String" => TextDataViewType.Instance,
            "Boolean" => BooleanDataViewType.Instance,
            "Single" => NumberDataViewType.Single,
            "Double" => NumberDataViewType.Double,
            "Int32" => NumberDataViewType.Int32,
            "UInt32" => NumberDataViewType.UInt32,
            "Int64" => NumberDataViewType.Int64,
            _ => throw new FormatException($"Model manifest: unknown column type '{name}'."),
        };
    }

    /// <summary>An array of values (text, numbers, booleans) as a JSON array.</summary>
    public static JsonNode Values(Array values) => JsonSerializer.SerializeToNode(values, values.GetType())!;

    /// <summary>The values of a JSON array as an array of <paramref name="itemType"/>'s raw type.</summary>
    public static Array ReadValues(JsonNode node, PrimitiveDataViewType itemType) =>
        (Array)(node.Deserialize(itemType.RawType.MakeArrayType()) ?? throw new FormatException("Model manifest: null values."));

    /// <summary>A column's KeyValues annotation ({"type": item type, "values": [...]}), or null when it has none.</summary>
    public static JsonObject? KeyValues(DataViewSchema.Annotations annotations) =>
        annotations.Schema.GetColumnOrNull(AnnotationUtils.Kinds.KeyValues) is { Type: VectorDataViewType type }
        && annotations.TryGetValue<Array>(AnnotationUtils.Kinds.KeyValues, out var values)
            ? new JsonObject { ["type"] = TypeName(type.ItemType), ["values"] = Values(values) }
            : null;

    /// <summary>Annotations holding the KeyValues written by <see cref="KeyValues"/> (empty for null).</summary>
    public static DataViewSchema.Annotations ReadKeyValues(JsonNode? node)
    {
        if (node is not JsonObject o) return DataViewSchema.Annotations.Empty;
        var item = (PrimitiveDataViewType)ParseType(o["type"]?.GetValue<string>() ?? throw new FormatException("Model manifest: key values without a type."));
        var values = ReadValues(o["values"] ?? throw new FormatException("Model manifest: key values without values."), item);
        return KeyValueAnnotations(item, values);
    }

    /// <summary>A KeyValues annotation of the given values (any raw type).</summary>
    public static DataViewSchema.Annotations KeyValueAnnotations(PrimitiveDataViewType itemType, Array values)
    {
        var builder = new DataViewSchema.Annotations.Builder();
        var type = new VectorDataViewType(itemType, values.Length);
        switch (values)
        {
            case string[] v: builder.Add(AnnotationUtils.Kinds.KeyValues, type, v); break;
            case float[] v: builder.Add(AnnotationUtils.Kinds.KeyValues, type, v); break;
            case double[] v: builder.Add(AnnotationUtils.Kinds.KeyValues, type, v); break;
            case int[] v: builder.Add(AnnotationUtils.Kinds.KeyValues, type, v); break;
            case uint[] v: builder.Add(AnnotationUtils.Kinds.KeyValues, type, v); break;
            case long[] v: builder.Add(AnnotationUtils.Kinds.KeyValues, type, v); break;
            case bool[] v: builder.Add(AnnotationUtils.Kinds.KeyValues, type, v); break;
            default: throw new NotSupportedException($"Key values of type {values.GetType().Name} are not supported.");
        }
        return builder.ToAnnotations();
    }

    public static JsonArray WriteSchema(DataViewSchema schema) =>
        [.. schema.Select(c => (JsonNode)new JsonObject
        {
            ["name"] = c.Name,
            ["type"] = TypeName(c.Type),
            ["keyValues"] = KeyValues(c.Annotations),
        })];

    public static DataViewSchema ReadSchema(JsonArray columns)
    {
        var builder = new DataViewSchema.Builder();
        foreach (var c in columns.OfType<JsonObject>())
        {
            var name = c["name"]?.GetValue<string>() ?? throw new FormatException("Model manifest: an input column has no name.");
            builder.AddColumn(name, ParseType(c["type"]?.GetValue<string>() ?? ""), ReadKeyValues(c["keyValues"]));
        }
        return builder.ToSchema();
    }
}
