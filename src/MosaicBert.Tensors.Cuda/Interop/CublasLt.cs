using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MosaicBert.Tensors.Cuda.Interop;

/// <summary>
/// cuBLASLt (libcublasLt.so.13), only what an fp32 GEMM with an optional bias epilogue needs. Enum values are those of
/// cublasLt.h / library_types.h (CUDA 12 and 13 agree on all of them).
/// </summary>
internal static unsafe partial class CublasLt
{
    static CublasLt() => NativeLibraries.Register();
    private const string Lib = NativeLibraries.CublasLt;

    public const int StatusSuccess = 0;
    public const int StatusNotSupported = 15;
    public const int ComputeType32F = 68;            // CUBLAS_COMPUTE_32F: true fp32 (TF32 would be 77, ..._FAST_TF32)
    public const int DataTypeR32F = 0;               // CUDA_R_32F
    public const int DataTypeR16BF = 14;             // CUDA_R_16BF
    public const int OpN = 0, OpT = 1;               // cublasOperation_t
    public const int DescTransA = 3, DescTransB = 4, DescEpilogue = 7, DescBiasPointer = 8;
    public const uint EpilogueDefault = 1, EpilogueBias = 4;
    public const int PrefMaxWorkspaceBytes = 1;
    public const int PrefMinAlignmentA = 5, PrefMinAlignmentB = 6, PrefMinAlignmentC = 7, PrefMinAlignmentD = 8;

    /// <summary>cublasLtMatmulHeuristicResult_t: a 64-byte algorithm, its workspace size, a status, a wave count.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct HeuristicResult
    {
        public AlgoData Algo;
        public nuint WorkspaceSize;
        public int State;
        public float WavesCount;
        public fixed int Reserved[4];
    }

    /// <summary>cublasLtMatmulAlgo_t: uint64_t data[8].</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct AlgoData
    {
        public fixed ulong Data[8];
    }

    [LibraryImport(Lib)] public static partial int cublasLtCreate(out nint handle);
    [LibraryImport(Lib)] public static partial int cublasLtDestroy(nint handle);
    [LibraryImport(Lib)] public static partial nuint cublasLtGetVersion();
    [LibraryImport(Lib)] public static partial int cublasLtMatmulDescCreate(out nint desc, int computeType, int scaleType);
    [LibraryImport(Lib)] public static partial int cublasLtMatmulDescDestroy(nint desc);
    [LibraryImport(Lib)] public static partial int cublasLtMatmulDescSetAttribute(nint desc, int attribute, void* value, nuint size);
    [LibraryImport(Lib)] public static partial int cublasLtMatrixLayoutCreate(out nint layout, int type, ulong rows, ulong cols, long ld);
    [LibraryImport(Lib)] public static partial int cublasLtMatrixLayoutDestroy(nint layout);
    [LibraryImport(Lib)] public static partial int cublasLtMatmulPreferenceCreate(out nint preference);
    [LibraryImport(Lib)] public static partial int cublasLtMatmulPreferenceDestroy(nint preference);
    [LibraryImport(Lib)] public static partial int cublasLtMatmulPreferenceSetAttribute(nint preference, int attribute, void* value, nuint size);
    [LibraryImport(Lib)]
    public static partial int cublasLtMatmulAlgoGetHeuristic(nint handle, nint desc, nint aDesc, nint bDesc, nint cDesc, nint dDesc,
        nint preference, int requested, HeuristicResult* results, out int returned);
    [LibraryImport(Lib)]
    public static partial int cublasLtMatmul(nint handle, nint desc, void* alpha, ulong a, nint aDesc, ulong b, nint bDesc, void* beta,
        ulong c, nint cDesc, ulong d, nint dDesc, AlgoData* algo, ulong workspace, nuint workspaceSize, nint stream);
    [LibraryImport(Lib)] public static partial nint cublasLtGetStatusName(int status);
    [LibraryImport(Lib)] public static partial nint cublasLtGetStatusString(int status);

    /// <summary>Throws <see cref="CudaException"/> naming the call unless <paramref name="status"/> is CUBLAS_STATUS_SUCCESS.</summary>
    public static void Check(int status, string? detail = null, [CallerArgumentExpression(nameof(status))] string call = "")
    {
        if (status != StatusSuccess)
            throw new CudaException(CudaException.CallName(call), status, Marshal.PtrToStringUTF8(cublasLtGetStatusName(status)) ?? $"cublasStatus {status}",
                Marshal.PtrToStringUTF8(cublasLtGetStatusString(status)) ?? "", detail: detail);
    }
}
