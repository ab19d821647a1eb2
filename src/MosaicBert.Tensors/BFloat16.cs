namespace MosaicBert.Tensors;

/// <summary>
/// bfloat16 bit conversions on the host: the upper 16 bits of an fp32, rounded to nearest even (the same rule as the
/// device kernels), NaN kept quiet. For fills, uploads and the tests' reference rounding.
/// </summary>
public static class BFloat16
{
    /// <summary>The bfloat16 bits nearest to <paramref name="value"/> (ties to even).</summary>
    public static ushort FromFloat(float value)
    {
        uint u = BitConverter.SingleToUInt32Bits(value);
        if ((u & 0x7FFF_FFFFu) > 0x7F80_0000u) return (ushort)((u >> 16) | 0x0040);   // NaN: keep the sign, make it quiet
        u += 0x7FFFu + ((u >> 16) & 1u);
        return (ushort)(u >> 16);
    }

    /// <summary>The fp32 value of bfloat16 bits (exact).</summary>
    public static float ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary><paramref name="value"/> rounded to the nearest bfloat16, as fp32.</summary>
    public static float Round(float value) => ToFloat(FromFloat(value));

    /// <summary>Rounds every element in place.</summary>
    public static void Round(Span<float> values)
    {
        for (int i = 0; i < values.Length; i++) values[i] = Round(values[i]);
    }
}
