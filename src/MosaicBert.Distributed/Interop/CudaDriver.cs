using System.Reflection;
using System.Runtime.InteropServices;

namespace MosaicBert.Distributed.Interop;

/// <summary>
/// The few CUDA driver calls the communication stream needs that the CUDA backend's interop does not declare
/// (cross-stream ordering with events). Resolved to the driver the backend has already loaded.
/// </summary>
internal static partial class CudaDriver
{
    public const string Name = "cuda-driver";
    public const uint EventDisableTiming = 2;
    public const uint StreamNonBlocking = 1;

    static CudaDriver() => NcclLibrary.Register(); // the assembly's one resolver maps Name here

    private static readonly Lazy<nint> s_handle = new(() =>
    {
        foreach (var candidate in new[] { Environment.GetEnvironmentVariable("MOSAICBERT_LIBCUDA"), "libcuda.so.1",
            "/usr/local/nvidia/lib64/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1" })
            if (!string.IsNullOrEmpty(candidate) && NativeLibrary.TryLoad(candidate, out nint handle)) return handle;
        return 0;
    });

    internal static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path) => name == Name ? s_handle.Value : 0;

    [LibraryImport(Name)] public static partial int cuStreamCreate(out nint stream, uint flags);
    [LibraryImport(Name)] public static partial int cuStreamDestroy_v2(nint stream);
    [LibraryImport(Name)] public static partial int cuStreamSynchronize(nint stream);
    [LibraryImport(Name)] public static partial int cuStreamWaitEvent(nint stream, nint ev, uint flags);
    [LibraryImport(Name)] public static partial int cuEventCreate(out nint ev, uint flags);
    [LibraryImport(Name)] public static partial int cuEventRecord(nint ev, nint stream);
    [LibraryImport(Name)] public static partial int cuEventSynchronize(nint ev);
    [LibraryImport(Name)] public static partial int cuEventDestroy_v2(nint ev);
}
