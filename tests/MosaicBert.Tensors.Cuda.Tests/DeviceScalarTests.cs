using static MosaicBert.Tensors.Cuda.Tests.Both;

namespace MosaicBert.Tensors.Cuda.Tests;

/// <summary>
/// Scalars kept on the device (the queued loss mean and gradient-norm clipping): the same bits as the host-side path
/// they replace, readable after later work, and refused once their slot has been reused.
/// </summary>
public sealed class DeviceScalarTests
{
    private static CudaBackend G => Gpu.Backend;

    [Theory]
    [InlineData(0.5)]
    [InlineData(1e6)]
    public void ClippingOnTheDeviceEqualsSumOfSquaresThenScale(double maxNorm)
    {
        var x = Random(300_001, 51, 0.01f);
        using var queued = Floats(x, x.Length);
        using var manual = Floats(x, x.Length);
        var norm = G.ClipByGlobalNorm(queued.G, maxNorm);
        Assert.False(norm.IsRead);
        double expected = Math.Sqrt(G.SumOfSquares(manual.G));
        if (expected > maxNorm) G.Scale(manual.G, (float)(maxNorm / expected));
        Assert.Equal(expected, norm.Read());
        Assert.Equal(Host(manual.G), Host(queued.G));
        // The CPU backend decides the same way (its Σx² may differ in the last bits: another summation order).
        double cpuNorm = Ref.ClipByGlobalNorm(queued.C, maxNorm).Read();
        Assert.True(Math.Abs(cpuNorm - expected) <= 1e-12 * expected, $"norm {expected} on the GPU, {cpuNorm} on the CPU");
    }

    [Fact]
    public void TheMeanIsReadableAfterTheTensorIsOverwrittenAndRefusedOnceItsSlotIsReused()
    {
        var x = Random(10_057, 52, 5);
        using var t = Floats(x, x.Length);
        var mean = G.Mean(t.G);
        G.Fill(t.G, 0);
        Assert.True(Math.Abs(mean.Read() - x.Average(v => (double)v)) <= 1e-12 * x.Average(v => Math.Abs((double)v)));
        var stale = G.Mean(t.G);
        for (int i = 0; i < 1024; i++) G.Mean(t.G);
        var e = Assert.Throws<InvalidOperationException>(() => stale.Read());
        Assert.Contains("reused its slot", e.Message);
    }
}
