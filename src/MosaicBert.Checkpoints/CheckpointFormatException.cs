using System.Text;

namespace MosaicBert.Checkpoints;

/// <summary>
/// A checkpoint file is malformed, truncated, inconsistent, or uses a feature this reader refuses (for example a
/// pickle global that is not on the allow-list). The message always names the file and, where one is involved, the
/// tensor, the archive entry and the byte offset.
/// </summary>
public sealed class CheckpointFormatException : Exception
{
    /// <summary>Creates the exception; <see cref="Exception.Message"/> is composed from all parts.</summary>
    /// <param name="filePath">The file being read.</param>
    /// <param name="detail">What is wrong, without the location.</param>
    /// <param name="tensorName">The tensor concerned, if any.</param>
    /// <param name="entryName">The zip entry concerned (torch archives), if any.</param>
    /// <param name="byteOffset">Byte offset of the problem, in <paramref name="entryName"/> when given, else in the file.</param>
    /// <param name="innerException">The underlying error, if any.</param>
    public CheckpointFormatException(string filePath, string detail, string? tensorName = null, string? entryName = null,
        long? byteOffset = null, Exception? innerException = null)
        : base(Compose(filePath, detail, tensorName, entryName, byteOffset), innerException)
    {
        FilePath = filePath;
        Detail = detail;
        TensorName = tensorName;
        EntryName = entryName;
        ByteOffset = byteOffset;
    }

    /// <summary>The file that was being read.</summary>
    public string FilePath { get; }

    /// <summary>What is wrong, without the location prefix.</summary>
    public string Detail { get; }

    /// <summary>The tensor concerned, or null when the problem is not about one tensor.</summary>
    public string? TensorName { get; }

    /// <summary>The zip entry concerned (torch archives: e.g. <c>archive/data.pkl</c>), or null.</summary>
    public string? EntryName { get; }

    /// <summary>Byte offset of the problem: inside <see cref="EntryName"/> when that is set, else inside the file.</summary>
    public long? ByteOffset { get; }

    private static string Compose(string filePath, string detail, string? tensorName, string? entryName, long? byteOffset)
    {
        var sb = new StringBuilder();
        sb.Append('\'').Append(filePath).Append('\'');
        if (entryName is not null)
        {
            sb.Append(" [entry ").Append(entryName);
            if (byteOffset is not null) sb.Append(", byte ").Append(byteOffset.Value);
            sb.Append(']');
        }
        else if (byteOffset is not null)
        {
            sb.Append(" [byte ").Append(byteOffset.Value).Append(']');
        }
        if (tensorName is not null) sb.Append(", tensor '").Append(tensorName).Append('\'');
        sb.Append(": ").Append(detail);
        return sb.ToString();
    }
}
