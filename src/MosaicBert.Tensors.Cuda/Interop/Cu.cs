using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MosaicBert.Tensors.Cuda.Interop;

/// <summary>
/// The CUDA driver API (libcuda.so.1), only what the backend uses. Types: CUresult and CUdevice are int, CUdeviceptr is
/// ulong, handles (CUcontext, CUstream, CUevent, CUmodule, CUfunction) are nint, size_t is nuint. The _v2 entry
/// points are the ones cuda.h maps the plain names to.
/// </summary>
internal static unsafe partial class Cu
{
    static Cu() => NativeLibraries.Register();
    private const string Lib = NativeLibraries.Cuda;

    public const int Success = 0;
    public const int ErrorOutOfMemory = 2;
    public const int ErrorNoDevice = 100;

    public const int AttributeMultiprocessorCount = 16;
    public const int AttributeComputeCapabilityMajor = 75;
    public const int AttributeComputeCapabilityMinor = 76;
    public const int AttributeMaxSharedMemoryPerBlockOptin = 97;
    public const int FuncAttributeMaxDynamicSharedSizeBytes = 8;
    public const uint StreamNonBlocking = 1;
    public const uint EventDefault = 0;

    [LibraryImport(Lib)] public static partial int cuInit(uint flags);
    [LibraryImport(Lib)] public static partial int cuDriverGetVersion(out int version);
    [LibraryImport(Lib)] public static partial int cuDeviceGetCount(out int count);
    [LibraryImport(Lib)] public static partial int cuDeviceGet(out int device, int ordinal);
    [LibraryImport(Lib)] public static partial int cuDeviceGetAttribute(out int value, int attribute, int device);
    [LibraryImport(Lib)] public static partial int cuDeviceGetName(byte* name, int length, int device);
    [LibraryImport(Lib)] public static partial int cuDevicePrimaryCtxRetain(out nint context, int device);
    [LibraryImport(Lib)] public static partial int cuCtxSetCurrent(nint context);
    [LibraryImport(Lib)] public static partial int cuMemGetInfo_v2(out nuint free, out nuint total);

    [LibraryImport(Lib)] public static partial int cuMemAlloc_v2(out ulong pointer, nuint bytes);
    [LibraryImport(Lib)] public static partial int cuMemFree_v2(ulong pointer);
    [LibraryImport(Lib)] public static partial int cuMemcpyHtoD_v2(ulong destination, void* source, nuint bytes);
    [LibraryImport(Lib)] public static partial int cuMemcpyDtoH_v2(void* destination, ulong source, nuint bytes);
    [LibraryImport(Lib)] public static partial int cuMemcpyHtoDAsync_v2(ulong destination, void* source, nuint bytes, nint stream);
    [LibraryImport(Lib)] public static partial int cuMemcpyDtoHAsync_v2(void* destination, ulong source, nuint bytes, nint stream);
    [LibraryImport(Lib)] public static partial int cuMemcpyDtoDAsync_v2(ulong destination, ulong source, nuint bytes, nint stream);
    [LibraryImport(Lib)] public static partial int cuMemsetD32_v2(ulong destination, uint value, nuint count);
    [LibraryImport(Lib)] public static partial int cuMemsetD32Async(ulong destination, uint value, nuint count, nint stream);
    [LibraryImport(Lib)] public static partial int cuMemsetD16Async(ulong destination, ushort value, nuint count, nint stream);
    [LibraryImport(Lib)] public static partial int cuMemAllocHost_v2(out nint pointer, nuint bytes);
    [LibraryImport(Lib)] public static partial int cuMemFreeHost(nint pointer);

    [LibraryImport(Lib)] public static partial int cuStreamCreate(out nint stream, uint flags);
    [LibraryImport(Lib)] public static partial int cuStreamDestroy_v2(nint stream);
    [LibraryImport(Lib)] public static partial int cuStreamSynchronize(nint stream);
    [LibraryImport(Lib)] public static partial int cuEventCreate(out nint ev, uint flags);
    [LibraryImport(Lib)] public static partial int cuEventRecord(nint ev, nint stream);
    [LibraryImport(Lib)] public static partial int cuEventSynchronize(nint ev);
    [LibraryImport(Lib)] public static partial int cuEventElapsedTime(out float milliseconds, nint start, nint end);
    [LibraryImport(Lib)] public static partial int cuEventDestroy_v2(nint ev);

    [LibraryImport(Lib)] public static partial int cuModuleLoadData(out nint module, void* image);
    [LibraryImport(Lib)] public static partial int cuModuleUnload(nint module);
    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int cuModuleGetFunction(out nint function, nint module, string name);
    [LibraryImport(Lib)] public static partial int cuFuncSetAttribute(nint function, int attribute, int value);
    [LibraryImport(Lib)]
    public static partial int cuLaunchKernel(nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedMemBytes, nint stream, void** kernelParams, void** extra);

    [LibraryImport(Lib)] public static partial int cuGetErrorName(int error, out nint text);
    [LibraryImport(Lib)] public static partial int cuGetErrorString(int error, out nint text);

    /// <summary>"CUDA_ERROR_ILLEGAL_ADDRESS" for an error code (or "CUresult N" when the driver does not know it).</summary>
    public static string ErrorName(int error) =>
        cuGetErrorName(error, out nint p) == Success && p != 0 ? Marshal.PtrToStringUTF8(p)! : $"CUresult {error}";

    /// <summary>The driver's description of an error code.</summary>
    public static string ErrorString(int error) =>
        cuGetErrorString(error, out nint p) == Success && p != 0 ? Marshal.PtrToStringUTF8(p)! : "unknown error";

    /// <summary>
    /// Throws <see cref="CudaException"/> unless <paramref name="result"/> is CUDA_SUCCESS. The call's name is taken from
    /// the expression at the call site (<c>Check(cuMemAlloc_v2(...))</c> names cuMemAlloc_v2).
    /// </summary>
    public static void Check(int result, string? kernel = null, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result != Success) throw new CudaException(CudaException.CallName(call), result, ErrorName(result), ErrorString(result), kernel);
    }
}
