using System.Runtime.InteropServices;
using MosaicBert.Distributed.Interop;
using MosaicBert.Tensors;
using MosaicBert.Tensors.Cuda;

namespace MosaicBert.Distributed.Tests;

/// <summary>
/// NCCL on real GPUs: world size 1 on one GPU, and two ranks (one thread and one GPU each, the unique id carried by
/// the control channel over loopback) on two. Skipped, with the reason, where there is no GPU, no NCCL or one GPU.
/// </summary>
[Collection("gpu")]
public sealed class NcclTests
{
    internal static void RequireGpus(int count)
    {
        if (!CudaBackend.IsAvailable(out string reason)) Assert.Skip($"needs a CUDA GPU, and here there is none ({reason})");
        if (!NcclCommunicator.IsAvailable(out reason)) Assert.Skip($"needs NCCL, and here there is none ({reason})");
        if (count > 1)
        {
            try
            {
                CudaDevice.Open(count - 1);
            }
            catch (CudaUnavailableException e)
            {
                Assert.Skip($"needs {count} GPUs ({e.Message})");
            }
        }
    }

    private static float[] Values(int n, int rank) => [.. Enumerable.Range(0, n).Select(i => (float)((i % 97) * 0.25 + rank * 1000 + 0.5))];

    /// <summary>bf16 bits of <paramref name="x"/> (round to nearest even), two per int for upload.</summary>
    private static int[] PackBf16(float[] x)
    {
        var packed = new int[(x.Length + 1) / 2];
        for (int i = 0; i < x.Length; i++)
        {
            uint bits = BitConverter.SingleToUInt32Bits(x[i]);
            uint bf = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16;
            packed[i / 2] |= (int)(bf << (16 * (i % 2)));
        }
        return packed;
    }

    private static float[] UnpackBf16(int[] packed, int n) =>
        [.. Enumerable.Range(0, n).Select(i => BitConverter.UInt32BitsToSingle((uint)((packed[i / 2] >> (16 * (i % 2))) & 0xFFFF) << 16))];

    [Fact]
    public void WorldOfOneOnOneGpu()
    {
        RequireGpus(1);
        using var gpu = new CudaBackend(0);
        Assert.True(NcclCommunicator.Version >= 21000, $"NCCL {NcclCommunicator.Version} is older than 2.10 (no average)");
        using var comm = NcclCommunicator.Create(gpu.Device, NcclCommunicator.CreateUniqueId(), 0, 1);
        var host = Values(1000, 0);
        using var t = gpu.Allocate(1000);
        gpu.Upload(host, t);
        comm.AllReduce(CudaTensors.Pointer(t), CudaTensors.Pointer(t), t.Length, NcclDataType.Float32, NcclReduceOp.Sum, gpu.Stream.Handle);
        comm.AllReduce(CudaTensors.Pointer(t), CudaTensors.Pointer(t), t.Length, NcclDataType.Float32, NcclReduceOp.Average, gpu.Stream.Handle);
        comm.Broadcast(CudaTensors.Pointer(t), CudaTensors.Pointer(t), t.Length, NcclDataType.Float32, 0, gpu.Stream.Handle);
        var back = new float[1000];
        gpu.Download(t, back);
        Assert.Equal(host, back);
        Assert.Null(comm.AsyncError());
        // An invalid call names itself and NCCL's reason.
        var e = Assert.Throws<NcclException>(() => comm.Broadcast(CudaTensors.Pointer(t), CudaTensors.Pointer(t), t.Length, (NcclDataType)99, 0, gpu.Stream.Handle));
        Assert.StartsWith("ncclBroadcast failed: ncclResult_t", e.Message);
    }

    [Fact]
    public void TwoRanksOnTwoGpusAverageFp32AndBf16AndBroadcast()
    {
        RequireGpus(2);
        const int n = 1 << 20;
        int port = Launcher.FreePort();
        var results = new (float[] Avg, float[] Sum16, float[] Bcast)[2];
        var ranks = Enumerable.Range(0, 2).Select(r => Threads.Start(() =>
        {
            using var gpu = new CudaBackend(r);
            var env = new DistributedEnvironment(r, 2, r, 2, "127.0.0.1", port);
            using var group = (NcclProcessGroup)ProcessGroup.Create(env, gpu, ControlChannelTests.Fast);
            var values = Values(n, r);
            using var t = gpu.Allocate(n);
            gpu.Upload(values, t);
            group.AllReduceAverage(t);
            var avg = new float[n];
            gpu.Download(t, avg);

            var bf = PackBf16(Values(n, r));
            using var b = gpu.Allocate(DType.Int32, bf.Length);
            gpu.Upload(bf, b);
            group.StartAllReduce(CudaTensors.Pointer(b), n, NcclDataType.BFloat16, NcclReduceOp.Sum);
            group.AllReduceAverage(t); // a second collective queued behind the first on the communication stream
            var sum16 = new int[bf.Length];
            gpu.Download(b, sum16);

            gpu.Upload(Values(n, 10 + r), t);
            group.Broadcast(t, root: 1);
            var bcast = new float[n];
            gpu.Download(t, bcast);
            Span<double> stats = [r + 1];
            group.AllReduceSum(stats);
            Assert.Equal(3.0, stats[0]);
            group.Shutdown();
            results[r] = (avg, UnpackBf16(sum16, n), bcast);
        })).ToArray();
        Threads.JoinAll(ranks, TimeSpan.FromMinutes(2));
        var v0 = Values(n, 0);
        var v1 = Values(n, 1);
        for (int r = 0; r < 2; r++)
        {
            var (avg, sum16, bcast) = results[r];
            for (int i = 0; i < n; i += 4099)
            {
                Assert.Equal((v0[i] + v1[i]) / 2, avg[i], 1e-3f);
                float exact = v0[i] + v1[i];
                Assert.True(Math.Abs(sum16[i] - exact) <= exact * (3.0 / 256), $"bf16 sum at {i}: {sum16[i]} vs {exact}");
            }
            Assert.Equal(Values(n, 11), bcast);
        }
        Assert.Equal(results[0].Avg, results[1].Avg); // every rank gets the same bits
        Assert.Equal(results[0].Sum16, results[1].Sum16);
    }

    [Fact]
    public void AnAbortedCommunicatorRefusesFurtherCalls()
    {
        RequireGpus(1);
        using var gpu = new CudaBackend(0);
        using var comm = NcclCommunicator.Create(gpu.Device, NcclCommunicator.CreateUniqueId(), 0, 1);
        comm.Abort("rank 1 failed: test");
        using var t = gpu.Allocate(4);
        var e = Assert.Throws<DistributedFailureException>(() =>
            comm.AllReduce(CudaTensors.Pointer(t), CudaTensors.Pointer(t), 4, NcclDataType.Float32, NcclReduceOp.Sum, gpu.Stream.Handle));
        Assert.Contains("rank 1 failed: test", e.Message);
        Assert.Equal(NcclUniqueId.Size, Marshal.SizeOf<NcclUniqueId>());
    }
}
