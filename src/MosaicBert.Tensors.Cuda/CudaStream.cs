using static MosaicBert.Tensors.Cuda.Interop.Cu;

namespace MosaicBert.Tensors.Cuda;

/// <summary>
/// A CUDA stream. The backend queues all its work (copies, kernels, GEMMs) on one non-blocking stream, so work runs
/// in the order it was issued and memory returned to the pool can be reused by later work without a synchronisation.
/// </summary>
public sealed class CudaStream : IDisposable
{
    private readonly CudaDevice _device;

    /// <summary>Creates a non-blocking stream (no implicit ordering with the legacy default stream).</summary>
    public CudaStream(CudaDevice device)
    {
        _device = device;
        device.MakeCurrent();
        Check(cuStreamCreate(out nint handle, StreamNonBlocking));
        Handle = handle;
    }

    /// <summary>The CUstream (also a cudaStream_t for the runtime-based libraries).</summary>
    public nint Handle { get; private set; }

    /// <summary>Blocks until all work queued so far has finished; asynchronous kernel faults surface here.</summary>
    public void Synchronize(string? lastKernel = null)
    {
        _device.MakeCurrent();
        Check(cuStreamSynchronize(Handle), lastKernel is null ? null : $"{lastKernel}, the last launched; MOSAICBERT_CUDA_SYNC=1 checks every launch");
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (Handle == 0) return;
        _device.MakeCurrent();
        cuStreamDestroy_v2(Handle);
        Handle = 0;
    }
}

/// <summary>A CUDA event, for timing work on a stream (milliseconds between two recorded events).</summary>
public sealed class CudaEvent : IDisposable
{
    private readonly CudaDevice _device;

    /// <summary>Creates a timing event.</summary>
    public CudaEvent(CudaDevice device)
    {
        _device = device;
        device.MakeCurrent();
        Check(cuEventCreate(out nint handle, EventDefault));
        Handle = handle;
    }

    /// <summary>The CUevent.</summary>
    public nint Handle { get; private set; }

    /// <summary>Records the event at the current end of <paramref name="stream"/>.</summary>
    public void Record(CudaStream stream)
    {
        _device.MakeCurrent();
        Check(cuEventRecord(Handle, stream.Handle));
    }

    /// <summary>Waits for the event, then returns the milliseconds from <paramref name="start"/> to it.</summary>
    public float ElapsedMillisecondsSince(CudaEvent start)
    {
        _device.MakeCurrent();
        Check(cuEventSynchronize(Handle));
        Check(cuEventElapsedTime(out float ms, start.Handle, Handle));
        return ms;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (Handle == 0) return;
        _device.MakeCurrent();
        cuEventDestroy_v2(Handle);
        Handle = 0;
    }
}
