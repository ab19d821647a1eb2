using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using MosaicBert.Tensors.Cuda.Interop;
using static MosaicBert.Tensors.Cuda.Interop.Nvrtc;

namespace MosaicBert.Tensors.Cuda;

/// <summary>
/// Compiles CUDA C++ to cubins with NVRTC and caches them on disk. The cache key is the SHA-256 of everything that
/// determines the output: the NVRTC version, the target architecture, the options, the file name, the source and every
/// header offered to it. A cubin is written to a temporary file in the cache folder and renamed into place, so a
/// reader never sees a partial file, and concurrent processes at worst compile the same thing twice. A cache folder
/// that cannot be written only costs recompilation.
/// </summary>
public sealed class KernelCompiler
{
    private const string KeyVersion = "mosaicbert-kernels-1";
    private readonly object _lock = new();
    private string? _nvrtcVersion;

    /// <summary>Creates a compiler caching into <paramref name="cacheDirectory"/> (null: <see cref="DefaultCacheDirectory"/>).</summary>
    public KernelCompiler(string? cacheDirectory = null) => CacheDirectory = cacheDirectory ?? DefaultCacheDirectory();

    /// <summary>Where cubins are cached.</summary>
    public string CacheDirectory { get; }
    /// <summary>NVRTC compilations run (cache misses).</summary>
    public int Compilations { get; private set; }
    /// <summary>Cubins read from the disk cache.</summary>
    public int CacheHits { get; private set; }

    /// <summary>
    /// $MOSAICBERT_KERNEL_CACHE, else $XDG_CACHE_HOME/mosaicbert/kernels, else ~/.cache/mosaicbert/kernels.
    /// </summary>
    public static string DefaultCacheDirectory()
    {
        if (Environment.GetEnvironmentVariable("MOSAICBERT_KERNEL_CACHE") is { Length: > 0 } explicitDir) return explicitDir;
        string root = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg
            ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "mosaicbert", "kernels");
    }

    /// <summary>True when NVRTC loads; otherwise the reason.</summary>
    public static bool IsAvailable(out string reason) => NativeLibraries.TryLoad(NativeLibraries.Nvrtc, out reason);

    /// <summary>
    /// The options every kernel is compiled with: the exact target (a cubin, no PTX JIT at load), C++17, functions
    /// device-side by default. Fast math stays off: IEEE division and square root, denormals kept, accurate expf/erff.
    /// </summary>
    public static string[] StandardOptions(string architecture) =>
        [$"--gpu-architecture={architecture}", "-std=c++17", "-default-device"];

    /// <summary>
    /// The cubin for <paramref name="source"/> (named <paramref name="fileName"/> in messages), from the cache or from
    /// NVRTC. <paramref name="headers"/> maps include names to contents (everything the source may #include).
    /// Throws <see cref="CudaCompileException"/> with NVRTC's full log when the source does not compile.
    /// </summary>
    public byte[] Compile(string fileName, string source, IReadOnlyDictionary<string, string>? headers, string architecture,
        bool useCache = true)
    {
        headers ??= new Dictionary<string, string>();
        string[] options = StandardOptions(architecture);
        lock (_lock)
        {
            _nvrtcVersion ??= Version();
            string key = CacheKey(fileName, source, headers, options, _nvrtcVersion);
            string path = Path.Combine(CacheDirectory, $"{Path.GetFileNameWithoutExtension(fileName)}-{key}.cubin");
            if (useCache && TryRead(path) is { } cached)
            {
                CacheHits++;
                return cached;
            }
            byte[] cubin = RunNvrtc(fileName, source, headers, options);
            Compilations++;
            TryWriteAtomically(path, cubin);
            return cubin;
        }
    }

    /// <summary>Hex SHA-256 of the compile inputs (every string length-prefixed, so no two inputs collide by concatenation).</summary>
    internal static string CacheKey(string fileName, string source, IReadOnlyDictionary<string, string> headers, string[] options, string nvrtcVersion)
    {
        var text = new StringBuilder();
        void Add(string s) => text.Append(s.Length).Append(':').Append(s).Append('\n');
        Add(KeyVersion);
        Add(nvrtcVersion);
        foreach (var o in options) Add(o);
        Add(fileName);
        Add(source);
        foreach (var (name, content) in headers.OrderBy(h => h.Key, StringComparer.Ordinal))
        {
            Add(name);
            Add(content);
        }
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    private static byte[]? TryRead(string path)
    {
        try
        {
            if (!File.Exists(path)) return null;
            byte[] bytes = File.ReadAllBytes(path);
            // A cubin is an ELF image; anything else (a truncated or foreign file) is treated as a miss.
            return bytes.Length > 4 && bytes[0] == 0x7F && bytes[1] == (byte)'E' && bytes[2] == (byte)'L' && bytes[3] == (byte)'F' ? bytes : null;
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    private static void TryWriteAtomically(string path, byte[] bytes)
    {
        string temp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllBytes(temp, bytes);
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private static unsafe byte[] RunNvrtc(string fileName, string source, IReadOnlyDictionary<string, string> headers, string[] options)
    {
        var names = headers.Keys.ToArray();
        var native = new List<nint>();
        nint Utf8(string s)
        {
            nint p = Marshal.StringToCoTaskMemUTF8(s);
            native.Add(p);
            return p;
        }
        nint program = 0;
        try
        {
            byte** headerPtrs = stackalloc byte*[Math.Max(1, names.Length)];
            byte** namePtrs = stackalloc byte*[Math.Max(1, names.Length)];
            for (int i = 0; i < names.Length; i++)
            {
                headerPtrs[i] = (byte*)Utf8(headers[names[i]]);
                namePtrs[i] = (byte*)Utf8(names[i]);
            }
            Check(nvrtcCreateProgram(out program, source, fileName, names.Length, headerPtrs, namePtrs), fileName);
            byte** optionPtrs = stackalloc byte*[options.Length];
            for (int i = 0; i < options.Length; i++) optionPtrs[i] = (byte*)Utf8(options[i]);
            int result = nvrtcCompileProgram(program, options.Length, optionPtrs);
            if (result == ErrorCompilation) throw new CudaCompileException(fileName, Log(program), options);
            if (result != Success)
            {
                // e.g. NVRTC_ERROR_INVALID_OPTION for an architecture this NVRTC does not know: the log says which.
                string text = ErrorString(result);
                throw new CudaException("nvrtcCompileProgram", result, text, text, detail: $"{fileName}, options {string.Join(' ', options)}: {Log(program)}");
            }
            Check(nvrtcGetCUBINSize(program, out nuint size), fileName);
            var cubin = new byte[(int)size];
            fixed (byte* p = cubin) Check(nvrtcGetCUBIN(program, p), fileName);
            return cubin;
        }
        finally
        {
            if (program != 0) nvrtcDestroyProgram(ref program);
            foreach (var p in native) Marshal.FreeCoTaskMem(p);
        }
    }

    private static unsafe string Log(nint program)
    {
        if (nvrtcGetProgramLogSize(program, out nuint size) != Success || size <= 1) return "(NVRTC wrote no log)";
        var log = new byte[(int)size];
        fixed (byte* p = log)
            if (nvrtcGetProgramLog(program, p) != Success) return "(NVRTC's log could not be read)";
        return Encoding.UTF8.GetString(log, 0, log.Length - 1).TrimEnd();
    }
}
