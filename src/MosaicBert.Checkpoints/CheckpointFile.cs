using MosaicBert.Checkpoints.Torch;

namespace MosaicBert.Checkpoints;

/// <summary>Opens a single checkpoint file of any supported format.</summary>
public static class CheckpointFile
{
    /// <summary>
    /// Opens <paramref name="path"/> by content: a zip archive is read as a <c>torch.save</c> state dict, a file
    /// starting with a pickle opcode or a tar header is the legacy torch format (rejected with a clear message), a
    /// <c>*.index.json</c> is a sharded checkpoint, anything else is parsed as safetensors.
    /// </summary>
    /// <exception cref="CheckpointFormatException">The file is malformed or unsupported.</exception>
    public static ICheckpointTensors Open(string path, TorchLoadOptions? torchOptions = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (path.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase))
            return ShardedCheckpoint.Open(path, torchOptions);
        Span<byte> head = stackalloc byte[4];
        int n;
        using (var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete))
            n = file.ReadAtLeast(head, 4, throwOnEndOfStream: false);
        var looksLikeTorch = (n >= 2 && head[0] == (byte)'P' && head[1] == (byte)'K') || (n >= 1 && head[0] == 0x80)
            || path.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".pt", StringComparison.OrdinalIgnoreCase)
            || path.EndsWith(".pth", StringComparison.OrdinalIgnoreCase);
        return looksLikeTorch ? TorchStateDict.Load(path, torchOptions) : SafeTensorsFile.Open(path);
    }
}
