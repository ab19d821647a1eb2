namespace MosaicBert.Cli;

/// <summary>
/// Writes a file atomically: everything goes to a temporary file in the destination's directory, which replaces the
/// destination (rename) only on <see cref="Commit"/>. Disposing without committing deletes the temporary file, so a
/// failure never leaves a half-written file nor touches an existing one.
/// </summary>
internal sealed class AtomicFile : IDisposable
{
    private readonly FileStream _stream;
    private bool _committed;

    private AtomicFile(string path, string tempPath, FileStream stream)
    {
        Path = path;
        TempPath = tempPath;
        _stream = stream;
    }

    /// <summary>The destination, as given.</summary>
    public string Path { get; }
    /// <summary>The temporary file being written.</summary>
    public string TempPath { get; }
    /// <summary>The temporary file's stream.</summary>
    public Stream Stream => _stream;

    /// <summary>Creates the temporary file next to <paramref name="path"/>.</summary>
    /// <exception cref="CliException">The destination is a directory, or its directory does not exist or is not writable.</exception>
    public static AtomicFile Create(string path)
    {
        var full = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(full))
            throw new CliException($"{path}: is a directory; the output must be a file path");
        var dir = System.IO.Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir))
            throw new CliException($"{path}: the directory '{dir}' does not exist");
        var temp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
            return new AtomicFile(path, temp, stream);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"{path}: cannot create a file in '{dir}': {e.Message}");
        }
    }

    /// <summary>Flushes the temporary file to disk and renames it over the destination.</summary>
    public void Commit()
    {
        ObjectDisposedException.ThrowIf(_committed, this);
        try
        {
            _stream.Flush(flushToDisk: true);
            _stream.Dispose();
            File.Move(TempPath, Path, overwrite: true);
            _committed = true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"{Path}: cannot write the file: {e.Message}");
        }
    }

    /// <summary>Deletes the temporary file unless committed.</summary>
    public void Dispose()
    {
        _stream.Dispose();
        if (_committed) return;
        try
        {
            File.Delete(TempPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Best effort: the failure being reported matters more than the stray temporary file.
        }
    }
}
