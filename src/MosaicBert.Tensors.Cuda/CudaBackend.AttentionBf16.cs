namespace MosaicBert.Tensors.Cuda;

// bf16 tensor-core attention for head dimension 64 (kernels in attention_bf16.cu), on raw device addresses so that the
// bf16 model path can call it before bf16 tensors exist. Nothing here waits for the GPU: cuSeqlens is read on the
// device only, so the caller passes the batch's longest sequence (it built the batch on the host).
public sealed partial class CudaBackend
{
    private const string AttentionBf16File = "attention_bf16.cu";
    private const int AttentionBf16Tile = 64;
    private const uint AttentionBf16Threads = 128;

    /// <summary>The only head dimension the bf16 attention kernels take.</summary>
    internal const int AttentionBf16HeadDim = 64;

    /// <summary>
    /// Forward attention in bf16 with fp32 accumulation (FlashAttention-2 on the tensor cores), ALiBi bias
    /// <c>−slope_h·|pos_i − pos_j|</c> added to <c>scale·q_i·k_j</c>, over unpadded sequences. Queued on the stream; no
    /// synchronisation.
    /// </summary>
    /// <param name="qkv">[tokens, 3·heads·64] bf16, 16-byte aligned: the Q, K and V blocks, head h owns channels h·64..h·64+63 of each.</param>
    /// <param name="cuSeqlens">[sequences + 1] int32: sequence b is tokens cuSeqlens[b]..cuSeqlens[b+1]−1, from 0 to tokens.</param>
    /// <param name="positions">[tokens] int32: each token's column in the padded batch (ALiBi distances).</param>
    /// <param name="slopes">[heads] fp32 ALiBi slopes (zeros: no bias).</param>
    /// <param name="tokens">N, the number of tokens.</param>
    /// <param name="sequences">B, the number of sequences.</param>
    /// <param name="maxSeqlen">At least the longest sequence: ⌈maxSeqlen/64⌉ query tiles are launched per sequence, and rows
    /// of a longer sequence past them would be left unwritten.</param>
    /// <param name="heads">H.</param>
    /// <param name="scale">Multiplies q·k before the bias (1/8 for head dimension 64).</param>
    /// <param name="context">[tokens, heads·64] bf16 output, 16-byte aligned, every row written.</param>
    /// <param name="logSumExp">[tokens, heads] fp32 output: ln Σ_j exp(s_ij) per query and head, for the backward pass.</param>
    internal void AttentionBf16Forward(ulong qkv, ulong cuSeqlens, ulong positions, ulong slopes, int tokens, int sequences,
        int maxSeqlen, int heads, float scale, ulong context, ulong logSumExp)
    {
        var (gridX, tilesPerSeq) = AttentionBf16Grid(tokens, sequences, maxSeqlen, heads);
        if (gridX == 0) return;
        AttentionBf16Aligned(16, (qkv, nameof(qkv)), (context, nameof(context)));
        AttentionBf16Aligned(4, (cuSeqlens, nameof(cuSeqlens)), (positions, nameof(positions)), (slopes, nameof(slopes)),
            (logSumExp, nameof(logSumExp)));
        Launch(Kernel(AttentionBf16File, "attention_bf16_forward"), gridX, (uint)heads, AttentionBf16Threads, 0,
            qkv, cuSeqlens, positions, slopes, scale, context, logSumExp, heads, tilesPerSeq);
    }

    /// <summary>Bytes of the fp32 scratch that <see cref="AttentionBf16Backward"/> needs: D_i per token and head.</summary>
    internal static long AttentionBf16BackwardScratchBytes(int tokens, int heads) => (long)tokens * heads * sizeof(float);

    /// <summary>
    /// Backward of <see cref="AttentionBf16Forward"/> (FlashAttention-2, probabilities recomputed from the stored
    /// log-sum-exp), deterministic: a dQ kernel per query tile, which also writes D_i = dO_i·O_i into
    /// <paramref name="scratch"/>, then a dK/dV kernel per key tile; every output element is written by one thread,
    /// without atomics. Queued on the stream; no synchronisation.
    /// </summary>
    /// <param name="context">The forward's bf16 output O (D_i is computed from it).</param>
    /// <param name="logSumExp">The forward's fp32 log-sum-exp.</param>
    /// <param name="dContext">[tokens, heads·64] bf16 gradient of the context, 16-byte aligned.</param>
    /// <param name="dQkv">[tokens, 3·heads·64] bf16 output, 16-byte aligned, every element written; must not overlap the inputs.</param>
    /// <param name="scratch">At least <see cref="AttentionBf16BackwardScratchBytes"/> bytes of device memory, 4-byte aligned.</param>
    /// <param name="qkv">See <see cref="AttentionBf16Forward"/>.</param>
    /// <param name="cuSeqlens">See <see cref="AttentionBf16Forward"/>.</param>
    /// <param name="positions">See <see cref="AttentionBf16Forward"/>.</param>
    /// <param name="slopes">See <see cref="AttentionBf16Forward"/>.</param>
    /// <param name="tokens">See <see cref="AttentionBf16Forward"/>.</param>
    /// <param name="sequences">See <see cref="AttentionBf16Forward"/>.</param>
    /// <param name="maxSeqlen">See <see cref="AttentionBf16Forward"/>.</param>
    /// <param name="heads">See <see cref="AttentionBf16Forward"/>.</param>
    /// <param name="scale">See <see cref="AttentionBf16Forward"/>.</param>
    internal void AttentionBf16Backward(ulong qkv, ulong cuSeqlens, ulong positions, ulong slopes, int tokens, int sequences,
        int maxSeqlen, int heads, float scale, ulong context, ulong logSumExp, ulong dContext, ulong dQkv, ulong scratch)
    {
        var (gridX, tilesPerSeq) = AttentionBf16Grid(tokens, sequences, maxSeqlen, heads);
        if (gridX == 0) return;
        AttentionBf16Aligned(16, (qkv, nameof(qkv)), (context, nameof(context)), (dContext, nameof(dContext)), (dQkv, nameof(dQkv)));
        AttentionBf16Aligned(4, (cuSeqlens, nameof(cuSeqlens)), (positions, nameof(positions)), (slopes, nameof(slopes)),
            (logSumExp, nameof(logSumExp)), (scratch, nameof(scratch)));
        AttentionBf16BackwardDq(gridX, tilesPerSeq, qkv, cuSeqlens, positions, slopes, heads, scale, context, logSumExp, dContext, dQkv, scratch);
        AttentionBf16BackwardDkv(gridX, tilesPerSeq, qkv, cuSeqlens, positions, slopes, heads, scale, logSumExp, dContext, dQkv, scratch);
    }

    // The two passes of the backward, separately launchable for the benchmark's split timing. The dQ pass writes D_i
    // into the scratch; the dK/dV pass reads it.
    internal void AttentionBf16BackwardDq(uint gridX, int tilesPerSeq, ulong qkv, ulong cuSeqlens, ulong positions, ulong slopes,
        int heads, float scale, ulong context, ulong logSumExp, ulong dContext, ulong dQkv, ulong scratch) =>
        Launch(Kernel(AttentionBf16File, "attention_bf16_backward_dq"), gridX, (uint)heads, AttentionBf16Threads, 0,
            qkv, cuSeqlens, positions, slopes, scale, context, logSumExp, dContext, dQkv, scratch, heads, tilesPerSeq);

    internal void AttentionBf16BackwardDkv(uint gridX, int tilesPerSeq, ulong qkv, ulong cuSeqlens, ulong positions, ulong slopes,
        int heads, float scale, ulong logSumExp, ulong dContext, ulong dQkv, ulong scratch) =>
        Launch(Kernel(AttentionBf16File, "attention_bf16_backward_dkv"), gridX, (uint)heads, AttentionBf16Threads, 0,
            qkv, cuSeqlens, positions, slopes, scale, logSumExp, dContext, scratch, dQkv, heads, tilesPerSeq);

    /// <summary>Grid x (sequences × tiles per sequence; 0 when there is nothing to do) and the tiles per sequence.</summary>
    internal static (uint GridX, int TilesPerSeq) AttentionBf16Grid(int tokens, int sequences, int maxSeqlen, int heads)
    {
        if (tokens < 0 || sequences < 0 || maxSeqlen < 0)
            throw new ArgumentException($"bf16 attention: tokens {tokens}, sequences {sequences} and maxSeqlen {maxSeqlen} must not be negative.");
        if (heads < 1 || heads > 65535)
            throw new ArgumentOutOfRangeException(nameof(heads), heads, "bf16 attention takes 1 to 65535 heads.");
        if (maxSeqlen > tokens)
            throw new ArgumentOutOfRangeException(nameof(maxSeqlen), maxSeqlen, $"longer than the batch's {tokens} tokens.");
        if (tokens == 0 || sequences == 0) return (0, 0);
        if (maxSeqlen == 0)
            throw new ArgumentOutOfRangeException(nameof(maxSeqlen), maxSeqlen, $"0 for a batch of {tokens} tokens: it must be at least the longest sequence.");
        int tilesPerSeq = (maxSeqlen + AttentionBf16Tile - 1) / AttentionBf16Tile;
        long gridX = (long)sequences * tilesPerSeq;
        if (gridX > int.MaxValue)
            throw new ArgumentException($"bf16 attention: {sequences} sequences × {tilesPerSeq} tiles is more blocks than a grid takes.");
        return ((uint)gridX, tilesPerSeq);
    }

    private static void AttentionBf16Aligned(int bytes, params ReadOnlySpan<(ulong Address, string Name)> buffers)
    {
        foreach (var (address, name) in buffers)
        {
            if (address == 0) throw new ArgumentNullException(name, "bf16 attention: null device address.");
            if (address % (ulong)bytes != 0)
                throw new ArgumentException($"bf16 attention: {name} (0x{address:x}) must be {bytes}-byte aligned.", name);
        }
    }
}
