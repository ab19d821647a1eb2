using MosaicBert.Tensors.Cpu;

// One GPU, one stream, one backend: the tests run one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace MosaicBert.Tensors.Cuda.Tests;

/// <summary>
/// The shared CUDA backend of the tests, or a skip with the reason when this machine has no CUDA driver or GPU (CI and
/// development machines have none: every GPU test reports as skipped there).
/// </summary>
internal static class Gpu
{
    private static readonly Lazy<(CudaBackend? Backend, string Reason)> s_backend = new(() =>
        CudaBackend.IsAvailable(out string reason)
            ? (new CudaBackend(), "")
            : (null, $"needs a CUDA GPU, and here there is none ({reason})"));

    /// <summary>The backend, or Assert.Skip.</summary>
    public static CudaBackend Backend
    {
        get
        {
            var (backend, reason) = s_backend.Value;
            if (backend is null) Assert.Skip(reason);
            return backend!;
        }
    }

    /// <summary>Skips unless NVRTC loads (compile tests need no GPU).</summary>
    public static void RequireNvrtc()
    {
        if (!KernelCompiler.IsAvailable(out string reason)) Assert.Skip($"needs NVRTC, and here there is none ({reason})");
    }
}

/// <summary>The same data on the CPU backend and on the GPU, and comparisons of results.</summary>
internal static class Both
{
    public static readonly CpuBackend Ref = new(threads: 2);

    public static float[] Random(int n, int seed, float scale = 1)
    {
        var r = new Random(seed);
        var values = new float[n];
        for (int i = 0; i < n; i++) values[i] = (float)(scale * (r.NextDouble() * 2 - 1));
        return values;
    }

    public static int[] RandomInts(int n, int seed, int below)
    {
        var r = new Random(seed);
        var values = new int[n];
        for (int i = 0; i < n; i++) values[i] = r.Next(below);
        return values;
    }

    public static Pair Floats(float[] values, params int[] shape)
    {
        var c = Ref.Allocate(shape);
        Ref.Upload(values, c);
        var g = Gpu.Backend.Allocate(shape);
        Gpu.Backend.Upload(values, g);
        return new Pair(c, g);
    }

    public static Pair Ints(int[] values)
    {
        var c = Ref.Allocate(DType.Int32, values.Length);
        Ref.Upload(values, c);
        var g = Gpu.Backend.Allocate(DType.Int32, values.Length);
        Gpu.Backend.Upload(values, g);
        return new Pair(c, g);
    }

    public static Pair Zeros(params int[] shape) => new(Ref.Allocate(shape), Gpu.Backend.Allocate(shape));

    public static float[] Host(Tensor t)
    {
        var values = new float[t.Length];
        t.Backend.Download(t, values);
        return values;
    }

    /// <summary>|gpu − cpu| ≤ tolerance·scale(i) for every element (and the GPU's values finite where the CPU's are).</summary>
    public static void Close(Pair p, double tolerance, Func<float[], Func<int, double>> scale, string what)
    {
        float[] expected = Host(p.C), actual = Host(p.G);
        Close(expected, actual, tolerance, scale(expected), what);
    }

    public static void Close(float[] expected, float[] actual, double tolerance, Func<int, double> scale, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = 0;
        int at = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            if (float.IsFinite(expected[i]) && !float.IsFinite(actual[i]))
                Assert.Fail($"{what}: element {i} is {actual[i]} on the GPU, {expected[i]} on the CPU");
            double error = Math.Abs((double)actual[i] - expected[i]) / scale(i);
            if (error > worst)
            {
                worst = error;
                at = i;
            }
        }
        Assert.True(worst <= tolerance,
            $"{what}: worst error {worst:E2} of the element's scale at {at} (CPU {expected[Math.Max(at, 0)]}, GPU {actual[Math.Max(at, 0)]}), tolerance {tolerance:E1}");
    }

    /// <summary>Bitwise equality of the two backends' results.</summary>
    public static void Same(Pair p, string what)
    {
        float[] expected = Host(p.C), actual = Host(p.G);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what}: element {i} differs: CPU {expected[i]:R}, GPU {actual[i]:R} (expected bitwise equality)");
    }

    /// <summary>Scale = the element's own magnitude (pure relative error), never below <paramref name="floor"/>.</summary>
    public static Func<float[], Func<int, double>> Relative(double floor = 1e-30) => e => i => Math.Max(Math.Abs(e[i]), floor);

    /// <summary>Scale = the largest magnitude in the tensor ("of the tensor's scale").</summary>
    public static Func<float[], Func<int, double>> OfMax => e =>
    {
        double max = Math.Max(1e-30, e.Length == 0 ? 0 : e.Max(x => Math.Abs((double)x)));
        return _ => max;
    };
}

/// <summary>A tensor on the CPU (C) and its twin on the GPU (G).</summary>
internal sealed class Pair(Tensor c, Tensor g) : IDisposable
{
    public Tensor C { get; } = c;
    public Tensor G { get; } = g;

    public void Dispose()
    {
        C.Dispose();
        G.Dispose();
    }
}
