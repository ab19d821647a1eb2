namespace MosaicBert.Tensors.Cuda;

// Scalars a training step produces (the loss, the gradient norm) are computed into a ring of device doubles and read
// only when the caller asks, so a whole step — forward, backward, clipping, AdamW — is queued without the host waiting
// in between (the clipping decision is taken on the device). A slot is reused after SlotCount later scalars; reading
// an older one is refused rather than answered with another step's value.
public sealed partial class CudaBackend
{
    private const int SlotCount = 1024;
    private Tensor? _slots;   // SlotCount doubles (as 2·SlotCount Float32 cells)
    private long _slotsIssued;

    private (ulong Pointer, long Ticket) NextSlot()
    {
        _slots ??= Allocate(DType.Float32, 2 * SlotCount);
        long ticket = _slotsIssued++;
        return (Ptr(_slots) + 8UL * (ulong)(ticket % SlotCount), ticket);
    }

    private DeferredScalar ReadLater(ulong pointer, long ticket, string what) => new(() =>
    {
        ThrowIfDisposed();
        if (_slotsIssued - ticket > SlotCount)
            throw new InvalidOperationException($"The {what} was read after {_slotsIssued - ticket - 1} later device scalars had reused its slot " +
                $"(at most {SlotCount - 1} may come between queuing a scalar and reading it).");
        double value = 0;
        ReadBack(pointer, System.Runtime.InteropServices.MemoryMarshal.AsBytes(new Span<double>(ref value)));
        return value;
    });

    /// <inheritdoc/>
    /// <remarks>Σx² as in <see cref="SumOfSquares"/> into a device slot, then the clip_by_norm kernel decides and scales
    /// on the device; the norm is read only when asked for.</remarks>
    public override DeferredScalar ClipByGlobalNorm(Tensor x, double maxNorm)
    {
        Check(x, nameof(x), DType.Float32);
        if (x.Length == 0) return new DeferredScalar(0);
        var (slot, ticket) = NextSlot();
        QueueSumOfSquares(x, slot);
        LaunchElements(ReduceFile, "clip_by_norm", x.Length, Ptr(x), x.Length, slot, maxNorm);
        var total = ReadLater(slot, ticket, "gradient norm");
        return new DeferredScalar(() => Math.Sqrt(total.Read()));
    }

    /// <inheritdoc/>
    /// <remarks>One block sums in double (fixed order) into a device slot.</remarks>
    public override DeferredScalar Mean(Tensor x)
    {
        Check(x, nameof(x), DType.Float32);
        var (slot, ticket) = NextSlot();
        Launch(Kernel(ReduceFile, "mean_to_double"), 1, 1, 256, 0, Ptr(x), x.Length, slot);
        return ReadLater(slot, ticket, "mean");
    }
}
