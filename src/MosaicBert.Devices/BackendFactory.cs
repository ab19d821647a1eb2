using MosaicBert.Model;
using MosaicBert.Tensors;
using MosaicBert.Tensors.Cpu;
using MosaicBert.Tensors.Cuda;

namespace MosaicBert.Devices;

/// <summary>
/// How an entry point spells its device options, so that messages tell users exactly what to type:
/// <see cref="CommandLine"/> for <c>mosaicbert forward</c> and the examples, <see cref="PretrainingHost"/> for
/// <c>mosaicbert pretrain</c>, <see cref="Properties"/> for the ML.NET-style options.
/// </summary>
/// <param name="Device">The device option, e.g. "--device".</param>
/// <param name="UseCpu">How to ask for the CPU, e.g. "--device cpu".</param>
/// <param name="AllowFallback">How to allow the fallback, e.g. "add --allow-cpu-fallback".</param>
public sealed record DeviceOptionNames(string Device, string UseCpu, string AllowFallback)
{
    /// <summary>Command-line verbs and examples.</summary>
    public static readonly DeviceOptionNames CommandLine = new("--device", "--device cpu", "add --allow-cpu-fallback");
    /// <summary>The pretraining host (options bound from the command line, appsettings.json, the environment).</summary>
    public static readonly DeviceOptionNames PretrainingHost = new("Device", "--Device cpu", "set --AllowCpuFallback true");
    /// <summary>Option objects of the API.</summary>
    public static readonly DeviceOptionNames Properties = new("Device", "Device = \"cpu\"", "set AllowCpuFallback = true");
}

/// <summary>The device asked for cannot be used here; the message says why and how to run anyway.</summary>
public sealed class DeviceUnavailableException(DeviceSpec device, string reason, string message) : Exception(message)
{
    /// <summary>The device that was asked for.</summary>
    public DeviceSpec Device { get; } = device;
    /// <summary>Why it cannot be used (no driver, no device, no NVRTC, no cuBLASLt, ...).</summary>
    public string Reason { get; } = reason;
}

/// <summary>
/// Turns a device choice into a <see cref="Backend"/>: the one place that knows both backends, shared by the CLI, the
/// pretraining host and the ML.NET-style components (which is why it is a project of its own above
/// MosaicBert.Tensors.Cuda: the model never chooses a backend, and the CUDA backend's project stays the backend only).
/// </summary>
/// <remarks>
/// When CUDA is asked for but unusable, the result is a <see cref="DeviceUnavailableException"/> naming the reason
/// (no CUDA driver, no device or no such ordinal, no NVRTC, no cuBLASLt) and the two ways out; the CPU is used instead
/// only when the caller allows the fallback, and the fallback is reported through <c>onFallback</c> (the caller logs it).
/// The caller owns the backend: dispose it after the models and tensors on it.
/// </remarks>
public static class BackendFactory
{
    /// <summary>Creates the backend for <paramref name="device"/>.</summary>
    /// <param name="device">The device.</param>
    /// <param name="precision">Arithmetic; see <see cref="IsSupported"/>.</param>
    /// <param name="threads">CPU kernel threads (null: all cores); used by the CPU backend, and so by a fallback.</param>
    /// <param name="allowCpuFallback">Use the CPU when CUDA is asked for but unusable.</param>
    /// <param name="names">How the caller's options are spelled, for messages (default <see cref="DeviceOptionNames.Properties"/>).</param>
    /// <param name="onFallback">Receives the fallback message (the caller logs it as a warning).</param>
    /// <exception cref="DeviceUnavailableException">CUDA is unusable and the fallback is not allowed.</exception>
    /// <exception cref="NotSupportedException">The precision is not available (see <see cref="IsSupported"/>).</exception>
    public static Backend Create(DeviceSpec device, ComputePrecision precision = ComputePrecision.Float32, int? threads = null,
        bool allowCpuFallback = false, DeviceOptionNames? names = null, Action<string>? onFallback = null) =>
        Create(device, precision, threads, allowCpuFallback, names, onFallback, OpenCuda);

    /// <summary>As the public overload, with the CUDA opener replaceable (tests simulate an unusable GPU with it).</summary>
    internal static Backend Create(DeviceSpec device, ComputePrecision precision, int? threads, bool allowCpuFallback,
        DeviceOptionNames? names, Action<string>? onFallback, Func<int, ComputePrecision, Backend> openCuda)
    {
        names ??= DeviceOptionNames.Properties;
        if (threads is <= 0) throw new ArgumentOutOfRangeException(nameof(threads), threads, "Threads must be positive (or null for all cores).");
        if (!IsSupported(precision, device, out string unsupported)) throw new NotSupportedException(unsupported);
        if (device.Kind == DeviceKind.Cpu) return new CpuBackend(threads);
        try
        {
            return openCuda(device.Ordinal, precision);
        }
        catch (Exception e) when (e is CudaUnavailableException or CudaException)
        {
            string reason = Reason(e);
            if (!allowCpuFallback)
                throw new DeviceUnavailableException(device, reason,
                    $"{names.Device} {device} cannot be used: {reason}. Run on the CPU with {names.UseCpu}, or {names.AllowFallback} to fall back to the CPU when CUDA is unusable.");
            onFallback?.Invoke($"{names.Device} {device} cannot be used ({reason}); running on the CPU instead, as the CPU fallback is allowed.");
            return new CpuBackend(threads);
        }
    }

    /// <summary>
    /// Whether this build computes in <paramref name="precision"/> on <paramref name="device"/>; otherwise the reason.
    /// This is the one place where bf16 is switched on (together with <see cref="OpenCuda"/>).
    /// </summary>
    public static bool IsSupported(ComputePrecision precision, DeviceSpec device, out string reason)
    {
        reason = "";
        if (precision == ComputePrecision.Float32 || device.Kind == DeviceKind.Cuda) return true;
        reason = "Precision bf16 needs a CUDA device: the CPU backend computes in fp32; use fp32.";
        return false;
    }

    /// <summary>
    /// The precision a model on <paramref name="backend"/> computes in: the requested one, except fp32 on the CPU
    /// backend (which a CUDA request with bf16 may have fallen back to; the fallback message says so).
    /// </summary>
    public static ComputePrecision PrecisionFor(Backend backend, ComputePrecision requested) =>
        backend is CpuBackend ? ComputePrecision.Float32 : requested;

    /// <summary>One line for logs: "cpu (16 threads)" or "cuda:0 (NVIDIA H100 80GB HBM3, sm_90, 132 SMs)".</summary>
    public static string Describe(Backend backend) => backend switch
    {
        CpuBackend cpu => $"cpu ({cpu.Threads} thread{(cpu.Threads == 1 ? "" : "s")})",
        CudaBackend gpu => gpu.Device.ToString(),
        _ => backend.Name,
    };

    private static Backend OpenCuda(int ordinal, ComputePrecision precision)
    {
        if (!CudaBackend.IsAvailable(out string reason)) throw new CudaUnavailableException(reason);
        _ = precision; // one backend serves both: the model chooses bf16 or fp32 tensors
        return new CudaBackend(ordinal);
    }

    // The backend's reasons end with advice for its own option name ("; use Device cpu"); the factory's message gives
    // the caller's own spelling instead.
    private static string Reason(Exception e)
    {
        string message = e.Message;
        int advice = message.IndexOf("; use Device cpu", StringComparison.Ordinal);
        return (advice >= 0 ? message[..advice] : message).TrimEnd('.', ' ');
    }
}
