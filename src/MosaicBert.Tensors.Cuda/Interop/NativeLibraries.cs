using System.Reflection;
using System.Runtime.InteropServices;

namespace MosaicBert.Tensors.Cuda.Interop;

/// <summary>
/// Finds the NVIDIA libraries at run time. The P/Invoke declarations name logical libraries ("cuda", "nvrtc",
/// "cublasLt"); this resolver maps each to the first candidate that loads: the soname through the normal search
/// path (LD_LIBRARY_PATH, ldconfig), then the usual install locations as fallbacks, so nothing CUDA is needed at
/// build time and a machine without it fails with a message instead of a DllNotFoundException.
/// MOSAICBERT_LIBCUDA, MOSAICBERT_LIBNVRTC and MOSAICBERT_LIBCUBLASLT, when set, name a file to try first.
/// </summary>
internal static class NativeLibraries
{
    public const string Cuda = "cuda";
    public const string Nvrtc = "nvrtc";
    public const string CublasLt = "cublasLt";

    private static readonly Dictionary<string, Lazy<(nint Handle, string Error)>> s_libraries = new()
    {
        [Cuda] = new(() => Load(Cuda, "libcuda.so.1",
            "libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1",
            "/usr/lib/wsl/lib/libcuda.so.1", "nvcuda.dll")),
        [Nvrtc] = new(() => Load(Nvrtc, "libnvrtc.so.13", ToolkitCandidates("libnvrtc.so.13", "libnvrtc.so.12"))),
        [CublasLt] = new(() => Load(CublasLt, "libcublasLt.so.13", ToolkitCandidates("libcublasLt.so.13", "libcublasLt.so.12"))),
    };

    static NativeLibraries() =>
        NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);

    /// <summary>Touching this class installs the resolver (the static constructor runs once).</summary>
    public static void Register() { }

    /// <summary>Loads a logical library; false with a one-line reason when no candidate loads.</summary>
    public static bool TryLoad(string name, out string error)
    {
        var (handle, e) = s_libraries[name].Value;
        error = e;
        return handle != 0;
    }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path) =>
        s_libraries.TryGetValue(name, out var lib) ? lib.Value.Handle : 0;

    private static string[] ToolkitCandidates(params string[] sonames)
    {
        var dirs = new List<string>();
        foreach (var variable in new[] { "CUDA_HOME", "CUDA_PATH" })
            if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } root) dirs.Add(Path.Combine(root, "lib64"));
        dirs.AddRange(["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu"]);
        var list = new List<string>();
        foreach (var so in sonames)
        {
            list.Add(so);
            list.AddRange(dirs.Select(d => Path.Combine(d, so)));
        }
        return [.. list];
    }

    /// <summary>
    /// NVRTC dlopens libnvrtc-builtins.so.X.Y by bare name at compile time, which fails when NVRTC itself was found by
    /// a fallback path outside the loader's search path. Loading the builtins from NVRTC's folder first makes that name
    /// resolve to the already-loaded library.
    /// </summary>
    private static void PreloadBuiltins(string nvrtcPath)
    {
        string? dir = Path.GetDirectoryName(nvrtcPath);
        if (string.IsNullOrEmpty(dir) || !Directory.Exists(dir)) return;
        foreach (var builtins in Directory.GetFiles(dir, "libnvrtc-builtins.so.*").Order(StringComparer.Ordinal))
            if (NativeLibrary.TryLoad(builtins, out _)) return;
    }

    private static (nint, string) Load(string name, string soname, params string[] candidates)
    {
        if (Environment.GetEnvironmentVariable("MOSAICBERT_LIB" + name.ToUpperInvariant()) is { Length: > 0 } explicitPath)
            candidates = [explicitPath, .. candidates];
        foreach (var candidate in candidates)
            if (NativeLibrary.TryLoad(candidate, out nint handle))
            {
                if (name == Nvrtc) PreloadBuiltins(candidate);
                return (handle, "");
            }
        string what = name == Cuda ? "no CUDA driver" : $"no {name} library";
        return (0, $"{what}: {soname} not found (tried {string.Join(", ", candidates.Distinct())})");
    }
}
