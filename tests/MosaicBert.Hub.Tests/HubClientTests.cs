using System.Collections.Concurrent;
using System.Text;

namespace MosaicBert.Hub.Tests;

public sealed class HubClientTests : IDisposable
{
    private readonly LoopbackServer _server = new();
    private readonly FakeHub _hub;

    public HubClientTests() => _hub = new FakeHub(_server);

    public void Dispose() => _server.Dispose();

    private sealed class Collect : IProgress<DownloadProgress>
    {
        public ConcurrentQueue<DownloadProgress> Reports { get; } = new();

        public void Report(DownloadProgress value) => Reports.Enqueue(value);
    }

    private HuggingFaceHubOptions Options(string? cache = null, Collect? progress = null) => new()
    {
        Endpoint = _hub.Endpoint,
        CacheDirectory = cache ?? TinyModel.NewFolder(),
        Token = null,
        Offline = false,
        Progress = progress,
        Timeout = TimeSpan.FromSeconds(10),
    };

    private int RequestCount => _server.Requests.Count;

    [Fact]
    public async Task ModelFilesLandInTheHuggingFaceCacheLayout()
    {
        var repo = _hub.AddRepo("acme/tiny-bert", TinyModel.Files(), lfs: ["model.safetensors"]);
        var progress = new Collect();
        var options = Options(progress: progress);

        var files = await PretrainedModels.DownloadAsync("acme/tiny-bert", options: options, cancellationToken: TestContext.Current.CancellationToken);

        var folder = Path.Combine(options.CacheDirectory, "models--acme--tiny-bert");
        var snapshot = Path.Combine(folder, "snapshots", repo.Commit);
        Assert.Equal(repo.Commit, files.CommitHash);
        Assert.Equal(snapshot, files.Directory);
        Assert.Equal(Path.Combine(snapshot, "model.safetensors"), files.WeightsPath);
        Assert.Equal(Path.Combine(snapshot, "vocab.txt"), files.VocabularyPath);
        // refs/main holds the commit, without a newline, as huggingface_hub writes it.
        Assert.Equal(repo.Commit, File.ReadAllText(Path.Combine(folder, "refs", "main")));
        foreach (var name in new[] { "config.json", "model.safetensors", "vocab.txt" })
        {
            var pointer = Path.Combine(snapshot, name);
            var blobName = name == "model.safetensors" ? FakeHub.Sha256(repo.Files[name]) : FakeHub.GitBlobId(repo.Files[name]);
            Assert.Equal(Path.Combine("..", "..", "blobs", blobName), new FileInfo(pointer).LinkTarget);
            Assert.Equal(repo.Files[name], File.ReadAllBytes(pointer));
        }
        Assert.Empty(Directory.GetFiles(Path.Combine(folder, "blobs"), "*.incomplete"));

        // One HEAD per file; config.json at the branch, the rest pinned to the commit it resolved to.
        var resolves = _server.Requests.Where(r => r.Path.Contains("/resolve/")).ToList();
        Assert.Equal(["HEAD /acme/tiny-bert/resolve/main/config.json", "GET /acme/tiny-bert/resolve/main/config.json",
            $"HEAD /acme/tiny-bert/resolve/{repo.Commit}/model.safetensors", $"HEAD /acme/tiny-bert/resolve/{repo.Commit}/vocab.txt",
            $"GET /acme/tiny-bert/resolve/{repo.Commit}/vocab.txt"], resolves.Select(r => $"{r.Method} {r.Path}"));
        // The LFS file came from the storage host the hub redirected to.
        Assert.Single(_server.Requests, r => r.Path.StartsWith("/cdn/acme/tiny-bert/", StringComparison.Ordinal));

        var last = progress.Reports.Last(p => p.FileName == "model.safetensors");
        Assert.Equal(repo.Files["model.safetensors"].Length, last.BytesDownloaded);
        Assert.Equal(repo.Files["model.safetensors"].Length, last.TotalBytes);
    }

    [Fact]
    public async Task ASecondResolutionIsServedFromTheCacheWithoutAnyRequest()
    {
        _hub.AddRepo("acme/tiny-bert", TinyModel.Files(), lfs: ["model.safetensors"]);
        var options = Options();
        var first = await PretrainedModels.DownloadAsync("acme/tiny-bert", options: options, cancellationToken: TestContext.Current.CancellationToken);
        var before = RequestCount;

        var second = await PretrainedModels.DownloadAsync("acme/tiny-bert", options: Options(options.CacheDirectory), cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal(first, second);
        Assert.Equal(before, RequestCount);

        // CheckForUpdates asks the hub again (HEAD only: the content is cached).
        var check = Options(options.CacheDirectory);
        check.CheckForUpdates = true;
        Assert.Equal(first, await PretrainedModels.DownloadAsync("acme/tiny-bert", options: check, cancellationToken: TestContext.Current.CancellationToken));
        Assert.All(_server.Requests.Skip(before), r => Assert.Equal("HEAD", r.Method));
    }

    [Fact]
    public async Task OfflineModeUsesTheCacheAndNamesWhatIsMissing()
    {
        var repo = _hub.AddRepo("acme/only-bin", TinyModel.Files("config.json", "vocab.txt"));
        repo.Files["pytorch_model.bin"] = Encoding.ASCII.GetBytes("not a real pickle: only resolution is tested here");
        var options = Options();
        var online = await PretrainedModels.DownloadAsync("acme/only-bin", options: options, cancellationToken: TestContext.Current.CancellationToken);
        Assert.EndsWith("pytorch_model.bin", online.WeightsPath, StringComparison.Ordinal);
        // The 404 for model.safetensors is remembered, so offline resolution knows to use pytorch_model.bin.
        Assert.True(File.Exists(Path.Combine(options.CacheDirectory, "models--acme--only-bin", ".no_exist", repo.Commit, "model.safetensors")));
        var before = RequestCount;

        var offline = Options(options.CacheDirectory);
        offline.Offline = true;
        Assert.Equal(online, await PretrainedModels.DownloadAsync("acme/only-bin", options: offline, cancellationToken: TestContext.Current.CancellationToken));
        Assert.Equal(before, RequestCount);

        var empty = Options();
        empty.Offline = true;
        var e = await Assert.ThrowsAsync<HubDownloadException>(() => PretrainedModels.DownloadAsync("acme/only-bin", options: empty, cancellationToken: TestContext.Current.CancellationToken));
        Assert.Contains("HF_HUB_OFFLINE", e.Message, StringComparison.Ordinal);
        Assert.Contains("config.json", e.Message, StringComparison.Ordinal);
        Assert.Contains(Path.Combine(empty.CacheDirectory, "models--acme--only-bin"), e.Message, StringComparison.Ordinal);
        Assert.Equal(before, RequestCount);
    }

    [Fact]
    public async Task MissingFilesPrivateAndGatedRepositoriesGiveErrorsNamingTheUrl()
    {
        var ct = TestContext.Current.CancellationToken;
        _hub.AddRepo("acme/no-weights", TinyModel.Files("config.json"));
        var e = await Assert.ThrowsAsync<HubDownloadException>(() => PretrainedModels.DownloadAsync("acme/no-weights", options: Options(), cancellationToken: ct));
        Assert.Contains($"{_hub.Endpoint}/acme/no-weights/resolve/", e.Message, StringComparison.Ordinal);
        Assert.Contains("model.safetensors nor pytorch_model.bin", e.Message, StringComparison.Ordinal);

        using (var client = new HubClient(Options()))
        {
            var missing = await Assert.ThrowsAsync<HubFileNotFoundException>(() => client.DownloadFileAsync("acme/no-weights", "vocab.txt", cancellationToken: ct));
            Assert.Contains($"{_hub.Endpoint}/acme/no-weights/resolve/main/vocab.txt", missing.Message, StringComparison.Ordinal);
            Assert.Contains("404", missing.Message, StringComparison.Ordinal);
            var revision = await Assert.ThrowsAsync<HubDownloadException>(() => client.DownloadFileAsync("acme/no-weights", "config.json", "v9", ct));
            Assert.Contains("no revision 'v9'", revision.Message, StringComparison.Ordinal);
        }

        var secret = _hub.AddRepo("acme/private", TinyModel.Files(), lfs: ["model.safetensors"]);
        secret.Token = "hf_secret";
        var denied = await Assert.ThrowsAsync<HubDownloadException>(() => PretrainedModels.DownloadAsync("acme/private", options: Options(), cancellationToken: ct));
        Assert.Contains($"{_hub.Endpoint}/acme/private/resolve/main/config.json answered 401", denied.Message, StringComparison.Ordinal);
        Assert.Contains("HF_TOKEN", denied.Message, StringComparison.Ordinal);

        var withToken = Options();
        withToken.Token = "hf_secret";
        var files = await PretrainedModels.DownloadAsync("acme/private", options: withToken, cancellationToken: ct);
        Assert.Equal(secret.Files["model.safetensors"], File.ReadAllBytes(files.WeightsPath));
        Assert.All(_server.Requests.Where(r => r.Path.StartsWith("/acme/private/", StringComparison.Ordinal) && r.Authorization is not null),
            r => Assert.Equal("Bearer hf_secret", r.Authorization));

        _hub.AddRepo("acme/gated", TinyModel.Files()).Gated = true;
        var gated = await Assert.ThrowsAsync<HubDownloadException>(() => PretrainedModels.DownloadAsync("acme/gated", options: Options(), cancellationToken: ct));
        Assert.Contains("403", gated.Message, StringComparison.Ordinal);
        Assert.Contains("gated", gated.Message, StringComparison.Ordinal);
        Assert.Contains($"{_hub.Endpoint}/acme/gated", gated.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ADroppedConnectionIsResumedWithARangeRequest()
    {
        var repo = _hub.AddRepo("acme/flaky", TinyModel.Files(), lfs: ["model.safetensors"]);
        repo.DropsLeft["model.safetensors"] = 2;
        var files = await PretrainedModels.DownloadAsync("acme/flaky", options: Options(), cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal(repo.Files["model.safetensors"], File.ReadAllBytes(files.WeightsPath));
        var storage = _server.Requests.Where(r => r.Path.StartsWith("/cdn/", StringComparison.Ordinal)).ToList();
        Assert.Equal(3, storage.Count);
        Assert.Null(storage[0].Range);
        // Each attempt asks for the bytes after those already on disk.
        var size = repo.Files["model.safetensors"].Length;
        Assert.Equal($"bytes={size / 2}-", storage[1].Range);
        Assert.Equal($"bytes={size / 2 + (size - size / 2) / 2}-", storage[2].Range);
    }

    [Fact]
    public async Task AnInterruptedDownloadNeverLeavesAPartialFileInTheCacheAndResumesNextTime()
    {
        var ct = TestContext.Current.CancellationToken;
        var repo = _hub.AddRepo("acme/down", TinyModel.Files(), lfs: ["model.safetensors"]);
        repo.DropsLeft["model.safetensors"] = 2;
        var options = Options();
        options.MaxAttempts = 2;

        var e = await Assert.ThrowsAsync<HubDownloadException>(() => PretrainedModels.DownloadAsync("acme/down", options: options, cancellationToken: ct));
        Assert.Contains($"{_hub.Endpoint}/acme/down/resolve/{repo.Commit}/model.safetensors", e.Message, StringComparison.Ordinal);
        var folder = Path.Combine(options.CacheDirectory, "models--acme--down");
        var blob = Path.Combine(folder, "blobs", FakeHub.Sha256(repo.Files["model.safetensors"]));
        Assert.False(File.Exists(blob));
        Assert.False(File.Exists(Path.Combine(folder, "snapshots", repo.Commit, "model.safetensors")));
        var partial = new FileInfo(blob + ".incomplete");
        Assert.True(partial.Exists);
        Assert.InRange(partial.Length, 1, repo.Files["model.safetensors"].Length - 1);

        // Next run: resumes from the kept bytes.
        var files = await PretrainedModels.DownloadAsync("acme/down", options: Options(options.CacheDirectory), cancellationToken: ct);
        Assert.Equal(repo.Files["model.safetensors"], File.ReadAllBytes(files.WeightsPath));
        Assert.Equal($"bytes={partial.Length}-", _server.Requests.Last(r => r.Path.StartsWith("/cdn/", StringComparison.Ordinal)).Range);
        Assert.False(File.Exists(blob + ".incomplete"));
    }

    [Fact]
    public async Task ContentThatDoesNotMatchItsSha256IsRejected()
    {
        var repo = _hub.AddRepo("acme/corrupt", TinyModel.Files(), lfs: ["model.safetensors"]);
        repo.Corrupt.Add("model.safetensors");
        var options = Options();
        var e = await Assert.ThrowsAsync<HubDownloadException>(() => PretrainedModels.DownloadAsync("acme/corrupt", options: options, cancellationToken: TestContext.Current.CancellationToken));
        Assert.Contains("SHA-256", e.Message, StringComparison.Ordinal);
        Assert.Contains("/cdn/acme/corrupt/", e.Message, StringComparison.Ordinal);
        var blobs = Path.Combine(options.CacheDirectory, "models--acme--corrupt", "blobs");
        Assert.DoesNotContain(Directory.GetFiles(blobs), f => Path.GetFileName(f).StartsWith(FakeHub.Sha256(repo.Files["model.safetensors"]), StringComparison.Ordinal));
    }

    [Fact]
    public async Task ARepositoryWithoutATokenizerResolvesWithANullVocabulary()
    {
        _hub.AddRepo("acme/no-vocab", TinyModel.Files("config.json", "model.safetensors"), lfs: ["model.safetensors"]);
        var files = await PretrainedModels.DownloadAsync("acme/no-vocab", options: Options(), cancellationToken: TestContext.Current.CancellationToken);
        Assert.Null(files.VocabularyPath);
    }

    [Theory]
    [InlineData("hf://mosaicml/mosaic-bert-base", "mosaicml/mosaic-bert-base", "main")]
    [InlineData("hf://mosaicml/mosaic-bert-base@v1.0", "mosaicml/mosaic-bert-base", "v1.0")]
    [InlineData("HF://bert-base-uncased", "bert-base-uncased", "main")]
    [InlineData("hf://acme/m@refs%2Fpr%2F1", "acme/m", "refs/pr/1")]
    public void ModelReferencesParse(string text, string repo, string revision)
    {
        var r = HubReference.ParseModel(text);
        Assert.Equal((repo, revision, (string?)null), (r.RepoId, r.Revision, r.FileName));
    }

    [Fact]
    public void FileReferencesParseAndBadOnesAreRejectedWithTheText()
    {
        var r = HubReference.ParseFile("hf://google-bert/bert-base-uncased@abc/sub/vocab.txt");
        Assert.Equal(("google-bert/bert-base-uncased", "abc", "sub/vocab.txt"), (r.RepoId, r.Revision, r.FileName!));
        foreach (var bad in new[] { "hf://a/b/c/d@x", "hf://a--b/c", "hf://a/../b", "hf://datasets/glue/x", "hf://", "hf://a/b@" })
            Assert.Contains(bad, Assert.Throws<FormatException>(() => HubReference.ParseModel(bad)).Message, StringComparison.Ordinal);
        Assert.Throws<FormatException>(() => HubReference.ParseFile("hf://org/name"));
        Assert.Throws<FormatException>(() => HubReference.ParseFile("hf://org/name/../x"));
    }

    [Fact]
    public void DefaultsComeFromTheHuggingFaceEnvironmentVariables()
    {
        Assert.True(HuggingFaceHubOptions.IsTrue("1"));
        Assert.True(HuggingFaceHubOptions.IsTrue(" yes"));
        Assert.False(HuggingFaceHubOptions.IsTrue("0"));
        Assert.False(HuggingFaceHubOptions.IsTrue(null));
        Assert.Equal("abc", HubClient.NormalizeEtag("W/\"abc\""));
        Assert.Null(HubClient.NormalizeEtag("\"../x\""));
    }
}
