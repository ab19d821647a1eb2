using MosaicBert.Model;
using System.Globalization;

namespace MosaicBert.Devices;

/// <summary>The kind of device a model runs on.</summary>
public enum DeviceKind
{
    /// <summary>The CPU backend (all cores, or a given number of threads).</summary>
    Cpu,
    /// <summary>One NVIDIA GPU through the CUDA backend.</summary>
    Cuda,
}

/// <summary>
/// A device as users write it: <c>cpu</c>, <c>cuda</c> (GPU 0) or <c>cuda:N</c> (GPU N), case-insensitive. Every entry
/// point (the CLI's <c>--device</c>, the pretraining host's and the ML.NET-style options' <c>Device</c>) parses it here, so
/// they accept and reject the same strings with the same messages.
/// </summary>
/// <param name="Kind">CPU or CUDA.</param>
/// <param name="Ordinal">The GPU ordinal (0 for the CPU).</param>
public readonly record struct DeviceSpec(DeviceKind Kind, int Ordinal = 0)
{
    /// <summary>The CPU.</summary>
    public static DeviceSpec Cpu => new(DeviceKind.Cpu);

    /// <summary>GPU <paramref name="ordinal"/>.</summary>
    public static DeviceSpec Cuda(int ordinal = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(ordinal);
        return new(DeviceKind.Cuda, ordinal);
    }

    /// <summary>Parses <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>; false with a message naming <paramref name="option"/> otherwise.</summary>
    public static bool TryParse(string? text, out DeviceSpec device, out string error, string option = "Device")
    {
        device = Cpu;
        error = "";
        var t = text?.Trim().ToLowerInvariant();
        if (t == "cpu") return true;
        if (t == "cuda")
        {
            device = Cuda(0);
            return true;
        }
        if (t is not null && t.StartsWith("cuda:", StringComparison.Ordinal) && t.Length > 5 && t[5..].All(char.IsAsciiDigit)
            && int.TryParse(t[5..], NumberStyles.None, CultureInfo.InvariantCulture, out int ordinal))
        {
            device = Cuda(ordinal);
            return true;
        }
        error = $"{option} must be cpu, cuda or cuda:N (N = the GPU's ordinal, from 0), not '{text}'.";
        return false;
    }

    /// <summary>Parses a device string.</summary>
    /// <exception cref="ArgumentException">Not cpu, cuda or cuda:N; the message names <paramref name="option"/>.</exception>
    public static DeviceSpec Parse(string? text, string option = "Device") =>
        TryParse(text, out var device, out string error, option) ? device : throw new ArgumentException(error);

    /// <summary>"cpu" or "cuda:N".</summary>
    public override string ToString() => Kind == DeviceKind.Cpu ? "cpu" : $"cuda:{Ordinal}";
}

/// <summary>Parsing of <see cref="ComputePrecision"/> as users write it (<c>fp32</c>, <c>bf16</c>).</summary>
public static class ComputePrecisions
{
    /// <summary>Parses <c>fp32</c> or <c>bf16</c> (case-insensitive); false with a message naming <paramref name="option"/>.</summary>
    public static bool TryParse(string? text, out ComputePrecision precision, out string error, string option = "Precision")
    {
        error = "";
        switch (text?.Trim().ToLowerInvariant())
        {
            case "fp32":
                precision = ComputePrecision.Float32;
                return true;
            case "bf16":
                precision = ComputePrecision.BFloat16;
                return true;
            default:
                precision = ComputePrecision.Float32;
                error = $"{option} must be fp32 or bf16, not '{text}'.";
                return false;
        }
    }

    /// <summary>Parses a precision string.</summary>
    /// <exception cref="ArgumentException">Not fp32 or bf16; the message names <paramref name="option"/>.</exception>
    public static ComputePrecision Parse(string? text, string option = "Precision") =>
        TryParse(text, out var precision, out string error, option) ? precision : throw new ArgumentException(error);

    /// <summary>"fp32" or "bf16".</summary>
    public static string Name(this ComputePrecision precision) => precision == ComputePrecision.BFloat16 ? "bf16" : "fp32";
}
