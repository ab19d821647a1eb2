using Microsoft.Extensions.Logging;
using MosaicBert.Devices;
using MosaicBert.Tensors.Cpu;
using MosaicBert.Tensors.Cuda;

namespace MosaicBert.Pretraining.Tests;

/// <summary>The host's Device, AllowCpuFallback and Precision options: validation at start, and the backend they give.</summary>
public sealed class DeviceOptionTests
{
    private static PretrainingOptions Valid(string device, string precision = "fp32") => new()
    {
        Vocab = typeof(DeviceOptionTests).Assembly.Location, Corpus = [AppContext.BaseDirectory], MaxSteps = 1, Device = device, Precision = precision,
    };

    private static string Failures(PretrainingOptions o)
    {
        var result = new PretrainingOptionsValidator().Validate(null, o);
        return result.Failed ? string.Join("\n", result.Failures!) : "";
    }

    [Theory]
    [InlineData("cpu")]
    [InlineData("cuda")]
    [InlineData("cuda:1")]
    [InlineData("CUDA:0")]
    public void DevicesAreAcceptedAtValidation(string device) => Assert.Equal("", Failures(Valid(device)));

    [Fact]
    public void BadDevicesAndUnavailablePrecisionsAreReportedByName()
    {
        Assert.Equal("Device must be cpu, cuda or cuda:N (N = the GPU's ordinal, from 0), not 'gpu'.", Failures(Valid("gpu")));
        Assert.Equal("", Failures(Valid("cuda", "bf16")));
        Assert.Equal("Precision bf16 needs a CUDA device: the CPU backend computes in fp32; use fp32.", Failures(Valid("cpu", "bf16")));
        Assert.Equal("Precision must be fp32 or bf16, not 'half'.", Failures(Valid("cuda", "half")));
    }

    private sealed class Collector : ILogger
    {
        public List<(LogLevel Level, string Message)> Entries { get; } = [];
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Entries.Add((logLevel, formatter(state, exception)));
    }

    [Fact]
    public void CpuGivesTheCpuBackendWithItsThreads()
    {
        var o = Valid("cpu");
        o.Threads = 2;
        using var backend = CorpusDataFactory.CreateBackend(o, new Collector());
        Assert.Equal(2, Assert.IsType<CpuBackend>(backend).Threads);
    }

    [Fact]
    public void CudaWithoutAGpuFailsSayingWhyOrFallsBackWhenAllowed()
    {
        if (CudaBackend.IsAvailable(out _)) Assert.Skip("a CUDA GPU is usable here, so the no-GPU path cannot be exercised");
        var o = Valid("cuda");
        var log = new Collector();
        var e = Assert.Throws<DeviceUnavailableException>(() => CorpusDataFactory.CreateBackend(o, log));
        Assert.StartsWith("Device cuda:0 cannot be used: no CUDA", e.Message);
        Assert.EndsWith("Run on the CPU with --Device cpu, or set --AllowCpuFallback true to fall back to the CPU when CUDA is unusable.", e.Message);
        Assert.Empty(log.Entries);

        o.AllowCpuFallback = true;
        using var backend = CorpusDataFactory.CreateBackend(o, log);
        Assert.IsType<CpuBackend>(backend);
        var (level, message) = Assert.Single(log.Entries);
        Assert.Equal(LogLevel.Warning, level);
        Assert.StartsWith("Device cuda:0 cannot be used (no CUDA", message);
    }

    [Fact]
    public async Task ThePretrainHostExitsWithOneWhenCudaCannotBeUsed()
    {
        if (CudaBackend.IsAvailable(out _)) Assert.Skip("a CUDA GPU is usable here, so the no-GPU path cannot be exercised");
        var output = Directory.CreateTempSubdirectory("mosaicbert-device-host-");
        try
        {
            // The device is opened before the vocabulary and corpus are read, so any existing files pass validation here.
            int code = await PretrainingHost.RunAsync(["--Vocab", typeof(DeviceOptionTests).Assembly.Location, "--Corpus", AppContext.BaseDirectory,
                "--OutputDir", output.FullName, "--MaxSteps", "1", "--Device", "cuda"], TestContext.Current.CancellationToken);
            Assert.Equal(1, code);
            Assert.False(Directory.Exists(Path.Combine(output.FullName, "checkpoints")));
        }
        finally
        {
            output.Delete(recursive: true);
        }
    }
}
