namespace MosaicBert.Tensors.Cuda;

/// <summary>
/// A CUDA driver, NVRTC or cuBLASLt call failed. The message names the call, the library's error name and description,
/// and for kernel launches (and errors surfacing at the next synchronisation) the kernel.
/// </summary>
public class CudaException : Exception
{
    /// <summary>Creates the exception for a failed call.</summary>
    public CudaException(string call, int code, string errorName, string errorString, string? kernel = null, string? detail = null)
        : base(Format(call, code, errorName, errorString, kernel, detail))
    {
        Call = call;
        Code = code;
        ErrorName = errorName;
        Kernel = kernel;
    }

    /// <summary>Creates an exception with a message of its own (subclasses).</summary>
    protected CudaException(string call, string message) : base(message)
    {
        Call = call;
        ErrorName = "";
    }

    /// <summary>The API function that failed, e.g. "cuLaunchKernel".</summary>
    public string Call { get; }
    /// <summary>The library's status code (CUresult, nvrtcResult or cublasStatus_t).</summary>
    public int Code { get; }
    /// <summary>The status as the library names it, e.g. "CUDA_ERROR_INVALID_VALUE".</summary>
    public string ErrorName { get; }
    /// <summary>The kernel being launched (or the last one launched before an asynchronous error), when there is one.</summary>
    public string? Kernel { get; }

    private static string Format(string call, int code, string name, string text, string? kernel, string? detail) =>
        $"{call} failed: {name} ({code}): {text}" + (kernel is null ? "" : $" [kernel {kernel}]") + (detail is null ? "" : $" [{detail}]");

    /// <summary>"cuMemAlloc_v2(out p, n)" → "cuMemAlloc_v2": the function name of a call-site expression.</summary>
    internal static string CallName(string expression)
    {
        int paren = expression.IndexOf('(');
        string name = paren > 0 ? expression[..paren] : expression;
        int dot = name.LastIndexOf('.');
        return (dot >= 0 ? name[(dot + 1)..] : name).Trim();
    }
}

/// <summary>A kernel source did not compile; the message holds the file name, the options and NVRTC's full log.</summary>
public sealed class CudaCompileException : CudaException
{
    /// <summary>Creates the exception from NVRTC's log.</summary>
    public CudaCompileException(string fileName, string log, IEnumerable<string> options)
        : base("nvrtcCompileProgram", $"nvrtcCompileProgram failed for kernel file {fileName} (options: {string.Join(' ', options)}):\n{log}")
    {
        FileName = fileName;
        Log = log;
    }

    /// <summary>The kernel file that failed, e.g. "layernorm.cu".</summary>
    public string FileName { get; }
    /// <summary>NVRTC's compilation log.</summary>
    public string Log { get; }
}

/// <summary>No CUDA driver or no CUDA device: the CUDA backend cannot start here.</summary>
public sealed class CudaUnavailableException(string message) : Exception(message);
