using MosaicBert.Tensors.Cpu;
namespace MosaicBert.Tensors.Cuda;

// Row lookups and scatters (embeddings, MLM gathers). Index tensors are checked on the host before anything is
// launched: the same exceptions as the CPU backend, and kernels that can trust their indices. The host values come
// from the copy Upload keeps (HostInts), so no call waits for the GPU when the indices were uploaded (as the model's
// batches are). Scatters group positions by destination row on the host (a stable sort), so repeated rows are handled
// by one thread per column in position order: bitwise the CPU's result, deterministic, without atomics; the grouping
// of an index array is cached (the embedding backward of every step reuses its batch's ids).
public sealed partial class CudaBackend
{
    private const string EmbeddingFile = "embedding.cu";

    /// <inheritdoc/>
    public override void EmbeddingSum(Tensor ids, Tensor typeIds, Tensor? positions, Tensor wordEmbeddings,
        Tensor typeEmbeddings, Tensor? positionEmbeddings, Tensor output)
    {
        var (t, n, d) = CheckEmbeddingSum(ids, typeIds, positions, wordEmbeddings, typeEmbeddings, positionEmbeddings, output);
        LaunchElements(EmbeddingFile, Variant("embedding_sum", t), (long)n * d, Ptr(ids), Ptr(typeIds), Ptr(positions), Ptr(wordEmbeddings),
            Ptr(typeEmbeddings), Ptr(positionEmbeddings), Ptr(output), (long)n, d);
    }

    /// <inheritdoc/>
    /// <remarks>One kernel (a warp per token, 16-byte accesses) where the vectorized LayerNorm applies; else the three ops.</remarks>
    public override void EmbeddingLayerNorm(Tensor ids, Tensor typeIds, Tensor? positions, Tensor wordEmbeddings, Tensor typeEmbeddings,
        Tensor? positionEmbeddings, Tensor gamma, Tensor beta, float eps, Tensor sum, Tensor y, Tensor mean, Tensor rstd,
        float p, ulong seed, long offset)
    {
        var (t, n, d) = CheckEmbeddingSum(ids, typeIds, positions, wordEmbeddings, typeEmbeddings, positionEmbeddings, sum);
        CheckLayerNorm(sum, null, gamma, beta, sum, y, mean, rstd);
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), $"Dropout probability {p} is not in [0, 1).");
        string? suffix = LayerNormVectorSuffix(t, d, wordEmbeddings, typeEmbeddings, positionEmbeddings, gamma, beta, sum, y);
        if (suffix is null)
        {
            base.EmbeddingLayerNorm(ids, typeIds, positions, wordEmbeddings, typeEmbeddings, positionEmbeddings, gamma, beta, eps, sum, y, mean, rstd,
                p, seed, offset);
            return;
        }
        if (n == 0 || d == 0) return;
        Launch(Kernel("embedding_layernorm.cu", "embedding_layernorm" + suffix), CeilDiv(n, 8), 1, 256, 0,
            Ptr(ids), Ptr(typeIds), Ptr(positions), Ptr(wordEmbeddings), Ptr(typeEmbeddings), Ptr(positionEmbeddings), Ptr(gamma), Ptr(beta),
            eps, Ptr(sum), Ptr(y), Ptr(mean), Ptr(rstd), n, d, DropoutRandom.Key(seed), DropoutRandom.Threshold(p), 1f / (1f - p), offset);
    }

    /// <summary>EmbeddingSum's checks, the indices validated on the host; returns the table type, tokens and width.</summary>
    private (DType Type, int Tokens, int Width) CheckEmbeddingSum(Tensor ids, Tensor typeIds, Tensor? positions, Tensor wordEmbeddings,
        Tensor typeEmbeddings, Tensor? positionEmbeddings, Tensor output)
    {
        if ((positions is null) != (positionEmbeddings is null))
            throw new ArgumentException("positions and positionEmbeddings must both be given or both be null.");
        Check(ids, nameof(ids), DType.Int32);
        int n = ids.Dim(0), d = wordEmbeddings.Dim(1);
        Check(typeIds, nameof(typeIds), DType.Int32, n);
        if (positions is not null) Check(positions, nameof(positions), DType.Int32, n);
        var t = CheckFloat(wordEmbeddings, nameof(wordEmbeddings));
        CheckTable(typeEmbeddings, nameof(typeEmbeddings), d, t);
        if (positionEmbeddings is not null) CheckTable(positionEmbeddings, nameof(positionEmbeddings), d, t);
        Check(output, nameof(output), t, n, d);
        int vocab = wordEmbeddings.Dim(0), types = typeEmbeddings.Dim(0);
        var idHost = HostInts(ids);
        var typeHost = HostInts(typeIds);
        var posHost = positions is null ? null : HostInts(positions);
        for (int i = 0; i < n; i++)
        {
            if ((uint)idHost[i] >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(ids), $"Token id {idHost[i]} is outside the vocabulary (0..{vocab - 1}).");
            if ((uint)typeHost[i] >= (uint)types) throw new ArgumentOutOfRangeException(nameof(typeIds), $"Token type {typeHost[i]} is outside 0..{types - 1}.");
            if (posHost is not null && (uint)posHost[i] >= (uint)positionEmbeddings!.Dim(0))
                throw new ArgumentOutOfRangeException(nameof(positions), $"Position {posHost[i]} is beyond max_position_embeddings {positionEmbeddings.Dim(0)}.");
        }
        return (t, n, d);
    }

    /// <inheritdoc/>
    public override void GatherRows(Tensor source, Tensor indices, Tensor destination)
    {
        var t = CheckFloat(source, nameof(source));
        Check(indices, nameof(indices), DType.Int32);
        Check(destination, nameof(destination), t);
        int k = indices.Dim(0), width = (int)source.RowLength;
        if (destination.Dim(0) != k || destination.RowLength != width)
            throw new ArgumentException($"GatherRows: destination {destination.ShapeString} does not fit {k} rows of {width}.");
        CheckIndices(HostInts(indices), source.Dim(0), nameof(indices), "Row index");
        LaunchElements(EmbeddingFile, Variant("gather_rows", t), (long)k * width, Ptr(source), Ptr(indices), Ptr(destination), (long)k, width);
    }

    /// <inheritdoc/>
    /// <remarks>With repeated indices the last source row wins, as on the CPU.</remarks>
    public override void ScatterRows(Tensor source, Tensor indices, Tensor destination)
    {
        var t = CheckFloat(source, nameof(source));
        Check(indices, nameof(indices), DType.Int32);
        Check(destination, nameof(destination), t);
        int k = indices.Dim(0), width = (int)destination.RowLength;
        if (source.Dim(0) != k || source.RowLength != width)
            throw new ArgumentException($"ScatterRows: source {source.ShapeString} does not hold {k} rows of {width}.");
        var host = HostInts(indices);
        CheckIndices(host, destination.Dim(0), nameof(indices), "Row index");
        ScatterSegments(source, host, destination, width, accumulate: false);
    }

    /// <inheritdoc/>
    public override void ScatterAddRows(Tensor source, Tensor indices, Tensor destination)
    {
        Check(indices, nameof(indices), DType.Int32);
        var t = CheckFloat(source, nameof(source));
        Check(destination, nameof(destination), t);
        if (indices.Rank != 1) throw new ArgumentException($"indices must be [K], not {indices.ShapeString}.", nameof(indices));
        if (destination.Rank < 1) throw new ArgumentException("destination must have at least one dimension.", nameof(destination));
        int k = indices.Dim(0), width = (int)destination.RowLength;
        if (source.Rank < 1 || source.Dim(0) != k || source.RowLength != width)
            throw new ArgumentException($"ScatterAddRows: source {source.ShapeString} does not hold {k} rows of {width}.", nameof(source));
        var host = HostInts(indices);
        CheckIndices(host, destination.Dim(0), nameof(indices), "Row index");
        ScatterSegments(source, host, destination, width, accumulate: true);
    }

    /// <inheritdoc/>
    /// <remarks>Three scatter-adds (word, type, position tables), all indices validated before anything is written;
    /// each table's rows accumulate in token order, so the result equals the CPU's bit for bit.</remarks>
    public override void EmbeddingBackward(Tensor ids, Tensor typeIds, Tensor? positions, Tensor dOutput,
        Tensor dWordEmbeddings, Tensor dTypeEmbeddings, Tensor? dPositionEmbeddings)
    {
        if ((positions is null) != (dPositionEmbeddings is null))
            throw new ArgumentException("positions and dPositionEmbeddings must both be given or both be null.");
        Check(ids, nameof(ids), DType.Int32);
        if (ids.Rank != 1) throw new ArgumentException($"ids must be [N], not {ids.ShapeString}.", nameof(ids));
        int n = ids.Dim(0);
        Check(typeIds, nameof(typeIds), DType.Int32, n);
        if (positions is not null) Check(positions, nameof(positions), DType.Int32, n);
        Check(dWordEmbeddings, nameof(dWordEmbeddings), DType.Float32);
        var t = CheckFloat(dOutput, nameof(dOutput));
        if (dWordEmbeddings.Rank != 2)
            throw new ArgumentException($"dWordEmbeddings must be [vocab, d], not {dWordEmbeddings.ShapeString}.", nameof(dWordEmbeddings));
        int d = dWordEmbeddings.Dim(1);
        Check(dOutput, nameof(dOutput), t, n, d);
        CheckTable(dTypeEmbeddings, nameof(dTypeEmbeddings), d, DType.Float32);
        if (dPositionEmbeddings is not null) CheckTable(dPositionEmbeddings, nameof(dPositionEmbeddings), d, DType.Float32);
        var idHost = HostInts(ids);
        var typeHost = HostInts(typeIds);
        var posHost = positions is null ? null : HostInts(positions);
        CheckIndices(idHost, dWordEmbeddings.Dim(0), nameof(ids), "Token id");
        CheckIndices(typeHost, dTypeEmbeddings.Dim(0), nameof(typeIds), "Token type");
        if (posHost is not null) CheckIndices(posHost, dPositionEmbeddings!.Dim(0), nameof(positions), "Position");
        ScatterSegments(dOutput, idHost, dWordEmbeddings, d, accumulate: true);
        ScatterSegments(dOutput, typeHost, dTypeEmbeddings, d, accumulate: true);
        if (posHost is not null) ScatterSegments(dOutput, posHost, dPositionEmbeddings!, d, accumulate: true);
    }

    /// <summary>
    /// dst[idx[p]] (+)= src[p] for every position p. Positions are sorted by (row, position) on the host and uploaded as
    /// [order (K) | segment starts (S + 1) | segment rows (S)]; block (s, column block) handles segment s.
    /// Source and destination are fp32, bf16, or bf16 rows into fp32 rows.
    /// </summary>
    private void ScatterSegments(Tensor source, int[] indices, Tensor destination, int width, bool accumulate)
    {
        int k = indices.Length;
        if (k == 0 || width == 0) return;
        if (accumulate && source.DType == DType.BFloat16)
        {
            ScatterPieces(source, indices, destination, width);
            return;
        }
        var (table, segments) = SegmentTable(indices);
        ulong baseAddress = Ptr(table);
        string kernel = (source.DType, destination.DType) switch
        {
            (DType.Float32, DType.Float32) => "scatter_segments",
            (DType.BFloat16, DType.BFloat16) => "scatter_segments_bf16",
            (DType.BFloat16, DType.Float32) => "scatter_segments_bf16_f32",
            _ => throw new ArgumentException($"No scatter of {source.DType} rows into {destination.DType} rows."),
        };
        uint block = (uint)Math.Min(256, (width + 31) / 32 * 32);
        Launch(Kernel(EmbeddingFile, kernel), (uint)segments, CeilDiv(width, block), block, 0,
            Ptr(source), baseAddress, baseAddress + 4UL * (ulong)k, baseAddress + 4UL * (ulong)(k + segments + 1),
            Ptr(destination), width, accumulate ? 1 : 0);
    }

    private const int PieceLength = 64;
    private readonly List<(int[] Indices, Tensor Table, int Pieces, int Long, int Slots)> _pieceCache = [];

    /// <summary>
    /// Scatter-add of bf16 rows with segments longer than <see cref="PieceLength"/> split into pieces (see
    /// scatter_pieces in embedding.cu): table [order (K) | piece starts (P + 1) | piece targets (P) | long-segment
    /// slot starts (L + 1) | long-segment rows (L)], built once per index array.
    /// </summary>
    private void ScatterPieces(Tensor source, int[] indices, Tensor destination, int width)
    {
        var (table, pieces, longSegments, slots) = PieceTable(indices);
        int k = indices.Length;
        ulong at = Ptr(table);
        ulong order = at, starts = at + 4UL * (ulong)k, targets = starts + 4UL * (ulong)(pieces + 1);
        ulong first = targets + 4UL * (ulong)pieces, rows = first + 4UL * (ulong)(longSegments + 1);
        string suffix = destination.DType == DType.Float32 ? "_bf16_f32" : "_bf16";
        using var partial = Scratch(DType.Float32, Math.Max(1L, (long)slots * width));
        uint block = (uint)Math.Min(256, (width + 31) / 32 * 32);
        Launch(Kernel(EmbeddingFile, "scatter_pieces" + suffix), (uint)pieces, CeilDiv(width, block), block, 0,
            Ptr(source), order, starts, targets, Ptr(destination), Ptr(partial), width);
        if (longSegments > 0)
            Launch(Kernel(EmbeddingFile, destination.DType == DType.Float32 ? "finish_pieces_f32" : "finish_pieces_bf16"),
                (uint)longSegments, CeilDiv(width, block), block, 0, Ptr(partial), first, rows, Ptr(destination), width);
    }

    private (Tensor Table, int Pieces, int Long, int Slots) PieceTable(int[] indices)
    {
        foreach (var entry in _pieceCache)
            if (ReferenceEquals(entry.Indices, indices)) return (entry.Table, entry.Pieces, entry.Long, entry.Slots);
        int k = indices.Length;
        var keys = new long[k];
        for (int p = 0; p < k; p++) keys[p] = ((long)indices[p] << 32) | (uint)p;
        Array.Sort(keys);
        var order = new int[k];
        for (int p = 0; p < k; p++) order[p] = (int)keys[p];
        var starts = new List<int>();
        var targets = new List<int>();
        var first = new List<int> { 0 };
        var longRows = new List<int>();
        int slots = 0;
        for (int s0 = 0; s0 < k;)
        {
            int row = (int)(keys[s0] >> 32), s1 = s0;
            while (s1 < k && (int)(keys[s1] >> 32) == row) s1++;
            if (s1 - s0 <= PieceLength)
            {
                starts.Add(s0);
                targets.Add(row);
            }
            else
            {
                for (int q = s0; q < s1; q += PieceLength)
                {
                    starts.Add(q);
                    targets.Add(-(slots++) - 1);
                }
                first.Add(slots);
                longRows.Add(row);
            }
            s0 = s1;
        }
        int pieces = starts.Count;
        starts.Add(k);
        int[] packed = [.. order, .. starts, .. targets, .. first, .. longRows];
        var table = Allocate(DType.Int32, packed.Length);
        Upload(packed, table);
        if (_pieceCache.Count == SegmentCacheSize)
        {
            _pieceCache[0].Table.Dispose();
            _pieceCache.RemoveAt(0);
        }
        _pieceCache.Add((indices, table, pieces, longRows.Count, slots));
        return (table, pieces, longRows.Count, slots);
    }

    private const int SegmentCacheSize = 8;
    private readonly List<(int[] Indices, Tensor Table, int Segments)> _segmentCache = [];

    /// <summary>
    /// The device segment table of an index array, cached by array identity (HostInts returns the same array for the
    /// same upload, so a batch's ids are grouped once however many scatters use them). Evicted tables go back to the
    /// pool, whose reuse is stream-ordered, so a table still read by a queued kernel is never overwritten early.
    /// </summary>
    private (Tensor Table, int Segments) SegmentTable(int[] indices)
    {
        foreach (var entry in _segmentCache)
            if (ReferenceEquals(entry.Indices, indices)) return (entry.Table, entry.Segments);
        int k = indices.Length;
        var keys = new long[k];
        for (int p = 0; p < k; p++) keys[p] = ((long)indices[p] << 32) | (uint)p;
        Array.Sort(keys);
        var order = new int[k];
        var starts = new List<int>();
        var rows = new List<int>();
        for (int p = 0; p < k; p++)
        {
            order[p] = (int)keys[p];
            int row = (int)(keys[p] >> 32);
            if (p == 0 || row != rows[^1])
            {
                starts.Add(p);
                rows.Add(row);
            }
        }
        int segments = rows.Count;
        starts.Add(k);
        int[] packed = [.. order, .. starts, .. rows];
        var table = Allocate(DType.Int32, packed.Length);
        Upload(packed, table);
        if (_segmentCache.Count == SegmentCacheSize)
        {
            _segmentCache[0].Table.Dispose();
            _segmentCache.RemoveAt(0);
        }
        _segmentCache.Add((indices, table, segments));
        return (table, segments);
    }

    private static void CheckIndices(int[] indices, int rows, string name, string what)
    {
        for (int i = 0; i < indices.Length; i++)
            if ((uint)indices[i] >= (uint)rows)
                throw new ArgumentOutOfRangeException(name, $"{what} {indices[i]} at {i} is outside 0..{rows - 1}.");
    }

    private void CheckTable(Tensor table, string name, int d, DType dtype)
    {
        Check(table, name, dtype);
        if (table.Rank != 2 || table.Dim(1) != d)
            throw new ArgumentException($"{name} must be [rows, {d}], not {table.ShapeString}.", name);
    }
}
