namespace MosaicBert.Tensors;

/// <summary>The GEMM implementations available in this process and the one the CPU backend uses by default.</summary>
public static class GemmProviders
{
    /// <summary>The managed GEMM on all cores (always available).</summary>
    public static IGemmProvider Managed => ManagedGemm.Shared;

    /// <summary>OpenBLAS when a system library loads, else null.</summary>
    public static OpenBlasGemm? OpenBlas => OpenBlasGemm.TryLoad();

    /// <summary>
    /// The default provider. Environment variable MOSAICBERT_GEMM=managed|openblas overrides the choice below
    /// (openblas falls back to managed when the library is absent).
    /// </summary>
    public static IGemmProvider Default { get; } = ChooseDefault(Environment.GetEnvironmentVariable("MOSAICBERT_GEMM"));

    internal static IGemmProvider ChooseDefault(string? setting)
    {
        switch (setting?.Trim().ToLowerInvariant())
        {
            case "managed":
                return Managed;
            case "openblas":
                return (IGemmProvider?)OpenBlas ?? Managed;
        }
        // Default: managed. Rule: managed if it reaches ≥ 0.8× OpenBLAS on the BERT shapes, else OpenBLAS when present.
        // Measured with `dotnet run --project tests/MosaicBert.Benchmarks -c Release -- gemm --repeats 5` on a 2-core
        // AMD EPYC (Zen 5, AVX-512), 15 BERT-base shapes at B=8, S=128 (forward, dX, dW) + 2048³, GFLOP/s:
        //  - vs Debian's libopenblas0 0.3.21 as installed, which picks its Haswell (AVX2) kernels on this CPU:
        //    managed 186-209 vs OpenBLAS 99-110 on 1 thread (ratio 1.84-1.97), 345-405 vs 170-212 on 2 threads
        //    (ratio 1.69-2.09);
        //  - vs the same library forced to its AVX-512 kernels (OPENBLAS_CORETYPE=SkylakeX):
        //    187-207 vs 178-208 on 1 thread (ratio 0.96-1.07), 356-396 vs 304-391 on 2 threads (ratio 0.98-1.19;
        //    two shapes where another process took a core during both timings excluded from the GFLOP/s ranges).
        //  - AVX2-only CPUs (not available here; approximated by forcing the managed 6×16 AVX2 kernel against
        //    OpenBLAS's Haswell kernels on the same machine, 1 thread): 95-109 vs 96-110 (ratio 0.90-1.04).
        // Managed is ≥ 0.9× in every case and needs no native library, so it is the default; OpenBLAS stays selectable.
        return Managed;
    }
}
