using System.Diagnostics;
using System.Text;
using System.Text.Json;
using MosaicBert.Model;

namespace MosaicBert.Distributed.Tests;

/// <summary>
/// <c>mosaicbert pretrain --gpus N</c> with CPU ranks as real processes: the launcher starts N ranks that rendezvous,
/// train and match one process; killing one rank makes the others exit within seconds naming it, the launcher
/// returns the killed rank's code, and the run resumes from the last checkpoint at another world size.
/// </summary>
public sealed class PretrainGpusProcessTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mosaicbert-ddp-process-");

    public void Dispose()
    {
        try
        {
            _dir.Delete(recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private string Setup()
    {
        var vocab = new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" }
            .Concat("abcdefghijklmnopqrstuvwxyz".Select(c => c.ToString())).Concat("abcdefghijklmnopqrstuvwxyz".Select(c => "##" + c)).Concat([".", ","]);
        File.WriteAllText(Path.Combine(_dir.FullName, "vocab.txt"), string.Join('\n', vocab) + "\n");
        var rng = new Random(5);
        var lines = Enumerable.Range(0, 300).Select(_ => string.Join(' ', Enumerable.Range(0, 12).Select(_ =>
            new string([.. Enumerable.Range(0, 1 + rng.Next(4)).Select(_ => (char)('a' + rng.Next(8)))]))) + ".");
        File.WriteAllText(Path.Combine(_dir.FullName, "corpus.txt"), string.Join("\n\n", lines) + "\n");
        File.WriteAllText(Path.Combine(_dir.FullName, "config.json"), """
            {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
             "alibi_starting_size": 512, "hidden_dropout_prob": 0.1}
            """);
        return _dir.FullName;
    }

    private static string[] Args(string dir, string output, long steps, int? gpus, int globalBatch = 8) =>
    [
        "pretrain", .. (gpus is int n ? new[] { "--gpus", n.ToString() } : []),
        "--Vocab", Path.Combine(dir, "vocab.txt"), "--Corpus", Path.Combine(dir, "corpus.txt"), "--ModelConfig", Path.Combine(dir, "config.json"),
        "--OutputDir", output, "--MaxSteps", steps.ToString(), "--GlobalBatchSize", globalBatch.ToString(), "--MicroBatchSize", "2", "--SequenceLength", "32",
        "--LearningRate", "0.003", "--EvalInterval", "1000", "--EvalSamples", "16", "--CheckpointInterval", "2", "--LogInterval", "1", "--Threads", "1",
    ];

    private sealed class Child(Process process, StringBuilder output, StringBuilder error) : IDisposable
    {
        public Process Process => process;
        public string Output { get { lock (output) return output.ToString(); } }
        public string Error { get { lock (error) return error.ToString(); } }

        public void Dispose()
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            process.Dispose();
        }
    }

    private static Child Start(string[] args)
    {
        var cli = Path.Combine(AppContext.BaseDirectory, "mosaicbert.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(cli);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["MOSAICBERT_RENDEZVOUS_TIMEOUT"] = "60";
        var p = Process.Start(psi)!;
        StringBuilder output = new(), error = new();
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (error) error.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return new Child(p, output, error);
    }

    private static int RunToEnd(string[] args, out string log)
    {
        using var child = Start(args);
        Assert.True(child.Process.WaitForExit(TimeSpan.FromMinutes(3)), "pretrain did not finish within 3 minutes");
        child.Process.WaitForExit();
        log = child.Output + child.Error;
        return child.Process.ExitCode;
    }

    private static Dictionary<long, double> Losses(string output) =>
        File.ReadAllLines(Path.Combine(output, "metrics.jsonl"))
            .Select(l => JsonDocument.Parse(l).RootElement)
            .Where(e => e.TryGetProperty("loss", out _))
            .ToDictionary(e => e.GetProperty("step").GetInt64(), e => e.GetProperty("loss").GetDouble());

    [Fact]
    public void TwoRanksMatchOneProcess()
    {
        string dir = Setup();
        string one = Path.Combine(dir, "one"), two = Path.Combine(dir, "two");
        Assert.Equal(0, RunToEnd(Args(dir, one, 6, null), out var log1));
        Assert.Equal(0, RunToEnd(Args(dir, two, 6, 2), out var log2));
        Assert.Contains("[rank 0]", log2);
        Assert.Contains("Data parallel: 2 ranks (tcp)", log2);
        Assert.DoesNotContain("[rank 1] info", log2); // rank 0 alone logs
        Assert.Contains("[rank 0] info", log2);
        var a = Losses(one);
        var b = Losses(two);
        Assert.Equal(a.Keys, b.Keys);
        foreach (var (step, loss) in a)
            Assert.True(Math.Abs(loss - b[step]) <= 1e-4 * loss, $"step {step}: one process {loss:R}, two ranks {b[step]:R}\n{log1}\n{log2}");
    }

    [Fact]
    public void BenchPretrainWithRanksReportsTheJobFromRankZero()
    {
        string[] args = ["bench", "pretrain", "--device", "cpu", "--preset", "tiny", "--batch", "4", "--seq", "32", "--steps", "3", "--warmup", "1"];
        Assert.Equal(0, RunToEnd([.. args, "--gpus", "2"], out var log));
        var lines = log.Split('\n', StringSplitOptions.TrimEntries).Where(l => l.Contains("{\"bench\"", StringComparison.Ordinal)).ToList();
        var line = Assert.Single(lines);   // rank 0 alone reports
        Assert.StartsWith("[rank 0] ", line);
        var json = JsonDocument.Parse(line["[rank 0] ".Length..]).RootElement;
        Assert.Equal(2, json.GetProperty("world_size").GetInt32());
        Assert.Equal("tcp", json.GetProperty("process_group").GetString());
        // The job's figures count both ranks' sequences: 2 ranks × 4 sequences × 32 tokens per step.
        Assert.Equal(256, json.GetProperty("real_tokens_per_step").GetDouble());
        Assert.Equal(0.5 * json.GetProperty("seq_per_s").GetDouble(), json.GetProperty("seq_per_s_per_rank").GetDouble(), 0.2);
        // --gpus 1: the same code with a world of one.
        Assert.Equal(0, RunToEnd([.. args, "--gpus", "1"], out log));
        Assert.Contains("[rank 0] {\"bench\":\"pretrain\"", log);
        Assert.DoesNotContain("world_size", log);
    }

    /// <summary>The pids of <paramref name="parent"/>'s children (Linux /proc).</summary>
    private static List<int> Children(int parent)
    {
        var pids = new List<int>();
        foreach (var task in Directory.GetDirectories($"/proc/{parent}/task"))
        {
            var file = Path.Combine(task, "children");
            if (!File.Exists(file)) continue;
            pids.AddRange(File.ReadAllText(file).Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse));
        }
        return pids;
    }

    private static int? RankOf(int pid)
    {
        try
        {
            var vars = File.ReadAllText($"/proc/{pid}/environ").Split('\0');
            return vars.FirstOrDefault(v => v.StartsWith("RANK=", StringComparison.Ordinal)) is string r ? int.Parse(r[5..]) : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    [Fact]
    public void AKilledRankStopsEveryRankNamingItAndTheRunResumes()
    {
        Assert.SkipUnless(OperatingSystem.IsLinux(), "finds the ranks' processes through /proc");
        string dir = Setup();
        string output = Path.Combine(dir, "run");
        using var launcher = Start(Args(dir, output, 100_000, 3, globalBatch: 12));
        string checkpoints = Path.Combine(output, "checkpoints");
        var waited = Stopwatch.StartNew();
        while (TrainingCheckpoint.FindLatest(checkpoints) is null)
        {
            Assert.False(launcher.Process.HasExited, $"the job ended early:\n{launcher.Output}\n{launcher.Error}");
            Assert.True(waited.Elapsed < TimeSpan.FromMinutes(2), $"no checkpoint within 2 minutes:\n{launcher.Output}\n{launcher.Error}");
            Thread.Sleep(100);
        }
        int victim = Children(launcher.Process.Id).Single(pid => RankOf(pid) == 2);
        var clock = Stopwatch.StartNew();
        Process.GetProcessById(victim).Kill(); // SIGKILL
        Assert.True(launcher.Process.WaitForExit(TimeSpan.FromSeconds(30)), "the job did not stop within 30 s of a rank's death");
        launcher.Process.WaitForExit();
        var elapsed = clock.Elapsed;
        string log = launcher.Output + launcher.Error;
        Assert.Equal(137, launcher.Process.ExitCode); // the killed rank's: 128 + SIGKILL
        Assert.Contains("launcher: rank 2 exited with code 137", log);
        // The survivors noticed on their own (not killed by the launcher), each naming rank 2.
        Assert.DoesNotContain("killing it", log);
        Assert.Contains("[rank 0] fail: ", log.Replace("\r", ""));
        Assert.Matches(@"\[rank 1\].*rank 1: rank 2 failed", log);
        Assert.Matches(@"\[rank 0\].*rank 0: rank 2 failed", log);
        Assert.True(elapsed < TimeSpan.FromSeconds(15), $"the job took {elapsed.TotalSeconds:F1} s to stop");

        // Resume from the last checkpoint, on 2 ranks this time, for two more steps.
        var latest = TrainingCheckpoint.FindLatest(checkpoints)!;
        long step = long.Parse(Path.GetFileName(latest)["step-".Length..]);
        Assert.Equal(0, RunToEnd(Args(dir, output, step + 2, 2, globalBatch: 12), out var resumed));
        Assert.Contains($"Resumed from {latest}", resumed);
        Assert.Contains(step + 2, Losses(output).Keys);
    }
}
