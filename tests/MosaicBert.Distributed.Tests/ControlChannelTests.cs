using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;

namespace MosaicBert.Distributed.Tests;

/// <summary>
/// The rendezvous and the control channel with in-process ranks on threads talking TCP over loopback: the payload
/// reaches every rank, host collectives agree bit for bit, and a rank that dies (its connection closes) or hangs (no
/// heartbeat) makes every other rank fail fast, naming it.
/// </summary>
public sealed class ControlChannelTests
{
    internal static readonly ControlChannelOptions Fast = new()
    {
        RendezvousTimeout = TimeSpan.FromSeconds(20),
        HeartbeatInterval = TimeSpan.FromMilliseconds(100),
        HeartbeatTimeout = TimeSpan.FromSeconds(1.5),
    };

    internal static DistributedEnvironment Env(int rank, int world, int port) => new(rank, world, rank, world, "127.0.0.1", port);

    /// <summary>Connects ranks 0..world−1 concurrently (rank 0's payload is <paramref name="payload"/>).</summary>
    internal static ControlChannel[] ConnectAll(int world, byte[]? payload = null, ControlChannelOptions? options = null)
    {
        int port = Launcher.FreePort();
        var tasks = Enumerable.Range(0, world).Select(r => Threads.Start(() =>
            ControlChannel.Connect(Env(r, world, port), r == 0 ? () => payload ?? [] : null, options ?? Fast))).ToArray();
        return [.. tasks.Select(t => Threads.Join(t, TimeSpan.FromSeconds(30)))];
    }

    private static void DisposeAll(IEnumerable<ControlChannel> channels)
    {
        foreach (var c in channels) c.Dispose();
    }

    [Fact]
    public void RendezvousDeliversRankZerosPayloadAndCollectivesAgree()
    {
        var payload = Enumerable.Range(0, 128).Select(i => (byte)(i * 7)).ToArray();
        var channels = ConnectAll(3, payload);
        try
        {
            Assert.All(channels, c => Assert.Equal(payload, c.RootPayload));
            var results = new double[3][];
            var floats = new float[3][];
            Parallel.For(0, 3, r =>
            {
                var c = channels[r];
                Span<double> sums = [r + 1, 10.0 * r];
                c.AllReduceSum(sums);
                results[r] = sums.ToArray();
                var f = new[] { 0.1f * (r + 1), -1f, r };
                c.AllReduce(f, average: true);
                floats[r] = f;
                c.Barrier();
            });
            Assert.All(results, s => Assert.Equal([6.0, 30.0], s));
            // Rank-order sum then division, the same bits on every rank.
            float expected = (0.1f * 1 + 0.1f * 2 + 0.1f * 3) / 3;
            Assert.All(floats, f => Assert.Equal([expected, -1f, 1f], f));
            Parallel.ForEach(channels, c => c.Shutdown());
            Assert.All(channels, c => Assert.Null(c.Failure));
        }
        finally
        {
            DisposeAll(channels);
        }
    }

    [Fact]
    public void RanksStartedBeforeRankZeroRetryUntilItListens()
    {
        int port = Launcher.FreePort();
        var early = Threads.Start(() => ControlChannel.Connect(Env(1, 2, port), null, Fast, TestContext.Current.CancellationToken));
        Thread.Sleep(700); // rank 1 finds nobody listening and retries
        using var root = ControlChannel.Connect(Env(0, 2, port), () => [42], Fast, TestContext.Current.CancellationToken);
        using var rank1 = Threads.Join(early, TimeSpan.FromSeconds(10));
        Assert.Equal([42], rank1.RootPayload);
    }

    [Fact]
    public void AMissingRankTimesOutWithItsNumber()
    {
        int port = Launcher.FreePort();
        var options = Fast with { RendezvousTimeout = TimeSpan.FromSeconds(1.5) };
        var rank1 = Threads.Start(() => ControlChannel.Connect(Env(1, 3, port), null, options, TestContext.Current.CancellationToken));
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<DistributedConfigurationException>(() => ControlChannel.Connect(Env(0, 3, port), null, options, TestContext.Current.CancellationToken));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10));
        Assert.Contains("rank(s) 2 of 3 never connected", e.Message);
        // Rank 1 hears that rank 0 gave up (its connection closes), or times out itself.
        Assert.ThrowsAny<Exception>(() => Threads.Join(rank1));
    }

    [Fact]
    public void RankZeroNotListeningIsReportedAfterTheTimeout()
    {
        int port = Launcher.FreePort();
        var e = Assert.Throws<DistributedConfigurationException>(() =>
            ControlChannel.Connect(Env(1, 2, port), null, Fast with { RendezvousTimeout = TimeSpan.FromSeconds(1) }, TestContext.Current.CancellationToken));
        Assert.Contains($"could not reach rank 0 at MASTER_ADDR:MASTER_PORT 127.0.0.1:{port}", e.Message);
    }

    [Fact]
    public void AWrongWorldSizeIsRefusedByName()
    {
        int port = Launcher.FreePort();
        var rank1 = Threads.Start(() => ControlChannel.Connect(Env(1, 3, port) with { WorldSize = 3 }, null, Fast, TestContext.Current.CancellationToken));
        var e = Assert.Throws<DistributedConfigurationException>(() => ControlChannel.Connect(Env(0, 2, port), null, Fast, TestContext.Current.CancellationToken));
        Assert.Contains("Rank 1 has WORLD_SIZE=3, rank 0 has WORLD_SIZE=2", e.Message);
        var refused = Assert.Throws<DistributedConfigurationException>(() => Threads.Join(rank1));
        Assert.Contains("Rank 0 refused rank 1", refused.Message);
    }

    [Fact]
    public void ARankThatDiesMakesEveryOtherRankFailNamingIt()
    {
        var channels = ConnectAll(3);
        try
        {
            var aborted = new string?[3];
            for (int r = 0; r < 3; r++)
            {
                int rank = r;
                channels[r].OnFailure(reason => aborted[rank] = reason);
            }
            // Rank 1 waits in a collective that rank 2 will never join; rank 0 waits for rank 2 too.
            var waiting = new[] { 0, 1 }.Select(r => Threads.Start(() =>
            {
                Span<double> x = [1];
                channels[r].AllReduceSum(x);
            })).ToArray();
            Thread.Sleep(300);
            var clock = Stopwatch.StartNew();
            channels[2].Dispose(); // what the OS does to a killed process's sockets
            foreach (var r in new[] { 0, 1 })
            {
                var e = Assert.Throws<DistributedFailureException>(() => Threads.Join(waiting[r]));
                Assert.Contains("rank 2 failed", e.Message);
                Assert.Equal(2, e.FailedRank);
            }
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(3), $"took {clock.Elapsed.TotalSeconds:F1} s to notice");
            Assert.Contains("rank 2 failed", aborted[0]);
            Assert.Contains("rank 2 failed", aborted[1]);
            Assert.Null(aborted[2]);
            // Later collectives fail at once.
            Assert.Throws<DistributedFailureException>(() => channels[1].Barrier());
        }
        finally
        {
            DisposeAll(channels);
        }
    }

    [Fact]
    public void AReportedFailureReachesEveryRank()
    {
        var channels = ConnectAll(3);
        try
        {
            var waiting = Threads.Start(() => channels[2].Barrier());
            channels[1].ReportFailure("CUDA error: out of memory");
            var e = Assert.Throws<DistributedFailureException>(() => Threads.Join(waiting));
            Assert.Equal("rank 1 failed: CUDA error: out of memory", e.Message);
            Assert.True(SpinWait.SpinUntil(() => channels[0].Failure is not null, TimeSpan.FromSeconds(3)));
            Assert.Equal(1, channels[0].FailedRank);
        }
        finally
        {
            DisposeAll(channels);
        }
    }

    [Fact]
    public void AHungRankIsNoticedByItsMissingHeartbeat()
    {
        // Rank 1 is a raw socket that joins properly and then never sends a byte again (a stopped process).
        int port = Launcher.FreePort();
        var rootTask = Threads.Start(() => ControlChannel.Connect(Env(0, 2, port), () => [1, 2, 3], Fast, TestContext.Current.CancellationToken));
        using var hung = new TcpClient();
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                hung.Connect("127.0.0.1", port);
                break;
            }
            catch (SocketException) when (deadline.Elapsed < TimeSpan.FromSeconds(10))
            {
                Thread.Sleep(50);
            }
        }
        var hello = new byte[21];
        hello[0] = 1; // Hello
        BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(1), 16);
        BinaryPrimitives.WriteUInt32LittleEndian(hello.AsSpan(5), 0x4E44424D);
        BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(9), 1);
        BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(13), 1);
        BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(17), 2);
        hung.GetStream().Write(hello);
        using var root = Threads.Join(rootTask);
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<DistributedFailureException>(() => root.Barrier());
        Assert.Contains("rank 1 failed: no heartbeat", e.Message);
        Assert.InRange(clock.Elapsed.TotalSeconds, 1.0, 5.0);
    }

    [Fact]
    public void ACleanShutdownIsNotAFailure()
    {
        var channels = ConnectAll(2);
        Parallel.ForEach(channels, c => c.Shutdown());
        channels[1].Dispose();
        Thread.Sleep(500);
        Assert.Null(channels[0].Failure);
        channels[0].Dispose();
    }
}
