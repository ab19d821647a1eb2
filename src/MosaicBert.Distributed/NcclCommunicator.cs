using MosaicBert.Distributed.Interop;
using MosaicBert.Tensors.Cuda;
using static MosaicBert.Distributed.Interop.Nccl;

namespace MosaicBert.Distributed;

/// <summary>
/// One rank's NCCL communicator on one GPU. Collectives are queued on a CUDA stream and return at once; they take
/// device addresses and element counts so fp32 and bf16 buffers (and 8-byte host statistics staged on the device) all
/// go through the same calls.
/// </summary>
/// <remarks>
/// <see cref="Abort"/> may be called from another thread (the control channel's watchdog) while this rank is blocked
/// in a collective or waiting on its stream: NCCL's kernels see the abort flag and return, and the communicator is
/// freed. After that every call throws <see cref="DistributedFailureException"/> instead of touching freed memory.
/// </remarks>
public sealed class NcclCommunicator : IDisposable
{
    private readonly CudaDevice _device;
    private readonly Lock _lock = new();
    private nint _comm;
    private volatile string? _aborted;

    private NcclCommunicator(CudaDevice device, nint comm, int rank, int worldSize)
    {
        _device = device;
        _comm = comm;
        Rank = rank;
        WorldSize = worldSize;
    }

    /// <summary>This rank.</summary>
    public int Rank { get; }
    /// <summary>Number of ranks.</summary>
    public int WorldSize { get; }
    /// <summary>The GPU.</summary>
    public CudaDevice Device => _device;

    /// <summary>True when NCCL loads here; otherwise the reason.</summary>
    public static bool IsAvailable(out string reason) => NcclLibrary.TryLoad(out reason);

    /// <summary>NCCL's version code, e.g. 22805 for 2.28.5.</summary>
    public static int Version
    {
        get
        {
            RequireLibrary();
            Check(ncclGetVersion(out int version));
            return version;
        }
    }

    /// <summary>A new communicator id (rank 0 makes it and the rendezvous sends it to the others).</summary>
    public static NcclUniqueId CreateUniqueId()
    {
        RequireLibrary();
        Check(ncclGetUniqueId(out var id));
        return id;
    }

    /// <summary>
    /// Joins the communicator <paramref name="id"/> as <paramref name="rank"/> of <paramref name="worldSize"/> on
    /// <paramref name="device"/>. Blocks until every rank has joined (NCCL's own connection setup).
    /// </summary>
    public static NcclCommunicator Create(CudaDevice device, NcclUniqueId id, int rank, int worldSize)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfLessThan(worldSize, 1);
        if (rank < 0 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), $"Rank {rank} is not in 0..{worldSize - 1}.");
        RequireLibrary();
        // NCCL picks the GPU from the CUDA runtime's current device, which follows the driver context current on
        // this thread: the device's primary context.
        device.MakeCurrent();
        Check(ncclCommInitRank(out nint comm, worldSize, id, rank), detail: $"rank {rank} of {worldSize} on {device}");
        return new NcclCommunicator(device, comm, rank, worldSize);
    }

    private static void RequireLibrary()
    {
        if (!NcclLibrary.TryLoad(out string reason)) throw new InvalidOperationException(reason);
    }

    /// <summary>
    /// In-place or out-of-place all-reduce of <paramref name="count"/> elements at device addresses, queued on
    /// <paramref name="stream"/> (a CUstream).
    /// </summary>
    public void AllReduce(ulong send, ulong receive, long count, NcclDataType type, NcclReduceOp op, nint stream)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        nint comm = Handle();
        _device.MakeCurrent();
        Check(ncclAllReduce(send, receive, (nuint)count, type, op, comm, stream), comm, $"{op} of {count} {type} on rank {Rank}");
    }

    /// <summary>Broadcast of <paramref name="count"/> elements from <paramref name="root"/>'s buffer, queued on <paramref name="stream"/>.</summary>
    public void Broadcast(ulong send, ulong receive, long count, NcclDataType type, int root, nint stream)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (root < 0 || root >= WorldSize) throw new ArgumentOutOfRangeException(nameof(root), $"Root {root} is not in 0..{WorldSize - 1}.");
        nint comm = Handle();
        _device.MakeCurrent();
        Check(ncclBroadcast(send, receive, (nuint)count, type, root, comm, stream), comm, $"{count} {type} from rank {root}");
    }

    /// <summary>The communicator's asynchronous error (a network failure, a remote rank's error), or null while healthy.</summary>
    public string? AsyncError()
    {
        nint comm = _comm;
        if (_aborted is not null || comm == 0) return null;
        int r = ncclCommGetAsyncError(comm, out int error);
        if (r != Success) return $"ncclCommGetAsyncError failed: {ErrorString(r)}";
        return error is Success or InProgress ? null : $"ncclCommGetAsyncError: ncclResult_t {error}: {ErrorString(error)}";
    }

    /// <summary>
    /// Aborts the communicator (ncclCommAbort): unfinished collectives stop, their kernels return, the resources are
    /// freed. Safe to call from any thread, once or more; later calls on this communicator throw with
    /// <paramref name="reason"/>.
    /// </summary>
    public void Abort(string reason)
    {
        nint comm;
        lock (_lock)
        {
            if (_aborted is not null || _comm == 0) return;
            _aborted = reason;
            comm = _comm;
            _comm = 0;
        }
        ncclCommAbort(comm);
    }

    private nint Handle()
    {
        if (_aborted is string reason) throw new DistributedFailureException($"The NCCL communicator was aborted: {reason}", null);
        ObjectDisposedException.ThrowIf(_comm == 0, this);
        return _comm;
    }

    /// <summary>Destroys the communicator after its queued work (ncclCommDestroy); nothing to do after an abort.</summary>
    public void Dispose()
    {
        nint comm;
        lock (_lock)
        {
            comm = _comm;
            _comm = 0;
        }
        if (comm != 0)
        {
            _device.MakeCurrent();
            ncclCommDestroy(comm);
        }
    }
}

/// <summary>Device addresses of CUDA tensors, for the raw collectives.</summary>
public static class CudaTensors
{
    /// <summary>The device address of <paramref name="tensor"/>'s first element.</summary>
    /// <exception cref="ArgumentException">The tensor is not on a CUDA backend.</exception>
    public static ulong Pointer(MosaicBert.Tensors.Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        return tensor.Backend is CudaBackend cuda ? cuda.Ptr(tensor)
            : throw new ArgumentException($"The tensor is on {tensor.Backend.Name}; NCCL needs a CUDA tensor.", nameof(tensor));
    }
}
