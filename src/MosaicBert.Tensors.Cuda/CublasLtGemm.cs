using MosaicBert.Tensors.Cuda.Interop;
using static MosaicBert.Tensors.Cuda.Interop.CublasLt;

namespace MosaicBert.Tensors.Cuda;

/// <summary>
/// Row-major GEMM through cuBLASLt (fp32, or bf16 A/B with bf16 or fp32 C/D): <c>C = alpha·op(A)·op(B) + beta·C</c> (+ a bias per column of C).
/// cuBLASLt is column-major; a row-major matrix is the column-major matrix of its transpose, so the product is asked
/// for as <c>Cᵀ = op(B)ᵀ·op(A)ᵀ</c>: cuBLASLt's "A" is our B (stored rows = our B's row length), its "B" is our A, the
/// transpose flags carry over unchanged, and the m and n of the call are swapped. A bias per column of our C is a bias
/// per row of cuBLASLt's D, which is what the BIAS epilogue adds.
/// Compute type CUBLAS_COMPUTE_32F: fp32 inputs run plain fp32 FMA, never TF32, so results track the CPU GEMM to fp32
/// rounding; bf16 inputs run on tensor cores with fp32 accumulation (alpha, beta and the bias epilogue in fp32 too),
/// and D is rounded once at the end (to bf16, or kept fp32: weight gradients accumulate straight into the fp32 block).
/// The bias has D's type.
/// Each distinct shape (and pointer alignment) gets a plan, made once: descriptors, layouts and the heuristic's
/// algorithm, so the same shape always runs the same algorithm; cuBLAS documents such runs as bitwise reproducible on
/// one GPU model and library version (the parity tests check run-to-run equality).
/// </summary>
internal sealed unsafe class CublasLtGemm : IDisposable
{
    private const long WorkspaceBytes = 32L << 20;   // NVIDIA's recommendation for Hopper
    private readonly CudaDevice _device;
    private readonly nint _handle;
    private readonly DeviceBuffer _workspace;
    private readonly DeviceMemoryPool _pool;
    private readonly Dictionary<PlanKey, Plan?> _plans = [];

    private readonly record struct PlanKey(bool TransA, bool TransB, int M, int N, int K, int Lda, int Ldb, int Ldc,
        uint AlignA, uint AlignB, uint AlignC, uint AlignBias, int InputType, int OutputType);

    private sealed class Plan
    {
        public nint Desc, LayoutA, LayoutB, LayoutC;
        public AlgoData Algo;
        public nuint Workspace;
    }

    public CublasLtGemm(CudaDevice device, DeviceMemoryPool pool)
    {
        _device = device;
        _pool = pool;
        device.MakeCurrent();
        Check(cublasLtCreate(out _handle));
        _workspace = pool.Rent(WorkspaceBytes);
    }

    /// <summary>
    /// Queues the product on <paramref name="stream"/>. Pointers are device addresses of row-major matrices with row
    /// lengths lda, ldb, ldc. With <paramref name="bias"/> ≠ 0 (length n) it is added to every row of C; returns false
    /// (nothing queued) when cuBLASLt offers no algorithm for that epilogue, so the caller can add the bias itself.
    /// </summary>
    public bool Gemm(nint stream, bool transA, bool transB, int m, int n, int k, float alpha, ulong a, int lda, ulong b, int ldb,
        float beta, ulong c, int ldc, ulong bias = 0, DType inputType = DType.Float32, DType outputType = DType.Float32)
    {
        _device.MakeCurrent();
        var key = new PlanKey(transA, transB, m, n, k, lda, ldb, ldc, Alignment(a), Alignment(b), Alignment(c), bias == 0 ? 0u : Alignment(bias),
            DataType(inputType), DataType(outputType));
        if (!_plans.TryGetValue(key, out var plan)) _plans[key] = plan = MakePlan(key);
        if (plan is null)
        {
            if (bias != 0) return false;
            throw new CudaException("cublasLtMatmulAlgoGetHeuristic", StatusNotSupported, "CUBLAS_STATUS_NOT_SUPPORTED",
                "no algorithm", detail: Describe(key));
        }
        if (bias != 0) Check(cublasLtMatmulDescSetAttribute(plan.Desc, DescBiasPointer, &bias, (nuint)sizeof(ulong)), Describe(key));
        // cuBLASLt's A is our B, its B our A; C and D are both our C (in place).
        fixed (AlgoData* algo = &plan.Algo)
            Check(cublasLtMatmul(_handle, plan.Desc, &alpha, b, plan.LayoutA, a, plan.LayoutB, &beta, c, plan.LayoutC, c, plan.LayoutC,
                algo, _workspace.Pointer, plan.Workspace, stream), Describe(key));
        return true;
    }

    private static int DataType(DType t) => t switch
    {
        DType.Float32 => DataTypeR32F,
        DType.BFloat16 => DataTypeR16BF,
        _ => throw new ArgumentException($"cuBLASLt GEMMs take Float32 or BFloat16 matrices, not {t}."),
    };

    private static string TypeName(int t) => t == DataTypeR16BF ? "bf16" : "fp32";

    private static string Describe(PlanKey k) =>
        $"row-major {TypeName(k.InputType)}×{TypeName(k.InputType)}→{TypeName(k.OutputType)} GEMM C[{k.M}×{k.N}] = op(A)·op(B), k = {k.K}, transA = {k.TransA}, transB = {k.TransB}, " +
        $"lda/ldb/ldc = {k.Lda}/{k.Ldb}/{k.Ldc}, alignment A/B/C = {k.AlignA}/{k.AlignB}/{k.AlignC} bytes, " +
        (k.AlignBias == 0 ? "no bias" : $"bias aligned to {k.AlignBias} bytes");

    /// <summary>The largest power of two (≤ 256) dividing the address: what the heuristic may assume.</summary>
    private static uint Alignment(ulong p) => p == 0 ? 256u : (uint)Math.Min(256UL, p & (~p + 1));

    private Plan? MakePlan(PlanKey k)
    {
        var plan = new Plan();
        string what = Describe(k);
        nint preference = 0;
        try
        {
            Check(cublasLtMatmulDescCreate(out plan.Desc, ComputeType32F, DataTypeR32F), what);
            int opA = k.TransB ? OpT : OpN, opB = k.TransA ? OpT : OpN;   // swapped operands, see the class remarks
            Check(cublasLtMatmulDescSetAttribute(plan.Desc, DescTransA, &opA, sizeof(int)), what);
            Check(cublasLtMatmulDescSetAttribute(plan.Desc, DescTransB, &opB, sizeof(int)), what);
            uint epilogue = k.AlignBias != 0 ? EpilogueBias : EpilogueDefault;
            Check(cublasLtMatmulDescSetAttribute(plan.Desc, DescEpilogue, &epilogue, sizeof(uint)), what);
            if (k.AlignBias != 0)
            {
                ulong placeholder = k.AlignBias;   // the heuristic reads the bias alignment from it; the real pointer is set per call
                Check(cublasLtMatmulDescSetAttribute(plan.Desc, DescBiasPointer, &placeholder, sizeof(ulong)), what);
            }
            // Stored (column-major) shapes: cuBLASLt A = our B, n×k (or k×n when transposed); B = our A; C = n×m.
            Check(cublasLtMatrixLayoutCreate(out plan.LayoutA, k.InputType, (ulong)(k.TransB ? k.K : k.N), (ulong)(k.TransB ? k.N : k.K), k.Ldb), what);
            Check(cublasLtMatrixLayoutCreate(out plan.LayoutB, k.InputType, (ulong)(k.TransA ? k.M : k.K), (ulong)(k.TransA ? k.K : k.M), k.Lda), what);
            Check(cublasLtMatrixLayoutCreate(out plan.LayoutC, k.OutputType, (ulong)k.N, (ulong)k.M, k.Ldc), what);

            Check(cublasLtMatmulPreferenceCreate(out preference), what);
            ulong workspace = WorkspaceBytes;
            Check(cublasLtMatmulPreferenceSetAttribute(preference, PrefMaxWorkspaceBytes, &workspace, sizeof(ulong)), what);
            uint alignA = k.AlignB, alignB = k.AlignA, alignC = k.AlignC;
            Check(cublasLtMatmulPreferenceSetAttribute(preference, PrefMinAlignmentA, &alignA, sizeof(uint)), what);
            Check(cublasLtMatmulPreferenceSetAttribute(preference, PrefMinAlignmentB, &alignB, sizeof(uint)), what);
            Check(cublasLtMatmulPreferenceSetAttribute(preference, PrefMinAlignmentC, &alignC, sizeof(uint)), what);
            Check(cublasLtMatmulPreferenceSetAttribute(preference, PrefMinAlignmentD, &alignC, sizeof(uint)), what);

            HeuristicResult result;
            int status = cublasLtMatmulAlgoGetHeuristic(_handle, plan.Desc, plan.LayoutA, plan.LayoutB, plan.LayoutC, plan.LayoutC,
                preference, 1, &result, out int returned);
            if (status == StatusNotSupported || (status == StatusSuccess && returned == 0))
            {
                Destroy(plan);
                return null;
            }
            Check(status, what);
            plan.Algo = result.Algo;
            plan.Workspace = result.WorkspaceSize;
            return plan;
        }
        catch
        {
            Destroy(plan);
            throw;
        }
        finally
        {
            if (preference != 0) cublasLtMatmulPreferenceDestroy(preference);
        }
    }

    private static void Destroy(Plan p)
    {
        if (p.LayoutA != 0) cublasLtMatrixLayoutDestroy(p.LayoutA);
        if (p.LayoutB != 0) cublasLtMatrixLayoutDestroy(p.LayoutB);
        if (p.LayoutC != 0) cublasLtMatrixLayoutDestroy(p.LayoutC);
        if (p.Desc != 0) cublasLtMatmulDescDestroy(p.Desc);
        p.LayoutA = p.LayoutB = p.LayoutC = p.Desc = 0;
    }

    public void Dispose()
    {
        _device.MakeCurrent();
        foreach (var plan in _plans.Values)
            if (plan is not null) Destroy(plan);
        _plans.Clear();
        _pool.Return(_workspace);
        cublasLtDestroy(_handle);
    }
}
