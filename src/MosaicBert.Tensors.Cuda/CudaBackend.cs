using System.Runtime.InteropServices;
using MosaicBert.Tensors.Cuda.Interop;

namespace MosaicBert.Tensors.Cuda;

/// <summary>
/// The CUDA backend: tensors in device memory from a caching pool, GEMMs through cuBLASLt in true fp32, every other op
/// a kernel from the embedded Kernels/*.cu files, compiled with NVRTC for this GPU (cached on disk). All work is queued
/// on one stream in issue order; calls return before the GPU finishes, except those that bring data back to the host
/// (Download, SumOfSquares) and those that validate indices on the host (see CudaBackend.Rows.cs).
/// Not thread-safe, like the CPU backend: one thread at a time (any thread; the context is made current per call).
/// Set MOSAICBERT_CUDA_SYNC=1 to synchronise after every launch, so that an asynchronous fault names its kernel.
/// </summary>
public sealed partial class CudaBackend : Backend
{
    private const int ElementBlock = 256;
    private readonly CudaDevice _device;
    private readonly CudaStream _stream;
    private readonly DeviceMemoryPool _pool;
    private readonly KernelLibrary _kernels;
    private readonly CublasLtGemm _gemm;
    private readonly bool _syncEveryLaunch;
    private const long StagingBytes = 16L << 20;
    private Kernel? _lastKernel;
    private bool _disposed;
    private nint _staging;
    private long _stagingHead;


    /// <summary>
    /// Opens GPU <paramref name="device"/>. Throws <see cref="CudaUnavailableException"/> when there is no driver, no
    /// device, or no NVRTC / cuBLASLt library.
    /// </summary>
    /// <param name="device">Device ordinal.</param>
    /// <param name="compiler">Kernel compiler (and its cache folder); null for one on <see cref="KernelCompiler.DefaultCacheDirectory"/>.</param>
    public CudaBackend(int device = 0, KernelCompiler? compiler = null)
    {
        _device = CudaDevice.Open(device);
        if (!KernelCompiler.IsAvailable(out string nvrtc))
            throw new CudaUnavailableException($"{nvrtc}; the CUDA backend compiles its kernels with NVRTC; use Device cpu");
        if (!NativeLibraries.TryLoad(NativeLibraries.CublasLt, out string blas))
            throw new CudaUnavailableException($"{blas}; the CUDA backend's GEMMs use cuBLASLt; use Device cpu");
        _stream = new CudaStream(_device);
        _pool = new DeviceMemoryPool(_device, _stream);
        Compiler = compiler ?? new KernelCompiler();
        _kernels = new KernelLibrary(_device, Compiler);
        _gemm = new CublasLtGemm(_device, _pool);
        _syncEveryLaunch = Environment.GetEnvironmentVariable("MOSAICBERT_CUDA_SYNC") is "1" or "true";
    }

    /// <summary>True when a CUDA backend can start here (driver, device, NVRTC, cuBLASLt); otherwise the reason.</summary>
    public static bool IsAvailable(out string reason)
    {
        if (!CudaDevice.IsAvailable(out reason)) return false;
        if (!KernelCompiler.IsAvailable(out reason) || !NativeLibraries.TryLoad(NativeLibraries.CublasLt, out reason))
        {
            reason += "; use Device cpu";
            return false;
        }
        return true;
    }

    /// <inheritdoc/>
    public override string Name => $"cuda:{_device.Ordinal}";
    /// <summary>The GPU.</summary>
    public CudaDevice Device => _device;
    /// <summary>The stream all work is queued on.</summary>
    public CudaStream Stream => _stream;
    /// <summary>The device memory pool.</summary>
    public DeviceMemoryPool Pool => _pool;
    /// <summary>The NVRTC compiler and its cubin cache.</summary>
    public KernelCompiler Compiler { get; }

    /// <summary>Waits for all queued work; an asynchronous kernel fault surfaces here, naming the last kernel launched.</summary>
    public void Synchronize()
    {
        _stream.Synchronize(_lastKernel?.ToString());
        _stagingHead = 0;   // every queued copy out of the staging ring has completed
    }

    // ---- memory ----

    /// <inheritdoc/>
    public override Tensor Allocate(DType dtype, params int[] shape)
    {
        ThrowIfDisposed();
        long n = 1;
        foreach (int d in shape) n = checked(n * Math.Max(d, 0));
        long bytes = (n * dtype.SizeOf() + 3) & ~3L;   // whole 32-bit words, so the zero fill is one memset
        var buffer = _pool.Rent(bytes);
        if (n > 0) MemsetD32(buffer.Pointer, 0, bytes / 4);
        return new Tensor(this, buffer, dtype, 0, (int[])shape.Clone(), ownsStorage: true);
    }

    /// <inheritdoc/>
    protected internal override void Free(Tensor tensor)
    {
        if (tensor.Storage is DeviceBuffer buffer)
        {
            _hostShadows.Remove(buffer);
            if (!_disposed) _pool.Return(buffer);
        }
    }

    /// <inheritdoc/>
    /// <remarks>Into a bfloat16 tensor: uploaded as fp32 and converted on the device (round to nearest even).</remarks>
    public override void Upload(ReadOnlySpan<float> source, Tensor destination)
    {
        if (destination.DType == DType.BFloat16)
        {
            SameLength(source.Length, destination.Length);
            using var staged = Scratch(DType.Float32, source.Length);
            Upload(source, staged);
            Convert(staged, destination);
            return;
        }
        Check(destination, nameof(destination), DType.Float32);
        CopyIn(MemoryMarshal.AsBytes(source), destination);
    }

    /// <inheritdoc/>
    /// <remarks>The values are also kept on the host (see <see cref="HostInts"/>), so ops that validate indices read
    /// them there instead of waiting for the GPU.</remarks>
    public override void Upload(ReadOnlySpan<int> source, Tensor destination)
    {
        Check(destination, nameof(destination), DType.Int32);
        CopyIn(MemoryMarshal.AsBytes(source), destination);
        if (destination.Storage is DeviceBuffer buffer && source.Length > 0)
            _hostShadows[buffer] = new HostShadow(destination.Offset, source.ToArray());
    }

    /// <inheritdoc/>
    /// <remarks>From a bfloat16 tensor: converted to fp32 on the device (exact), then downloaded.</remarks>
    public override void Download(Tensor source, Span<float> destination)
    {
        if (source.DType == DType.BFloat16)
        {
            SameLength(source.Length, destination.Length);
            using var staged = Scratch(DType.Float32, source.Length);
            Convert(source, staged);
            Download(staged, destination);
            return;
        }
        Check(source, nameof(source), DType.Float32);
        CopyOut(source, MemoryMarshal.AsBytes(destination));
    }

    /// <inheritdoc/>
    public override void Download(Tensor source, Span<int> destination)
    {
        Check(source, nameof(source), DType.Int32);
        CopyOut(source, MemoryMarshal.AsBytes(destination));
    }

    /// <inheritdoc/>
    public override void Fill(Tensor tensor, float value)
    {
        Check(tensor, nameof(tensor), tensor.DType);
        if (tensor.Length == 0) return;
        Wrote(tensor);
        if (tensor.DType == DType.BFloat16)
        {
            _device.MakeCurrent();
            Cu.Check(Cu.cuMemsetD16Async(Ptr(tensor), BFloat16.FromFloat(value), (nuint)tensor.Length, _stream.Handle));
            return;
        }
        uint bits = tensor.DType == DType.Int32 ? (uint)(int)value : BitConverter.SingleToUInt32Bits(value);
        MemsetD32(Ptr(tensor), bits, tensor.Length);
    }

    /// <inheritdoc/>
    public override void Copy(Tensor source, Tensor destination)
    {
        Check(source, nameof(source), source.DType);
        Check(destination, nameof(destination), source.DType);
        SameLength(source.Length, destination.Length);
        if (source.Length == 0) return;
        Wrote(destination);
        _device.MakeCurrent();
        Cu.Check(Cu.cuMemcpyDtoDAsync_v2(Ptr(destination), Ptr(source), (nuint)source.Bytes, _stream.Handle));
    }

    /// <inheritdoc/>
    public override void Convert(Tensor source, Tensor destination)
    {
        Check(source, nameof(source), source.DType);
        Check(destination, nameof(destination), destination.DType);
        SameLength(source.Length, destination.Length);
        if (source.DType == destination.DType)
        {
            Copy(source, destination);
            return;
        }
        string kernel = (source.DType, destination.DType) switch
        {
            (DType.Float32, DType.BFloat16) => "f32_to_bf16",
            (DType.BFloat16, DType.Float32) => "bf16_to_f32",
            _ => throw new ArgumentException($"Convert: no conversion from {source.DType} to {destination.DType}."),
        };
        LaunchElements("convert.cu", kernel, source.Length, Ptr(source), Ptr(destination), source.Length);
    }

    // Host → device copies go through a pinned staging ring: the bytes are copied into it and the transfer is queued
    // on the stream, so Upload returns without waiting for the GPU (the host span may be reused at once). The ring
    // restarts after every synchronisation (then no queued copy still reads it); when a copy does not fit in the rest
    // of the ring, the stream is synchronised first. Copies larger than a quarter of the ring wait for themselves.
    private unsafe void CopyIn(ReadOnlySpan<byte> source, Tensor destination)
    {
        SameLength(source.Length / destination.ElementSize, destination.Length);
        if (source.Length == 0) return;
        Wrote(destination);
        _device.MakeCurrent();
        if (source.Length <= StagingBytes / 4)
        {
            if (_staging == 0)
            {
                Cu.Check(Cu.cuMemAllocHost_v2(out nint pinned, (nuint)StagingBytes), $"{StagingBytes} bytes of pinned staging memory");
                _staging = pinned;
            }
            if (_stagingHead + source.Length > StagingBytes) Synchronize();
            var slot = new Span<byte>((void*)(_staging + (nint)_stagingHead), source.Length);
            source.CopyTo(slot);
            Cu.Check(Cu.cuMemcpyHtoDAsync_v2(Ptr(destination), (void*)(_staging + (nint)_stagingHead), (nuint)source.Length, _stream.Handle));
            _stagingHead = (_stagingHead + source.Length + 255) & ~255L;
            return;
        }
        fixed (byte* p = source)
        {
            Cu.Check(Cu.cuMemcpyHtoDAsync_v2(Ptr(destination), p, (nuint)source.Length, _stream.Handle));
            Synchronize();
        }
    }

    private unsafe void CopyOut(Tensor source, Span<byte> destination)
    {
        SameLength(source.Length, destination.Length / source.ElementSize);
        if (destination.Length == 0) return;
        ReadBack(Ptr(source), destination);
    }

    /// <summary>Copies device bytes at <paramref name="pointer"/> into <paramref name="destination"/> after all queued work.</summary>
    private unsafe void ReadBack(ulong pointer, Span<byte> destination)
    {
        _device.MakeCurrent();
        fixed (byte* p = destination)
        {
            Cu.Check(Cu.cuMemcpyDtoHAsync_v2(p, pointer, (nuint)destination.Length, _stream.Handle));
            Synchronize();
        }
    }

    private void MemsetD32(ulong pointer, uint value, long count)
    {
        _device.MakeCurrent();
        Cu.Check(Cu.cuMemsetD32Async(pointer, value, (nuint)count, _stream.Handle));
    }

    private static void SameLength(long a, long b)
    {
        if (a != b) throw new ArgumentException($"Length mismatch: {a} elements vs {b}.");
    }

    /// <summary>Device address of a tensor's first element (0 for null).</summary>
    internal ulong Ptr(Tensor? t)
    {
        if (t is null) return 0;
        if (!ReferenceEquals(t.Backend, this)) throw new ArgumentException($"A tensor on {t.Backend.Name} was passed to {Name}.");
        return ((DeviceBuffer)t.Storage).Pointer + (ulong)(t.Offset * t.ElementSize);
    }

    // ---- host copies of index tensors ----

    /// <summary>The int values last uploaded into a buffer, from element <paramref name="Offset"/> on.</summary>
    private sealed record HostShadow(long Offset, int[] Values);

    private readonly Dictionary<DeviceBuffer, HostShadow> _hostShadows = [];

    /// <summary>Forgets the host copy of a buffer that something other than an int upload writes.</summary>
    private void Wrote(Tensor t)
    {
        if (t.DType == DType.Int32 && t.Storage is DeviceBuffer buffer) _hostShadows.Remove(buffer);
    }

    /// <summary>
    /// An int tensor's values on the host. Index tensors are filled by <see cref="Upload(ReadOnlySpan{int}, Tensor)"/>,
    /// which keeps what it uploaded, so this normally reads that copy and does not wait for the GPU (no kernel writes
    /// int tensors); otherwise it downloads (waits for queued work). Returns the cached array itself when the tensor
    /// is exactly the uploaded range: callers must not modify the result.
    /// </summary>
    private int[] HostInts(Tensor t)
    {
        if (t.Storage is DeviceBuffer buffer && _hostShadows.TryGetValue(buffer, out var shadow)
            && t.Offset >= shadow.Offset && t.Offset + t.Length <= shadow.Offset + shadow.Values.Length)
        {
            if (t.Offset == shadow.Offset && t.Length == shadow.Values.Length) return shadow.Values;
            return shadow.Values.AsSpan((int)(t.Offset - shadow.Offset), (int)t.Length).ToArray();
        }
        var values = new int[t.Length];
        Download(t, values);
        return values;
    }

    /// <summary>A scratch tensor from the pool (dispose it after queuing the work that uses it: reuse is stream-ordered).</summary>
    private Tensor Scratch(DType dtype, long elements) => Allocate(dtype, checked((int)Math.Max(elements, 0)));

    // ---- kernels ----

    /// <summary>Kernel <paramref name="name"/> of the embedded file <paramref name="file"/> (compiled on first use).</summary>
    internal Kernel Kernel(string file, string name)
    {
        ThrowIfDisposed();
        return _kernels.Get(file, name);
    }

    /// <summary>Compiles a kernel from source (not embedded): for tests and experiments.</summary>
    internal Kernel KernelFromSource(string file, string source, string name)
    {
        ThrowIfDisposed();
        return _kernels.FromSource(file, source, name);
    }

    /// <summary>
    /// Launches <paramref name="kernel"/> on the stream with a (gridX, gridY) grid of 1-D blocks. Dynamic shared memory
    /// past 48 KB is opted into on first need. Any failure names the kernel and the launch shape.
    /// </summary>
    internal void Launch(Kernel kernel, uint gridX, uint gridY, uint block, uint sharedBytes, params ReadOnlySpan<KernelArg> args) =>
        Launch(kernel, gridX, gridY, block, 1, sharedBytes, args);

    /// <summary>As above with 2-D blocks of block × blockY threads.</summary>
    internal unsafe void Launch(Kernel kernel, uint gridX, uint gridY, uint block, uint blockY, uint sharedBytes, params ReadOnlySpan<KernelArg> args)
    {
        if (gridX == 0 || gridY == 0) return;
        _device.MakeCurrent();
        // The description is built only for an error message (a launch is on the hot path).
        string What() => $"{kernel}, grid ({gridX}, {gridY}), block {(blockY == 1 ? $"{block}" : $"({block}, {blockY})")}, {sharedBytes} B shared";
        if (sharedBytes > kernel.SharedMemoryLimit)
        {
            int set = Cu.cuFuncSetAttribute(kernel.Function, Cu.FuncAttributeMaxDynamicSharedSizeBytes, (int)sharedBytes);
            if (set != Cu.Success) Cu.Check(set, What(), "cuFuncSetAttribute");
            kernel.SharedMemoryLimit = (int)sharedBytes;
        }
        ulong* slots = stackalloc ulong[Math.Max(1, args.Length)];
        void** pointers = stackalloc void*[Math.Max(1, args.Length)];
        for (int i = 0; i < args.Length; i++)
        {
            slots[i] = args[i].Bits;
            pointers[i] = slots + i;
        }
        nint profiled = ProfileBegin();
        int launched = Cu.cuLaunchKernel(kernel.Function, gridX, gridY, 1, block, blockY, 1, sharedBytes, _stream.Handle, pointers, null);
        if (launched != Cu.Success) Cu.Check(launched, What(), "cuLaunchKernel");
        ProfileEnd(profiled, kernel.Name);
        _lastKernel = kernel;
        if (_syncEveryLaunch) Cu.Check(Cu.cuStreamSynchronize(_stream.Handle), $"{What()} (checked right after its launch)");
    }

    /// <summary>Launches an element-wise (grid-stride) kernel over n elements: blocks of 256, at most 16 per SM.</summary>
    private void LaunchElements(string file, string name, long n, params ReadOnlySpan<KernelArg> args)
    {
        if (n <= 0) return;
        long blocks = Math.Min((n + ElementBlock - 1) / ElementBlock, 16L * _device.MultiprocessorCount);
        Launch(Kernel(file, name), (uint)blocks, 1, ElementBlock, 0, args);
    }

    private static uint CeilDiv(long a, long b) => checked((uint)((a + b - 1) / b));

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    // ---- dense algebra ----

    /// <inheritdoc/>
    /// <remarks>A and B are both Float32 (true fp32 product) or both BFloat16 (tensor cores, fp32 accumulation); C is
    /// Float32, or BFloat16 when A and B are.</remarks>
    public override void MatMul(Tensor a, bool transposeA, Tensor b, bool transposeB, Tensor c, float alpha = 1, float beta = 0)
    {
        var (input, output) = GemmTypes(a, b, c, nameof(c));
        if (a.Rank != 2 || b.Rank != 2 || c.Rank != 2)
            throw new ArgumentException($"MatMul needs 2-D tensors, got {a.ShapeString}, {b.ShapeString}, {c.ShapeString}.");
        int m = transposeA ? a.Dim(1) : a.Dim(0);
        int k = transposeA ? a.Dim(0) : a.Dim(1);
        int kb = transposeB ? b.Dim(1) : b.Dim(0);
        int n = transposeB ? b.Dim(0) : b.Dim(1);
        if (k != kb || c.Dim(0) != m || c.Dim(1) != n)
            throw new ArgumentException($"MatMul shapes do not agree: op(A) {m}×{k}, op(B) {kb}×{n}, C {c.ShapeString}.");
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            // An empty sum: C = beta·C (cuBLASLt rejects k = 0).
            if (beta == 0) Fill(c, 0);
            else if (output == DType.Float32) Scale(c, beta);
            else throw new NotSupportedException("MatMul with k = 0 and beta ≠ 0 on a bf16 C.");
            return;
        }
        nint profiled = ProfileBegin();
        _gemm.Gemm(_stream.Handle, transposeA, transposeB, m, n, k, alpha, Ptr(a), a.Dim(1), Ptr(b), b.Dim(1), beta, Ptr(c), n,
            inputType: input, outputType: output);
        ProfileEnd(profiled, $"gemm {m}x{n}x{k} {(transposeA ? "T" : "N")}{(transposeB ? "T" : "N")} {input}->{output} beta={beta}");
    }

    /// <inheritdoc/>
    /// <remarks>The bias rides cuBLASLt's BIAS epilogue; where no algorithm offers it, Y is seeded with the bias and
    /// the product accumulated onto it (beta = 1), as on the CPU. Types as in <see cref="MatMul"/>; the bias has Y's
    /// type (the epilogue adds it in fp32 before Y is rounded).</remarks>
    public override void Linear(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        if (bias is null)
        {
            MatMul(x, false, weight, true, y);
            return;
        }
        var (input, output) = GemmTypes(x, weight, y, nameof(y));
        int rows = x.Dim(0), inputs = x.Dim(1), outputs = weight.Dim(0);
        Check(bias, nameof(bias), output, outputs);
        Check(y, nameof(y), output, rows, outputs);
        if (weight.Rank != 2 || weight.Dim(1) != inputs)
            throw new ArgumentException($"Linear: weight {weight.ShapeString} does not fit x {x.ShapeString}.", nameof(weight));
        if (rows == 0 || outputs == 0) return;
        nint profiled = ProfileBegin();
        if (inputs > 0 && _gemm.Gemm(_stream.Handle, false, true, rows, outputs, inputs, 1, Ptr(x), inputs, Ptr(weight), inputs, 0, Ptr(y), outputs,
                Ptr(bias), input, output))
        {
            ProfileEnd(profiled, $"linear+bias {rows}x{outputs}x{inputs} {input}->{output}");
            return;
        }
        LaunchElements("elementwise.cu", output == DType.BFloat16 ? "broadcast_rows_bf16" : "broadcast_rows", (long)rows * outputs,
            Ptr(bias), Ptr(y), (long)rows, outputs);
        MatMul(x, false, weight, true, y, 1, 1);
    }

    private (DType Input, DType Output) GemmTypes(Tensor a, Tensor b, Tensor c, string cName)
    {
        Check(a, nameof(a), a.DType);
        if (!a.DType.IsFloat()) throw new ArgumentException($"GEMM inputs must be Float32 or BFloat16, not {a.DType}.", nameof(a));
        Check(b, nameof(b), a.DType);
        Check(c, cName, c.DType);
        if (!(c.DType == DType.Float32 || c.DType == a.DType))
            throw new ArgumentException($"A GEMM of {a.DType} inputs writes Float32 or {a.DType}, not {c.DType} ({cName}).", cName);
        return (a.DType, c.DType);
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        if (_disposed) return;
        try { Synchronize(); }
        finally
        {
            _gemm.Dispose();
            _kernels.Dispose();
            _tiles?.Dispose();
            foreach (var entry in _segmentCache) entry.Table.Dispose();
            _segmentCache.Clear();
            foreach (var entry in _pieceCache) entry.Table.Dispose();
            _pieceCache.Clear();
            _disposed = true;
            _pool.Dispose();
            if (_staging != 0) Cu.cuMemFreeHost(_staging);
            _stream.Dispose();
            base.Dispose();
        }
    }
}
