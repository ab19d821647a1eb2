namespace MosaicBert.Hub;

/// <summary>
/// One model repository's folder in the Hugging Face cache layout (huggingface.co/docs/hub/local-cache):
/// <code>
/// {cache}/models--{org}--{name}/
///   blobs/{etag}                 file contents, named by ETag (the SHA-256 for LFS files, the git blob id otherwise)
///   blobs/{etag}.incomplete      a download in progress (resumed by the next attempt; never read as a file)
///   snapshots/{commit}/{file}    relative symbolic link to ../../blobs/{etag} (a copy where links are not allowed)
///   refs/{revision}              the commit hash a branch or tag resolved to (X-Repo-Commit)
///   .no_exist/{commit}/{file}    empty marker: the hub answered 404 for this file at this commit
/// </code>
/// </summary>
internal sealed class HubCache
{
    public HubCache(string cacheDirectory, string repoId)
    {
        RepoFolder = Path.Combine(Path.GetFullPath(cacheDirectory), FolderName(repoId));
    }

    /// <summary>The repository's folder, e.g. <c>~/.cache/huggingface/hub/models--mosaicml--mosaic-bert-base</c>.</summary>
    public string RepoFolder { get; }

    /// <summary>"models--org--name".</summary>
    public static string FolderName(string repoId) => "models--" + repoId.Replace("/", "--", StringComparison.Ordinal);

    public string BlobPath(string etag) => Path.Combine(RepoFolder, "blobs", etag);

    public string SnapshotFolder(string commit) => Path.Combine(RepoFolder, "snapshots", commit);

    public string SnapshotPath(string commit, string fileName) => Path.Combine(SnapshotFolder(commit), Native(fileName));

    private string RefPath(string revision) => Path.Combine(RepoFolder, "refs", Native(revision));

    private string NoExistPath(string commit, string fileName) => Path.Combine(RepoFolder, ".no_exist", commit, Native(fileName));

    /// <summary>The commit a revision is known to point to: the revision itself when it is a commit hash, else the
    /// content of refs/{revision}; null when unknown.</summary>
    public string? ResolveCommit(string revision)
    {
        if (HubReference.IsCommitHash(revision)) return revision;
        var path = RefPath(revision);
        if (!File.Exists(path)) return null;
        var commit = File.ReadAllText(path).Trim();
        return HubReference.IsCommitHash(commit) ? commit : null;
    }

    /// <summary>A cached file of a commit (the snapshot entry, whose target exists), or null.</summary>
    public string? TryGetFile(string commit, string fileName)
    {
        var path = SnapshotPath(commit, fileName);
        return File.Exists(path) ? path : null; // File.Exists follows the link: a dangling link is a miss
    }

    /// <summary>Whether a 404 for this file at this commit is remembered.</summary>
    public bool IsKnownMissing(string commit, string fileName) => File.Exists(NoExistPath(commit, fileName));

    public void MarkMissing(string commit, string fileName)
    {
        var path = NoExistPath(commit, fileName);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, []);
    }

    /// <summary>Records that <paramref name="revision"/> points to <paramref name="commit"/> (atomically, by rename).</summary>
    public void WriteRef(string revision, string commit)
    {
        if (revision == commit) return;
        var path = RefPath(revision);
        if (File.Exists(path) && File.ReadAllText(path).Trim() == commit) return;
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var temp = path + $".tmp-{Guid.NewGuid():N}";
        File.WriteAllText(temp, commit); // no newline, as huggingface_hub writes it
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>Makes snapshots/{commit}/{file} point to the blob: a relative symbolic link, replaced atomically, or
    /// a copy where the file system refuses links (Windows without developer mode).</summary>
    public string LinkSnapshot(string commit, string fileName, string etag)
    {
        var pointer = SnapshotPath(commit, fileName);
        var blob = BlobPath(etag);
        var folder = Path.GetDirectoryName(pointer)!;
        Directory.CreateDirectory(folder);
        var temp = Path.Combine(folder, $".{Path.GetFileName(pointer)}.tmp-{Guid.NewGuid():N}");
        try
        {
            File.CreateSymbolicLink(temp, Path.GetRelativePath(folder, blob));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException)
        {
            File.Copy(blob, temp);
        }
        File.Move(temp, pointer, overwrite: true);
        return pointer;
    }

    private static string Native(string relative) => relative.Replace('/', Path.DirectorySeparatorChar);
}
