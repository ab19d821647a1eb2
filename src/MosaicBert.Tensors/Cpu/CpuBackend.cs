using System.Runtime.InteropServices;

namespace MosaicBert.Tensors.Cpu;

/// <summary>
/// The CPU backend: fp32 on managed arrays, SIMD kernels, multi-threaded over rows. Each kernel family sits in a
/// partial file named after it (CpuBackend.LayerNorm.cs, CpuBackend.Attention.cs, ...); the tests compare each
/// against a plain scalar reference in double precision.
/// </summary>
public sealed partial class CpuBackend : Backend
{
    private readonly ParallelOptions _parallel;
    private readonly IGemmProvider _gemm;

    /// <summary>Creates a CPU backend using up to <paramref name="threads"/> threads (default: all cores).</summary>
    /// <param name="threads">Threads for the kernels; null for all cores.</param>
    /// <param name="gemm">Matrix product implementation; null for <see cref="GemmProviders.Default"/> (or the managed
    /// GEMM limited to <paramref name="threads"/> when a thread count is given).</param>
    public CpuBackend(int? threads = null, IGemmProvider? gemm = null)
    {
        Threads = Math.Max(1, threads ?? Environment.ProcessorCount);
        _parallel = new ParallelOptions { MaxDegreeOfParallelism = Threads };
        _gemm = gemm ?? (threads is null ? GemmProviders.Default : new ManagedGemm(Threads));
    }

    /// <summary>The matrix product implementation in use.</summary>
    public IGemmProvider GemmProvider => _gemm;

    /// <summary>Threads used by the kernels.</summary>
    public int Threads { get; }

    /// <inheritdoc/>
    public override string Name => "cpu";

    /// <inheritdoc/>
    public override Tensor Allocate(DType dtype, params int[] shape)
    {
        long n = 1;
        foreach (int d in shape) n = checked(n * Math.Max(d, 0));
        if (n > Array.MaxLength) throw new ArgumentException($"Tensor [{string.Join(", ", shape)}] is too large for one array.");
        if (dtype == DType.BFloat16)
            throw new NotSupportedException($"The CPU backend computes in fp32 and has no bfloat16 tensors ([{string.Join(", ", shape)}] asked for); " +
                "use precision Float32 on the CPU, or the CUDA backend for bfloat16.");
        object storage = dtype == DType.Float32 ? new float[n] : new int[n];
        return new Tensor(this, storage, dtype, 0, (int[])shape.Clone(), ownsStorage: true);
    }

    /// <inheritdoc/>
    protected internal override void Free(Tensor tensor)
    {
        // Managed memory: the garbage collector reclaims it once the last view is gone.
    }

    /// <summary>The elements of a float tensor of this backend, for direct CPU access.</summary>
    public Span<float> Span(Tensor t)
    {
        Check(t, nameof(t), DType.Float32);
        return ((float[])t.Storage).AsSpan((int)t.Offset, (int)t.Length);
    }

    /// <summary>The elements of an int tensor of this backend, for direct CPU access.</summary>
    public Span<int> IntSpan(Tensor t)
    {
        Check(t, nameof(t), DType.Int32);
        return ((int[])t.Storage).AsSpan((int)t.Offset, (int)t.Length);
    }

    private static float[] Floats(Tensor t) => (float[])t.Storage;
    private static int[] Ints(Tensor t) => (int[])t.Storage;

    /// <inheritdoc/>
    public override void Upload(ReadOnlySpan<float> source, Tensor destination)
    {
        var d = Span(destination);
        SameLength(source.Length, d.Length);
        source.CopyTo(d);
    }

    /// <inheritdoc/>
    public override void Upload(ReadOnlySpan<int> source, Tensor destination)
    {
        var d = IntSpan(destination);
        SameLength(source.Length, d.Length);
        source.CopyTo(d);
    }

    /// <inheritdoc/>
    public override void Download(Tensor source, Span<float> destination)
    {
        var s = Span(source);
        SameLength(s.Length, destination.Length);
        s.CopyTo(destination);
    }

    /// <inheritdoc/>
    public override void Download(Tensor source, Span<int> destination)
    {
        var s = IntSpan(source);
        SameLength(s.Length, destination.Length);
        s.CopyTo(destination);
    }

    /// <inheritdoc/>
    public override void Fill(Tensor tensor, float value)
    {
        if (tensor.DType == DType.Int32) IntSpan(tensor).Fill((int)value);
        else Span(tensor).Fill(value);
    }

    /// <inheritdoc/>
    public override void Copy(Tensor source, Tensor destination)
    {
        if (source.DType == DType.Int32) IntSpan(source).CopyTo(IntSpan(destination));
        else
        {
            var s = Span(source);
            var d = Span(destination);
            SameLength(s.Length, d.Length);
            s.CopyTo(d);
        }
    }

    private static void SameLength(long a, long b)
    {
        if (a != b) throw new ArgumentException($"Length mismatch: {a} elements vs {b}.");
    }

    /// <summary>Runs <paramref name="body"/> over [0, count) in contiguous chunks on the backend's threads.</summary>
    private void ParallelRows(int count, long workPerRow, Action<int, int> body)
    {
        if (count <= 0) return;
        // Small jobs run inline: thread hand-off costs more than ~50k flops of work.
        int chunks = (int)Math.Clamp(count * Math.Max(workPerRow, 1) / 50_000, 1, Math.Min(count, Threads * 4));
        if (chunks <= 1 || Threads == 1)
        {
            if (count > 0) body(0, count);
            return;
        }
        try
        {
            Parallel.For(0, chunks, _parallel, c =>
            {
                int start = (int)((long)count * c / chunks);
                int end = (int)((long)count * (c + 1) / chunks);
                if (end > start) body(start, end);
            });
        }
        catch (AggregateException e)
        {
            // Surface the kernel's own exception (e.g. an id out of range), as the single-threaded path does.
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
    }

    /// <inheritdoc/>
    public override void GatherRows(Tensor source, Tensor indices, Tensor destination)
    {
        int k = indices.Dim(0);
        int width = (int)source.RowLength;
        if (destination.Dim(0) != k || destination.RowLength != width)
            throw new ArgumentException($"GatherRows: destination {destination.ShapeString} does not fit {k} rows of {width}.");
        var idx = IntSpan(indices);
        var src = Span(source);
        var dst = Span(destination);
        int rows = source.Dim(0);
        for (int i = 0; i < k; i++)
        {
            int r = idx[i];
            if ((uint)r >= (uint)rows) throw new ArgumentOutOfRangeException(nameof(indices), $"Row index {r} at {i} is outside 0..{rows - 1}.");
            src.Slice(r * width, width).CopyTo(dst.Slice(i * width, width));
        }
    }

    /// <inheritdoc/>
    public override void ScatterRows(Tensor source, Tensor indices, Tensor destination)
    {
        int k = indices.Dim(0);
        int width = (int)destination.RowLength;
        if (source.Dim(0) != k || source.RowLength != width)
            throw new ArgumentException($"ScatterRows: source {source.ShapeString} does not hold {k} rows of {width}.");
        var idx = IntSpan(indices);
        var src = Span(source);
        var dst = Span(destination);
        int rows = destination.Dim(0);
        for (int i = 0; i < k; i++)
        {
            int r = idx[i];
            if ((uint)r >= (uint)rows) throw new ArgumentOutOfRangeException(nameof(indices), $"Row index {r} at {i} is outside 0..{rows - 1}.");
            src.Slice(i * width, width).CopyTo(dst.Slice(r * width, width));
        }
    }

    /// <inheritdoc/>
    public override void EmbeddingSum(Tensor ids, Tensor typeIds, Tensor? positions, Tensor wordEmbeddings,
        Tensor typeEmbeddings, Tensor? positionEmbeddings, Tensor output)
    {
        int n = ids.Dim(0);
        int d = wordEmbeddings.Dim(1);
        Check(output, nameof(output), DType.Float32, n, d);
        if ((positions is null) != (positionEmbeddings is null))
            throw new ArgumentException("positions and positionEmbeddings must both be given or both be null.");
        var idArr = Ints(ids); int idOff = (int)ids.Offset;
        var tyArr = Ints(typeIds); int tyOff = (int)typeIds.Offset;
        var posArr = positions is null ? null : Ints(positions); int posOff = (int)(positions?.Offset ?? 0);
        var w = Floats(wordEmbeddings); int wOff = (int)wordEmbeddings.Offset; int vocab = wordEmbeddings.Dim(0);
        var t = Floats(typeEmbeddings); int tOff = (int)typeEmbeddings.Offset; int types = typeEmbeddings.Dim(0);
        var p = positionEmbeddings is null ? null : Floats(positionEmbeddings); int pOff = (int)(positionEmbeddings?.Offset ?? 0);
        int maxPos = positionEmbeddings?.Dim(0) ?? 0;
        var o = Floats(output); int oOff = (int)output.Offset;
        ParallelRows(n, d, (start, end) =>
        {
            for (int i = start; i < end; i++)
            {
                int id = idArr[idOff + i], ty = tyArr[tyOff + i];
                if ((uint)id >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(ids), $"Token id {id} is outside the vocabulary (0..{vocab - 1}).");
                if ((uint)ty >= (uint)types) throw new ArgumentOutOfRangeException(nameof(typeIds), $"Token type {ty} is outside 0..{types - 1}.");
                var dst = o.AsSpan(oOff + i * d, d);
                System.Numerics.Tensors.TensorPrimitives.Add(w.AsSpan(wOff + id * d, d), t.AsSpan(tOff + ty * d, d), dst);
                if (p is not null)
                {
                    int pos = posArr![posOff + i];
                    if ((uint)pos >= (uint)maxPos) throw new ArgumentOutOfRangeException(nameof(positions), $"Position {pos} is beyond max_position_embeddings {maxPos}.");
                    System.Numerics.Tensors.TensorPrimitives.Add(dst, p.AsSpan(pOff + pos * d, d), dst);
                }
            }
        });
    }

    /// <inheritdoc/>
    public override void MatMul(Tensor a, bool transposeA, Tensor b, bool transposeB, Tensor c, float alpha = 1, float beta = 0)
    {
        if (a.Rank != 2 || b.Rank != 2 || c.Rank != 2)
            throw new ArgumentException($"MatMul needs 2-D tensors, got {a.ShapeString}, {b.ShapeString}, {c.ShapeString}.");
        int m = transposeA ? a.Dim(1) : a.Dim(0);
        int k = transposeA ? a.Dim(0) : a.Dim(1);
        int kb = transposeB ? b.Dim(1) : b.Dim(0);
        int n = transposeB ? b.Dim(0) : b.Dim(1);
        if (k != kb || c.Dim(0) != m || c.Dim(1) != n)
            throw new ArgumentException($"MatMul shapes do not agree: op(A) {m}×{k}, op(B) {kb}×{n}, C {c.ShapeString}.");
        _gemm.Sgemm(transposeA, transposeB, m, n, k, alpha, Span(a), a.Dim(1), Span(b), b.Dim(1), beta, Span(c), n);
    }

    /// <inheritdoc/>
    public override void Linear(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        int rows = x.Dim(0), outputs = weight.Dim(0);
        if (bias is null)
        {
            MatMul(x, false, weight, true, y);
            return;
        }
        Check(bias, nameof(bias), DType.Float32, outputs);
        Check(y, nameof(y), DType.Float32, rows, outputs);
        // Seed every row of Y with the bias, then accumulate X·Wᵀ onto it (beta = 1).
        var ys = Span(y);
        var bs = Span(bias);
        for (int r = 0; r < rows; r++) bs.CopyTo(ys.Slice(r * outputs, outputs));
        MatMul(x, false, weight, true, y, 1, 1);
    }
}
