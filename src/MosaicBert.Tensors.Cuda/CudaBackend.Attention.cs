namespace MosaicBert.Tensors.Cuda;

// Attention launchers (kernels in attention.cu). cuSeqlens is read on the host (B + 1 ints, one small synchronising
// download per call) to validate it as the CPU does and to list the 64-token tiles; the tile list is uploaded once
// and reused while cuSeqlens stays the same (every layer of a step, forward and backward).
public sealed partial class CudaBackend
{
    private const string AttentionFile = "attention.cu";
    private const int AttentionTile = 64;
    private int[]? _tilesFor;
    private Tensor? _tiles;
    private int _tileCount;

    /// <inheritdoc/>
    /// <remarks>Block per (64-query tile, head); head dims up to 128 (zero-padded to 32, 64 or 128).</remarks>
    public override void Attention(Tensor qkv, Tensor cuSeqlens, Tensor positions, Tensor slopes, float scale,
        Tensor context, Tensor logSumExp)
    {
        if (qkv.DType == DType.BFloat16)
        {
            AttentionBf16Dispatch(qkv, cuSeqlens, positions, slopes, scale, context, logSumExp);
            return;
        }
        var (n, d, heads, dh) = AttentionShapes(qkv, slopes);
        Check(context, nameof(context), DType.Float32, n, d);
        Check(logSumExp, nameof(logSumExp), DType.Float32, n, heads);
        Check(positions, nameof(positions), DType.Int32, n);
        ulong tiles = Tiles(cuSeqlens, n);
        if (_tileCount == 0) return;
        var (suffix, threads) = HeadDimVariant(dh);
        uint shared = (uint)((2 * AttentionTile * 32 * (threads / AttentionTile) + AttentionTile) * sizeof(float));
        Launch(Kernel(AttentionFile, "attention_forward_" + suffix), (uint)_tileCount, (uint)heads, threads, shared,
            Ptr(qkv), tiles, Ptr(positions), Ptr(slopes), scale, Ptr(context), Ptr(logSumExp), d, dh, heads);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Three launches: D_i = dO_i·O_i per token and head; dQ with a block per (query tile, head); dK and dV with a block
    /// per (key tile, head). Each output element is written by exactly one thread (no atomics): deterministic.
    /// </remarks>
    public override void AttentionBackward(Tensor qkv, Tensor cuSeqlens, Tensor positions, Tensor slopes, float scale,
        Tensor context, Tensor logSumExp, Tensor dContext, Tensor dQkv)
    {
        if (qkv.DType == DType.BFloat16)
        {
            AttentionBackwardBf16Dispatch(qkv, cuSeqlens, positions, slopes, scale, context, logSumExp, dContext, dQkv);
            return;
        }
        var (n, d, heads, dh) = AttentionShapes(qkv, slopes);
        Check(context, nameof(context), DType.Float32, n, d);
        Check(logSumExp, nameof(logSumExp), DType.Float32, n, heads);
        Check(dContext, nameof(dContext), DType.Float32, n, d);
        Check(dQkv, nameof(dQkv), DType.Float32, n, 3 * d);
        Check(positions, nameof(positions), DType.Int32, n);
        if (Overlaps(dQkv, qkv) || Overlaps(dQkv, context) || Overlaps(dQkv, dContext) || Overlaps(dQkv, logSumExp))
            throw new ArgumentException("dQkv must not overlap qkv, context, logSumExp or dContext.", nameof(dQkv));
        ulong tiles = Tiles(cuSeqlens, n);
        if (_tileCount == 0) return;
        using var delta = Scratch(DType.Float32, (long)n * heads);
        LaunchElements(AttentionFile, "attention_backward_delta", (long)n * heads, Ptr(context), Ptr(dContext), Ptr(delta), (long)n, d, dh, heads);
        var (suffix, threads) = HeadDimVariant(dh);
        int width = 32 * (int)(threads / AttentionTile);
        uint sharedQ = (uint)((2 * AttentionTile * width + AttentionTile) * sizeof(float));
        uint sharedKv = (uint)((2 * AttentionTile * width + 3 * AttentionTile) * sizeof(float));
        Launch(Kernel(AttentionFile, "attention_backward_dq_" + suffix), (uint)_tileCount, (uint)heads, threads, sharedQ,
            Ptr(qkv), tiles, Ptr(positions), Ptr(slopes), scale, Ptr(logSumExp), Ptr(delta), Ptr(dContext), Ptr(dQkv), d, dh, heads);
        Launch(Kernel(AttentionFile, "attention_backward_dkv_" + suffix), (uint)_tileCount, (uint)heads, threads, sharedKv,
            Ptr(qkv), tiles, Ptr(positions), Ptr(slopes), scale, Ptr(logSumExp), Ptr(delta), Ptr(dContext), Ptr(dQkv), d, dh, heads);
    }

    private (int N, int D, int Heads, int HeadDim) AttentionShapes(Tensor qkv, Tensor slopes)
    {
        Check(qkv, nameof(qkv), DType.Float32);
        Check(slopes, nameof(slopes), DType.Float32);
        if (qkv.Rank != 2 || slopes.Rank != 1)
            throw new ArgumentException($"qkv must be [N, 3d] and slopes [H], not {qkv.ShapeString} and {slopes.ShapeString}.");
        int n = qkv.Dim(0), threeD = qkv.Dim(1), d = threeD / 3, heads = slopes.Dim(0);
        if (heads == 0 || threeD % 3 != 0 || d == 0 || d % heads != 0)
            throw new ArgumentException($"qkv width {threeD} is not 3·d with d a positive multiple of {heads} heads.", nameof(qkv));
        if (d / heads > 128)
            throw new NotSupportedException($"The CUDA attention kernels take head dimensions up to 128, not {d / heads}.");
        return (n, d, heads, d / heads);
    }

    /// <summary>The kernel variant for a head dimension: name suffix and threads per block (64 rows × D/32 threads).</summary>
    private static (string Suffix, uint Threads) HeadDimVariant(int dh) =>
        dh <= 32 ? ("d32", 64u) : dh <= 64 ? ("d64", 128u) : ("d128", 256u);

    /// <summary>
    /// Validates cuSeqlens (0 … N, non-decreasing) and returns the device address of its tile list: int4 (t0, t1, s0, s1)
    /// per 64-token tile of each sequence. Sets <see cref="_tileCount"/>.
    /// </summary>
    private ulong Tiles(Tensor cuSeqlens, int n)
    {
        Check(cuSeqlens, nameof(cuSeqlens), DType.Int32);
        var cu = HostInts(cuSeqlens);
        if (cu.Length < 1 || cu[0] != 0 || cu[^1] != n)
            throw new ArgumentException($"cuSeqlens must run from 0 to N = {n}.", nameof(cuSeqlens));
        if (_tiles is not null && _tilesFor is not null && cu.AsSpan().SequenceEqual(_tilesFor)) return Ptr(_tiles);
        var list = new List<int>();
        for (int b = 0; b + 1 < cu.Length; b++)
        {
            int s0 = cu[b], s1 = cu[b + 1];
            if (s1 < s0) throw new ArgumentException("cuSeqlens must not decrease.", nameof(cuSeqlens));
            for (int t0 = s0; t0 < s1; t0 += AttentionTile) list.AddRange([t0, Math.Min(t0 + AttentionTile, s1), s0, s1]);
        }
        _tiles?.Dispose();
        _tiles = null;
        _tilesFor = null;
        _tileCount = list.Count / 4;
        if (_tileCount == 0) return 0;
        _tiles = Allocate(DType.Int32, list.Count);
        Upload(list.ToArray(), _tiles);
        _tilesFor = cu;
        return Ptr(_tiles);
    }

    private static bool Overlaps(Tensor a, Tensor b)
    {
        if (a.Length == 0 || b.Length == 0 || !ReferenceEquals(a.Storage, b.Storage)) return false;
        return a.Offset < b.Offset + b.Length && b.Offset < a.Offset + a.Length;
    }
}
