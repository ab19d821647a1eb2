using System.Text.Json;
using MosaicBert.Tensors;
using MosaicBert.Tensors.Cuda;

// One GPU, one stream per backend: the tests run one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace MosaicBert.Devices.Tests;

/// <summary>
/// The shared CUDA backend of the GPU tests, or a skip with the reason when this machine has no usable GPU (CI and
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

    /// <summary>Skips unless a GPU can be used.</summary>
    public static void Require() => _ = Backend;

    /// <summary>Skips when a GPU can be used: the no-GPU paths (errors, fallback) can only be exercised without one.</summary>
    public static void RequireNone()
    {
        if (CudaBackend.IsAvailable(out _)) Assert.Skip("a CUDA GPU is usable here, so the no-GPU path cannot be exercised");
    }
}

/// <summary>Comparisons of CPU and GPU results, recording the measured errors.</summary>
internal static class Compare
{
    /// <summary>
    /// |actual − expected| ≤ tolerance·scale for every element, where scale is the largest magnitude of the expected
    /// tensor ("of the tensor's scale"); an all-zero expected tensor must come out exactly zero.
    /// </summary>
    public static double OfScale(float[] expected, float[] actual, double tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double scale = 0;
        foreach (var x in expected) scale = Math.Max(scale, Math.Abs((double)x));
        double worst = 0;
        int at = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            if (!float.IsFinite(actual[i])) Assert.Fail($"{what}: element {i} is {actual[i]} on the GPU, {expected[i]} on the CPU");
            double error = Math.Abs((double)actual[i] - expected[i]);
            if (error > worst)
            {
                worst = error;
                at = i;
            }
        }
        double relative = scale == 0 ? worst : worst / scale;
        Record(what, relative, tolerance);
        if (scale == 0)
            Assert.True(worst == 0, $"{what}: zero on the CPU, but element {at} is {actual[at]} on the GPU");
        else
            Assert.True(relative <= tolerance,
                $"{what}: worst error {relative:E2} of the tensor's scale {scale:G4} at {at} (CPU {expected[at]}, GPU {actual[at]}), tolerance {tolerance:E1}");
        return relative;
    }

    /// <summary>|a − b| ≤ tolerance·|b|.</summary>
    public static void Relative(double expected, double actual, double tolerance, string what)
    {
        double relative = Math.Abs(actual - expected) / Math.Max(Math.Abs(expected), 1e-30);
        Record(what, relative, tolerance);
        Assert.True(relative <= tolerance, $"{what}: CPU {expected:R}, GPU {actual:R}, relative error {relative:E2}, tolerance {tolerance:E1}");
    }

    public static float[] Host(Tensor t)
    {
        var values = new float[t.Length];
        t.Backend.Download(t, values);
        return values;
    }

    // MOSAICBERT_PARITY_REPORT names a JSON-lines file that receives every measured error (for the figures in notes).
    private static readonly Lock s_lock = new();

    private static void Record(string what, double error, double tolerance)
    {
        if (Environment.GetEnvironmentVariable("MOSAICBERT_PARITY_REPORT") is not { Length: > 0 } path) return;
        lock (s_lock)
            File.AppendAllText(path, JsonSerializer.Serialize(new { what, error, tolerance }) + "\n");
    }
}
