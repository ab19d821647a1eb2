using MosaicBert.Model;
using MosaicBert.Tensors;
using MosaicBert.Tensors.Cpu;
using MosaicBert.Tensors.Cuda;

namespace MosaicBert.Devices.Tests;

/// <summary>Device strings, precisions and the factory's choices; CUDA's failures are simulated, so these run anywhere.</summary>
public sealed class BackendFactoryTests
{
    [Theory]
    [InlineData("cpu", DeviceKind.Cpu, 0)]
    [InlineData(" CPU ", DeviceKind.Cpu, 0)]
    [InlineData("cuda", DeviceKind.Cuda, 0)]
    [InlineData("CUDA:0", DeviceKind.Cuda, 0)]
    [InlineData("cuda:3", DeviceKind.Cuda, 3)]
    [InlineData("cuda:12", DeviceKind.Cuda, 12)]
    public void DeviceStringsParse(string text, DeviceKind kind, int ordinal)
    {
        var device = DeviceSpec.Parse(text);
        Assert.Equal(new DeviceSpec(kind, ordinal), device);
        Assert.Equal(device, DeviceSpec.Parse(device.ToString())); // ToString round-trips
    }

    [Theory]
    [InlineData("gpu")]
    [InlineData("cuda:")]
    [InlineData("cuda:-1")]
    [InlineData("cuda:1x")]
    [InlineData("cuda:+1")]
    [InlineData("cuda:99999999999")]
    [InlineData("cuda 0")]
    [InlineData("")]
    [InlineData(null)]
    public void BadDeviceStringsAreRejectedByOptionName(string? text)
    {
        Assert.False(DeviceSpec.TryParse(text, out _, out string error, "--device"));
        Assert.Equal($"--device must be cpu, cuda or cuda:N (N = the GPU's ordinal, from 0), not '{text}'.", error);
        Assert.Contains("Device must be cpu, cuda or cuda:N", Assert.Throws<ArgumentException>(() => DeviceSpec.Parse(text)).Message);
    }

    [Fact]
    public void PrecisionsParseAndBf16NeedsCuda()
    {
        Assert.Equal(ComputePrecision.Float32, ComputePrecisions.Parse("fp32"));
        Assert.Equal(ComputePrecision.BFloat16, ComputePrecisions.Parse("BF16"));
        Assert.Contains("Precision must be fp32 or bf16, not 'fp16'", Assert.Throws<ArgumentException>(() => ComputePrecisions.Parse("fp16")).Message);
        Assert.True(BackendFactory.IsSupported(ComputePrecision.Float32, DeviceSpec.Cuda(), out _));
        Assert.True(BackendFactory.IsSupported(ComputePrecision.BFloat16, DeviceSpec.Cuda(), out _));
        Assert.False(BackendFactory.IsSupported(ComputePrecision.BFloat16, DeviceSpec.Cpu, out string reason));
        Assert.Contains("bf16 needs a CUDA device", reason);
        var e = Assert.Throws<NotSupportedException>(() => BackendFactory.Create(DeviceSpec.Cpu, ComputePrecision.BFloat16));
        Assert.Contains("bf16 needs a CUDA device", e.Message);
        using var cpu = BackendFactory.Create(DeviceSpec.Cpu, ComputePrecision.Float32, 1);
        Assert.Equal(ComputePrecision.Float32, BackendFactory.PrecisionFor(cpu, ComputePrecision.BFloat16));
    }

    [Fact]
    public void CpuHonoursTheThreadCount()
    {
        using var backend = BackendFactory.Create(DeviceSpec.Cpu, threads: 3);
        Assert.Equal(3, Assert.IsType<CpuBackend>(backend).Threads);
        Assert.Equal("cpu (3 threads)", BackendFactory.Describe(backend));
        Assert.Throws<ArgumentOutOfRangeException>(() => BackendFactory.Create(DeviceSpec.Cpu, threads: 0));
    }

    private static Func<int, ComputePrecision, Backend> Unusable(string reason) => (_, _) => throw new CudaUnavailableException(reason);

    [Fact]
    public void UnusableCudaSaysWhyAndHowToFallBack()
    {
        var e = Assert.Throws<DeviceUnavailableException>(() => BackendFactory.Create(DeviceSpec.Cuda(1), ComputePrecision.Float32, null, false,
            DeviceOptionNames.CommandLine, _ => Assert.Fail("no fallback was allowed"),
            Unusable("no CUDA driver: libcuda.so.1 not found (tried libcuda.so.1); use Device cpu")));
        Assert.Equal(DeviceSpec.Cuda(1), e.Device);
        Assert.Equal("no CUDA driver: libcuda.so.1 not found (tried libcuda.so.1)", e.Reason);
        Assert.Equal("--device cuda:1 cannot be used: no CUDA driver: libcuda.so.1 not found (tried libcuda.so.1). "
            + "Run on the CPU with --device cpu, or add --allow-cpu-fallback to fall back to the CPU when CUDA is unusable.", e.Message);
    }

    [Theory]
    [InlineData("no CUDA device: the driver reports none; use Device cpu", "no CUDA device: the driver reports none")]
    [InlineData("no CUDA device 2: the driver reports 1; use Device cpu or a smaller ordinal", "no CUDA device 2: the driver reports 1")]
    [InlineData("no nvrtc library: libnvrtc.so.13 not found (tried x); the CUDA backend compiles its kernels with NVRTC; use Device cpu",
        "no nvrtc library: libnvrtc.so.13 not found (tried x); the CUDA backend compiles its kernels with NVRTC")]
    [InlineData("no cublasLt library: libcublasLt.so.13 not found (tried y); use Device cpu", "no cublasLt library: libcublasLt.so.13 not found (tried y)")]
    public void FallbackIsTakenOnlyWhenAllowedAndIsReported(string backendReason, string reason)
    {
        var messages = new List<string>();
        using var backend = BackendFactory.Create(DeviceSpec.Cuda(2), ComputePrecision.Float32, 2, true, DeviceOptionNames.PretrainingHost,
            messages.Add, Unusable(backendReason));
        Assert.Equal(2, Assert.IsType<CpuBackend>(backend).Threads);
        Assert.Equal([$"Device cuda:2 cannot be used ({reason}); running on the CPU instead, as the CPU fallback is allowed."], messages);

        var e = Assert.Throws<DeviceUnavailableException>(() => BackendFactory.Create(DeviceSpec.Cuda(2), ComputePrecision.Float32, 2, false,
            DeviceOptionNames.PretrainingHost, messages.Add, Unusable(backendReason)));
        Assert.Contains(reason, e.Message);
        Assert.EndsWith("Run on the CPU with --Device cpu, or set --AllowCpuFallback true to fall back to the CPU when CUDA is unusable.", e.Message);
        Assert.Single(messages);
    }

    [Fact]
    public void TheCpuIsNeverAFallbackForTheCpu()
    {
        var opened = false;
        using var backend = BackendFactory.Create(DeviceSpec.Cpu, ComputePrecision.Float32, 1, true, null, _ => Assert.Fail("no fallback"),
            (_, _) => { opened = true; throw new InvalidOperationException(); });
        Assert.IsType<CpuBackend>(backend);
        Assert.False(opened);
    }

    [Fact]
    public void OnThisMachineCudaEitherOpensOrSaysWhy()
    {
        // The real opener: with a GPU it gives a CUDA backend; without one, the reason the backend itself reports.
        if (CudaBackend.IsAvailable(out string reason))
        {
            using var gpu = BackendFactory.Create(DeviceSpec.Cuda());
            Assert.Equal("cuda:0", Assert.IsType<CudaBackend>(gpu).Name);
            Assert.StartsWith("cuda:0 (", BackendFactory.Describe(gpu));
        }
        else
        {
            var e = Assert.Throws<DeviceUnavailableException>(() => BackendFactory.Create(DeviceSpec.Cuda()));
            Assert.StartsWith("Device cuda:0 cannot be used: no CUDA", e.Message);
            Assert.Contains(e.Reason, reason);
        }
    }
}
