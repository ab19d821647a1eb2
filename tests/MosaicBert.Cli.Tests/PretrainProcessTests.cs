using System.Diagnostics;
using System.Text.Json;

namespace MosaicBert.Cli.Tests;

/// <summary>
/// <c>mosaicbert pretrain</c> as a real child process: killed with SIGKILL part-way and started again, its per-step
/// losses equal an uninterrupted run's; SIGTERM finishes the step, writes a checkpoint and exits 0. A tiny model
/// (vocab 64, d 32) and a generated corpus keep each run to a few seconds.
/// </summary>
public sealed class PretrainProcessTests : CliTestBase
{
    private string Setup()
    {
        var vocab = new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" }
            .Concat("abcdefghijklmnopqrstuvwxyz".Select(c => c.ToString())).Concat("abcdefghijklmnopqrstuvwxyz".Select(c => "##" + c))
            .Concat([".", ","]);
        WriteFile("vocab.txt", string.Join('\n', vocab) + "\n");
        var rng = new Random(5);
        var lines = Enumerable.Range(0, 300).Select(_ => string.Join(' ', Enumerable.Range(0, 12).Select(_ =>
            new string([.. Enumerable.Range(0, 1 + rng.Next(4)).Select(_ => (char)('a' + rng.Next(8)))]))) + ".");
        // Blank lines separate documents in plain text corpora.
        WriteFile("corpus.txt", string.Join("\n\n", lines) + "\n");
        WriteFile("config.json", """
            {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
             "alibi_starting_size": 512, "hidden_dropout_prob": 0.1}
            """);
        return TempDir;
    }

    private static string[] Args(string dir, string output, int steps) =>
    [
        "pretrain", "--Vocab", Path.Combine(dir, "vocab.txt"), "--Corpus", Path.Combine(dir, "corpus.txt"), "--ModelConfig", Path.Combine(dir, "config.json"),
        "--OutputDir", output, "--MaxSteps", steps.ToString(), "--GlobalBatchSize", "8", "--MicroBatchSize", "4", "--SequenceLength", "32",
        "--LearningRate", "0.003", "--EvalInterval", "5", "--EvalSamples", "16", "--CheckpointInterval", "3", "--LogInterval", "1", "--Threads", "1",
    ];

    private static Process Start(string[] args)
    {
        var cli = Path.Combine(AppContext.BaseDirectory, "mosaicbert.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(cli);
        foreach (var a in args) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    private static int RunToEnd(string[] args)
    {
        using var p = Start(args);
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(3)), "pretrain did not finish within 3 minutes");
        return p.ExitCode;
    }

    private static Dictionary<long, double> Losses(string output) =>
        File.ReadAllLines(Path.Combine(output, "metrics.jsonl"))
            .Select(l => JsonDocument.Parse(l).RootElement)
            .Where(e => e.TryGetProperty("loss", out _))
            .ToDictionary(e => e.GetProperty("step").GetInt64(), e => e.GetProperty("loss").GetDouble());

    private static long LastLoggedStep(string output)
    {
        var path = Path.Combine(output, "metrics.jsonl");
        if (!File.Exists(path)) return 0;
        try
        {
            return File.ReadAllLines(path).Where(l => l.Contains("\"loss\"")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64()).DefaultIfEmpty(0).Max();
        }
        catch (JsonException)
        {
            return 0; // a line being written
        }
    }

    [Fact]
    public void KilledRunResumesWithTheSameLosses()
    {
        var dir = Setup();
        var straight = Path.Combine(dir, "straight");
        Assert.Equal(0, RunToEnd(Args(dir, straight, 14)));
        var expected = Losses(straight);
        Assert.Equal(14, expected.Count);

        var killed = Path.Combine(dir, "killed");
        using (var p = Start(Args(dir, killed, 14)))
        {
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (LastLoggedStep(killed) < 8 && !p.HasExited && DateTime.UtcNow < deadline) Thread.Sleep(20);
            Assert.False(p.HasExited, "the run ended before it could be killed");
            p.Kill(entireProcessTree: true); // SIGKILL: no chance to clean up
            p.WaitForExit();
        }
        Assert.Equal(0, RunToEnd(Args(dir, killed, 14)));
        var resumed = Losses(killed);
        Assert.Equal(expected.Keys.Order(), resumed.Keys.Order());
        foreach (var (step, loss) in expected) Assert.Equal(loss, resumed[step]);
    }

    [Fact]
    public void SigtermFinishesTheStepWritesACheckpointAndExitsZero()
    {
        var dir = Setup();
        var output = Path.Combine(dir, "run");
        using var p = Start(Args(dir, output, 10_000));
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (LastLoggedStep(output) < 2 && !p.HasExited && DateTime.UtcNow < deadline) Thread.Sleep(20);
        Assert.False(p.HasExited);
        Assert.Equal(0, Kill(p.Id, 15)); // SIGTERM
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(1)));
        Assert.Equal(0, p.ExitCode);
        var checkpoints = Directory.GetDirectories(Path.Combine(output, "checkpoints"), "step-*");
        Assert.Contains(checkpoints, c => int.Parse(Path.GetFileName(c)["step-".Length..]) == LastLoggedStep(output));
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    private static int Kill(int pid, int signal) => kill(pid, signal);
}
