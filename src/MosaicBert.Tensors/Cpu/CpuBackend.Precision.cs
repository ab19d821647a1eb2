namespace MosaicBert.Tensors.Cpu;

// Mixed-precision entry points of the op interface. The CPU backend has no bfloat16 tensors (Allocate refuses them),
// so Convert is a copy between equal types; DropoutBackward regenerates the forward mask from the counter generator.
public sealed partial class CpuBackend
{
    /// <inheritdoc/>
    public override void Convert(Tensor source, Tensor destination)
    {
        Check(destination, nameof(destination), source.DType);
        Copy(source, destination);
    }

    /// <inheritdoc/>
    /// <remarks>mask_i = keep ? 1f/(1f − p) : 0 with the forward's counters (offset + i), so dx = dy·mask equals
    /// Multiply(dy, storedMask) bit for bit.</remarks>
    public override void DropoutBackward(Tensor dy, Tensor dx, float p, ulong seed, long offset)
    {
        Check(dy, nameof(dy), DType.Float32);
        CheckSameShape(dx, nameof(dx), dy, nameof(dy));
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), $"Dropout probability {p} is not in [0, 1).");
        var ds = Floats(dy); int dyo = (int)dy.Offset;
        var xs = Floats(dx); int dxo = (int)dx.Offset;
        ulong key = DropoutRandom.Key(seed);
        uint threshold = DropoutRandom.Threshold(p);
        float keepScale = 1f / (1f - p);
        ParallelElements(dy.Length, 8, (start, end) =>
        {
            for (int i = start; i < end; i++)
            {
                float m = DropoutRandom.Bits24(key, unchecked((ulong)(offset + i))) >= threshold ? keepScale : 0f;
                xs[dxo + i] = ds[dyo + i] * m;
            }
        });
    }
}
