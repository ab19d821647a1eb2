using System.Globalization;
using System.Runtime.InteropServices;
using static MosaicBert.Tensors.Cuda.Tests.Both;

namespace MosaicBert.Tensors.Cuda.Tests;

/// <summary>
/// The bf16 tensor-core attention (attention_bf16.cu) against the CPU backend's fp32 attention run on the same
/// bf16-rounded inputs. The GPU rounds P and dS to bf16 before their GEMMs (relative error 2^-9 per element) and its
/// outputs to bf16 (2^-9), and computes D_i from its bf16 output; so context and each of dQ, dK, dV must be within
/// 1e-2 of that tensor's largest magnitude, and the fp32 log-sum-exp (scores from exact bf16 products, fp32 sums)
/// within 1e-4 relative (floor 1). Outputs are pre-filled with NaN to show that every element is written.
/// </summary>
public sealed class AttentionBf16Tests(ITestOutputHelper output)
{
    private const int HeadDim = 64;
    private const double OutputTolerance = 1e-2, LseTolerance = 1e-4;
    private static CudaBackend G => Gpu.Backend;

    public enum Slopes { Alibi, Zero, Large }

    public static TheoryData<int[], int, Slopes, bool, int> Cases => new()
    {
        // lengths, heads, slopes, all positions equal, extra maxSeqlen (tiles past every sequence's end)
        { [128], 12, Slopes.Alibi, false, 0 },
        { [1, 7, 64, 65, 128, 200, 513], 12, Slopes.Alibi, false, 0 },
        { [1, 7, 64, 65, 128, 200, 513], 2, Slopes.Zero, false, 0 },
        { [3, 0, 100, 130], 2, Slopes.Large, false, 70 },
        { [70, 129], 12, Slopes.Alibi, true, 0 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void ForwardAndBackwardMatchTheCpuOnBf16Inputs(int[] lengths, int heads, Slopes slopeKind, bool equalPositions, int extraMax)
    {
        _ = G;
        int d = heads * HeadDim, n = lengths.Sum(), maxSeqlen = lengths.Max() + extraMax;
        var cu = new int[lengths.Length + 1];
        for (int b = 0; b < lengths.Length; b++) cu[b + 1] = cu[b] + lengths[b];
        // Padded columns with a hole in the second sequence, so that distances are not token index differences.
        var pos = new int[n];
        if (!equalPositions)
            for (int b = 0; b < lengths.Length; b++)
                for (int t = 0; t < lengths[b]; t++) pos[cu[b] + t] = t + (b == 1 && t > 0 ? 1 : 0);
        var slopes = Enumerable.Range(0, heads).Select(h => slopeKind switch
        {
            Slopes.Alibi => (float)Math.Pow(2, -8.0 * (h + 1) / heads),
            Slopes.Large => 4f * (h + 1) * (h + 1),
            _ => 0f,
        }).ToArray();
        float scale = 1f / MathF.Sqrt(HeadDim);
        float[] qkv = RoundToBf16(Random(n * 3 * d, 11, 2)), dCtx = RoundToBf16(Random(n * d, 12));

        // CPU fp32 on the bf16 values.
        var cpu = Both.Ref;
        using var qkvC = cpu.Allocate(n, 3 * d);
        using var cuC = cpu.Allocate(DType.Int32, cu.Length);
        using var posC = cpu.Allocate(DType.Int32, n);
        using var slopesC = cpu.Allocate(heads);
        using var ctxC = cpu.Allocate(n, d);
        using var lseC = cpu.Allocate(n, heads);
        using var dCtxC = cpu.Allocate(n, d);
        using var dQkvC = cpu.Allocate(n, 3 * d);
        cpu.Upload(qkv, qkvC);
        cpu.Upload(cu, cuC);
        cpu.Upload(pos, posC);
        cpu.Upload(slopes, slopesC);
        cpu.Upload(dCtx, dCtxC);
        cpu.Attention(qkvC, cuC, posC, slopesC, scale, ctxC, lseC);
        cpu.AttentionBackward(qkvC, cuC, posC, slopesC, scale, ctxC, lseC, dCtxC, dQkvC);

        // GPU bf16.
        using var qkvG = Bf16Buffer.Of(qkv);
        using var dCtxG = Bf16Buffer.Of(dCtx);
        using var ctxG = Bf16Buffer.Nan(n * d);
        using var dQkvG = Bf16Buffer.Nan(n * 3 * d);
        using var cuG = G.Allocate(DType.Int32, cu.Length);
        using var posG = G.Allocate(DType.Int32, n);
        using var slopesG = G.Allocate(heads);
        using var lseG = G.Allocate(n, heads);
        using var scratch = G.Allocate(checked((int)(CudaBackend.AttentionBf16BackwardScratchBytes(n, heads) / sizeof(float))));
        G.Upload(cu, cuG);
        G.Upload(pos, posG);
        G.Upload(slopes, slopesG);
        G.Fill(lseG, float.NaN);
        G.AttentionBf16Forward(qkvG.Address, G.Ptr(cuG), G.Ptr(posG), G.Ptr(slopesG), n, lengths.Length, maxSeqlen, heads, scale,
            ctxG.Address, G.Ptr(lseG));
        void Backward() => G.AttentionBf16Backward(qkvG.Address, G.Ptr(cuG), G.Ptr(posG), G.Ptr(slopesG), n, lengths.Length, maxSeqlen,
            heads, scale, ctxG.Address, G.Ptr(lseG), dCtxG.Address, dQkvG.Address, G.Ptr(scratch));
        Backward();

        string what = $"lengths [{string.Join(",", lengths)}], {heads} heads, {slopeKind} slopes{(equalPositions ? ", equal positions" : "")}";
        var report = new List<string>();
        void Check(string name, float[] expected, float[] actual, double tolerance, Func<float[], Func<int, double>> scaleOf)
        {
            var (worst, at) = WorstError(expected, actual, scaleOf(expected));
            report.Add($"{name} {worst:E2}");
            Assert.True(worst <= tolerance, $"{what}: {name} worst error {worst:E2} of its scale at {at} " +
                $"(CPU {expected[Math.Max(at, 0)]}, GPU {actual[Math.Max(at, 0)]}), tolerance {tolerance:E1}");
        }
        Check("context", Host(ctxC), ctxG.Download(), OutputTolerance, OfMax);
        Check("lse", Host(lseC), Host(lseG), LseTolerance, Relative(1));
        float[] dQkvExpected = Host(dQkvC), dQkvActual = dQkvG.Download();
        foreach (var (block, name) in new[] { (0, "dQ"), (1, "dK"), (2, "dV") })
            Check(name, Block(dQkvExpected, n, d, block), Block(dQkvActual, n, d, block), OutputTolerance, OfMax);
        output.WriteLine($"{what}: worst errors (of each tensor's max-abs; lse relative) {string.Join(", ", report)}");

        var first = dQkvG.DownloadBits();
        Backward();
        Assert.True(first.AsSpan().SequenceEqual(dQkvG.DownloadBits()), $"{what}: backward run twice differs (expected bitwise determinism)");
    }

    [Fact]
    public void BadArgumentsAreRejectedBeforeAnyLaunch()
    {
        _ = G;
        using var buffer = G.Allocate(1024);
        ulong p = G.Ptr(buffer);
        Assert.Throws<ArgumentOutOfRangeException>(() => G.AttentionBf16Forward(p, p, p, p, 8, 1, 8, 0, 0.125f, p, p));
        Assert.Throws<ArgumentOutOfRangeException>(() => G.AttentionBf16Forward(p, p, p, p, 8, 1, 9, 1, 0.125f, p, p));
        Assert.Throws<ArgumentOutOfRangeException>(() => G.AttentionBf16Forward(p, p, p, p, 8, 1, 0, 1, 0.125f, p, p));
        Assert.Throws<ArgumentException>(() => G.AttentionBf16Forward(p, p, p, p, -1, 1, 0, 1, 0.125f, p, p));
        Assert.Throws<ArgumentNullException>(() => G.AttentionBf16Forward(0, p, p, p, 8, 1, 8, 1, 0.125f, p, p));
        var misaligned = Assert.Throws<ArgumentException>(() => G.AttentionBf16Forward(p + 8, p, p, p, 8, 1, 8, 1, 0.125f, p, p));
        Assert.Contains("qkv", misaligned.Message);
        Assert.Throws<ArgumentException>(() => G.AttentionBf16Backward(p, p, p, p, 8, 1, 8, 1, 0.125f, p, p, p, p, p + 2));
        G.AttentionBf16Forward(0, 0, 0, 0, 0, 0, 0, 1, 0.125f, 0, 0);   // an empty batch is nothing to do
    }

    [Fact]
    public void RoundingToBf16IsToNearestEven()
    {
        Assert.Equal(0x3F80, ToBf16(1f));
        Assert.Equal(0x3F80, ToBf16(BitConverter.UInt32BitsToSingle(0x3F808000)));   // tie, even stays
        Assert.Equal(0x3F82, ToBf16(BitConverter.UInt32BitsToSingle(0x3F818000)));   // tie, odd rounds up
        Assert.Equal(0x3F81, ToBf16(BitConverter.UInt32BitsToSingle(0x3F808001)));
        Assert.Equal(0x7F80, ToBf16(float.MaxValue));                                 // overflow to +∞
        Assert.True(float.IsNaN(FromBf16(ToBf16(float.NaN))));
        Assert.Equal(-2.5f, FromBf16(ToBf16(-2.5f)));
    }

    /// <summary>
    /// B = 256 sequences of 128 tokens (and of lengths uniform in 16..128), 12 heads: forward and backward times and
    /// TFLOP/s (forward 4·d·Σ len², backward 2.5× that), as one JSON line per batch. Runs only when
    /// MOSAICBERT_BENCH_ATTENTION is set (1, or a file to append the lines to).
    /// </summary>
    [Fact]
    public void Benchmark()
    {
        string? target = Environment.GetEnvironmentVariable("MOSAICBERT_BENCH_ATTENTION");
        if (string.IsNullOrEmpty(target)) Assert.Skip("a benchmark: set MOSAICBERT_BENCH_ATTENTION=1 (or a file path) to run it");
        _ = G;
        foreach (string kind in new[] { "full", "ragged" })
        {
            const int batch = 256, heads = 12, iterations = 20;
            var rng = new Random(5);
            int[] lengths = [.. Enumerable.Range(0, batch).Select(_ => kind == "full" ? 128 : rng.Next(16, 129))];
            int n = lengths.Sum(), d = heads * HeadDim;
            var cu = new int[batch + 1];
            var pos = new int[n];
            for (int b = 0; b < batch; b++)
            {
                cu[b + 1] = cu[b] + lengths[b];
                for (int t = 0; t < lengths[b]; t++) pos[cu[b] + t] = t;
            }
            using var qkvG = Bf16Buffer.Random(n * 3 * d, 21);
            using var dCtxG = Bf16Buffer.Random(n * d, 22);
            using var ctxG = Bf16Buffer.Nan(n * d);
            using var dQkvG = Bf16Buffer.Nan(n * 3 * d);
            using var cuG = G.Allocate(DType.Int32, cu.Length);
            using var posG = G.Allocate(DType.Int32, n);
            using var slopesG = G.Allocate(heads);
            using var lseG = G.Allocate(n, heads);
            using var scratch = G.Allocate(n * heads);
            G.Upload(cu, cuG);
            G.Upload(pos, posG);
            G.Upload([.. Enumerable.Range(0, heads).Select(h => (float)Math.Pow(2, -8.0 * (h + 1) / heads))], slopesG);
            void Forward() => G.AttentionBf16Forward(qkvG.Address, G.Ptr(cuG), G.Ptr(posG), G.Ptr(slopesG), n, batch, 128, heads, 0.125f,
                ctxG.Address, G.Ptr(lseG));
            void Backward() => G.AttentionBf16Backward(qkvG.Address, G.Ptr(cuG), G.Ptr(posG), G.Ptr(slopesG), n, batch, 128, heads, 0.125f,
                ctxG.Address, G.Ptr(lseG), dCtxG.Address, dQkvG.Address, G.Ptr(scratch));
            var (gridX, tiles) = CudaBackend.AttentionBf16Grid(n, batch, 128, heads);
            void DqPass() => G.AttentionBf16BackwardDq(gridX, tiles, qkvG.Address, G.Ptr(cuG), G.Ptr(posG), G.Ptr(slopesG), heads, 0.125f,
                ctxG.Address, G.Ptr(lseG), dCtxG.Address, dQkvG.Address, G.Ptr(scratch));
            void DkvPass() => G.AttentionBf16BackwardDkv(gridX, tiles, qkvG.Address, G.Ptr(cuG), G.Ptr(posG), G.Ptr(slopesG), heads, 0.125f,
                G.Ptr(lseG), dCtxG.Address, dQkvG.Address, G.Ptr(scratch));
            double forwardMs = Time(Forward, iterations), backwardMs = Time(Backward, iterations);
            double dqMs = Time(DqPass, iterations), dkvMs = Time(DkvPass, iterations);
            double forwardFlops = 4.0 * d * lengths.Sum(l => (double)l * l);
            string json = string.Create(CultureInfo.InvariantCulture,
                $"{{\"bench\":\"attention_bf16\",\"device\":\"{G.Device.Name}\",\"lengths\":\"{kind}\",\"batch\":{batch},\"tokens\":{n},\"heads\":{heads},\"head_dim\":{HeadDim}," +
                $"\"fwd_ms\":{forwardMs:F4},\"bwd_ms\":{backwardMs:F4},\"bwd_dq_pass_ms\":{dqMs:F4},\"bwd_dkv_pass_ms\":{dkvMs:F4},\"fwd_tflops\":{forwardFlops / forwardMs / 1e9:F1},\"bwd_tflops\":{2.5 * forwardFlops / backwardMs / 1e9:F1}," +
                $"\"bert_base_12_layers_fwd_bwd_ms\":{12 * (forwardMs + backwardMs):F3},\"backward\":\"deterministic: dQ kernel per query tile, then dK/dV kernel per key tile\"}}");
            Console.WriteLine(json);
            output.WriteLine(json);
            if (target != "1") File.AppendAllText(target, json + "\n");
        }
    }

    private static double Time(Action work, int iterations)
    {
        for (int i = 0; i < 3; i++) work();
        using var start = new CudaEvent(G.Device);
        using var stop = new CudaEvent(G.Device);
        start.Record(G.Stream);
        for (int i = 0; i < iterations; i++) work();
        stop.Record(G.Stream);
        return stop.ElapsedMillisecondsSince(start) / iterations;
    }

    private static (double Worst, int At) WorstError(float[] expected, float[] actual, Func<int, double> scale)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = 0;
        int at = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            double error = float.IsFinite(actual[i]) ? Math.Abs((double)actual[i] - expected[i]) / scale(i) : double.PositiveInfinity;
            if (error > worst)
            {
                worst = error;
                at = i;
            }
        }
        return (worst, at);
    }

    /// <summary>Block <paramref name="block"/> (0 Q, 1 K, 2 V) of an [n, 3d] matrix.</summary>
    private static float[] Block(float[] qkv, int n, int d, int block)
    {
        var result = new float[n * d];
        for (int i = 0; i < n; i++) Array.Copy(qkv, (long)i * 3 * d + block * d, result, (long)i * d, d);
        return result;
    }

    /// <summary>fp32 → bf16 bits, rounding to nearest, ties to even (NaN stays a quiet NaN).</summary>
    internal static ushort ToBf16(float x)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        if (float.IsNaN(x)) return (ushort)((bits >> 16) | 0x40);
        bits += 0x7FFF + ((bits >> 16) & 1);
        return (ushort)(bits >> 16);
    }

    internal static float FromBf16(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    private static float[] RoundToBf16(float[] values) => [.. values.Select(v => FromBf16(ToBf16(v)))];

    /// <summary>bf16 values in device memory from the backend's pool (held in an fp32 tensor of half as many elements).</summary>
    private sealed class Bf16Buffer : IDisposable
    {
        private readonly Tensor _storage;
        private readonly int _count;

        private Bf16Buffer(int count)
        {
            _count = count;
            _storage = G.Allocate((count + 1) / 2);
        }

        public ulong Address => G.Ptr(_storage);

        public static Bf16Buffer Of(float[] values)
        {
            var bits = new ushort[values.Length + (values.Length & 1)];
            for (int i = 0; i < values.Length; i++) bits[i] = ToBf16(values[i]);
            return FromBits(bits, values.Length);
        }

        public static Bf16Buffer Nan(int count)
        {
            var bits = new ushort[count + (count & 1)];
            Array.Fill(bits, (ushort)0x7FC0);
            return FromBits(bits, count);
        }

        /// <summary>Uniform in [−1, 1), from a cheap seeded generator (the benchmark's 75 M values).</summary>
        public static Bf16Buffer Random(int count, uint seed)
        {
            var bits = new ushort[count + (count & 1)];
            uint state = seed * 2654435761u + 1;
            for (int i = 0; i < count; i++)
            {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                bits[i] = ToBf16((state >> 8) * (2f / (1 << 24)) - 1f);
            }
            return FromBits(bits, count);
        }

        private static Bf16Buffer FromBits(ushort[] bits, int count)
        {
            var buffer = new Bf16Buffer(count);
            G.Upload(MemoryMarshal.Cast<ushort, float>(bits), buffer._storage);
            return buffer;
        }

        public ushort[] DownloadBits()
        {
            var host = new float[_storage.Length];
            G.Download(_storage, host);
            return MemoryMarshal.Cast<float, ushort>(host)[.._count].ToArray();
        }

        public float[] Download() => [.. DownloadBits().Select(FromBf16)];

        public void Dispose() => _storage.Dispose();
    }
}
