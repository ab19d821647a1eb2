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
    private Kernel? _lastKernel;
    private bool _disposed;


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
    public void Synchronize() => _stream.Synchronize(_lastKernel?.ToString());

    // ---- memory ----

    /// <inheritdoc/>
    public override Tensor Allocate(DType dtype, params int[] shape)
    {
        ThrowIfDisposed();
        long n = 1;
        foreach (int d in shape) n = checked(n * Math.Max(d, 0));
        var buffer = _pool.Rent(n * sizeof(float));
        if (n > 0) MemsetD32(buffer.Pointer, 0, n);
        return new Tensor(this, buffer, dtype, 0, (int[])shape.Clone(), ownsStorage: true);
    }

    /// <inheritdoc/>
    protected internal override void Free(Tensor tensor)
    {
        if (!_disposed && tensor.Storage is DeviceBuffer buffer) _pool.Return(buffer);
    }

    /// <inheritdoc/>
    public override void Upload(ReadOnlySpan<float> source, Tensor destination)
    {
        Check(destination, nameof(destination), DType.Float32);
        CopyIn(System.Runtime.InteropServices.MemoryMarshal.AsBytes(source), destination);
    }

    /// <inheritdoc/>
    public override void Upload(ReadOnlySpan<int> source, Tensor destination)
    {
        Check(destination, nameof(destination), DType.Int32);
        CopyIn(System.Runtime.InteropServices.MemoryMarshal.AsBytes(source), destination);
    }

    /// <inheritdoc/>
    public override void Download(Tensor source, Span<float> destination)
    {
        Check(source, nameof(source), DType.Float32);
        CopyOut(source, System.Runtime.InteropServices.MemoryMarshal.AsBytes(destination));
    }

    /// <inheritdoc/>
    public override void Download(Tensor source, Span<int> destination)
    {
        Check(source, nameof(source), DType.Int32);
        CopyOut(source, System.Runtime.InteropServices.MemoryMarshal.AsBytes(destination));
    }

    /// <inheritdoc/>
    public override void Fill(Tensor tensor, float value)
    {
        Check(tensor, nameof(tensor), tensor.DType);
        uint bits = tensor.DType == DType.Int32 ? (uint)(int)value : BitConverter.SingleToUInt32Bits(value);
        if (tensor.Length > 0) MemsetD32(Ptr(tensor), bits, tensor.Length);
    }

    /// <inheritdoc/>
    public override void Copy(Tensor source, Tensor destination)
    {
        Check(source, nameof(source), source.DType);
        Check(destination, nameof(destination), source.DType);
        SameLength(source.Length, destination.Length);
        if (source.Length == 0) return;
        _device.MakeCurrent();
        Cu.Check(Cu.cuMemcpyDtoDAsync_v2(Ptr(destination), Ptr(source), (nuint)(source.Length * sizeof(float)), _stream.Handle));
    }

    // Host ↔ device copies are queued on the stream (so they are ordered with the kernels) and then waited for: the
    // host span is only pinned for the duration of the call.
    private unsafe void CopyIn(ReadOnlySpan<byte> source, Tensor destination)
    {
        SameLength(source.Length / sizeof(float), destination.Length);
        if (source.Length == 0) return;
        _device.MakeCurrent();
        fixed (byte* p = source)
        {
            Cu.Check(Cu.cuMemcpyHtoDAsync_v2(Ptr(destination), p, (nuint)source.Length, _stream.Handle));
            Synchronize();
        }
    }

    private unsafe void CopyOut(Tensor source, Span<byte> destination)
    {
        SameLength(source.Length, destination.Length / sizeof(float));
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
        return ((DeviceBuffer)t.Storage).Pointer + (ulong)t.Offset * sizeof(float);
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
    internal unsafe void Launch(Kernel kernel, uint gridX, uint gridY, uint block, uint sharedBytes, params ReadOnlySpan<KernelArg> args)
    {
        if (gridX == 0 || gridY == 0) return;
        _device.MakeCurrent();
        string what = $"{kernel}, grid ({gridX}, {gridY}), block {block}, {sharedBytes} B shared";
        if (sharedBytes > kernel.SharedMemoryLimit)
        {
            Cu.Check(Cu.cuFuncSetAttribute(kernel.Function, Cu.FuncAttributeMaxDynamicSharedSizeBytes, (int)sharedBytes), what);
            kernel.SharedMemoryLimit = (int)sharedBytes;
        }
        ulong* slots = stackalloc ulong[Math.Max(1, args.Length)];
        void** pointers = stackalloc void*[Math.Max(1, args.Length)];
        for (int i = 0; i < args.Length; i++)
        {
            slots[i] = args[i].Bits;
            pointers[i] = slots + i;
        }
        Cu.Check(Cu.cuLaunchKernel(kernel.Function, gridX, gridY, 1, block, 1, 1, sharedBytes, _stream.Handle, pointers, null), what);
        _lastKernel = kernel;
        if (_syncEveryLaunch) Cu.Check(Cu.cuStreamSynchronize(_stream.Handle), $"{what} (checked right after its launch)");
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
    public override void MatMul(Tensor a, bool transposeA, Tensor b, bool transposeB, Tensor c, float alpha = 1, float beta = 0)
    {
        Check(a, nameof(a), DType.Float32);
        Check(b, nameof(b), DType.Float32);
        Check(c, nameof(c), DType.Float32);
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
            else Scale(c, beta);
            return;
        }
        _gemm.Sgemm(_stream.Handle, transposeA, transposeB, m, n, k, alpha, Ptr(a), a.Dim(1), Ptr(b), b.Dim(1), beta, Ptr(c), n);
    }

    /// <inheritdoc/>
    /// <remarks>The bias rides cuBLASLt's BIAS epilogue; where no algorithm offers it, Y is seeded with the bias and
    /// the product accumulated onto it (beta = 1), as on the CPU.</remarks>
    public override void Linear(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        if (bias is null)
        {
            MatMul(x, false, weight, true, y);
            return;
        }
        Check(x, nameof(x), DType.Float32);
        Check(weight, nameof(weight), DType.Float32);
        int rows = x.Dim(0), inputs = x.Dim(1), outputs = weight.Dim(0);
        Check(bias, nameof(bias), DType.Float32, outputs);
        Check(y, nameof(y), DType.Float32, rows, outputs);
        if (weight.Rank != 2 || weight.Dim(1) != inputs)
            throw new ArgumentException($"Linear: weight {weight.ShapeString} does not fit x {x.ShapeString}.", nameof(weight));
        if (rows == 0 || outputs == 0) return;
        if (inputs > 0 && _gemm.Sgemm(_stream.Handle, false, true, rows, outputs, inputs, 1, Ptr(x), inputs, Ptr(weight), inputs, 0, Ptr(y), outputs, Ptr(bias)))
            return;
        LaunchElements("elementwise.cu", "broadcast_rows", (long)rows * outputs, Ptr(bias), Ptr(y), (long)rows, outputs);
        MatMul(x, false, weight, true, y, 1, 1);
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
            _disposed = true;
            _pool.Dispose();
            _stream.Dispose();
            base.Dispose();
        }
    }
}
