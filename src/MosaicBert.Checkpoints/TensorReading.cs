using System.Buffers;
using System.Runtime.InteropServices;

namespace MosaicBert.Checkpoints;

/// <summary>Conversions from a tensor's raw little-endian bytes (read from a stream) to .NET arrays.</summary>
internal static class TensorReading
{
    private const int ChunkBytes = 1 << 20;

    private static readonly float[] s_float8E4M3 = BuildFloat8E4M3Table();

    public static void EnsureLittleEndianHost()
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("checkpoint files are little-endian; big-endian hosts are not supported");
    }

    public static int CheckedArrayLength(TensorInfo info, long count, string what)
    {
        if (count > Array.MaxLength)
            throw new NotSupportedException($"tensor '{info.Name}' {info.ShapeText} has {count} {what}, more than a .NET array can hold; read it with OpenRead in chunks");
        return (int)count;
    }

    public static byte[] ReadBytes(TensorInfo info, Stream raw)
    {
        var result = new byte[CheckedArrayLength(info, info.ByteLength, "bytes")];
        raw.ReadExactly(result);
        return result;
    }

    public static float[] ReadFloat32(TensorInfo info, Stream raw, string source)
    {
        RequireFloat(info, source, "ReadFloat32");
        var result = new float[CheckedArrayLength(info, info.ElementCount, "elements")];
        ReadFloat32(info, raw, result, source);
        return result;
    }

    public static void ReadFloat32(TensorInfo info, Stream raw, Span<float> destination, string source)
    {
        RequireFloat(info, source, "ReadFloat32");
        RequireLength(info, destination.Length);
        if (info.DType == TensorDType.Float32)
        {
            raw.ReadExactly(MemoryMarshal.AsBytes(destination));
            return;
        }
        var elementSize = info.DType.ElementSize();
        var buffer = ArrayPool<byte>.Shared.Rent(ChunkBytes);
        try
        {
            var perChunk = ChunkBytes / elementSize;
            for (var done = 0; done < destination.Length;)
            {
                var n = Math.Min(perChunk, destination.Length - done);
                var bytes = buffer.AsSpan(0, n * elementSize);
                raw.ReadExactly(bytes);
                ToFloat32(info.DType, bytes, destination.Slice(done, n));
                done += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    public static double[] ReadFloat64(TensorInfo info, Stream raw, string source)
    {
        RequireFloat(info, source, "ReadFloat64");
        var result = new double[CheckedArrayLength(info, info.ElementCount, "elements")];
        if (info.DType == TensorDType.Float64)
        {
            raw.ReadExactly(MemoryMarshal.AsBytes(result.AsSpan()));
            return result;
        }
        var elementSize = info.DType.ElementSize();
        var buffer = ArrayPool<byte>.Shared.Rent(ChunkBytes);
        var floats = ArrayPool<float>.Shared.Rent(ChunkBytes / elementSize);
        try
        {
            var perChunk = ChunkBytes / elementSize;
            for (var done = 0; done < result.Length;)
            {
                var n = Math.Min(perChunk, result.Length - done);
                var bytes = buffer.AsSpan(0, n * elementSize);
                raw.ReadExactly(bytes);
                var f = floats.AsSpan(0, n);
                ToFloat32(info.DType, bytes, f);
                var dst = result.AsSpan(done, n);
                for (var i = 0; i < n; i++) dst[i] = f[i];
                done += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            ArrayPool<float>.Shared.Return(floats);
        }
        return result;
    }

    public static long[] ReadInt64(TensorInfo info, Stream raw, string source)
    {
        if (!info.DType.IsIntegerOrBool())
            throw new InvalidOperationException($"'{source}', tensor '{info.Name}' has dtype {info.DType.ToSafeTensorsName()}; ReadInt64 needs an integer or bool dtype");
        var result = new long[CheckedArrayLength(info, info.ElementCount, "elements")];
        if (info.DType == TensorDType.Int64)
        {
            raw.ReadExactly(MemoryMarshal.AsBytes(result.AsSpan()));
            return result;
        }
        var elementSize = info.DType.ElementSize();
        var buffer = ArrayPool<byte>.Shared.Rent(ChunkBytes);
        try
        {
            var perChunk = ChunkBytes / elementSize;
            for (var done = 0; done < result.Length;)
            {
                var n = Math.Min(perChunk, result.Length - done);
                var bytes = buffer.AsSpan(0, n * elementSize);
                raw.ReadExactly(bytes);
                ToInt64(info.DType, bytes, result.AsSpan(done, n), info.Name);
                done += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        return result;
    }

    /// <summary>Converts raw little-endian elements of a floating-point dtype to float32.</summary>
    public static void ToFloat32(TensorDType dtype, ReadOnlySpan<byte> src, Span<float> dst)
    {
        switch (dtype)
        {
            case TensorDType.Float32:
                MemoryMarshal.Cast<byte, float>(src).CopyTo(dst);
                break;
            case TensorDType.Float64:
            {
                var s = MemoryMarshal.Cast<byte, double>(src);
                for (var i = 0; i < dst.Length; i++) dst[i] = (float)s[i];
                break;
            }
            case TensorDType.Float16:
            {
                var s = MemoryMarshal.Cast<byte, Half>(src);
                for (var i = 0; i < dst.Length; i++) dst[i] = (float)s[i];
                break;
            }
            case TensorDType.BFloat16:
            {
                var s = MemoryMarshal.Cast<byte, ushort>(src);
                for (var i = 0; i < dst.Length; i++) dst[i] = BitConverter.Int32BitsToSingle(s[i] << 16);
                break;
            }
            case TensorDType.Float8E4M3:
                for (var i = 0; i < dst.Length; i++) dst[i] = s_float8E4M3[src[i]];
                break;
            case TensorDType.Float8E5M2:
                for (var i = 0; i < dst.Length; i++) dst[i] = (float)BitConverter.UInt16BitsToHalf((ushort)(src[i] << 8));
                break;
            default:
                throw new InvalidOperationException($"dtype {dtype.ToSafeTensorsName()} is not floating-point");
        }
    }

    private static void ToInt64(TensorDType dtype, ReadOnlySpan<byte> src, Span<long> dst, string name)
    {
        switch (dtype)
        {
            case TensorDType.Bool:
                for (var i = 0; i < dst.Length; i++) dst[i] = src[i] != 0 ? 1 : 0;
                break;
            case TensorDType.UInt8:
                for (var i = 0; i < dst.Length; i++) dst[i] = src[i];
                break;
            case TensorDType.Int8:
                for (var i = 0; i < dst.Length; i++) dst[i] = (sbyte)src[i];
                break;
            case TensorDType.Int16:
            {
                var s = MemoryMarshal.Cast<byte, short>(src);
                for (var i = 0; i < dst.Length; i++) dst[i] = s[i];
                break;
            }
            case TensorDType.UInt16:
            {
                var s = MemoryMarshal.Cast<byte, ushort>(src);
                for (var i = 0; i < dst.Length; i++) dst[i] = s[i];
                break;
            }
            case TensorDType.Int32:
            {
                var s = MemoryMarshal.Cast<byte, int>(src);
                for (var i = 0; i < dst.Length; i++) dst[i] = s[i];
                break;
            }
            case TensorDType.UInt32:
            {
                var s = MemoryMarshal.Cast<byte, uint>(src);
                for (var i = 0; i < dst.Length; i++) dst[i] = s[i];
                break;
            }
            case TensorDType.Int64:
                MemoryMarshal.Cast<byte, long>(src).CopyTo(dst);
                break;
            case TensorDType.UInt64:
            {
                var s = MemoryMarshal.Cast<byte, ulong>(src);
                for (var i = 0; i < dst.Length; i++)
                {
                    if (s[i] > long.MaxValue)
                        throw new OverflowException($"tensor '{name}': U64 value {s[i]} does not fit in a long");
                    dst[i] = (long)s[i];
                }
                break;
            }
            default:
                throw new InvalidOperationException($"dtype {dtype.ToSafeTensorsName()} is not an integer type");
        }
    }

    private static void RequireFloat(TensorInfo info, string source, string method)
    {
        if (!info.DType.IsFloatingPoint())
            throw new InvalidOperationException($"'{source}', tensor '{info.Name}' has dtype {info.DType.ToSafeTensorsName()}; {method} needs a floating-point dtype (use ReadInt64)");
    }

    private static void RequireLength(TensorInfo info, int length)
    {
        if (length != info.ElementCount)
            throw new ArgumentException($"tensor '{info.Name}' {info.ShapeText} has {info.ElementCount} elements; the destination holds {length}", "destination");
    }

    private static float[] BuildFloat8E4M3Table()
    {
        // float8_e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; S.1111.111 is NaN.
        var table = new float[256];
        for (var b = 0; b < 256; b++)
        {
            var sign = (b & 0x80) != 0 ? -1f : 1f;
            var exponent = (b >> 3) & 0xF;
            var mantissa = b & 0x7;
            float value;
            if (exponent == 0xF && mantissa == 0x7) value = float.NaN;
            else if (exponent == 0) value = MathF.ScaleB(mantissa, -9);
            else value = MathF.ScaleB(8 + mantissa, exponent - 10);
            table[b] = sign * value;
        }
        return table;
    }
}
