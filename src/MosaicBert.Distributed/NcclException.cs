namespace MosaicBert.Distributed;

/// <summary>An NCCL call failed. The message names the call, the result code with ncclGetErrorString's text, and
/// NCCL's last error message (ncclGetLastError) or the operation when known.</summary>
public sealed class NcclException : Exception
{
    /// <summary>Creates the exception for a failed call.</summary>
    public NcclException(string call, int code, string errorString, string? detail = null)
        : base($"{call} failed: ncclResult_t {code}: {errorString}" + (detail is null ? "" : $" [{detail}]"))
    {
        Call = call;
        Code = code;
    }

    /// <summary>The NCCL function that failed, e.g. "ncclAllReduce".</summary>
    public string Call { get; }
    /// <summary>The ncclResult_t.</summary>
    public int Code { get; }

    /// <summary>"ncclAllReduce(a, b, …)" → "ncclAllReduce": the function name of a call-site expression.</summary>
    internal static string CallName(string expression)
    {
        int paren = expression.IndexOf('(');
        string name = paren > 0 ? expression[..paren] : expression;
        int dot = name.LastIndexOf('.');
        return (dot >= 0 ? name[(dot + 1)..] : name).Trim();
    }
}

/// <summary>
/// Another rank failed (its process died, its connection broke, it stopped answering heartbeats, or NCCL reported an
/// asynchronous error), so this rank cannot go on: the collective it was in, or its next one, throws this.
/// </summary>
public sealed class DistributedFailureException(string message, int? failedRank) : Exception(message)
{
    /// <summary>The rank that failed, when known.</summary>
    public int? FailedRank { get; } = failedRank;
}
