using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MosaicBert.Tensors.Cuda.Interop;

/// <summary>NVRTC (libnvrtc.so.13): CUDA C++ source → cubin at run time. nvrtcResult is int; nvrtcProgram is nint.</summary>
internal static unsafe partial class Nvrtc
{
    static Nvrtc() => NativeLibraries.Register();
    private const string Lib = NativeLibraries.Nvrtc;

    public const int Success = 0;
    public const int ErrorCompilation = 6;

    [LibraryImport(Lib)] public static partial int nvrtcVersion(out int major, out int minor);
    [LibraryImport(Lib)] public static partial int nvrtcGetNumSupportedArchs(out int count);
    [LibraryImport(Lib)] public static partial int nvrtcGetSupportedArchs(int* archs);
    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int nvrtcCreateProgram(out nint program, string source, string name, int numHeaders, byte** headers, byte** includeNames);
    [LibraryImport(Lib)] public static partial int nvrtcDestroyProgram(ref nint program);
    [LibraryImport(Lib)] public static partial int nvrtcCompileProgram(nint program, int numOptions, byte** options);
    [LibraryImport(Lib)] public static partial int nvrtcGetProgramLogSize(nint program, out nuint size);
    [LibraryImport(Lib)] public static partial int nvrtcGetProgramLog(nint program, byte* log);
    [LibraryImport(Lib)] public static partial int nvrtcGetCUBINSize(nint program, out nuint size);
    [LibraryImport(Lib)] public static partial int nvrtcGetCUBIN(nint program, byte* cubin);
    [LibraryImport(Lib)] public static partial nint nvrtcGetErrorString(int result);

    public static string ErrorString(int result) => Marshal.PtrToStringUTF8(nvrtcGetErrorString(result)) ?? $"nvrtcResult {result}";

    /// <summary>Throws <see cref="CudaException"/> naming the call unless <paramref name="result"/> is NVRTC_SUCCESS.</summary>
    public static void Check(int result, string? kernel = null, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result != Success)
        {
            string text = ErrorString(result);
            throw new CudaException(CudaException.CallName(call), result, text, text, kernel);
        }
    }

    /// <summary>"major.minor" of the loaded NVRTC (part of the compile-cache key).</summary>
    public static string Version()
    {
        Check(nvrtcVersion(out int major, out int minor));
        return $"{major}.{minor}";
    }

    /// <summary>The sm_XY architectures this NVRTC can emit cubins for.</summary>
    public static int[] SupportedArchitectures()
    {
        Check(nvrtcGetNumSupportedArchs(out int n));
        var archs = new int[n];
        fixed (int* p = archs) Check(nvrtcGetSupportedArchs(p));
        return archs;
    }
}
