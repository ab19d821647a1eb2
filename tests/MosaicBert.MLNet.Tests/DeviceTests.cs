using MosaicBert.Devices;
using MosaicBert.ML;
using MosaicBert.ML.Trainers;
using MosaicBert.Tensors.Cuda;
using static MosaicBert.MLNet.Tests.MosaicBertTestKit;

namespace MosaicBert.MLNet.Tests;

/// <summary>
/// The trainers' and featurizer's device choice where no GPU can be used (the machines CI runs on): a GPU asked for
/// fails Fit with the reason and the ways out, and runs on the CPU, with a warning, only when the fallback is allowed —
/// by the options or by the context's FallbackToCpu when the GPU came from MLContext.GpuDeviceId.
/// </summary>
public sealed class DeviceTests
{
    private static void RequireNoGpu()
    {
        if (CudaBackend.IsAvailable(out _)) Assert.Skip("a CUDA GPU is usable here, so the no-GPU path cannot be exercised");
    }

    private static (MLContext Context, List<LoggingEventArgs> Log) Context(int? gpu = null, bool fallbackToCpu = true)
    {
        var ctx = new MLContext(seed: 1) { GpuDeviceId = gpu, FallbackToCpu = fallbackToCpu };
        var log = new List<LoggingEventArgs>();
        ctx.Log += (_, e) => { lock (log) log.Add(e); };
        return (ctx, log);
    }

    private static TextClassificationTrainer.TextClassificationOptions Options(string? device, bool fallback)
    {
        var o = ClassifierOptions();
        o.Device = device;
        o.AllowCpuFallback = fallback;
        o.MaxSteps = 2;
        return o;
    }

    [Fact]
    public void CudaWithoutAGpuFailsFitSayingWhy()
    {
        RequireNoGpu();
        var (ctx, log) = Context();
        var data = ctx.Data.LoadFromEnumerable(Reviews(16, seed: 1));
        var e = Assert.Throws<DeviceUnavailableException>(() => ClassifierPipeline(ctx, Options("cuda", fallback: false)).Fit(data));
        Assert.StartsWith("TextClassification: Device cuda:0 cannot be used: no CUDA", e.Message);
        Assert.EndsWith("Run on the CPU with Device = \"cpu\", or set AllowCpuFallback = true to fall back to the CPU when CUDA is unusable.", e.Message);
        Assert.DoesNotContain(log, l => l.Kind == ChannelMessageKind.Warning);
    }

    [Fact]
    public void CudaWithoutAGpuFallsBackWhenAllowedAndSaysSo()
    {
        RequireNoGpu();
        var (ctx, log) = Context();
        var data = ctx.Data.LoadFromEnumerable(Reviews(16, seed: 1));
        using var model = (IDisposable)ClassifierPipeline(ctx, Options("cuda:1", fallback: true)).Fit(data);
        var warning = Assert.Single(log, l => l.Kind == ChannelMessageKind.Warning);
        Assert.Equal("TextClassification", warning.Source);
        Assert.StartsWith("Device cuda:1 cannot be used (no CUDA", warning.RawMessage);
        Assert.Contains(log, l => l.RawMessage.Contains("on cpu (", StringComparison.Ordinal));
    }

    [Fact]
    public void TheContextsGpuIsUsedWhenTheOptionsNameNoDevice()
    {
        RequireNoGpu();
        var data = new MLContext().Data.LoadFromEnumerable(Reviews(16, seed: 1));
        var (strict, _) = Context(gpu: 0, fallbackToCpu: false);
        var e = Assert.Throws<DeviceUnavailableException>(() => ClassifierPipeline(strict, Options(null, fallback: false)).Fit(data));
        Assert.Contains("Device (from MLContext.GpuDeviceId) cuda:0 cannot be used", e.Message);
        Assert.Contains("set MLContext.FallbackToCpu = true", e.Message);

        var (lenient, log) = Context(gpu: 0, fallbackToCpu: true);
        using (var model = (IDisposable)ClassifierPipeline(lenient, Options(null, fallback: false)).Fit(data))
            Assert.Single(log, l => l.Kind == ChannelMessageKind.Warning && l.RawMessage.Contains("running on the CPU instead", StringComparison.Ordinal));

        // An explicit Device overrides the context: "cpu" never looks for a GPU.
        var (explicitCpu, cpuLog) = Context(gpu: 0, fallbackToCpu: false);
        using (var model = (IDisposable)ClassifierPipeline(explicitCpu, Options("cpu", fallback: false)).Fit(data))
            Assert.DoesNotContain(cpuLog, l => l.Kind == ChannelMessageKind.Warning);
    }

    [Fact]
    public void TheFeaturizerChecksItsDeviceToo()
    {
        var ctx = new MLContext(seed: 1);
        var options = new ML.Transforms.MosaicBertFeaturizerOptions { Config = TinyConfig, VocabPath = VocabPath, Device = "tpu" };
        Assert.Contains("MosaicBertFeaturizer: Device must be cpu, cuda or cuda:N", Assert.Throws<ArgumentException>(() => ctx.Transforms.MosaicBert("F", "Sentence1", options: options)).Message);
        options.Device = "cpu";
        options.Precision = "bf16";
        Assert.Contains("bf16 needs a CUDA device", Assert.Throws<NotSupportedException>(() => ctx.Transforms.MosaicBert("F", "Sentence1", options: options)).Message);
    }
}
