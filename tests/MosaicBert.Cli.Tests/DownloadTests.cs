using System.IO.Compression;
using System.Text;
using MosaicBert.Hub.Tests;

namespace MosaicBert.Cli.Tests;

/// <summary><c>mosaicbert download model|glue</c> against a loopback hub and GLUE server.</summary>
public sealed class DownloadTests : CliTestBase
{
    private static Dictionary<string, byte[]> RepoFiles() => new()
    {
        ["config.json"] = Encoding.UTF8.GetBytes("""{"model_type": "bert", "hidden_size": 32}"""),
        ["model.safetensors"] = [.. Enumerable.Range(0, 300_000).Select(i => (byte)(i * 31 % 251))],
        ["vocab.txt"] = Encoding.UTF8.GetBytes("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n"),
    };

    [Fact]
    public void DownloadModelPrintsTheSnapshotFolderAndReportsProgress()
    {
        using var server = new LoopbackServer();
        var hub = new FakeHub(server);
        var repo = hub.AddRepo("acme/tiny", RepoFiles(), lfs: ["model.safetensors"]);
        var cache = Path.Combine(TempDir, "cache");

        var r = Run(["download", "model", "acme/tiny", "--endpoint", hub.Endpoint, "--cache-dir", cache]);

        Assert.True(r.ExitCode == 0, r.ToString());
        var snapshot = Path.Combine(cache, "models--acme--tiny", "snapshots", repo.Commit);
        Assert.Equal([snapshot], r.StdoutLines);
        Assert.Equal(repo.Files["model.safetensors"], File.ReadAllBytes(Path.Combine(snapshot, "model.safetensors")));
        Assert.Contains("model.safetensors: 0.3/0.3 MB", r.Stderr, StringComparison.Ordinal);
        Assert.Contains($"commit {repo.Commit}", r.Stderr, StringComparison.Ordinal);

        // Again: from the cache, no request; a revision by hf:// syntax.
        var before = server.Requests.Count;
        var again = Run(["download", "model", "hf://acme/tiny@main", "--endpoint", hub.Endpoint, "--cache-dir", cache]);
        Assert.Equal(0, again.ExitCode);
        Assert.Equal([snapshot], again.StdoutLines);
        Assert.Equal(before, server.Requests.Count);
    }

    [Fact]
    public void DownloadModelErrorsNameTheUrlAndExitWith1()
    {
        using var server = new LoopbackServer();
        var hub = new FakeHub(server);
        hub.AddRepo("acme/secret", RepoFiles()).Token = "hf_x";

        var r = Run(["download", "model", "acme/secret", "--endpoint", hub.Endpoint, "--cache-dir", Path.Combine(TempDir, "cache")]);
        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith($"error: {hub.Endpoint}/acme/secret/resolve/main/config.json answered 401", r.Stderr, StringComparison.Ordinal);
        Assert.Empty(r.Stdout);

        var bad = Run(["download", "model", "a/b/c", "--cache-dir", Path.Combine(TempDir, "cache")]);
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("'a/b/c' is not a valid repository id", bad.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void DownloadGlueInstallsTheTasksAndReportsA404()
    {
        using var server = new LoopbackServer();
        using (var buffer = new MemoryStream())
        {
            using (var zip = new ZipArchive(buffer, ZipArchiveMode.Create, leaveOpen: true))
            {
                zip.CreateEntryFromFile(SharedData.Get("glue/WNLI/train.tsv"), "WNLI/train.tsv");
                zip.CreateEntryFromFile(SharedData.Get("glue/WNLI/dev.tsv"), "WNLI/dev.tsv");
            }
            server.MapFile("/data/WNLI.zip", buffer.ToArray());
        }
        var dir = Path.Combine(TempDir, "glue");

        var r = Run(["download", "glue", "--tasks", "wnli", "--dir", dir, "--base-url", server.BaseUrl + "/data", "--skip-checksums"]);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal([Path.GetFullPath(dir)], r.StdoutLines);
        Assert.Equal(File.ReadAllBytes(SharedData.Get("glue/WNLI/dev.tsv")), File.ReadAllBytes(Path.Combine(dir, "WNLI", "dev.tsv")));

        var missing = Run(["download", "glue", "--tasks", "WNLI,RTE", "--dir", dir, "--base-url", server.BaseUrl + "/data", "--skip-checksums"]);
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains($"error: GLUE task RTE: {server.BaseUrl}/data/RTE.zip answered 404", missing.Stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(dir, "RTE")));

        var unknown = Run(["download", "glue", "--tasks", "squad", "--dir", dir]);
        Assert.Equal(1, unknown.ExitCode);
        Assert.Contains("Unknown GLUE task 'squad'", unknown.Stderr, StringComparison.Ordinal);
    }
}
