using MosaicBert.Checkpoints;
using MosaicBert.Cli;

namespace MosaicBert.Devices.Tests;

/// <summary>
/// <c>mosaicbert forward --device cuda</c> on the reference checkpoints of tests/MosaicBert.Model.Tests/Fixtures: within
/// 1e-4 absolute of <c>--device cpu</c> and of PyTorch's fp32 outputs; and the device options' errors.
/// </summary>
public sealed class ForwardCommandTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mosaicbert-forward-device-");

    public void Dispose() => _dir.Delete(recursive: true);

    private static string Fixture(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MosaicBert.MLNet.sln")))
                return Path.Combine(dir.FullName, "tests", "MosaicBert.Model.Tests", "Fixtures", name);
        throw new InvalidOperationException("repository root not found");
    }

    private string Input(string checkpoint)
    {
        using var expected = SafeTensorsFile.Open(Path.Combine(Fixture(checkpoint), "expected_output.safetensors"));
        var shape = expected.GetInfo("input.input_ids").Shape.ToArray();
        var writer = new SafeTensorsWriter();
        foreach (var name in new[] { "input_ids", "attention_mask", "token_type_ids" })
            writer.Add(name, expected.ReadInt64("input." + name), shape);
        var path = Path.Combine(_dir.FullName, checkpoint + "-in.safetensors");
        writer.Save(path);
        return path;
    }

    private static (int Code, string Stderr) Run(params string[] args)
    {
        using var stdin = new MemoryStream();
        using var stdout = new MemoryStream();
        var stderr = new StringWriter();
        int code = CliApp.Run(args, stdin, stdout, stderr, TestContext.Current.CancellationToken);
        return (code, stderr.ToString());
    }

    [Theory]
    [InlineData("tiny-mosaic-mlm")]
    [InlineData("tiny-bert-mlm")]
    [InlineData("tiny-bert-cls")]
    [InlineData("tiny-mosaic-cls")]
    public void CudaMatchesCpuAndPyTorch(string checkpoint)
    {
        Gpu.Require();
        var input = Input(checkpoint);
        string onCpu = Path.Combine(_dir.FullName, "cpu.safetensors"), onGpu = Path.Combine(_dir.FullName, "gpu.safetensors");
        var cpu = Run("forward", "--model", Fixture(checkpoint), "--input", input, "--output", onCpu, "--device", "cpu");
        Assert.True(cpu.Code == 0, cpu.Stderr);
        var gpu = Run("forward", "--model", Fixture(checkpoint), "--input", input, "--output", onGpu, "--device", "cuda", "--precision", "fp32");
        Assert.True(gpu.Code == 0, gpu.Stderr);
        Assert.Contains(" on cuda:0 (", gpu.Stderr);
        using var expected = SafeTensorsFile.Open(Path.Combine(Fixture(checkpoint), "expected_output.safetensors"));
        using var c = SafeTensorsFile.Open(onCpu);
        using var g = SafeTensorsFile.Open(onGpu);
        foreach (var name in new[] { "last_hidden_state", "logits" })
        {
            Assert.Equal(c.GetInfo(name).Shape, g.GetInfo(name).Shape);
            float[] e = expected.ReadFloat32(name), a = c.ReadFloat32(name), b = g.ReadFloat32(name);
            double worstCpu = 0, worstTorch = 0;
            for (int i = 0; i < a.Length; i++)
            {
                worstCpu = Math.Max(worstCpu, Math.Abs(a[i] - b[i]));
                worstTorch = Math.Max(worstTorch, Math.Abs(e[i] - b[i]));
            }
            Assert.True(worstCpu <= 1e-4, $"{checkpoint} {name}: GPU vs CPU worst absolute error {worstCpu:E2}");
            Assert.True(worstTorch <= 1e-4, $"{checkpoint} {name}: GPU vs PyTorch worst absolute error {worstTorch:E2}");
        }
    }

    [Fact]
    public void AMissingGpuOrdinalSaysSo()
    {
        Gpu.Require();
        var r = Run("forward", "--model", Fixture("tiny-mosaic-mlm"), "--input", Input("tiny-mosaic-mlm"), "--output", Path.Combine(_dir.FullName, "x.safetensors"),
            "--device", "cuda:99");
        Assert.Equal(1, r.Code);
        Assert.StartsWith("error: --device cuda:99 cannot be used: no CUDA device 99: the driver reports ", r.Stderr);
        Assert.Contains("add --allow-cpu-fallback", r.Stderr);
        Assert.False(File.Exists(Path.Combine(_dir.FullName, "x.safetensors")));
    }

    [Fact]
    public void WithoutAGpuCudaFailsSayingWhyOrFallsBackWhenAllowed()
    {
        Gpu.RequireNone();
        var input = Input("tiny-mosaic-cls");
        string output = Path.Combine(_dir.FullName, "out.safetensors"), reference = Path.Combine(_dir.FullName, "ref.safetensors");
        var failed = Run("forward", "--model", Fixture("tiny-mosaic-cls"), "--input", input, "--output", output, "--device", "cuda");
        Assert.Equal(1, failed.Code);
        Assert.Matches(@"^error: --device cuda:0 cannot be used: no CUDA (driver|device)[^\n]*\. Run on the CPU with --device cpu, or add --allow-cpu-fallback to fall back to the CPU when CUDA is unusable\.\n?$",
            failed.Stderr.ReplaceLineEndings("\n"));
        Assert.False(File.Exists(output));

        var fallback = Run("forward", "--model", Fixture("tiny-mosaic-cls"), "--input", input, "--output", output, "--device", "cuda", "--allow-cpu-fallback");
        Assert.True(fallback.Code == 0, fallback.Stderr);
        Assert.StartsWith("warning: --device cuda:0 cannot be used (no CUDA", fallback.Stderr);
        Assert.Contains("running on the CPU instead", fallback.Stderr);
        Assert.Contains(" on cpu (", fallback.Stderr);
        Assert.Equal(0, Run("forward", "--model", Fixture("tiny-mosaic-cls"), "--input", input, "--output", reference, "--device", "cpu").Code);
        Assert.Equal(File.ReadAllBytes(reference), File.ReadAllBytes(output));
    }

    [Theory]
    [InlineData("--device", "gpu", 2, "error: --device must be cpu, cuda or cuda:N (N = the GPU's ordinal, from 0), not 'gpu'.")]
    [InlineData("--precision", "fp16", 2, "error: --precision must be fp32 or bf16, not 'fp16'.")]
    [InlineData("--precision", "bf16", 1, "error: Precision bf16 needs a CUDA device")]
    public void BadDeviceOptionsAreReported(string option, string value, int code, string message)
    {
        var r = Run("forward", "--model", Fixture("tiny-mosaic-mlm"), "--input", Input("tiny-mosaic-mlm"), "--output", Path.Combine(_dir.FullName, "y.safetensors"),
            option, value);
        Assert.Equal(code, r.Code);
        Assert.StartsWith(message, r.Stderr);
    }
}
