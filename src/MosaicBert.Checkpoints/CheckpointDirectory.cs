using System.Text.Json;
using MosaicBert.Checkpoints.Torch;

namespace MosaicBert.Checkpoints;

/// <summary>
/// A Hugging Face style model directory: <c>config.json</c> plus weights in one of (first match wins)
/// <c>model.safetensors</c>, <c>model.safetensors.index.json</c> (sharded), <c>pytorch_model.bin</c>,
/// <c>pytorch_model.bin.index.json</c> (sharded).
/// </summary>
/// <remarks>The config is only parsed as JSON here (an object is required); mapping it to a model configuration is
/// the model loader's job.</remarks>
public sealed class CheckpointDirectory : IDisposable
{
    /// <summary>Weight files looked for, in order of preference.</summary>
    public static IReadOnlyList<string> WeightFileNames { get; } =
        ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"];

    /// <summary>Name of the configuration file.</summary>
    public const string ConfigFileName = "config.json";

    private CheckpointDirectory(string directory, string weightsPath, ICheckpointTensors tensors, string? configPath, JsonDocument? config)
    {
        DirectoryPath = directory;
        WeightsPath = weightsPath;
        Tensors = tensors;
        ConfigPath = configPath;
        Config = config;
        ConfigValues = config is null
            ? new Dictionary<string, JsonElement>().AsReadOnly()
            : config.RootElement.EnumerateObject()
                .GroupBy(p => p.Name, StringComparer.Ordinal)
                .ToDictionary(g => g.Key, g => g.Last().Value, StringComparer.Ordinal)
                .AsReadOnly();
    }

    /// <summary>The directory.</summary>
    public string DirectoryPath { get; }

    /// <summary>The weight file (or index) that was opened.</summary>
    public string WeightsPath { get; }

    /// <summary>The tensors.</summary>
    public ICheckpointTensors Tensors { get; }

    /// <summary>Path of <c>config.json</c>, or null when the directory has none.</summary>
    public string? ConfigPath { get; }

    /// <summary>The parsed <c>config.json</c> (a JSON object), or null when absent. Owned by this instance.</summary>
    public JsonDocument? Config { get; }

    /// <summary>Top-level <c>config.json</c> fields by name (empty when there is no config). Valid until <see cref="Dispose"/>.</summary>
    public IReadOnlyDictionary<string, JsonElement> ConfigValues { get; }

    /// <summary>Opens the directory's weights and reads its <c>config.json</c> if present.</summary>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <exception cref="FileNotFoundException">None of <see cref="WeightFileNames"/> is present.</exception>
    /// <exception cref="CheckpointFormatException">The weights or the config are malformed.</exception>
    public static CheckpointDirectory Open(string directory, TorchLoadOptions? torchOptions = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var fullDirectory = Path.GetFullPath(directory);
        if (!Directory.Exists(fullDirectory))
            throw new DirectoryNotFoundException($"checkpoint directory '{fullDirectory}' does not exist");

        var weightsPath = WeightFileNames.Select(n => Path.Combine(fullDirectory, n)).FirstOrDefault(File.Exists)
            ?? throw new FileNotFoundException($"'{fullDirectory}' holds none of {string.Join(", ", WeightFileNames)}");

        JsonDocument? config = null;
        var configPath = Path.Combine(fullDirectory, ConfigFileName);
        if (File.Exists(configPath))
        {
            try
            {
                config = JsonDocument.Parse(File.ReadAllBytes(configPath));
            }
            catch (JsonException ex)
            {
                throw new CheckpointFormatException(configPath, $"not valid JSON: {ex.Message}", innerException: ex);
            }
            var kind = config.RootElement.ValueKind;
            if (kind != JsonValueKind.Object)
            {
                config.Dispose();
                throw new CheckpointFormatException(configPath, $"must hold a JSON object, found {kind}");
            }
        }
        else
        {
            configPath = null;
        }

        try
        {
            var tensors = weightsPath.EndsWith(".index.json", StringComparison.Ordinal)
                ? ShardedCheckpoint.Open(weightsPath, torchOptions)
                : weightsPath.EndsWith(".safetensors", StringComparison.Ordinal)
                    ? (ICheckpointTensors)SafeTensorsFile.Open(weightsPath)
                    : TorchStateDict.Load(weightsPath, torchOptions);
            return new CheckpointDirectory(fullDirectory, weightsPath, tensors, configPath, config);
        }
        catch
        {
            config?.Dispose();
            throw;
        }
    }

    /// <summary>Closes the weights and the config document.</summary>
    public void Dispose()
    {
        Tensors.Dispose();
        Config?.Dispose();
    }
}
