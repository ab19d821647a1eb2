using System.Diagnostics.CodeAnalysis;

namespace MosaicBert.Checkpoints;

/// <summary>Element type of a stored tensor. All multi-byte types are stored little-endian.</summary>
public enum TensorDType
{
    /// <summary>Boolean, one byte per element (0 or 1). Safetensors <c>BOOL</c>, torch <c>BoolStorage</c>.</summary>
    Bool,
    /// <summary>Unsigned 8-bit integer. Safetensors <c>U8</c>, torch <c>ByteStorage</c>.</summary>
    UInt8,
    /// <summary>Signed 8-bit integer. Safetensors <c>I8</c>, torch <c>CharStorage</c>.</summary>
    Int8,
    /// <summary>Signed 16-bit integer. Safetensors <c>I16</c>, torch <c>ShortStorage</c>.</summary>
    Int16,
    /// <summary>Unsigned 16-bit integer. Safetensors <c>U16</c>, torch <c>uint16</c>.</summary>
    UInt16,
    /// <summary>Signed 32-bit integer. Safetensors <c>I32</c>, torch <c>IntStorage</c>.</summary>
    Int32,
    /// <summary>Unsigned 32-bit integer. Safetensors <c>U32</c>, torch <c>uint32</c>.</summary>
    UInt32,
    /// <summary>Signed 64-bit integer. Safetensors <c>I64</c>, torch <c>LongStorage</c>.</summary>
    Int64,
    /// <summary>Unsigned 64-bit integer. Safetensors <c>U64</c>, torch <c>uint64</c>.</summary>
    UInt64,
    /// <summary>IEEE 754 binary16. Safetensors <c>F16</c>, torch <c>HalfStorage</c>.</summary>
    Float16,
    /// <summary>bfloat16 (upper half of a binary32). Safetensors <c>BF16</c>, torch <c>BFloat16Storage</c>.</summary>
    BFloat16,
    /// <summary>IEEE 754 binary32. Safetensors <c>F32</c>, torch <c>FloatStorage</c>.</summary>
    Float32,
    /// <summary>IEEE 754 binary64. Safetensors <c>F64</c>, torch <c>DoubleStorage</c>.</summary>
    Float64,
    /// <summary>8-bit float, 4 exponent / 3 mantissa bits, no infinities (torch <c>float8_e4m3fn</c>). Safetensors <c>F8_E4M3</c>.</summary>
    Float8E4M3,
    /// <summary>8-bit float, 5 exponent / 2 mantissa bits (torch <c>float8_e5m2</c>). Safetensors <c>F8_E5M2</c>.</summary>
    Float8E5M2,
}

/// <summary>Sizes and names of <see cref="TensorDType"/> values.</summary>
public static class TensorDTypeExtensions
{
    /// <summary>Bytes per element.</summary>
    public static int ElementSize(this TensorDType dtype) => dtype switch
    {
        TensorDType.Bool or TensorDType.UInt8 or TensorDType.Int8 or TensorDType.Float8E4M3 or TensorDType.Float8E5M2 => 1,
        TensorDType.Int16 or TensorDType.UInt16 or TensorDType.Float16 or TensorDType.BFloat16 => 2,
        TensorDType.Int32 or TensorDType.UInt32 or TensorDType.Float32 => 4,
        TensorDType.Int64 or TensorDType.UInt64 or TensorDType.Float64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    /// <summary>True for the floating-point types (readable with <see cref="ICheckpointTensors.ReadFloat32(string)"/>).</summary>
    public static bool IsFloatingPoint(this TensorDType dtype) => dtype is TensorDType.Float16 or TensorDType.BFloat16
        or TensorDType.Float32 or TensorDType.Float64 or TensorDType.Float8E4M3 or TensorDType.Float8E5M2;

    /// <summary>True for the integer types and <see cref="TensorDType.Bool"/> (readable with <see cref="ICheckpointTensors.ReadInt64(string)"/>).</summary>
    public static bool IsIntegerOrBool(this TensorDType dtype) => !dtype.IsFloatingPoint();

    /// <summary>The safetensors header name (<c>F32</c>, <c>BF16</c>, <c>I64</c>, ...).</summary>
    public static string ToSafeTensorsName(this TensorDType dtype) => dtype switch
    {
        TensorDType.Bool => "BOOL",
        TensorDType.UInt8 => "U8",
        TensorDType.Int8 => "I8",
        TensorDType.Int16 => "I16",
        TensorDType.UInt16 => "U16",
        TensorDType.Int32 => "I32",
        TensorDType.UInt32 => "U32",
        TensorDType.Int64 => "I64",
        TensorDType.UInt64 => "U64",
        TensorDType.Float16 => "F16",
        TensorDType.BFloat16 => "BF16",
        TensorDType.Float32 => "F32",
        TensorDType.Float64 => "F64",
        TensorDType.Float8E4M3 => "F8_E4M3",
        TensorDType.Float8E5M2 => "F8_E5M2",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    /// <summary>Parses a safetensors dtype name (case-sensitive, as the format requires).</summary>
    public static bool TryParseSafeTensorsName(string name, [NotNullWhen(true)] out TensorDType? dtype)
    {
        dtype = name switch
        {
            "BOOL" => TensorDType.Bool,
            "U8" => TensorDType.UInt8,
            "I8" => TensorDType.Int8,
            "I16" => TensorDType.Int16,
            "U16" => TensorDType.UInt16,
            "I32" => TensorDType.Int32,
            "U32" => TensorDType.UInt32,
            "I64" => TensorDType.Int64,
            "U64" => TensorDType.UInt64,
            "F16" => TensorDType.Float16,
            "BF16" => TensorDType.BFloat16,
            "F32" => TensorDType.Float32,
            "F64" => TensorDType.Float64,
            "F8_E4M3" => TensorDType.Float8E4M3,
            "F8_E5M2" => TensorDType.Float8E5M2,
            _ => null,
        };
        return dtype is not null;
    }

    /// <summary>The .NET element type that holds one element exactly, or null (bfloat16, float8).</summary>
    internal static Type? ClrType(this TensorDType dtype) => dtype switch
    {
        TensorDType.Bool => typeof(bool),
        TensorDType.UInt8 => typeof(byte),
        TensorDType.Int8 => typeof(sbyte),
        TensorDType.Int16 => typeof(short),
        TensorDType.UInt16 => typeof(ushort),
        TensorDType.Int32 => typeof(int),
        TensorDType.UInt32 => typeof(uint),
        TensorDType.Int64 => typeof(long),
        TensorDType.UInt64 => typeof(ulong),
        TensorDType.Float16 => typeof(Half),
        TensorDType.Float32 => typeof(float),
        TensorDType.Float64 => typeof(double),
        _ => null,
    };

    /// <summary>The dtype whose elements are exactly <typeparamref name="T"/>.</summary>
    internal static TensorDType FromClrType<T>() where T : unmanaged
    {
        var t = typeof(T);
        if (t == typeof(float)) return TensorDType.Float32;
        if (t == typeof(double)) return TensorDType.Float64;
        if (t == typeof(long)) return TensorDType.Int64;
        if (t == typeof(int)) return TensorDType.Int32;
        if (t == typeof(short)) return TensorDType.Int16;
        if (t == typeof(sbyte)) return TensorDType.Int8;
        if (t == typeof(byte)) return TensorDType.UInt8;
        if (t == typeof(bool)) return TensorDType.Bool;
        if (t == typeof(Half)) return TensorDType.Float16;
        if (t == typeof(ushort)) return TensorDType.UInt16;
        if (t == typeof(uint)) return TensorDType.UInt32;
        if (t == typeof(ulong)) return TensorDType.UInt64;
        throw new NotSupportedException($"{t} has no tensor dtype; use SafeTensorsWriter.AddRaw with an explicit dtype");
    }
}
