using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MosaicBert.Distributed.Interop;

/// <summary>NCCL's 128-byte communicator id (ncclUniqueId), passed by value to ncclCommInitRank.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct NcclUniqueId
{
    /// <summary>Size in bytes (NCCL_UNIQUE_ID_BYTES).</summary>
    public const int Size = 128;

    /// <summary>The opaque bytes.</summary>
    public fixed byte Bytes[Size];

    /// <summary>A copy of the bytes (what the rendezvous sends to the other ranks).</summary>
    public readonly byte[] ToArray()
    {
        var copy = new byte[Size];
        fixed (byte* p = Bytes) new ReadOnlySpan<byte>(p, Size).CopyTo(copy);
        return copy;
    }

    /// <summary>The id from <see cref="Size"/> received bytes.</summary>
    public static NcclUniqueId FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Size) throw new ArgumentException($"An NCCL unique id has {Size} bytes, not {bytes.Length}.", nameof(bytes));
        var id = new NcclUniqueId();
        bytes.CopyTo(new Span<byte>(id.Bytes, Size));
        return id;
    }
}

/// <summary>ncclDataType_t (nccl.h).</summary>
public enum NcclDataType
{
    /// <summary>ncclInt32.</summary>
    Int32 = 2,
    /// <summary>ncclInt64.</summary>
    Int64 = 4,
    /// <summary>ncclFloat16.</summary>
    Float16 = 6,
    /// <summary>ncclFloat32.</summary>
    Float32 = 7,
    /// <summary>ncclFloat64.</summary>
    Float64 = 8,
    /// <summary>ncclBfloat16.</summary>
    BFloat16 = 9,
}

/// <summary>ncclRedOp_t (nccl.h); Avg is Sum divided by the number of ranks (NCCL ≥ 2.10).</summary>
public enum NcclReduceOp
{
    /// <summary>ncclSum.</summary>
    Sum = 0,
    /// <summary>ncclProd.</summary>
    Product = 1,
    /// <summary>ncclMax.</summary>
    Max = 2,
    /// <summary>ncclMin.</summary>
    Min = 3,
    /// <summary>ncclAvg.</summary>
    Average = 4,
}

/// <summary>
/// NCCL (libnccl.so.2), only what data-parallel training uses. ncclResult_t is int, ncclComm_t and cudaStream_t are
/// handles (nint; a CUstream is a cudaStream_t), size_t is nuint, buffers are device addresses (ulong).
/// </summary>
internal static unsafe partial class Nccl
{
    static Nccl() => NcclLibrary.Register();
    private const string Lib = NcclLibrary.Name;

    public const int Success = 0;
    public const int InProgress = 7;

    [LibraryImport(Lib)] public static partial int ncclGetVersion(out int version);
    [LibraryImport(Lib)] public static partial int ncclGetUniqueId(out NcclUniqueId uniqueId);
    [LibraryImport(Lib)] public static partial int ncclCommInitRank(out nint comm, int nranks, NcclUniqueId commId, int rank);
    [LibraryImport(Lib)] public static partial int ncclCommDestroy(nint comm);
    [LibraryImport(Lib)] public static partial int ncclCommAbort(nint comm);
    [LibraryImport(Lib)] public static partial int ncclCommGetAsyncError(nint comm, out int asyncError);
    [LibraryImport(Lib)] public static partial int ncclCommCount(nint comm, out int count);
    [LibraryImport(Lib)] public static partial int ncclCommUserRank(nint comm, out int rank);
    [LibraryImport(Lib)] public static partial nint ncclGetErrorString(int result);
    [LibraryImport(Lib)] public static partial nint ncclGetLastError(nint comm);
    [LibraryImport(Lib)]
    public static partial int ncclAllReduce(ulong sendbuff, ulong recvbuff, nuint count, NcclDataType datatype, NcclReduceOp op, nint comm, nint stream);
    [LibraryImport(Lib)]
    public static partial int ncclBroadcast(ulong sendbuff, ulong recvbuff, nuint count, NcclDataType datatype, int root, nint comm, nint stream);
    [LibraryImport(Lib)] public static partial int ncclGroupStart();
    [LibraryImport(Lib)] public static partial int ncclGroupEnd();

    /// <summary>"unhandled cuda error (run with NCCL_DEBUG=INFO for details)" for a result code.</summary>
    public static string ErrorString(int result)
    {
        nint p = ncclGetErrorString(result);
        return p == 0 ? $"ncclResult_t {result}" : Marshal.PtrToStringUTF8(p)!;
    }

    /// <summary>
    /// Throws <see cref="NcclException"/> unless <paramref name="result"/> is ncclSuccess; the call's name comes from the
    /// call-site expression, and NCCL's last error message for the communicator is added when there is one.
    /// </summary>
    public static void Check(int result, nint comm = 0, string? detail = null, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result == Success) return;
        string? last = null;
        try
        {
            nint p = ncclGetLastError(comm);
            if (p != 0) last = Marshal.PtrToStringUTF8(p);
        }
        catch (EntryPointNotFoundException)
        {
            // ncclGetLastError exists from NCCL 2.13.
        }
        throw new NcclException(NcclException.CallName(call), result, ErrorString(result), string.IsNullOrWhiteSpace(last) ? detail
            : detail is null ? last.Trim() : $"{detail}; {last.Trim()}");
    }
}

/// <summary>
/// Finds libnccl.so.2 at run time, like the CUDA backend's libraries: MOSAICBERT_LIBNCCL when set, then the soname
/// through the loader's search path (LD_LIBRARY_PATH, ldconfig), then the usual install folders. Nothing NCCL is
/// needed to build; a machine without it gets a one-line reason instead of a DllNotFoundException.
/// </summary>
internal static class NcclLibrary
{
    public const string Name = "nccl";
    public const string Soname = "libnccl.so.2";

    private static readonly Lazy<(nint Handle, string Error)> s_library = new(Load);

    static NcclLibrary() => NativeLibrary.SetDllImportResolver(typeof(NcclLibrary).Assembly, Resolve);

    /// <summary>Touching this class installs the resolver (the static constructor runs once).</summary>
    public static void Register() { }

    /// <summary>Loads NCCL; false with a one-line reason when no candidate loads.</summary>
    public static bool TryLoad(out string error)
    {
        var (handle, e) = s_library.Value;
        error = e;
        return handle != 0;
    }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path) =>
        name == Name ? s_library.Value.Handle : CudaDriver.Resolve(name, assembly, path);

    private static (nint, string) Load()
    {
        var candidates = new List<string>();
        if (Environment.GetEnvironmentVariable("MOSAICBERT_LIBNCCL") is { Length: > 0 } explicitPath) candidates.Add(explicitPath);
        candidates.Add(Soname);
        foreach (var variable in new[] { "NCCL_HOME", "CUDA_HOME", "CUDA_PATH" })
            if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } root) candidates.Add(Path.Combine(root, "lib64", Soname));
        candidates.AddRange(["/lib/x86_64-linux-gnu/" + Soname, "/usr/lib/x86_64-linux-gnu/" + Soname, "/usr/local/cuda/lib64/" + Soname,
            "/usr/local/nccl/lib/" + Soname, "/usr/lib64/" + Soname]);
        foreach (var candidate in candidates)
            if (NativeLibrary.TryLoad(candidate, out nint handle)) return (handle, "");
        return (0, $"no NCCL library: {Soname} not found (tried {string.Join(", ", candidates.Distinct())}); set MOSAICBERT_LIBNCCL to its path");
    }
}
