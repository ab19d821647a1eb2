using System.Net;
using System.Security.Cryptography;
using System.Text;

namespace MosaicBert.Hub.Tests;

/// <summary>
/// A Hugging Face hub on the loopback server, answering <c>/{org}/{name}/resolve/{revision}/{file}</c> the way the
/// real one does: small files directly (ETag = git blob id, X-Repo-Commit); LFS files with a 302 to a storage URL
/// (X-Linked-Etag = SHA-256, X-Linked-Size), served with Range support; 404 with X-Error-Code EntryNotFound or
/// RevisionNotFound; 401 for a private repository without its token; 403 GatedRepo.
/// </summary>
public sealed class FakeHub
{
    private readonly LoopbackServer _server;
    private readonly Dictionary<string, Repo> _repos = new(StringComparer.Ordinal);

    public FakeHub(LoopbackServer server)
    {
        _server = server;
        server.Map("/", HandleResolve);
        server.Map("/cdn/", HandleStorage);
    }

    public string Endpoint => _server.BaseUrl;

    public sealed class Repo
    {
        public required string Commit { get; set; }
        public Dictionary<string, string> Branches { get; } = new(StringComparer.Ordinal);
        public Dictionary<string, byte[]> Files { get; } = new(StringComparer.Ordinal);
        public HashSet<string> LfsFiles { get; } = new(StringComparer.Ordinal);
        public string? Token { get; set; }
        public bool Gated { get; set; }

        /// <summary>Storage GETs of a file that are cut after half the bytes, counted down per request.</summary>
        public Dictionary<string, int> DropsLeft { get; } = new(StringComparer.Ordinal);

        /// <summary>LFS files whose stored bytes differ from what their SHA-256 announces.</summary>
        public HashSet<string> Corrupt { get; } = new(StringComparer.Ordinal);
    }

    public Repo AddRepo(string repoId, IReadOnlyDictionary<string, byte[]> files, IEnumerable<string>? lfs = null)
    {
        var repo = new Repo { Commit = Convert.ToHexStringLower(SHA1.HashData(Encoding.UTF8.GetBytes(repoId + files.Count))) };
        repo.Branches["main"] = repo.Commit;
        foreach (var (name, bytes) in files) repo.Files[name] = bytes;
        foreach (var name in lfs ?? []) repo.LfsFiles.Add(name);
        lock (_repos) _repos[repoId] = repo;
        return repo;
    }

    public static string Sha256(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    /// <summary>The git blob id: SHA-1 of "blob {length}\0" + content.</summary>
    public static string GitBlobId(byte[] bytes) =>
        Convert.ToHexStringLower(SHA1.HashData([.. Encoding.ASCII.GetBytes($"blob {bytes.Length}\0"), .. bytes]));

    private void HandleResolve(HttpListenerContext c)
    {
        // /{org}/{name}/resolve/{revision}/{file...}
        var parts = c.Request.Url!.AbsolutePath.TrimStart('/').Split('/');
        if (parts.Length < 5 || parts[2] != "resolve") { LoopbackServer.Send(c, 404, [], null); return; }
        var repoId = parts[0] + "/" + parts[1];
        var revision = Uri.UnescapeDataString(parts[3]);
        var file = string.Join('/', parts[4..].Select(Uri.UnescapeDataString));
        Repo? repo;
        lock (_repos) _repos.TryGetValue(repoId, out repo);
        var auth = c.Request.Headers["Authorization"];
        if (repo is null || (repo.Token is not null && auth != "Bearer " + repo.Token))
        {
            c.Response.Headers["X-Error-Code"] = "RepoNotFound";
            c.Response.Headers["X-Error-Message"] = "Repository not found";
            LoopbackServer.Send(c, 401, [], null);
            return;
        }
        if (repo.Gated)
        {
            c.Response.Headers["X-Error-Code"] = "GatedRepo";
            c.Response.Headers["X-Error-Message"] = "Access to this model is restricted.";
            LoopbackServer.Send(c, 403, [], null);
            return;
        }
        var commit = revision == repo.Commit ? repo.Commit : repo.Branches.GetValueOrDefault(revision);
        if (commit is null)
        {
            c.Response.Headers["X-Error-Code"] = "RevisionNotFound";
            LoopbackServer.Send(c, 404, [], null);
            return;
        }
        c.Response.Headers["X-Repo-Commit"] = commit;
        if (!repo.Files.TryGetValue(file, out var bytes))
        {
            c.Response.Headers["X-Error-Code"] = "EntryNotFound";
            LoopbackServer.Send(c, 404, [], null);
            return;
        }
        if (repo.LfsFiles.Contains(file))
        {
            var sha = Sha256(bytes);
            c.Response.Headers["X-Linked-Etag"] = $"\"{sha}\"";
            c.Response.Headers["X-Linked-Size"] = bytes.Length.ToString();
            c.Response.Headers["ETag"] = $"\"{GitBlobId(Encoding.ASCII.GetBytes("pointer " + sha))}\"";
            c.Response.Headers["Location"] = $"{_server.BaseUrl}/cdn/{repoId}/{sha}?file={Uri.EscapeDataString(file)}";
            LoopbackServer.Send(c, 302, [], null);
            return;
        }
        c.Response.Headers["ETag"] = $"\"{GitBlobId(bytes)}\"";
        LoopbackServer.Send(c, 200, bytes);
    }

    private void HandleStorage(HttpListenerContext c)
    {
        // /cdn/{org}/{name}/{sha256}?file=...
        var parts = c.Request.Url!.AbsolutePath.Split('/');
        var repoId = parts[2] + "/" + parts[3];
        var file = c.Request.QueryString["file"] ?? "";
        Repo? repo;
        lock (_repos) _repos.TryGetValue(repoId, out repo);
        if (repo is null || !repo.Files.TryGetValue(file, out var bytes)) { LoopbackServer.Send(c, 404, [], null); return; }
        if (repo.Corrupt.Contains(file)) { bytes = (byte[])bytes.Clone(); bytes[bytes.Length / 2] ^= 0xFF; }
        long start = 0;
        if (c.Request.Headers["Range"] is { } range && range.StartsWith("bytes=", StringComparison.Ordinal) && range.EndsWith('-'))
            start = long.Parse(range["bytes=".Length..^1]);
        var body = bytes[(int)start..];
        var status = 200;
        if (start > 0)
        {
            status = 206;
            c.Response.Headers["Content-Range"] = $"bytes {start}-{bytes.Length - 1}/{bytes.Length}";
        }
        bool drop;
        lock (repo)
        {
            drop = repo.DropsLeft.TryGetValue(file, out var left) && left > 0;
            if (drop) repo.DropsLeft[file] = left - 1;
        }
        if (drop && c.Request.HttpMethod == "GET")
        {
            LoopbackServer.SendTruncated(c, status, body, body.Length / 2, body.Length);
            return;
        }
        LoopbackServer.Send(c, status, body);
    }
}
