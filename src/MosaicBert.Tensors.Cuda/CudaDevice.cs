using System.Text;
using MosaicBert.Tensors.Cuda.Interop;
using static MosaicBert.Tensors.Cuda.Interop.Cu;

namespace MosaicBert.Tensors.Cuda;

/// <summary>
/// One GPU and its primary context (the context the CUDA runtime, and so cuBLASLt, uses too). The driver's current
/// context is per thread, so every backend call that touches the GPU first makes this context current on the calling
/// thread (<see cref="MakeCurrent"/>, a thread-static compare when it already is). The primary context is retained
/// once per process and never released: tensors may outlive a backend, and a released primary context would free them.
/// </summary>
public sealed class CudaDevice
{
    private static readonly object s_lock = new();
    private static readonly Dictionary<int, CudaDevice> s_open = [];
    private static string? s_initError;
    private static bool s_initialised;
    [ThreadStatic] private static nint t_current;

    private readonly nint _context;

    private unsafe CudaDevice(int ordinal)
    {
        Ordinal = ordinal;
        Check(cuDeviceGet(out int device, ordinal));
        Check(cuDeviceGetAttribute(out int major, AttributeComputeCapabilityMajor, device));
        Check(cuDeviceGetAttribute(out int minor, AttributeComputeCapabilityMinor, device));
        Check(cuDeviceGetAttribute(out int sms, AttributeMultiprocessorCount, device));
        Check(cuDeviceGetAttribute(out int smem, AttributeMaxSharedMemoryPerBlockOptin, device));
        byte* name = stackalloc byte[256];
        Check(cuDeviceGetName(name, 256, device));
        Name = Encoding.UTF8.GetString(name, new ReadOnlySpan<byte>(name, 256).IndexOf((byte)0) is var end and >= 0 ? end : 256);
        ComputeCapability = (major, minor);
        MultiprocessorCount = sms;
        MaxSharedMemoryPerBlock = smem;
        Check(cuDevicePrimaryCtxRetain(out _context, device));
        MakeCurrent();
    }

    /// <summary>Device ordinal (0 for the first GPU).</summary>
    public int Ordinal { get; }
    /// <summary>The device's name, e.g. "NVIDIA H200".</summary>
    public string Name { get; }
    /// <summary>Compute capability, e.g. (9, 0).</summary>
    public (int Major, int Minor) ComputeCapability { get; }
    /// <summary>The NVRTC target for this device, e.g. "sm_90".</summary>
    public string Architecture => $"sm_{ComputeCapability.Major}{ComputeCapability.Minor}";
    /// <summary>Streaming multiprocessors.</summary>
    public int MultiprocessorCount { get; }
    /// <summary>Shared memory one block may opt into, in bytes.</summary>
    public int MaxSharedMemoryPerBlock { get; }

    /// <summary>Opens device <paramref name="ordinal"/>, or throws <see cref="CudaUnavailableException"/> saying why not.</summary>
    public static CudaDevice Open(int ordinal = 0)
    {
        lock (s_lock)
        {
            if (s_open.TryGetValue(ordinal, out var open)) return open;
            if (!TryInitialise(out string reason)) throw new CudaUnavailableException(reason);
            Check(cuDeviceGetCount(out int count));
            if (ordinal < 0 || ordinal >= count)
                throw new CudaUnavailableException($"no CUDA device {ordinal}: the driver reports {count}; use Device cpu or a smaller ordinal");
            return s_open[ordinal] = new CudaDevice(ordinal);
        }
    }

    /// <summary>True when a CUDA driver loads and reports at least one device; otherwise the reason.</summary>
    public static bool IsAvailable(out string reason)
    {
        lock (s_lock)
        {
            if (!TryInitialise(out reason)) return false;
            if (cuDeviceGetCount(out int count) != Success || count == 0)
            {
                reason = "no CUDA device: the driver reports none; use Device cpu";
                return false;
            }
            return true;
        }
    }

    private static bool TryInitialise(out string reason)
    {
        if (!s_initialised)
        {
            s_initialised = true;
            if (!NativeLibraries.TryLoad(NativeLibraries.Cuda, out string error)) s_initError = error + "; use Device cpu";
            else
            {
                int r = cuInit(0);
                if (r == ErrorNoDevice) s_initError = "no CUDA device: cuInit returned CUDA_ERROR_NO_DEVICE; use Device cpu";
                else if (r != Success) s_initError = $"no CUDA device: cuInit returned {ErrorName(r)} ({ErrorString(r)}); use Device cpu";
            }
        }
        reason = s_initError ?? "";
        return s_initError is null;
    }

    /// <summary>Makes this device's primary context current on the calling thread.</summary>
    internal void MakeCurrent()
    {
        if (t_current == _context) return;
        Check(cuCtxSetCurrent(_context));
        t_current = _context;
    }

    /// <summary>Free and total device memory in bytes.</summary>
    public (long Free, long Total) MemoryInfo()
    {
        MakeCurrent();
        Check(cuMemGetInfo_v2(out nuint free, out nuint total));
        return ((long)free, (long)total);
    }

    /// <inheritdoc/>
    public override string ToString() => $"cuda:{Ordinal} ({Name}, {Architecture}, {MultiprocessorCount} SMs)";
}
