using System.Runtime.CompilerServices;
using MosaicBert.Tensors.Cuda.Interop;

namespace MosaicBert.Tensors.Cuda.Tests;

/// <summary>
/// The machinery under the ops: NVRTC compile cache, error reporting, the memory pool, events. The first group needs
/// no GPU (and runs everywhere); the compile tests need NVRTC only; the rest need a GPU.
/// </summary>
public sealed class InfrastructureTests
{
    // ---- no GPU needed ----

    [Fact]
    public void SizeClassesCoverRequestsAndWasteAtMostAQuarter()
    {
        long previous = 0;
        for (long bytes = 1; bytes < (1L << 34); bytes = bytes * 5 / 4 + 3)
        {
            long c = DeviceMemoryPool.SizeClass(bytes);
            Assert.True(c >= bytes, $"class {c} < request {bytes}");
            Assert.True(c >= previous, "classes grow with the request");
            if (bytes > 4096) Assert.True(c <= bytes * 1.25 + 1, $"class {c} wastes more than 25% of {bytes}");
            Assert.Equal(c, DeviceMemoryPool.SizeClass(c));   // a class is its own class: freed blocks are found again
            previous = c;
        }
    }

    [Fact]
    public void EveryKernelFamilyIsEmbedded()
    {
        string[] families = ["activations.cu", "attention.cu", "attention_bf16.cu", "convert.cu", "dropout.cu", "elementwise.cu", "embedding.cu", "embedding_layernorm.cu", "layernorm.cu", "loss.cu",
            "optimizer.cu", "reduce.cu"];
        Assert.Equal(families, KernelSources.Files);
        Assert.True(KernelSources.Headers.ContainsKey("common.cuh"));
        foreach (var file in families) Assert.Contains("#include \"common.cuh\"", KernelSources.Read(file));
    }

    [Fact]
    public void NativeStructsHaveTheCublasLtLayout()
    {
        Assert.Equal(64, Unsafe.SizeOf<CublasLt.AlgoData>());
        Assert.Equal(96, Unsafe.SizeOf<CublasLt.HeuristicResult>());
    }

    [Fact]
    public void KernelArgumentsFillEightByteSlots()
    {
        Assert.Equal(0x3F800000UL, ((KernelArg)1f).Bits);                 // a float in the low 4 bytes
        Assert.Equal(ulong.MaxValue, ((KernelArg)(-1)).Bits);             // an int sign-extended (low 4 bytes = −1)
        Assert.Equal(0xFFFFFFFFUL, ((KernelArg)uint.MaxValue).Bits);
        Assert.Equal(1UL << 40, ((KernelArg)(1L << 40)).Bits);
    }

    [Fact]
    public void ErrorsNameTheCallAndTheKernel()
    {
        Assert.Equal("cuMemAlloc_v2", CudaException.CallName("Cu.cuMemAlloc_v2(out ulong p, (nuint)size)"));
        Assert.Equal("nvrtcCompileProgram", CudaException.CallName("nvrtcCompileProgram(program, n, options)"));
        var e = new CudaException("cuLaunchKernel", 1, "CUDA_ERROR_INVALID_VALUE", "invalid argument", "scale (elementwise.cu)");
        Assert.Equal("cuLaunchKernel failed: CUDA_ERROR_INVALID_VALUE (1): invalid argument [kernel scale (elementwise.cu)]", e.Message);
    }

    [Fact]
    public void CacheKeyCoversSourceHeadersOptionsArchitectureAndCompiler()
    {
        var h = new Dictionary<string, string> { ["common.cuh"] = "a" };
        string Key(string src = "k", string header = "a", string arch = "sm_90", string version = "13.0") =>
            KernelCompiler.CacheKey("f.cu", src, new Dictionary<string, string> { ["common.cuh"] = header }, KernelCompiler.StandardOptions(arch), version);
        string baseKey = Key();
        Assert.Equal(baseKey, KernelCompiler.CacheKey("f.cu", "k", h, KernelCompiler.StandardOptions("sm_90"), "13.0"));
        Assert.Equal(64, baseKey.Length);
        Assert.NotEqual(baseKey, Key(src: "k2"));
        Assert.NotEqual(baseKey, Key(header: "b"));
        Assert.NotEqual(baseKey, Key(arch: "sm_80"));
        Assert.NotEqual(baseKey, Key(version: "13.1"));
    }

    [Fact]
    public void WithoutADriverTheBackendSaysSo()
    {
        if (CudaBackend.IsAvailable(out _)) Assert.Skip("this machine has a CUDA GPU; the message for machines without one is not reachable");
        var e = Assert.Throws<CudaUnavailableException>(() => new CudaBackend());
        Assert.StartsWith("no CUDA", e.Message);
        Assert.Contains("use Device cpu", e.Message);
    }

    // ---- NVRTC only ----

    [Fact]
    public void CompiledKernelsAreCachedOnDiskByContentAndArchitecture()
    {
        Gpu.RequireNvrtc();
        string dir = Path.Combine(Path.GetTempPath(), "mosaicbert-cache-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            // A source no earlier run can have cached.
            string source = $"// {Guid.NewGuid()}\n#include \"common.cuh\"\nextern \"C\" __global__ void probe(float* x) {{ x[threadIdx.x] = 1.f; }}\n";
            var first = new KernelCompiler(dir);
            byte[] cubin = first.Compile("probe.cu", source, KernelSources.Headers, "sm_90");
            Assert.Equal((1, 0), (first.Compilations, first.CacheHits));
            Assert.Equal([0x7F, (byte)'E', (byte)'L', (byte)'F'], cubin[..4]);
            var files = Directory.GetFiles(dir);
            Assert.Single(files);                                      // no temporary file left behind
            Assert.Matches(@"probe-[0-9a-f]{64}\.cubin$", files[0]);

            var second = new KernelCompiler(dir);                      // a new process, in effect
            Assert.Equal(cubin, second.Compile("probe.cu", source, KernelSources.Headers, "sm_90"));
            Assert.Equal((0, 1), (second.Compilations, second.CacheHits));

            second.Compile("probe.cu", source, KernelSources.Headers, "sm_80");          // another architecture: a miss
            second.Compile("probe.cu", source + "\n", KernelSources.Headers, "sm_90");   // another source: a miss
            Assert.Equal((2, 1), (second.Compilations, second.CacheHits));
            Assert.Equal(3, Directory.GetFiles(dir).Length);

            File.WriteAllText(files[0], "not a cubin");                // a damaged entry is recompiled, not used
            Assert.Equal(cubin.Length, second.Compile("probe.cu", source, KernelSources.Headers, "sm_90").Length);
            Assert.Equal(3, second.Compilations);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ACompileErrorShowsTheFileAndTheWholeNvrtcLog()
    {
        Gpu.RequireNvrtc();
        var compiler = new KernelCompiler(Path.Combine(Path.GetTempPath(), "mosaicbert-cache-test-" + Guid.NewGuid().ToString("N")));
        string source = "extern \"C\" __global__ void broken(float* x)\n{\n    x[0] = undefined_function_xyz(1.f);\n}\n";
        var e = Assert.Throws<CudaCompileException>(() => compiler.Compile("broken.cu", source, null, "sm_90"));
        Assert.Equal("broken.cu", e.FileName);
        Assert.Contains("broken.cu", e.Message);
        Assert.Contains("undefined_function_xyz", e.Log);             // NVRTC: identifier "undefined_function_xyz" is undefined
        Assert.Contains(e.Log, e.Message);
        Assert.Contains("--gpu-architecture=sm_90", e.Message);
        Assert.False(Directory.Exists(compiler.CacheDirectory) && Directory.GetFiles(compiler.CacheDirectory).Length > 0, "nothing cached");
    }

    [Fact]
    public void EveryEmbeddedKernelFileCompiles()
    {
        Gpu.RequireNvrtc();
        string arch = CudaBackend.IsAvailable(out _) ? Gpu.Backend.Device.Architecture : "sm_90";
        var compiler = new KernelCompiler();
        foreach (var file in KernelSources.Files)
            Assert.True(compiler.Compile(file, KernelSources.Read(file), KernelSources.Headers, arch).Length > 0, file);
    }

    // ---- GPU ----

    [Fact]
    public void ALaunchWithBadArgumentsNamesTheKernel()
    {
        var g = Gpu.Backend;
        var kernel = g.Kernel("elementwise.cu", "scale");
        using var x = g.Allocate(16);
        // 4096 threads per block is over every GPU's limit of 1024.
        var e = Assert.Throws<CudaException>(() => g.Launch(kernel, 1, 1, 4096, 0, g.Ptr(x), 1f, 16L));
        Assert.Equal("cuLaunchKernel", e.Call);
        Assert.Contains("scale (elementwise.cu)", e.Message);
        Assert.Contains("block 4096", e.Message);
        Assert.Contains("CUDA_ERROR_", e.ErrorName);
        g.Synchronize();   // the context is still usable
        g.Scale(x, 2);
        g.Synchronize();
    }

    [Fact]
    public void AMissingKernelNamesItAndItsFile()
    {
        var g = Gpu.Backend;
        var e = Assert.Throws<CudaException>(() => g.Kernel("elementwise.cu", "no_such_kernel"));
        Assert.Equal("cuModuleGetFunction", e.Call);
        Assert.Contains("no_such_kernel (elementwise.cu)", e.Message);
    }

    [Fact]
    public void ThePoolReusesFreedBlocksSoASteadyLoopAllocatesNothing()
    {
        var g = Gpu.Backend;
        int[][] shapes = [[1000], [64, 768], [33, 3072], [7]];
        void Step()
        {
            var ts = shapes.Select(s => g.Allocate(s)).ToList();
            g.Fill(ts[1], 1f);
            foreach (var t in ts) t.Dispose();
        }
        Step();
        long allocations = g.Pool.DriverAllocations, reuses = g.Pool.Reuses;
        for (int i = 0; i < 10; i++) Step();
        Assert.Equal(allocations, g.Pool.DriverAllocations);
        Assert.Equal(reuses + 10 * shapes.Length, g.Pool.Reuses);
        // A reused block is handed out zero-filled, as Allocate promises.
        using var again = g.Allocate(64, 768);
        Assert.All(Both.Host(again), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void EventsTimeQueuedWork()
    {
        var g = Gpu.Backend;
        using var start = new CudaEvent(g.Device);
        using var end = new CudaEvent(g.Device);
        using var x = g.Allocate(1 << 22);
        start.Record(g.Stream);
        for (int i = 0; i < 10; i++) g.Scale(x, 1.5f);
        end.Record(g.Stream);
        float ms = end.ElapsedMillisecondsSince(start);
        Assert.True(ms > 0 && ms < 10_000, $"{ms} ms");
    }

    [Fact]
    public void TheDeviceIsDescribed()
    {
        var g = Gpu.Backend;
        Assert.Equal("cuda:0", g.Name);
        Assert.Matches(@"^sm_\d+$", g.Device.Architecture);
        Assert.True(g.Device.MultiprocessorCount > 0);
        var (free, total) = g.Device.MemoryInfo();
        Assert.True(free > 0 && total >= free);
        TestContext.Current.SendDiagnosticMessage($"{g.Device}; kernel cache {g.Compiler.CacheDirectory}");
    }
}
