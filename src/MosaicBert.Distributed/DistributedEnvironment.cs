using System.Collections;
using System.Globalization;

namespace MosaicBert.Distributed;

/// <summary>
/// Where this process stands in a data-parallel job, read from the variables torchrun sets: RANK, WORLD_SIZE,
/// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT. None of them set means one process (rank 0 of 1).
/// </summary>
/// <param name="Rank">Global rank, 0..WorldSize−1.</param>
/// <param name="WorldSize">Number of processes in the job.</param>
/// <param name="LocalRank">Rank on this host; also the CUDA device this rank uses.</param>
/// <param name="LocalWorldSize">Processes on this host.</param>
/// <param name="MasterAddress">Host name or address where rank 0 listens (empty for one process).</param>
/// <param name="MasterPort">TCP port rank 0 listens on (0 for one process).</param>
public sealed record DistributedEnvironment(int Rank, int WorldSize, int LocalRank, int LocalWorldSize, string MasterAddress, int MasterPort)
{
    /// <summary>The variable names, in the order they are checked.</summary>
    public static readonly string[] VariableNames = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"];

    /// <summary>One process: rank 0 of 1, no rendezvous.</summary>
    public static DistributedEnvironment Single { get; } = new(0, 1, 0, 1, "", 0);

    /// <summary>True for rank 0 (the rank that writes checkpoints, metrics and logs).</summary>
    public bool IsRoot => Rank == 0;

    /// <summary>The CUDA device of this rank (its local rank).</summary>
    public int DeviceOrdinal => LocalRank;

    /// <summary>Reads the process environment.</summary>
    /// <exception cref="DistributedConfigurationException">A variable is missing, malformed or inconsistent; the message names it.</exception>
    public static DistributedEnvironment FromEnvironment()
    {
        var values = new Dictionary<string, string?>();
        foreach (DictionaryEntry e in Environment.GetEnvironmentVariables()) values[(string)e.Key] = e.Value as string;
        return Parse(values);
    }

    /// <summary>Reads the variables from <paramref name="variables"/> (a process environment or a test's dictionary).</summary>
    /// <exception cref="DistributedConfigurationException">A variable is missing, malformed or inconsistent; the message names it.</exception>
    public static DistributedEnvironment Parse(IReadOnlyDictionary<string, string?> variables)
    {
        string? Get(string name) => variables.TryGetValue(name, out var v) && !string.IsNullOrWhiteSpace(v) ? v.Trim() : null;
        if (VariableNames.All(n => Get(n) is null)) return Single;

        var errors = new List<string>();
        int? Int(string name, int min, int? max = null)
        {
            if (Get(name) is not string text) return null;
            if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value))
            {
                errors.Add($"{name}='{text}' is not an integer.");
                return null;
            }
            if (value < min || value > max)
            {
                errors.Add(max is null ? $"{name}={value} must be at least {min}." : $"{name}={value} must be in {min}..{max}.");
                return null;
            }
            return value;
        }

        int? world = Int("WORLD_SIZE", 1);
        if (Get("WORLD_SIZE") is null) errors.Add("WORLD_SIZE is not set, but " + string.Join(", ", VariableNames.Where(n => Get(n) is not null)) + " is: set all of RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (as torchrun does) or none.");
        int? rank = Int("RANK", 0, world is int w ? w - 1 : null);
        if (Get("RANK") is null) errors.Add("RANK is not set (this process's global rank, 0..WORLD_SIZE−1).");
        int? localWorld = Int("LOCAL_WORLD_SIZE", 1, world);
        int? localRank = Int("LOCAL_RANK", 0, localWorld is int lw ? lw - 1 : null);
        if (Get("LOCAL_RANK") is null && world > 1) errors.Add("LOCAL_RANK is not set (the rank on this host, which selects its GPU).");
        string? address = Get("MASTER_ADDR");
        int? port = Int("MASTER_PORT", 1, 65535);
        if (world > 1)
        {
            if (address is null) errors.Add("MASTER_ADDR is not set (host name or address of rank 0).");
            if (Get("MASTER_PORT") is null) errors.Add("MASTER_PORT is not set (the TCP port rank 0 listens on).");
        }
        if (errors.Count > 0)
            throw new DistributedConfigurationException("Invalid distributed environment: " + string.Join(" ", errors));
        int worldSize = world!.Value;
        return new DistributedEnvironment(rank!.Value, worldSize, localRank ?? (worldSize == 1 ? 0 : rank!.Value), localWorld ?? worldSize,
            address ?? "", port ?? 0);
    }

    /// <summary>The variables for rank <paramref name="rank"/> of a one-host job (what the launcher gives each child).</summary>
    public static Dictionary<string, string> ForLocalRank(int rank, int worldSize, string masterAddress, int masterPort) => new()
    {
        ["RANK"] = rank.ToString(CultureInfo.InvariantCulture),
        ["WORLD_SIZE"] = worldSize.ToString(CultureInfo.InvariantCulture),
        ["LOCAL_RANK"] = rank.ToString(CultureInfo.InvariantCulture),
        ["LOCAL_WORLD_SIZE"] = worldSize.ToString(CultureInfo.InvariantCulture),
        ["MASTER_ADDR"] = masterAddress,
        ["MASTER_PORT"] = masterPort.ToString(CultureInfo.InvariantCulture),
    };

    /// <inheritdoc/>
    public override string ToString() => WorldSize == 1 && MasterPort == 0 ? "single process"
        : $"rank {Rank} of {WorldSize} (local {LocalRank} of {LocalWorldSize}), rendezvous {MasterAddress}:{MasterPort}";
}

/// <summary>The distributed environment variables are missing, malformed or inconsistent.</summary>
public sealed class DistributedConfigurationException(string message) : Exception(message);
