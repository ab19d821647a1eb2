using System.Numerics;
using static MosaicBert.Tensors.Cuda.Interop.Cu;

namespace MosaicBert.Tensors.Cuda;

/// <summary>A block of device memory rented from a <see cref="DeviceMemoryPool"/> (the storage of CUDA tensors).</summary>
public sealed class DeviceBuffer
{
    internal DeviceBuffer(ulong pointer, long bytes, long capacity)
    {
        Pointer = pointer;
        Bytes = bytes;
        Capacity = capacity;
    }

    /// <summary>Device address (CUdeviceptr); 0 for an empty buffer. At least 256-byte aligned.</summary>
    public ulong Pointer { get; }
    /// <summary>Bytes asked for.</summary>
    public long Bytes { get; }
    /// <summary>Bytes of the size class actually held.</summary>
    public long Capacity { get; }
    internal bool Returned { get; set; }
}

/// <summary>
/// A caching allocator: blocks are rounded up to size classes (four per power of two, so at most 25% is wasted) and
/// returned blocks go to a free list per class instead of back to the driver. A training loop that allocates the same
/// shapes every step therefore calls cuMemAlloc only during its first step. All users of one pool queue their work on
/// one stream, so a block freed by one op and rented by the next is ordered by the stream and needs no synchronisation.
/// When the driver runs out of memory the pool synchronises, frees every cached block and tries once more.
/// </summary>
public sealed class DeviceMemoryPool : IDisposable
{
    private readonly CudaDevice _device;
    private readonly CudaStream _stream;
    private readonly Dictionary<long, Stack<ulong>> _free = [];
    private readonly object _lock = new();
    private bool _disposed;

    /// <summary>Creates an empty pool whose blocks are used on <paramref name="stream"/>.</summary>
    public DeviceMemoryPool(CudaDevice device, CudaStream stream)
    {
        _device = device;
        _stream = stream;
    }

    /// <summary>Number of cuMemAlloc calls made so far.</summary>
    public long DriverAllocations { get; private set; }
    /// <summary>Rents served from a free list.</summary>
    public long Reuses { get; private set; }
    /// <summary>Bytes (of size classes) held by live buffers.</summary>
    public long BytesInUse { get; private set; }
    /// <summary>High-water mark of <see cref="BytesInUse"/> since creation or <see cref="ResetPeak"/>.</summary>
    public long PeakBytesInUse { get; private set; }
    /// <summary>Bytes held in the free lists.</summary>
    public long BytesCached { get; private set; }

    /// <summary>The size class of a request: 512 bytes at least, else the next multiple of a quarter power of two.</summary>
    public static long SizeClass(long bytes)
    {
        if (bytes <= 512) return 512;
        long p = 1L << (63 - BitOperations.LeadingZeroCount((ulong)(bytes - 1)));   // p < bytes ≤ 2p
        long step = Math.Max(p / 4, 512);
        return (bytes + step - 1) / step * step;
    }

    /// <summary>A buffer of at least <paramref name="bytes"/> bytes (contents undefined).</summary>
    public DeviceBuffer Rent(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        if (bytes == 0) return new DeviceBuffer(0, 0, 0);
        long size = SizeClass(bytes);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            BytesInUse += size;
            PeakBytesInUse = Math.Max(PeakBytesInUse, BytesInUse);
            if (_free.TryGetValue(size, out var list) && list.Count > 0)
            {
                Reuses++;
                BytesCached -= size;
                return new DeviceBuffer(list.Pop(), bytes, size);
            }
            _device.MakeCurrent();
            int r = cuMemAlloc_v2(out ulong pointer, (nuint)size);
            if (r == ErrorOutOfMemory)
            {
                ReleaseCachedLocked();
                r = cuMemAlloc_v2(out pointer, (nuint)size);
            }
            if (r != Success)
            {
                BytesInUse -= size;
                throw new CudaException("cuMemAlloc_v2", r, ErrorName(r), ErrorString(r),
                    detail: $"{size} bytes requested; pool: {BytesInUse} in use, {BytesCached} cached");
            }
            DriverAllocations++;
            return new DeviceBuffer(pointer, bytes, size);
        }
    }

    /// <summary>Restarts <see cref="PeakBytesInUse"/> from the bytes in use now.</summary>
    public void ResetPeak()
    {
        lock (_lock) PeakBytesInUse = BytesInUse;
    }

    /// <summary>Puts a buffer back on its free list (a second return of the same buffer is ignored).</summary>
    public void Return(DeviceBuffer buffer)
    {
        if (buffer.Capacity == 0) return;
        lock (_lock)
        {
            if (buffer.Returned || _disposed) return;
            buffer.Returned = true;
            BytesInUse -= buffer.Capacity;
            BytesCached += buffer.Capacity;
            if (!_free.TryGetValue(buffer.Capacity, out var list)) _free[buffer.Capacity] = list = new Stack<ulong>();
            list.Push(buffer.Pointer);
        }
    }

    /// <summary>Waits for the stream, then gives every cached block back to the driver.</summary>
    public void ReleaseCached()
    {
        lock (_lock) ReleaseCachedLocked();
    }

    private void ReleaseCachedLocked()
    {
        _stream.Synchronize();   // queued work may still use a cached block
        _device.MakeCurrent();
        foreach (var list in _free.Values)
            while (list.Count > 0) Check(cuMemFree_v2(list.Pop()));
        BytesCached = 0;
    }

    /// <summary>Frees the cached blocks; blocks still rented stay allocated until the process ends.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            ReleaseCachedLocked();
            _disposed = true;
        }
    }
}
