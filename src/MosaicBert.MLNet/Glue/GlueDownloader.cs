using System.IO.Compression;
using System.Text;
using MosaicBert.Hub;

namespace MosaicBert.ML.Glue;

/// <summary>Settings of <see cref="GlueDownloader"/>.</summary>
public sealed class GlueDownloadOptions
{
    /// <summary>Where the official GLUE zips are (the URLs of the GLUE download script).</summary>
    public const string DefaultBaseUrl = "https://dl.fbaipublicfiles.com/glue/data";

    /// <summary>Where the MSR paraphrase files MRPC is made from are (SentEval's copy, as the GLUE script uses).</summary>
    public const string DefaultMrpcBaseUrl = "https://dl.fbaipublicfiles.com/senteval/senteval_data";

    /// <summary>The folder URL holding {CoLA,SST-2,QQP-clean,STS-B,MNLI,QNLIv2,RTE,WNLI}.zip and mrpc_dev_ids.tsv.</summary>
    public string BaseUrl { get; set; } = DefaultBaseUrl;

    /// <summary>The folder URL holding msr_paraphrase_train.txt and msr_paraphrase_test.txt; null: SentEval's with
    /// the default <see cref="BaseUrl"/>, else <see cref="BaseUrl"/> itself (a mirror keeps every file in one folder).</summary>
    public string? MrpcBaseUrl { get; set; }

    /// <summary>Check each downloaded file's size and SHA-256 against the official files' (as recorded by the
    /// Hugging Face <c>glue</c> dataset). Turn off only for a mirror whose files legitimately differ.</summary>
    public bool VerifyChecksums { get; set; } = true;

    /// <summary>Replace a task folder that already exists (atomically: the old one stays until the new one is
    /// complete). Default false: present tasks are skipped.</summary>
    public bool Overwrite { get; set; }

    /// <summary>Attempts per file; each resumes the previous one's bytes.</summary>
    public int MaxAttempts { get; set; } = 4;

    /// <summary>How long to wait for a response or the next bytes.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Bytes downloaded per file.</summary>
    public IProgress<DownloadProgress>? Progress { get; set; }
}

/// <summary>What happened to one task.</summary>
/// <param name="Task">The task's folder name (CoLA, SST-2, ...).</param>
/// <param name="Directory">Its folder under the GLUE directory.</param>
/// <param name="AlreadyPresent">True when the folder existed and was left as it was.</param>
public sealed record GlueDownloadResult(string Task, string Directory, bool AlreadyPresent);

/// <summary>A GLUE download failed; the message names the task and the URL.</summary>
public sealed class GlueDownloadException(string message, string task, string? url = null, Exception? innerException = null)
    : IOException(message, innerException)
{
    /// <summary>The task's folder name.</summary>
    public string Task { get; } = task;

    /// <summary>The URL involved, if any.</summary>
    public string? Url { get; } = url;
}

/// <summary>
/// Downloads the GLUE tasks from the official sources (those of the GLUE benchmark's download script) into the
/// layout the examples and <see cref="GlueReader"/> read: <c>DIR/CoLA/train.tsv</c>, <c>DIR/SST-2/dev.tsv</c>,
/// <c>DIR/MNLI/dev_matched.tsv</c>, ... Each file is downloaded to <c>DIR/.download/</c> (resumable), checked
/// (size and SHA-256), extracted to a staging folder, checked again (the expected files, read by
/// <see cref="GlueReader"/>), and only then renamed into place, so a task folder is either complete or absent.
/// </summary>
/// <remarks>
/// MRPC is not distributed as a GLUE zip (licence); like the GLUE script, this builds it from the MSR paraphrase
/// corpus files hosted by SentEval: train.tsv and dev.tsv split msr_paraphrase_train.txt by the GLUE dev ids
/// (mrpc_dev_ids.tsv), test.tsv renumbers msr_paraphrase_test.txt (its labels dropped). The result equals the GLUE
/// script's files byte for byte. The diagnostic set (AX) is not downloaded.
/// </remarks>
public static class GlueDownloader
{
    private const string DownloadFolderName = ".download";

    private sealed record Source(string FileName, long Size, string Sha256);

    private sealed record TaskSource(string Task, GlueTask ReadAs, Source? Zip, params string[] RequiredFiles);

    // Sizes and SHA-256 of the official files, as recorded in the Hugging Face glue dataset's download checksums.
    private static readonly Source s_mrpcTrain = new("msr_paraphrase_train.txt", 1047044, "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89");
    private static readonly Source s_mrpcTest = new("msr_paraphrase_test.txt", 441275, "a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784");
    private static readonly Source s_mrpcDevIds = new("mrpc_dev_ids.tsv", 6222, "971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7");

    private static readonly TaskSource[] s_tasks =
    [
        new("CoLA", GlueTask.Cola, new("CoLA.zip", 376971, "f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff"), "train.tsv", "dev.tsv"),
        new("SST-2", GlueTask.Sst2, new("SST-2.zip", 7439277, "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa"), "train.tsv", "dev.tsv"),
        new("MRPC", GlueTask.Mrpc, null, "train.tsv", "dev.tsv", "test.tsv"),
        new("QQP", GlueTask.Qqp, new("QQP-clean.zip", 41696084, "40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0"), "train.tsv", "dev.tsv"),
        new("STS-B", GlueTask.StsB, new("STS-B.zip", 802872, "e60a6393de5a8b5b9bac5020a1554b54e3691f9d600b775bd131e613ac179c85"), "train.tsv", "dev.tsv"),
        new("MNLI", GlueTask.Mnli, new("MNLI.zip", 312783507, "e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633"), "train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"),
        new("QNLI", GlueTask.Qnli, new("QNLIv2.zip", 10627589, "e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5"), "train.tsv", "dev.tsv"),
        new("RTE", GlueTask.Rte, new("RTE.zip", 697150, "6bf86de103ecd335f3441bd43574d23fef87ecc695977a63b82d5efb206556ee"), "train.tsv", "dev.tsv"),
        new("WNLI", GlueTask.Wnli, new("WNLI.zip", 28999, "ae0e8e4d16f4d46d4a0a566ec7ecceccfd3fbfaa4a7a4b4e02848c0f2561ac46"), "train.tsv", "dev.tsv"),
    ];

    /// <summary>The nine tasks' folder names, in GLUE order.</summary>
    public static IReadOnlyList<string> TaskNames { get; } = [.. s_tasks.Select(t => t.Task)];

    /// <summary>The GLUE folder used when none is given: GLUE_DIR, else ./glue_data.</summary>
    public static string DefaultDirectory() =>
        Environment.GetEnvironmentVariable("GLUE_DIR") is { Length: > 0 } dir ? dir : Path.GetFullPath("glue_data");

    /// <summary>The task folder name for a name as users write it ("sst2", "SST-2", "sts-b", "mnli", "StsB", ...).</summary>
    /// <exception cref="ArgumentException">Unknown task; the message lists the known ones.</exception>
    public static string NormalizeTaskName(string name)
    {
        var key = name.Replace("-", "", StringComparison.Ordinal).Replace("_", "", StringComparison.Ordinal).Trim().ToLowerInvariant();
        key = key switch { "sst" => "sst2", "sts" => "stsb", "mnlim" or "mnlimm" or "mnlimismatched" or "mnlimatched" => "mnli", _ => key };
        return s_tasks.FirstOrDefault(t => t.Task.Replace("-", "", StringComparison.Ordinal).Equals(key, StringComparison.OrdinalIgnoreCase))?.Task
            ?? throw new ArgumentException($"Unknown GLUE task '{name}'; the tasks are {string.Join(", ", TaskNames)} (or 'all').", nameof(name));
    }

    /// <summary>Downloads the tasks (all nine when <paramref name="tasks"/> is null or holds "all") into <paramref name="directory"/>.</summary>
    /// <exception cref="GlueDownloadException">A download, check or extraction failed (earlier tasks stay installed).</exception>
    public static async Task<IReadOnlyList<GlueDownloadResult>> DownloadAsync(string directory, IEnumerable<string>? tasks = null,
        GlueDownloadOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        options ??= new GlueDownloadOptions();
        var names = tasks?.ToList() is { Count: > 0 } list && !list.Any(t => t.Equals("all", StringComparison.OrdinalIgnoreCase))
            ? list.Select(NormalizeTaskName).Distinct().ToList()
            : [.. TaskNames];
        Directory.CreateDirectory(directory);
        var downloads = Path.Combine(Path.GetFullPath(directory), DownloadFolderName);
        using var http = new HttpDownloader(options.Timeout);
        var results = new List<GlueDownloadResult>();
        try
        {
            foreach (var name in names)
                results.Add(await DownloadTaskAsync(http, s_tasks.First(t => t.Task == name), directory, downloads, options, cancellationToken).ConfigureAwait(false));
        }
        finally
        {
            // The download folder only holds partial files worth resuming; drop it when empty.
            if (Directory.Exists(downloads) && !Directory.EnumerateFileSystemEntries(downloads).Any()) Directory.Delete(downloads);
        }
        return results;
    }

    private static async Task<GlueDownloadResult> DownloadTaskAsync(HttpDownloader http, TaskSource task, string directory, string downloads,
        GlueDownloadOptions options, CancellationToken cancellationToken)
    {
        var target = Path.Combine(Path.GetFullPath(directory), task.Task);
        if (!options.Overwrite && task.RequiredFiles.All(f => File.Exists(Path.Combine(target, f))))
            return new GlueDownloadResult(task.Task, target, AlreadyPresent: true);
        var staging = Path.Combine(downloads, $"{task.Task}.staging-{Guid.NewGuid():N}");
        try
        {
            var stagedTask = Path.Combine(staging, task.Task);
            if (task.Zip is { } zip)
            {
                var zipPath = await FetchAsync(http, task.Task, options.BaseUrl, zip, downloads, options, cancellationToken).ConfigureAwait(false);
                try
                {
                    Extract(task, zipPath, Url(options.BaseUrl, zip.FileName), stagedTask);
                }
                finally
                {
                    File.Delete(zipPath); // checked whole already: a failure here is in its content, so fetch anew next time
                }
            }
            else
            {
                var mrpcBase = options.MrpcBaseUrl ?? (options.BaseUrl.TrimEnd('/') == GlueDownloadOptions.DefaultBaseUrl ? GlueDownloadOptions.DefaultMrpcBaseUrl : options.BaseUrl);
                var train = await FetchAsync(http, task.Task, mrpcBase, s_mrpcTrain, downloads, options, cancellationToken).ConfigureAwait(false);
                var test = await FetchAsync(http, task.Task, mrpcBase, s_mrpcTest, downloads, options, cancellationToken).ConfigureAwait(false);
                var ids = await FetchAsync(http, task.Task, options.BaseUrl, s_mrpcDevIds, downloads, options, cancellationToken).ConfigureAwait(false);
                try
                {
                    BuildMrpc(train, test, ids, stagedTask);
                }
                finally
                {
                    foreach (var f in new[] { train, test, ids }) File.Delete(f);
                }
            }
            Check(task, stagedTask);
            Install(stagedTask, target, downloads);
            return new GlueDownloadResult(task.Task, target, AlreadyPresent: false);
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        }
    }

    private static string Url(string baseUrl, string fileName) => baseUrl.TrimEnd('/') + "/" + fileName;

    /// <summary>Downloads one file to downloads/{name} (resuming downloads/{name}.incomplete) and checks it.</summary>
    private static async Task<string> FetchAsync(HttpDownloader http, string task, string baseUrl, Source source, string downloads,
        GlueDownloadOptions options, CancellationToken cancellationToken)
    {
        var url = Url(baseUrl, source.FileName);
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
            throw new GlueDownloadException($"GLUE task {task}: '{url}' is not an http(s) URL (check the base URL).", task, url);
        var final = Path.Combine(downloads, source.FileName);
        var partial = final + ".incomplete";
        if (File.Exists(final)) File.Delete(final); // left by an interrupted earlier run after its check: fetch again
        try
        {
            await http.DownloadAsync(uri, token: null, partial, final, options.VerifyChecksums ? source.Size : null, source.FileName, options.Progress,
                options.MaxAttempts, (r, u) => new GlueDownloadException($"GLUE task {task}: {u} answered {(int)r.StatusCode} {r.ReasonPhrase}.", task, u.ToString()),
                cancellationToken).ConfigureAwait(false);
        }
        catch (HubDownloadException e)
        {
            throw new GlueDownloadException($"GLUE task {task}: {e.Message}", task, url, e);
        }
        if (options.VerifyChecksums && HttpDownloader.Sha256(partial) is var sha && sha != source.Sha256)
        {
            File.Delete(partial);
            throw new GlueDownloadException(
                $"GLUE task {task}: {url} has SHA-256 {sha}, but the official {source.FileName} has {source.Sha256}; the file was discarded. (For a mirror whose files differ, turn checksum verification off.)",
                task, url);
        }
        File.Move(partial, final, overwrite: true);
        return final;
    }

    /// <summary>Extracts the task folder of a GLUE zip (the folder holding train.tsv, e.g. QNLI/ in QNLIv2.zip) to <paramref name="destination"/>.</summary>
    private static void Extract(TaskSource task, string zipPath, string url, string destination)
    {
        try
        {
            using var archive = ZipFile.OpenRead(zipPath);
            var top = archive.Entries.Select(e => e.FullName.Split('/')).FirstOrDefault(p => p.Length == 2 && p[1] == "train.tsv")?[0]
                ?? throw new GlueDownloadException($"GLUE task {task.Task}: {url} holds no FOLDER/train.tsv; it is not a GLUE task zip.", task.Task, url);
            var root = Path.GetFullPath(destination) + Path.DirectorySeparatorChar;
            foreach (var entry in archive.Entries)
            {
                if (!entry.FullName.StartsWith(top + "/", StringComparison.Ordinal)) continue; // e.g. __MACOSX/
                var relative = entry.FullName[(top.Length + 1)..];
                if (relative.Length == 0) continue;
                var path = Path.GetFullPath(Path.Combine(root, relative));
                if (!path.StartsWith(root, StringComparison.Ordinal) || relative.Split('/').Any(p => p == ".."))
                    throw new GlueDownloadException($"GLUE task {task.Task}: {url} has an entry outside its folder ('{entry.FullName}'); refusing to extract it.", task.Task, url);
                if (entry.FullName.EndsWith('/'))
                {
                    Directory.CreateDirectory(path);
                    continue;
                }
                Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                ExtractChecked(entry, path);
            }
        }
        catch (Exception e) when (e is InvalidDataException or IOException && e is not GlueDownloadException)
        {
            throw new GlueDownloadException($"GLUE task {task.Task}: {url} is not a valid zip ({e.Message}); the file was discarded, run again to download it anew.", task.Task, url, e);
        }
    }

    /// <summary>Extracts an entry, checking its length and CRC-32 (System.IO.Compression checks neither, so a
    /// corrupted deflate stream can inflate to wrong bytes silently).</summary>
    private static void ExtractChecked(ZipArchiveEntry entry, string path)
    {
        using (var input = entry.Open())
        using (var output = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            var buffer = new byte[1 << 16];
            var crc = Crc32.Initial;
            long length = 0;
            int n;
            while ((n = input.Read(buffer)) > 0)
            {
                crc = Crc32.Update(crc, buffer.AsSpan(0, n));
                output.Write(buffer, 0, n);
                length += n;
            }
            if (length == entry.Length && Crc32.Finish(crc) == entry.Crc32) return;
            throw new InvalidDataException($"entry '{entry.FullName}' inflates to {length} bytes with CRC-32 {Crc32.Finish(crc):x8}; the archive says {entry.Length} bytes, {entry.Crc32:x8}");
        }
    }

    /// <summary>CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zip files record it.</summary>
    private static class Crc32
    {
        private static readonly uint[] s_table = Enumerable.Range(0, 256).Select(i =>
        {
            var c = (uint)i;
            for (var k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            return c;
        }).ToArray();

        public const uint Initial = 0xFFFFFFFFu;

        public static uint Update(uint crc, ReadOnlySpan<byte> data)
        {
            foreach (var b in data) crc = s_table[(crc ^ b) & 0xFF] ^ (crc >> 8);
            return crc;
        }

        public static uint Finish(uint crc) => ~crc;
    }

    /// <summary>Builds MRPC's train/dev/test.tsv as the GLUE script does (same bytes).</summary>
    private static void BuildMrpc(string trainPath, string testPath, string devIdsPath, string destination)
    {
        Directory.CreateDirectory(destination);
        var devIds = new HashSet<(string, string)>();
        foreach (var line in Lines(devIdsPath).Where(l => l.Text.Trim().Length > 0))
        {
            var parts = line.Text.Trim().Split('\t');
            if (parts.Length != 2) throw Bad(devIdsPath, line.Number, $"expected 2 tab-separated ids, found {parts.Length} field(s)");
            devIds.Add((parts[0], parts[1]));
        }
        var utf8 = new UTF8Encoding(false);
        using (var train = new StreamWriter(Path.Combine(destination, "train.tsv"), false, utf8))
        using (var dev = new StreamWriter(Path.Combine(destination, "dev.tsv"), false, utf8))
        {
            var first = true;
            foreach (var line in Lines(trainPath))
            {
                if (first)
                {
                    // The header goes to both files as it is (with the corpus's BOM, which GLUE's MRPC files keep).
                    train.Write(line.Text + "\n");
                    dev.Write(line.Text + "\n");
                    first = false;
                    continue;
                }
                var f = Fields(trainPath, line);
                if (f is null) continue;
                (devIds.Contains((f[1], f[2])) ? dev : train).Write(string.Join('\t', f) + "\n");
            }
        }
        using var test = new StreamWriter(Path.Combine(destination, "test.tsv"), false, utf8);
        test.Write("index\t#1 ID\t#2 ID\t#1 String\t#2 String\n");
        var index = 0;
        foreach (var line in Lines(testPath).Skip(1))
        {
            if (Fields(testPath, line) is { } f) test.Write($"{index++}\t{f[1]}\t{f[2]}\t{f[3]}\t{f[4]}\n");
        }
    }

    private static string[]? Fields(string path, (string Text, int Number) line)
    {
        var text = line.Text.Trim();
        if (text.Length == 0) return null;
        var f = text.Split('\t');
        return f.Length == 5 ? f : throw Bad(path, line.Number, $"expected 5 tab-separated fields (Quality, #1 ID, #2 ID, #1 String, #2 String), found {f.Length}");
    }

    private static GlueDownloadException Bad(string path, int line, string problem) =>
        new($"GLUE task MRPC: {path}:{line}: {problem}.", "MRPC");

    /// <summary>Lines without their line ending (\n or \r\n), numbered from 1; a BOM is kept as text.</summary>
    private static IEnumerable<(string Text, int Number)> Lines(string path)
    {
        var text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(File.ReadAllBytes(path));
        var lines = text.Split('\n');
        var count = lines.Length - (lines[^1].Length == 0 ? 1 : 0);
        for (var i = 0; i < count; i++) yield return (lines[i].TrimEnd('\r'), i + 1);
    }

    /// <summary>Checks that the extracted task has its files and that they read as the task's GLUE files.</summary>
    private static void Check(TaskSource task, string folder)
    {
        foreach (var file in task.RequiredFiles)
        {
            var path = Path.Combine(folder, file);
            if (!File.Exists(path))
                throw new GlueDownloadException($"GLUE task {task.Task}: the download has no {file}; nothing was installed.", task.Task);
        }
        var info = GlueTaskInfo.Get(task.ReadAs);
        var devFiles = task.ReadAs == GlueTask.Mnli ? new[] { (GlueTask.Mnli, "dev_matched.tsv"), (GlueTask.MnliMismatched, "dev_mismatched.tsv") } : [(task.ReadAs, info.DevFileName)];
        foreach (var (readAs, file) in devFiles.Append((task.ReadAs, info.TrainFileName)))
        {
            var path = Path.Combine(folder, file);
            try
            {
                // QQP's files hold a few malformed rows that every GLUE reader skips; the point here is the layout.
                if (GlueReader.Read(readAs, path, skipMalformedRows: true).Examples.Count == 0)
                    throw new GlueDownloadException($"GLUE task {task.Task}: {file} has no examples; nothing was installed.", task.Task);
            }
            catch (FormatException e)
            {
                throw new GlueDownloadException($"GLUE task {task.Task}: the downloaded {file} is not in GLUE's layout ({e.Message}); nothing was installed.", task.Task, null, e);
            }
        }
    }

    /// <summary>Renames the staged folder into place; an existing folder is moved aside first and removed after.</summary>
    private static void Install(string staged, string target, string downloads)
    {
        string? old = null;
        if (Directory.Exists(target))
        {
            old = Path.Combine(downloads, $"{Path.GetFileName(target)}.old-{Guid.NewGuid():N}");
            Directory.Move(target, old);
        }
        try
        {
            Directory.Move(staged, target);
        }
        catch
        {
            if (old is not null) Directory.Move(old, target);
            throw;
        }
        if (old is not null) Directory.Delete(old, recursive: true);
    }
}
