using static MosaicBert.Tensors.Cuda.Tests.Both;

namespace MosaicBert.Tensors.Cuda.Tests;

/// <summary>
/// Varlen ALiBi attention, forward and backward, against the CPU backend. Both compute in fp32 with different
/// summation orders (the CPU through its GEMM in 64×64 tiles, the GPU one key at a time), so the tolerance is 2e-5 of
/// each output tensor's largest magnitude forward and 3e-5 backward (the README's parity bound for gradients).
/// </summary>
public sealed class AttentionParityTests
{
    private static CudaBackend G => Gpu.Backend;

    public static TheoryData<int[], int, int> Cases => new()
    {
        { [5, 3], 3, 4 },                    // tiny head dim (the 32-wide variant, mostly padding)
        { [1, 70, 130], 2, 8 },              // a single token; sequences over one and two 64-token tiles
        { [4, 0, 66], 5, 16 },               // an empty sequence; five heads
        { [128, 128, 97, 128], 12, 64 },     // BERT-base heads
        { [40], 4, 33 },                     // padded to the 64 variant
        { [65, 64], 3, 96 },                 // padded to the 128 variant (dynamic shared memory over 48 KB)
        { [200, 3], 2, 128 },                // the largest head dim
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void ForwardAndBackwardMatchTheCpu(int[] lengths, int heads, int dh)
    {
        _ = G;
        int d = heads * dh, n = lengths.Sum();
        var cu = new int[lengths.Length + 1];
        for (int b = 0; b < lengths.Length; b++) cu[b + 1] = cu[b] + lengths[b];
        // Padded columns with a hole in the second sequence, so ALiBi distances are not token index differences.
        var pos = new int[n];
        for (int b = 0; b < lengths.Length; b++)
            for (int t = 0; t < lengths[b]; t++) pos[cu[b] + t] = t + (b == 1 && t > 0 ? 1 : 0);
        var slopes = Enumerable.Range(0, heads).Select(h => (float)Math.Pow(2, -(h + 1))).ToArray();
        float scale = 1f / MathF.Sqrt(dh);
        using var qkv = Floats(Random(n * 3 * d, 7, 2), n, 3 * d);
        using var cuT = Ints(cu);
        using var posT = Ints(pos);
        using var slopeT = Floats(slopes, heads);
        using var ctx = Zeros(n, d);
        using var lse = Zeros(n, heads);
        Ref.Attention(qkv.C, cuT.C, posT.C, slopeT.C, scale, ctx.C, lse.C);
        G.Attention(qkv.G, cuT.G, posT.G, slopeT.G, scale, ctx.G, lse.G);
        Close(ctx, 2e-5, OfMax, "attention context");
        Close(lse, 2e-5, Relative(1), "attention log-sum-exp");

        using var dCtx = Floats(Random(n * d, 8), n, d);
        using var dQkv = Zeros(n, 3 * d);
        Ref.AttentionBackward(qkv.C, cuT.C, posT.C, slopeT.C, scale, ctx.C, lse.C, dCtx.C, dQkv.C);
        G.AttentionBackward(qkv.G, cuT.G, posT.G, slopeT.G, scale, ctx.G, lse.G, dCtx.G, dQkv.G);
        Close(dQkv, 3e-5, OfMax, "attention dQkv");
        var first = Host(dQkv.G);
        G.AttentionBackward(qkv.G, cuT.G, posT.G, slopeT.G, scale, ctx.G, lse.G, dCtx.G, dQkv.G);
        Close(first, Host(dQkv.G), 0, _ => 1, "attention backward run twice (deterministic)");
    }

    [Fact]
    public void BadArgumentsAreRejected()
    {
        _ = G;
        int n = 6, heads = 2, dh = 4, d = heads * dh;
        using var qkv = Floats(Random(n * 3 * d, 9), n, 3 * d);
        using var pos = Ints(new int[n]);
        using var slopes = Floats([0.5f, 0.25f], heads);
        using var ctx = Zeros(n, d);
        using var lse = Zeros(n, heads);
        using var wrongEnd = Ints([0, 3, 5]);
        using var decreasing = Ints([0, 4, 3, 6]);
        Assert.Throws<ArgumentException>(() => G.Attention(qkv.G, wrongEnd.G, pos.G, slopes.G, 0.5f, ctx.G, lse.G));
        Assert.Throws<ArgumentException>(() => G.Attention(qkv.G, decreasing.G, pos.G, slopes.G, 0.5f, ctx.G, lse.G));
        using var wide = Floats(Random(2 * 3 * 129, 10), 2, 3 * 129);
        using var one = Floats([1f], 1);
        using var cu = Ints([0, 2]);
        using var pos2 = Ints([0, 1]);
        using var ctx2 = Zeros(2, 129);
        using var lse2 = Zeros(2, 1);
        Assert.Throws<NotSupportedException>(() => G.Attention(wide.G, cu.G, pos2.G, one.G, 0.1f, ctx2.G, lse2.G));
    }
}
