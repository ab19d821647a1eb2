using System.Diagnostics;

namespace MosaicBert.Distributed.Tests;

public sealed class EnvironmentTests
{
    private static Dictionary<string, string?> Vars(params (string, string)[] pairs) => pairs.ToDictionary(p => p.Item1, p => (string?)p.Item2);

    [Fact]
    public void NoVariablesMeansOneProcess()
    {
        var env = DistributedEnvironment.Parse(Vars());
        Assert.Same(DistributedEnvironment.Single, env);
        Assert.True(env.IsRoot);
        Assert.Equal(1, env.WorldSize);
    }

    [Fact]
    public void TorchrunVariablesAreRead()
    {
        var env = DistributedEnvironment.Parse(Vars(("RANK", "5"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "4"),
            ("MASTER_ADDR", "node0"), ("MASTER_PORT", "29500")));
        Assert.Equal(new DistributedEnvironment(5, 8, 1, 4, "node0", 29500), env);
        Assert.False(env.IsRoot);
        Assert.Equal(1, env.DeviceOrdinal);
        // The launcher's variables read back as what it meant.
        var child = DistributedEnvironment.Parse(DistributedEnvironment.ForLocalRank(2, 3, "127.0.0.1", 4000).ToDictionary(p => p.Key, p => (string?)p.Value));
        Assert.Equal(new DistributedEnvironment(2, 3, 2, 3, "127.0.0.1", 4000), child);
    }

    [Fact]
    public void WorldSizeOneNeedsNoRendezvousAddress()
    {
        var env = DistributedEnvironment.Parse(Vars(("RANK", "0"), ("WORLD_SIZE", "1")));
        Assert.Equal(1, env.WorldSize);
        Assert.Equal(0, env.LocalRank);
    }

    [Theory]
    [InlineData("RANK=2", "WORLD_SIZE is not set")]
    [InlineData("RANK=2;WORLD_SIZE=2;LOCAL_RANK=0;MASTER_ADDR=h;MASTER_PORT=1", "RANK=2 must be in 0..1")]
    [InlineData("RANK=x;WORLD_SIZE=2;LOCAL_RANK=0;MASTER_ADDR=h;MASTER_PORT=1", "RANK='x' is not an integer")]
    [InlineData("RANK=0;WORLD_SIZE=0", "WORLD_SIZE=0 must be at least 1")]
    [InlineData("RANK=1;WORLD_SIZE=2;LOCAL_RANK=0;MASTER_PORT=1", "MASTER_ADDR is not set")]
    [InlineData("RANK=1;WORLD_SIZE=2;LOCAL_RANK=0;MASTER_ADDR=h", "MASTER_PORT is not set")]
    [InlineData("RANK=1;WORLD_SIZE=2;LOCAL_RANK=0;MASTER_ADDR=h;MASTER_PORT=70000", "MASTER_PORT=70000 must be in 1..65535")]
    [InlineData("RANK=1;WORLD_SIZE=2;MASTER_ADDR=h;MASTER_PORT=1", "LOCAL_RANK is not set")]
    [InlineData("RANK=1;WORLD_SIZE=4;LOCAL_RANK=2;LOCAL_WORLD_SIZE=2;MASTER_ADDR=h;MASTER_PORT=1", "LOCAL_RANK=2 must be in 0..1")]
    [InlineData("RANK=1;WORLD_SIZE=4;LOCAL_RANK=0;LOCAL_WORLD_SIZE=8;MASTER_ADDR=h;MASTER_PORT=1", "LOCAL_WORLD_SIZE=8 must be in 1..4")]
    public void BadVariablesAreNamed(string variables, string expected)
    {
        var vars = variables.Split(';').Select(kv => kv.Split('=')).ToDictionary(kv => kv[0], kv => (string?)kv[1]);
        var e = Assert.Throws<DistributedConfigurationException>(() => DistributedEnvironment.Parse(vars));
        Assert.Contains(expected, e.Message);
    }
}

public sealed class LauncherTests
{
    [Fact]
    public void GpusOptionIsTakenOutOfTheArguments()
    {
        Assert.True(Launcher.TryTakeGpus(["--MaxSteps", "5", "--gpus", "4", "--Seed", "1"], out int n, out var rest));
        Assert.Equal(4, n);
        Assert.Equal(["--MaxSteps", "5", "--Seed", "1"], rest);
        Assert.True(Launcher.TryTakeGpus(["--gpus=2"], out n, out rest));
        Assert.Equal(2, n);
        Assert.Empty(rest);
        Assert.False(Launcher.TryTakeGpus(["--MaxSteps", "5"], out _, out rest));
        Assert.Equal(["--MaxSteps", "5"], rest);
        Assert.Contains("at least 1, not '0'", Assert.Throws<ArgumentException>(() => Launcher.TryTakeGpus(["--gpus", "0"], out _, out _)).Message);
        Assert.Contains("not 'two'", Assert.Throws<ArgumentException>(() => Launcher.TryTakeGpus(["--gpus", "two"], out _, out _)).Message);
        Assert.Contains("needs a value", Assert.Throws<ArgumentException>(() => Launcher.TryTakeGpus(["--gpus"], out _, out _)).Message);
        Assert.Contains("twice", Assert.Throws<ArgumentException>(() => Launcher.TryTakeGpus(["--gpus", "1", "--gpus", "2"], out _, out _)).Message);
    }

    private static int RunShell(int n, string script, out string stdout, out string stderr, TimeSpan? grace = null)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Launcher.Run(n, "/bin/sh", ["-c", script], o, e, new LauncherOptions { StopGrace = grace ?? TimeSpan.FromSeconds(15) },
            TestContext.Current.CancellationToken);
        stdout = o.ToString();
        stderr = e.ToString();
        return code;
    }

    [Fact]
    public void EachChildGetsItsRankVariablesAndItsOutputIsPrefixed()
    {
        Assert.SkipUnless(File.Exists("/bin/sh"), "needs /bin/sh for the child program");
        int code = RunShell(3, "echo \"r=$RANK w=$WORLD_SIZE l=$LOCAL_RANK lw=$LOCAL_WORLD_SIZE a=$MASTER_ADDR\"; echo \"p=$MASTER_PORT\"; echo oops >&2",
            out var stdout, out var stderr);
        Assert.Equal(0, code);
        for (int r = 0; r < 3; r++)
        {
            Assert.Contains($"[rank {r}] r={r} w=3 l={r} lw=3 a=127.0.0.1", stdout);
            Assert.Contains($"[rank {r}] oops", stderr);
        }
        // One rendezvous port for the whole job.
        var ports = stdout.Split('\n').Where(l => l.Contains("p=")).Select(l => l[(l.IndexOf("p=", StringComparison.Ordinal) + 2)..].Trim()).Distinct().ToList();
        Assert.Single(ports);
        Assert.True(int.Parse(ports[0]) > 0);
    }

    [Fact]
    public void AFailingChildStopsTheOthersAndItsCodeIsReturned()
    {
        Assert.SkipUnless(File.Exists("/bin/sh"), "needs /bin/sh for the child program");
        var clock = Stopwatch.StartNew();
        // Rank 1 fails at once; the others would run for a minute and do not react on their own (exec: no shell
        // left behind to keep the pipes open).
        int code = RunShell(3, "if [ \"$RANK\" = 1 ]; then echo 'rank 1 gives up' >&2; exit 7; fi; exec sleep 60", out _, out var stderr,
            grace: TimeSpan.FromSeconds(1));
        Assert.Equal(7, code);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"the launcher took {clock.Elapsed.TotalSeconds:F1} s to stop the other ranks");
        Assert.Contains("[rank 1] rank 1 gives up", stderr);
        Assert.Contains("launcher: rank 1 exited with code 7; stopping the other ranks", stderr);
        Assert.Contains("did not stop within 1 s; killing it", stderr);
    }

    [Fact]
    public void ChildrenThatStopOnTheirOwnAreNotKilled()
    {
        Assert.SkipUnless(File.Exists("/bin/sh"), "needs /bin/sh for the child program");
        // Rank 0 fails; rank 1 notices (here: simply ends) with its own code; the first failure's code is returned.
        int code = RunShell(2, "if [ \"$RANK\" = 0 ]; then exit 3; fi; sleep 0.5; exit 1", out _, out var stderr);
        Assert.Equal(3, code);
        Assert.DoesNotContain("killing", stderr);
    }
}
