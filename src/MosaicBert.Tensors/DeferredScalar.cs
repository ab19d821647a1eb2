namespace MosaicBert.Tensors;

/// <summary>
/// A scalar produced by queued backend work (a loss, a gradient norm) and read on the host only when asked for. A GPU
/// backend can then queue the rest of a training step behind the work that computes it, instead of waiting for it: the
/// read is the only point that waits. The value is read once and remembered.
/// </summary>
public sealed class DeferredScalar
{
    private Func<double>? _read;
    private double _value;

    /// <summary>A value that is already on the host.</summary>
    public DeferredScalar(double value) => _value = value;

    /// <summary>A value that <paramref name="read"/> fetches (waiting for the backend) on the first <see cref="Read"/>.</summary>
    public DeferredScalar(Func<double> read) => _read = read ?? throw new ArgumentNullException(nameof(read));

    /// <summary>Whether the value is on the host already (reading it will not wait).</summary>
    public bool IsRead => _read is null;

    /// <summary>The value; the first call waits for the work that computes it.</summary>
    public double Read()
    {
        if (_read is { } read)
        {
            _value = read();
            _read = null;
        }
        return _value;
    }
}
