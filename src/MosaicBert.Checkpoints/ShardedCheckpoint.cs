using System.Text.Json;
using MosaicBert.Checkpoints.Torch;

namespace MosaicBert.Checkpoints;

/// <summary>
/// A checkpoint split over several files and described by a Hugging Face index
/// (<c>model.safetensors.index.json</c> or <c>pytorch_model.bin.index.json</c>):
/// <c>{"metadata": {...}, "weight_map": {"tensor name": "shard file name", ...}}</c>.
/// </summary>
/// <remarks>
/// Shard names must be plain file names in the index's directory. Every tensor listed must be in its shard, and every
/// tensor of a shard must be listed for that shard; otherwise <see cref="CheckpointFormatException"/>. All shards are
/// opened (and validated) up front.
/// </remarks>
public sealed class ShardedCheckpoint : ICheckpointTensors
{
    private readonly Dictionary<string, ICheckpointTensors> _owner;
    private readonly List<ICheckpointTensors> _shards;

    private ShardedCheckpoint(string path, List<ICheckpointTensors> shards, Dictionary<string, ICheckpointTensors> owner,
        IReadOnlyList<string> names)
    {
        SourcePath = path;
        _shards = shards;
        _owner = owner;
        TensorNames = names;
        Tensors = owner.ToDictionary(kv => kv.Key, kv => kv.Value.GetInfo(kv.Key), StringComparer.Ordinal).AsReadOnly();
        Shards = shards.AsReadOnly();
    }

    /// <summary>The index file.</summary>
    public string SourcePath { get; }

    /// <inheritdoc />
    public CheckpointFormat Format => CheckpointFormat.Sharded;

    /// <summary>Tensor names: shards in index order (first appearance), each shard's tensors in its own order.</summary>
    public IReadOnlyList<string> TensorNames { get; }

    /// <inheritdoc />
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <summary>The opened shards.</summary>
    public IReadOnlyList<ICheckpointTensors> Shards { get; }

    /// <summary>Reads the index and opens every shard it names.</summary>
    public static ShardedCheckpoint Open(string indexPath, TorchLoadOptions? torchOptions = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(indexPath);
        var fullPath = Path.GetFullPath(indexPath);
        var directory = Path.GetDirectoryName(fullPath)!;
        var weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
        var shardOrder = new List<string>();
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(fullPath));
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(fullPath, "index must be a JSON object with a 'weight_map' object");
            foreach (var property in map.EnumerateObject())
            {
                if (property.Value.ValueKind != JsonValueKind.String)
                    throw new CheckpointFormatException(fullPath, "weight_map value must be a shard file name", tensorName: property.Name);
                var shard = property.Value.GetString()!;
                if (shard.Length == 0 || Path.GetFileName(shard) != shard || shard is "." or ".." || shard.Contains('/') || shard.Contains('\\'))
                    throw new CheckpointFormatException(fullPath, $"shard name '{shard}' must be a plain file name in the index's directory", tensorName: property.Name);
                if (!weightMap.TryAdd(property.Name, shard))
                    throw new CheckpointFormatException(fullPath, "tensor listed twice in weight_map", tensorName: property.Name);
                if (!shardOrder.Contains(shard)) shardOrder.Add(shard);
            }
        }
        catch (JsonException ex)
        {
            throw new CheckpointFormatException(fullPath, $"index is not valid JSON: {ex.Message}", innerException: ex);
        }

        foreach (var shardName in shardOrder)
            if (!File.Exists(Path.Combine(directory, shardName)))
                throw new CheckpointFormatException(fullPath, $"shard '{shardName}' named by the index does not exist");

        var shards = new List<ICheckpointTensors>();
        try
        {
            var owner = new Dictionary<string, ICheckpointTensors>(StringComparer.Ordinal);
            var names = new List<string>();
            foreach (var shardName in shardOrder)
            {
                var shard = CheckpointFile.Open(Path.Combine(directory, shardName), torchOptions);
                shards.Add(shard);
                foreach (var name in shard.TensorNames)
                {
                    if (!weightMap.TryGetValue(name, out var listed))
                        throw new CheckpointFormatException(fullPath, $"shard '{shardName}' holds a tensor the index does not list", tensorName: name);
                    if (listed != shardName)
                        throw new CheckpointFormatException(fullPath, $"shard '{shardName}' holds the tensor but the index maps it to '{listed}'", tensorName: name);
                    owner.Add(name, shard);
                    names.Add(name);
                }
            }
            foreach (var (name, shardName) in weightMap)
                if (!owner.ContainsKey(name))
                    throw new CheckpointFormatException(fullPath, $"the index maps the tensor to shard '{shardName}', which does not hold it", tensorName: name);
            return new ShardedCheckpoint(fullPath, shards, owner, names.AsReadOnly());
        }
        catch
        {
            foreach (var s in shards) s.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public TensorInfo GetInfo(string name) => Owner(name).GetInfo(name);

    /// <summary>The shard holding a tensor.</summary>
    public ICheckpointTensors GetShard(string name) => Owner(name);

    /// <inheritdoc />
    public Stream OpenRead(string name) => Owner(name).OpenRead(name);

    /// <inheritdoc />
    public byte[] ReadBytes(string name) => Owner(name).ReadBytes(name);

    /// <inheritdoc />
    public float[] ReadFloat32(string name) => Owner(name).ReadFloat32(name);

    /// <inheritdoc />
    public void ReadFloat32(string name, Span<float> destination) => Owner(name).ReadFloat32(name, destination);

    /// <inheritdoc />
    public double[] ReadFloat64(string name) => Owner(name).ReadFloat64(name);

    /// <inheritdoc />
    public long[] ReadInt64(string name) => Owner(name).ReadInt64(name);

    /// <summary>Disposes every shard.</summary>
    public void Dispose()
    {
        foreach (var shard in _shards) shard.Dispose();
    }

    private ICheckpointTensors Owner(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _owner.TryGetValue(name, out var shard)
            ? shard
            : throw new KeyNotFoundException($"'{SourcePath}' has no tensor named '{name}'");
    }
}
