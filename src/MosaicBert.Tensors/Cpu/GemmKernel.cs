using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MosaicBert.Tensors;

/// <summary>Which micro-kernel the managed GEMM uses. Auto picks the widest one the hardware runs natively.</summary>
internal enum GemmKernelKind
{
    Auto,
    Avx512,
    Avx2,
    Portable,
}

/// <summary>A micro-kernel and the cache blocking tuned for it.</summary>
internal sealed unsafe class GemmKernel
{
    /// <summary>Rows and columns of C one kernel call produces.</summary>
    public int Mr { get; }

    /// <summary>See <see cref="Mr"/>.</summary>
    public int Nr { get; }

    /// <summary>
    /// Depth of one k block: each C element is loaded and stored once per kc FMAs, and the kc×NR micro-panel of B
    /// (kc·NR·4 bytes) is re-read from L1/L2 by every MR-row micro-panel of the A block.
    /// </summary>
    public int Kc { get; init; }

    /// <summary>Rows of one packed A block (mc·kc·4 bytes, kept in L2 while the tile's B micro-panels sweep past).</summary>
    public int Mc { get; init; }

    /// <summary>Widest tile of C: the tile's packed kc×nc panel of op(B) (kc·nc·4 bytes) is reused by all its A blocks.</summary>
    public int NcMax { get; init; }

    /// <summary>Tallest tile of C (its A blocks of mc rows all reuse the tile's packed B panel).</summary>
    public int MaxTileRows { get; init; } = 4096;

    public string Name { get; }

    public delegate*<int, float*, float*, float*, nint, float, float, bool, void> Run { get; }

    private GemmKernel(string name, int mr, int nr, delegate*<int, float*, float*, float*, nint, float, float, bool, void> run)
    {
        Name = name;
        Mr = mr;
        Nr = nr;
        Run = run;
    }

    // Blocking. Measured single-threaded on the 2-core Zen 5 EPYC (48 KiB L1d, 1 MiB L2, 32 MiB L3) over the BERT
    // shapes, interleaving configurations in one process (best of 10): once B is packed per tile and shared by its A
    // blocks, C is prefetched and packing is vectorised, kc ∈ {128, 256, 384}, mc ∈ {192 … 512} and
    // ncMax ∈ {768, 1536} all land within ±1.5 % (≈ 198-215 GFLOP/s, the kernel's in-register peak being ≈ 225).
    // Hence the choice is by footprint: kc = 256 (C passes = k/256; B micro-panel 48 KiB, L1/L2), mc = 256 (A block
    // 256 KiB: fits the 512 KiB L2 of older cores too), ncMax = 768 (B panel 768 KiB, L2-resident on Zen 4/5 and
    // Sapphire Rapids, and ~1 MiB of buffers per thread in all).
    public static readonly GemmKernel Avx512 = new("avx512-8x48", MicroKernels.Mr512, MicroKernels.Nr512, &MicroKernels.Kernel8x48)
    { Kc = 256, Mc = 256, NcMax = 768 };

    // 6×16 kernel (run on the same machine with AVX-512 off the table): ≈ 109 GFLOP/s against a 113 in-register peak,
    // flat over kc ∈ {128 … 512}, mc ∈ {192 … 510}; mc = 192 is a multiple of MR = 6; B micro-panel 16 KiB.
    public static readonly GemmKernel Avx2 = new("avx2-6x16", MicroKernels.Mr256, MicroKernels.Nr256, &MicroKernels.Kernel6x16)
    { Kc = 256, Mc = 192, NcMax = 768 };

    // Fallback for CPUs with neither (e.g. Arm64); not tuned.
    public static readonly GemmKernel Portable = new("vector128-4x8", MicroKernels.Mr128, MicroKernels.Nr128, &MicroKernels.Kernel4x8)
    { Kc = 256, Mc = 128, NcMax = 768 };

    /// <summary>The widest kernel that runs natively here.</summary>
    public static readonly GemmKernel Best =
        Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? Avx512 :
        Vector256.IsHardwareAccelerated && Fma.IsSupported ? Avx2 :
        Portable;

    public static GemmKernel Get(GemmKernelKind kind) => kind switch
    {
        GemmKernelKind.Auto => Best,
        GemmKernelKind.Avx512 => Avx512F.IsSupported ? Avx512 : throw new PlatformNotSupportedException("AVX-512F is not supported here"),
        GemmKernelKind.Avx2 => Fma.IsSupported && Avx2Supported ? Avx2 : throw new PlatformNotSupportedException("AVX2/FMA is not supported here"),
        GemmKernelKind.Portable => Portable,
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    private static bool Avx2Supported => System.Runtime.Intrinsics.X86.Avx2.IsSupported;

    /// <summary>Same kernel, other blocking (tuning and tests).</summary>
    public GemmKernel WithBlocking(int kc, int mc, int ncMax, int maxTileRows = 4096)
    {
        if (kc < 1 || mc < Mr || mc % Mr != 0 || ncMax < Nr || ncMax % Nr != 0 || maxTileRows < Mr)
            throw new ArgumentOutOfRangeException(nameof(kc), $"blocking kc={kc}, mc={mc}, ncMax={ncMax}, maxTileRows={maxTileRows} does not fit MR={Mr}, NR={Nr}");
        return new GemmKernel(Name, Mr, Nr, Run) { Kc = kc, Mc = mc, NcMax = ncMax, MaxTileRows = maxTileRows };
    }
}
