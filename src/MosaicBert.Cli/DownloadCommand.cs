using System.CommandLine;
using MosaicBert.Hub;
using MosaicBert.ML.Glue;

namespace MosaicBert.Cli;

/// <summary>
/// <c>mosaicbert download model REPO</c> (a hub repository into the Hugging Face cache; prints the snapshot folder on
/// stdout) and <c>mosaicbert download glue</c> (the GLUE tasks into a data folder). Progress goes to stderr.
/// </summary>
internal static class DownloadCommand
{
    public static Command Build(TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        var command = new Command("download", "Download pretrained models from a Hugging Face-style hub, or the GLUE data.");
        command.Subcommands.Add(BuildModel(stdout, stderr, cancellationToken));
        command.Subcommands.Add(BuildGlue(stdout, stderr, cancellationToken));
        return command;
    }

    private static Command BuildModel(TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        var repo = new Argument<string>("REPO") { Description = "Repository id, e.g. mosaicml/mosaic-bert-base (or hf://org/name[@revision])." };
        var revision = new Option<string?>("--revision") { Description = "Branch, tag or commit hash (default: main)." };
        var endpoint = new Option<string?>("--endpoint") { Description = $"Hub address (default: $HF_ENDPOINT, else {HuggingFaceHubOptions.DefaultEndpoint})." };
        var cacheDir = new Option<string?>("--cache-dir") { Description = "Cache folder (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)." };
        var command = new Command("model",
            "Download a model's config.json, weights (model.safetensors or pytorch_model.bin) and vocabulary (vocab.txt or tokenizer.json) " +
            "into the Hugging Face cache, and print the snapshot folder (usable as --model or ModelPath). $HF_TOKEN is sent to the hub; " +
            "$HF_HUB_OFFLINE=1 uses the cache only.")
        {
            repo, revision, endpoint, cacheDir,
        };
        command.SetAction(parseResult =>
        {
            var options = new HuggingFaceHubOptions { Progress = new ConsoleDownloadProgress(stderr) };
            if (parseResult.GetValue(endpoint) is { } e) options.Endpoint = e.TrimEnd('/');
            if (parseResult.GetValue(cacheDir) is { } c) options.CacheDirectory = c;
            var name = parseResult.GetRequiredValue(repo);
            var rev = parseResult.GetValue(revision);
            try
            {
                var reference = HubReference.IsHubPath(name) ? HubReference.ParseModel(name) : new HubReference(HubReference.ValidateRepoId(name), HubReference.DefaultRevision, null);
                var files = PretrainedModels.Download(reference.RepoId, rev ?? reference.Revision, options, cancellationToken);
                stderr.WriteLine($"{files.RepoId}@{files.Revision}: commit {files.CommitHash}; {Path.GetFileName(files.WeightsPath)}, " +
                    (files.VocabularyPath is null ? "no vocab.txt or tokenizer.json (pass a vocabulary, e.g. hf://google-bert/bert-base-uncased/vocab.txt)" : Path.GetFileName(files.VocabularyPath)));
                stdout.WriteLine(files.Directory);
                return ExitCodes.Success;
            }
            catch (Exception ex) when (ex is HubDownloadException or FormatException or ArgumentException)
            {
                stderr.WriteLine($"error: {ex.Message}");
                return ExitCodes.InputError;
            }
        });
        return command;
    }

    private static Command BuildGlue(TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        var tasks = new Option<string[]>("--tasks")
        {
            Description = $"Tasks to download, separated by spaces or commas: {string.Join(", ", GlueDownloader.TaskNames)} (default: all).",
            AllowMultipleArgumentsPerToken = true,
        };
        var dir = new Option<string?>("--dir") { Description = "GLUE folder to fill (DIR/CoLA, DIR/SST-2, ...; default: $GLUE_DIR, else ./glue_data)." };
        var baseUrl = new Option<string?>("--base-url") { Description = $"Folder URL of the task zips (default: {GlueDownloadOptions.DefaultBaseUrl})." };
        var mrpcUrl = new Option<string?>("--mrpc-base-url")
        {
            Description = $"Folder URL of msr_paraphrase_train.txt / msr_paraphrase_test.txt (default: {GlueDownloadOptions.DefaultMrpcBaseUrl}, or --base-url when that is given).",
        };
        var skipChecksums = new Option<bool>("--skip-checksums") { Description = "Do not check the files' SHA-256 against the official ones (for a mirror whose files differ)." };
        var force = new Option<bool>("--force") { Description = "Replace tasks already present (the old folder stays until the new one is complete)." };
        var command = new Command("glue",
            "Download the GLUE tasks from the official sources (as the GLUE download script does; MRPC is built from the MSR paraphrase files) " +
            "into the layout the GLUE examples read. Each task folder appears complete or not at all.")
        {
            tasks, dir, baseUrl, mrpcUrl, skipChecksums, force,
        };
        command.SetAction(parseResult =>
        {
            var options = new GlueDownloadOptions
            {
                VerifyChecksums = !parseResult.GetValue(skipChecksums),
                Overwrite = parseResult.GetValue(force),
                Progress = new ConsoleDownloadProgress(stderr),
            };
            if (parseResult.GetValue(baseUrl) is { } b) options.BaseUrl = b;
            if (parseResult.GetValue(mrpcUrl) is { } m) options.MrpcBaseUrl = m;
            var directory = parseResult.GetValue(dir) ?? GlueDownloader.DefaultDirectory();
            var names = (parseResult.GetValue(tasks) ?? []).SelectMany(t => t.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList();
            try
            {
                var results = GlueDownloader.DownloadAsync(directory, names, options, cancellationToken).GetAwaiter().GetResult();
                foreach (var r in results)
                    stderr.WriteLine(r.AlreadyPresent ? $"{r.Task}: already present in {r.Directory} (--force to replace)" : $"{r.Task}: {r.Directory}");
                stdout.WriteLine(Path.GetFullPath(directory));
                return ExitCodes.Success;
            }
            catch (Exception ex) when (ex is GlueDownloadException or ArgumentException or UnauthorizedAccessException)
            {
                stderr.WriteLine($"error: {ex.Message}");
                return ExitCodes.InputError;
            }
        });
        return command;
    }
}

/// <summary>
/// Download progress on stderr: a bar redrawn in place on a terminal; on a redirected stream (logs, tests), one line
/// per file when it completes.
/// </summary>
internal sealed class ConsoleDownloadProgress(TextWriter writer) : IProgress<DownloadProgress>
{
    private const int BarWidth = 30;
    private readonly bool _interactive = ReferenceEquals(writer, Console.Error) && !Console.IsErrorRedirected;
    private readonly Lock _gate = new();
    private string? _lastLine;

    public void Report(DownloadProgress value)
    {
        var done = value.TotalBytes is long total && value.BytesDownloaded >= total;
        var size = value.TotalBytes is long t ? $"{Megabytes(value.BytesDownloaded)}/{Megabytes(t)} MB" : $"{Megabytes(value.BytesDownloaded)} MB";
        lock (_gate)
        {
            if (_interactive)
            {
                var fraction = value.TotalBytes is > 0 ? Math.Clamp((double)value.BytesDownloaded / value.TotalBytes.Value, 0, 1) : 0;
                var filled = (int)Math.Round(fraction * BarWidth);
                var line = $"\r{value.FileName,-24} [{new string('#', filled)}{new string('.', BarWidth - filled)}] {fraction,4:P0} {size}";
                if (line == _lastLine) return;
                writer.Write(line);
                if (done) writer.WriteLine();
                _lastLine = line;
            }
            else if (done)
            {
                var line = $"{value.FileName}: {size}";
                if (line == _lastLine) return;
                writer.WriteLine(line);
                _lastLine = line;
            }
        }
    }

    private static string Megabytes(long bytes) => (bytes / 1e6).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture);
}
