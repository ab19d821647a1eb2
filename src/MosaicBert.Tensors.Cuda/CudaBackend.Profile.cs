using MosaicBert.Tensors.Cuda.Interop;

namespace MosaicBert.Tensors.Cuda;

// Per-operation GPU time, for finding where a step goes (bench --profile). While a profile runs, every kernel launch
// and every GEMM is bracketed by CUDA events on the stream; StopProfile waits for the GPU and sums the event-to-event
// times per label (kernel name, or the GEMM's shape and types). Events add a few microseconds per op, so profile runs
// are a little slower than unprofiled ones; the shares are what matters.
public sealed partial class CudaBackend
{
    private List<(string Label, nint Start, nint End)>? _profile;

    /// <summary>Starts recording the GPU time of each launched kernel and GEMM.</summary>
    public void StartProfile()
    {
        ThrowIfDisposed();
        Synchronize();
        _profile = [];
    }

    /// <summary>Stops recording; returns label → (calls, total milliseconds), largest total first.</summary>
    public IReadOnlyList<(string Label, int Calls, double Milliseconds)> StopProfile()
    {
        var records = _profile ?? throw new InvalidOperationException("No profile is running; call StartProfile first.");
        _profile = null;
        Synchronize();
        var totals = new Dictionary<string, (int Calls, double Ms)>();
        foreach (var (label, start, end) in records)
        {
            Cu.Check(Cu.cuEventElapsedTime(out float ms, start, end));
            var t = totals.GetValueOrDefault(label);
            totals[label] = (t.Calls + 1, t.Ms + ms);
            Cu.cuEventDestroy_v2(start);
            Cu.cuEventDestroy_v2(end);
        }
        return [.. totals.Select(kv => (kv.Key, kv.Value.Calls, kv.Value.Ms)).OrderByDescending(t => t.Ms)];
    }

    /// <summary>Records the start event of a profiled op (0 when no profile runs).</summary>
    private nint ProfileBegin()
    {
        if (_profile is null) return 0;
        _device.MakeCurrent();
        Cu.Check(Cu.cuEventCreate(out nint start, Cu.EventDefault));
        Cu.Check(Cu.cuEventRecord(start, _stream.Handle));
        return start;
    }

    private void ProfileEnd(nint start, string label)
    {
        if (start == 0 || _profile is null) return;
        Cu.Check(Cu.cuEventCreate(out nint end, Cu.EventDefault));
        Cu.Check(Cu.cuEventRecord(end, _stream.Handle));
        _profile.Add((label, start, end));
    }
}
