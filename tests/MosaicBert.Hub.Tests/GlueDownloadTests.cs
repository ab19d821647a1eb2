using System.IO.Compression;
using System.Text;
using MosaicBert.ML.Glue;

namespace MosaicBert.Hub.Tests;

/// <summary>
/// <see cref="GlueDownloader"/> against a loopback server serving GLUE-style zips built at test time from
/// ../shared/datasets/glue (the data is never copied into the repository), and MRPC's MSR source files rebuilt from
/// its train/dev files.
/// </summary>
public sealed class GlueDownloadTests : IDisposable
{
    // Tasks whose train and dev files are both in ../shared/datasets/glue, with the zip names of the GLUE script.
    private static readonly (string Task, string Zip)[] s_zipTasks = [("CoLA", "CoLA.zip"), ("SST-2", "SST-2.zip"), ("STS-B", "STS-B.zip"), ("RTE", "RTE.zip"), ("WNLI", "WNLI.zip")];

    private readonly LoopbackServer _server = new();

    public void Dispose() => _server.Dispose();

    private static string Shared(string task, string file) => SharedData.Get($"glue/{task}/{file}");

    /// <summary>A zip laid out as the official ones: TASK/train.tsv, TASK/dev.tsv (plus a stray folder to ignore).</summary>
    private static byte[] MakeZip(string task, string folderInZip)
    {
        using var buffer = new MemoryStream();
        using (var zip = new ZipArchive(buffer, ZipArchiveMode.Create, leaveOpen: true))
        {
            zip.CreateEntry(folderInZip + "/");
            foreach (var file in new[] { "train.tsv", "dev.tsv" })
                zip.CreateEntryFromFile(Shared(task, file), $"{folderInZip}/{file}");
            using var stray = new StreamWriter(zip.CreateEntry("__MACOSX/._train.tsv").Open());
            stray.Write("resource fork");
        }
        return buffer.ToArray();
    }

    private GlueDownloadOptions Options() => new() { BaseUrl = _server.BaseUrl + "/glue", VerifyChecksums = false, Timeout = TimeSpan.FromSeconds(10) };

    private void ServeZips()
    {
        foreach (var (task, zip) in s_zipTasks) _server.MapFile($"/glue/{zip}", MakeZip(task, task));
    }

    /// <summary>msr_paraphrase_train.txt = MRPC's header + its train and dev rows interleaved; the dev ids; a test file.</summary>
    private void ServeMrpcSources()
    {
        // Decoded keeping the BOM as a character: the MSR corpus header carries it and GLUE's MRPC files inherit it.
        var utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false);
        var train = utf8.GetString(File.ReadAllBytes(Shared("MRPC", "train.tsv"))).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var dev = utf8.GetString(File.ReadAllBytes(Shared("MRPC", "dev.tsv"))).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var rows = new List<string> { train[0] };
        int t = 1, d = 1;
        while (t < train.Length || d < dev.Length)
        {
            for (var k = 0; k < 9 && t < train.Length; k++) rows.Add(train[t++]);
            if (d < dev.Length) rows.Add(dev[d++]);
        }
        var crlf = Encoding.UTF8.GetBytes(string.Join("\r\n", rows) + "\r\n"); // the MSR files have Windows line endings
        _server.MapFile("/glue/msr_paraphrase_train.txt", crlf);
        _server.MapFile("/glue/msr_paraphrase_test.txt", Encoding.UTF8.GetBytes(string.Join("\n", dev) + "\n"));
        _server.MapFile("/glue/mrpc_dev_ids.tsv", Encoding.UTF8.GetBytes(string.Join("\n", dev.Skip(1).Select(r => string.Join('\t', r.Split('\t')[1..3]))) + "\n"));
    }

    [Fact]
    public async Task TasksAreDownloadedIntoTheLayoutTheExamplesRead()
    {
        ServeZips();
        ServeMrpcSources();
        var dir = TinyModel.NewFolder();

        var results = await GlueDownloader.DownloadAsync(dir, ["cola", "SST-2", "sts-b", "RTE", "wnli", "mrpc"], Options(), TestContext.Current.CancellationToken);

        Assert.Equal(["CoLA", "SST-2", "STS-B", "RTE", "WNLI", "MRPC"], results.Select(r => r.Task));
        Assert.All(results, r => Assert.False(r.AlreadyPresent));
        foreach (var task in new[] { "CoLA", "SST-2", "STS-B", "RTE", "WNLI", "MRPC" })
        {
            foreach (var file in new[] { "train.tsv", "dev.tsv" })
                Assert.Equal(File.ReadAllBytes(Shared(task, file)), File.ReadAllBytes(Path.Combine(dir, task, file)));
        }
        Assert.False(Directory.Exists(Path.Combine(dir, "CoLA", "__MACOSX")));
        Assert.Equal(["CoLA", "MRPC", "RTE", "SST-2", "STS-B", "WNLI"], Directory.GetDirectories(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));

        // MRPC's test.tsv: renumbered, labels dropped, as the GLUE script writes it.
        var test = File.ReadAllLines(Path.Combine(dir, "MRPC", "test.tsv"));
        Assert.Equal("index\t#1 ID\t#2 ID\t#1 String\t#2 String", test[0]);
        Assert.StartsWith("0\t1355540\t1355592\tHe said", test[1], StringComparison.Ordinal);
        Assert.Equal(409, test.Length);

        // A second run leaves present tasks alone, with no request.
        var before = _server.Requests.Count;
        var again = await GlueDownloader.DownloadAsync(dir, ["CoLA"], Options(), TestContext.Current.CancellationToken);
        Assert.True(again.Single().AlreadyPresent);
        Assert.Equal(before, _server.Requests.Count);
    }

    [Fact]
    public async Task ACorruptZipIsAClearErrorAndNothingIsHalfExtracted()
    {
        var zip = MakeZip("SST-2", "SST-2");
        var corrupt = (byte[])zip.Clone();
        // Flip bytes in the middle of the compressed train.tsv: the entry's CRC-32 (or inflate) catches it.
        for (var i = zip.Length / 3; i < zip.Length / 3 + 64; i++) corrupt[i] ^= 0x5A;
        _server.MapFile("/glue/SST-2.zip", corrupt);
        _server.MapFile("/glue/CoLA.zip", zip[..(zip.Length / 2)]); // truncated: no central directory
        var dir = TinyModel.NewFolder();

        var e = await Assert.ThrowsAsync<GlueDownloadException>(() => GlueDownloader.DownloadAsync(dir, ["SST-2"], Options(), TestContext.Current.CancellationToken));
        Assert.Equal("SST-2", e.Task);
        Assert.Contains($"{_server.BaseUrl}/glue/SST-2.zip is not a valid zip", e.Message, StringComparison.Ordinal);
        e = await Assert.ThrowsAsync<GlueDownloadException>(() => GlueDownloader.DownloadAsync(dir, ["CoLA"], Options(), TestContext.Current.CancellationToken));
        Assert.Contains($"GLUE task CoLA: {_server.BaseUrl}/glue/CoLA.zip is not a valid zip", e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(dir)); // no task folder, no staging folder, no download left

        // With a task already installed, a failed replacement leaves it as it was.
        _server.MapFile("/glue/RTE.zip", MakeZip("RTE", "RTE"));
        await GlueDownloader.DownloadAsync(dir, ["RTE"], Options(), TestContext.Current.CancellationToken);
        var installed = File.ReadAllBytes(Path.Combine(dir, "RTE", "train.tsv"));
        _server.MapFile("/glue/RTE.zip", zip[..(zip.Length / 2)]);
        var replace = Options();
        replace.Overwrite = true;
        await Assert.ThrowsAsync<GlueDownloadException>(() => GlueDownloader.DownloadAsync(dir, ["RTE"], replace, TestContext.Current.CancellationToken));
        Assert.Equal(installed, File.ReadAllBytes(Path.Combine(dir, "RTE", "train.tsv")));
        Assert.Equal(["RTE"], Directory.GetFileSystemEntries(dir).Select(Path.GetFileName));
    }

    [Fact]
    public async Task AMissingFileNamesTheTaskAndTheUrl()
    {
        var dir = TinyModel.NewFolder();
        var e = await Assert.ThrowsAsync<GlueDownloadException>(() => GlueDownloader.DownloadAsync(dir, ["WNLI"], Options(), TestContext.Current.CancellationToken));
        Assert.Equal("WNLI", e.Task);
        Assert.StartsWith($"GLUE task WNLI: {_server.BaseUrl}/glue/WNLI.zip answered 404", e.Message, StringComparison.Ordinal);
        Assert.Single(_server.Requests); // a 404 is not retried
        Assert.False(Directory.Exists(Path.Combine(dir, "WNLI")));
    }

    [Fact]
    public async Task ChecksumsOfTheOfficialFilesAreVerified()
    {
        _server.MapFile("/glue/WNLI.zip", MakeZip("WNLI", "WNLI"));
        var dir = TinyModel.NewFolder();
        var options = Options();
        options.VerifyChecksums = true;
        var e = await Assert.ThrowsAsync<GlueDownloadException>(() => GlueDownloader.DownloadAsync(dir, ["WNLI"], options, TestContext.Current.CancellationToken));
        // Our zip is smaller than the official 28,999 bytes, or differs in content: either way nothing is installed.
        Assert.Contains("WNLI.zip", e.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(dir, "WNLI")));
    }

    [Fact]
    public async Task AZipWithTheWrongLayoutIsRejected()
    {
        // An SST-2 zip served as RTE: the header check of GlueReader reports it, and nothing is installed.
        _server.MapFile("/glue/RTE.zip", MakeZip("SST-2", "RTE"));
        var dir = TinyModel.NewFolder();
        var e = await Assert.ThrowsAsync<GlueDownloadException>(() => GlueDownloader.DownloadAsync(dir, ["RTE"], Options(), TestContext.Current.CancellationToken));
        Assert.Contains("not in GLUE's layout", e.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(dir, "RTE")));
    }

    [Theory]
    [InlineData("sst2", "SST-2")]
    [InlineData("SST", "SST-2")]
    [InlineData("sts-b", "STS-B")]
    [InlineData("StsB", "STS-B")]
    [InlineData("MNLI-mm", "MNLI")]
    [InlineData("qqp", "QQP")]
    public void TaskNamesAreNormalized(string name, string expected) => Assert.Equal(expected, GlueDownloader.NormalizeTaskName(name));

    [Fact]
    public void AnUnknownTaskListsTheKnownOnes() =>
        Assert.Contains("CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI, RTE, WNLI", Assert.Throws<ArgumentException>(() => GlueDownloader.NormalizeTaskName("squad")).Message, StringComparison.Ordinal);
}
