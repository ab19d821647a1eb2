using System.Reflection;
using static MosaicBert.Tensors.Cuda.Interop.Cu;

namespace MosaicBert.Tensors.Cuda;

/// <summary>The project's kernel sources, embedded from Kernels/*.cu and Kernels/*.cuh.</summary>
public static class KernelSources
{
    private const string Prefix = "MosaicBert.Tensors.Cuda.Kernels.";
    private static readonly Assembly s_assembly = typeof(KernelSources).Assembly;

    /// <summary>File names of the .cu kernel families, e.g. "layernorm.cu".</summary>
    public static IReadOnlyList<string> Files { get; } =
        [.. s_assembly.GetManifestResourceNames().Where(n => n.StartsWith(Prefix, StringComparison.Ordinal) && n.EndsWith(".cu", StringComparison.Ordinal))
            .Select(n => n[Prefix.Length..]).Order(StringComparer.Ordinal)];

    /// <summary>Headers the kernels may include (name → text), offered to NVRTC with every file.</summary>
    public static IReadOnlyDictionary<string, string> Headers { get; } =
        s_assembly.GetManifestResourceNames().Where(n => n.StartsWith(Prefix, StringComparison.Ordinal) && n.EndsWith(".cuh", StringComparison.Ordinal))
            .ToDictionary(n => n[Prefix.Length..], n => Read(n[Prefix.Length..]));

    /// <summary>The text of one embedded kernel file.</summary>
    public static string Read(string fileName)
    {
        using var stream = s_assembly.GetManifestResourceStream(Prefix + fileName)
            ?? throw new FileNotFoundException($"No embedded kernel file {fileName}; the files are {string.Join(", ", Files)}.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}

/// <summary>A loaded kernel: its CUfunction and, for messages, "name (file)".</summary>
public sealed class Kernel
{
    internal Kernel(string file, string name, nint function)
    {
        File = file;
        Name = name;
        Function = function;
    }

    /// <summary>The .cu file it came from.</summary>
    public string File { get; }
    /// <summary>The extern "C" function name.</summary>
    public string Name { get; }
    internal nint Function { get; }
    /// <summary>Dynamic shared memory this kernel has been allowed (raised past 48 KB on demand).</summary>
    internal int SharedMemoryLimit { get; set; } = 48 * 1024;

    /// <inheritdoc/>
    public override string ToString() => $"{Name} ({File})";
}

/// <summary>
/// One kernel argument, held in an 8-byte slot: cuLaunchKernel reads each parameter's own size from the address it is
/// given, so an int or float reads the low 4 bytes (little-endian), a pointer or 64-bit integer all 8. The C# type
/// at the call site must therefore match the kernel's parameter: int ↔ int, long ↔ long long, ulong ↔ pointers and
/// unsigned long long, uint ↔ unsigned, float ↔ float.
/// </summary>
public readonly struct KernelArg
{
    internal readonly ulong Bits;
    private KernelArg(ulong bits) => Bits = bits;

    /// <summary>An int parameter.</summary>
    public static implicit operator KernelArg(int value) => new((ulong)(long)value);
    /// <summary>An unsigned parameter.</summary>
    public static implicit operator KernelArg(uint value) => new(value);
    /// <summary>A long long parameter.</summary>
    public static implicit operator KernelArg(long value) => new((ulong)value);
    /// <summary>A pointer or unsigned long long parameter.</summary>
    public static implicit operator KernelArg(ulong value) => new(value);
    /// <summary>A float parameter.</summary>
    public static implicit operator KernelArg(float value) => new(BitConverter.SingleToUInt32Bits(value));
    /// <summary>A double parameter.</summary>
    public static implicit operator KernelArg(double value) => new(BitConverter.DoubleToUInt64Bits(value));
}

/// <summary>
/// The kernels of one backend: each .cu file is compiled (or read from the cache) and loaded as a module the first
/// time one of its kernels is asked for.
/// </summary>
internal sealed class KernelLibrary : IDisposable
{
    private readonly CudaDevice _device;
    private readonly KernelCompiler _compiler;
    private readonly Dictionary<string, nint> _modules = [];
    private readonly Dictionary<(string File, string Name), Kernel> _kernels = [];

    public KernelLibrary(CudaDevice device, KernelCompiler compiler)
    {
        _device = device;
        _compiler = compiler;
    }

    /// <summary>Kernel <paramref name="name"/> of the embedded file <paramref name="file"/>.</summary>
    public Kernel Get(string file, string name)
    {
        if (_kernels.TryGetValue((file, name), out var kernel)) return kernel;
        if (!_modules.TryGetValue(file, out nint module))
            _modules[file] = module = Load(file, KernelSources.Read(file), KernelSources.Headers);
        return _kernels[(file, name)] = Function(module, file, name);
    }

    /// <summary>Compiles and loads a source that is not embedded (tests, experiments) and returns one of its kernels.</summary>
    public Kernel FromSource(string file, string source, string name)
    {
        if (!_modules.TryGetValue(file, out nint module)) _modules[file] = module = Load(file, source, KernelSources.Headers);
        return Function(module, file, name);
    }

    private Kernel Function(nint module, string file, string name)
    {
        _device.MakeCurrent();
        Check(cuModuleGetFunction(out nint f, module, name), $"{name} ({file})");
        return new Kernel(file, name, f);
    }

    private unsafe nint Load(string file, string source, IReadOnlyDictionary<string, string> headers)
    {
        _device.MakeCurrent();
        byte[] cubin = _compiler.Compile(file, source, headers, _device.Architecture);
        int r;
        nint module;
        fixed (byte* p = cubin) r = cuModuleLoadData(out module, p);
        if (r != Success)
        {
            // A cached cubin the driver rejects (another driver, a damaged file): compile afresh once.
            cubin = _compiler.Compile(file, source, headers, _device.Architecture, useCache: false);
            fixed (byte* p = cubin) Check(cuModuleLoadData(out module, p), file);
        }
        return module;
    }

    public void Dispose()
    {
        _device.MakeCurrent();
        foreach (var module in _modules.Values) cuModuleUnload(module);
        _modules.Clear();
        _kernels.Clear();
    }
}
