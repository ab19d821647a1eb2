using System.Runtime.InteropServices;
using MosaicBert.Distributed.Interop;
using MosaicBert.Tensors;
using MosaicBert.Tensors.Cuda;
using static MosaicBert.Tensors.Cuda.Interop.Cu;

namespace MosaicBert.Distributed;

/// <summary>
/// The ranks of a data-parallel job as the training loop sees them: gradient averaging, parameter broadcast and
/// small host sums. Three kinds behind one interface, so one process and many go through the same code:
/// <list type="bullet">
/// <item><see cref="SingleProcessGroup"/>: world size 1; every collective is the identity and costs nothing.</item>
/// <item><see cref="NcclProcessGroup"/>: one GPU per rank, NCCL collectives on a communication stream.</item>
/// <item><see cref="TcpProcessGroup"/>: CPU ranks, collectives over the control channel (for tests and debugging).</item>
/// </list>
/// </summary>
public abstract class ProcessGroup : IDisposable
{
    /// <summary>Creates the group's view of <paramref name="environment"/>.</summary>
    protected ProcessGroup(DistributedEnvironment environment) => Environment = environment ?? throw new ArgumentNullException(nameof(environment));

    /// <summary>Where this rank stands.</summary>
    public DistributedEnvironment Environment { get; }
    /// <summary>This rank.</summary>
    public int Rank => Environment.Rank;
    /// <summary>Number of ranks.</summary>
    public int WorldSize => Environment.WorldSize;
    /// <summary>True for rank 0, the rank that writes checkpoints, metrics and logs.</summary>
    public bool IsRoot => Environment.IsRoot;
    /// <summary>"single", "nccl" or "tcp".</summary>
    public abstract string Kind { get; }

    /// <summary>
    /// Joins the job <paramref name="environment"/> describes for a model on <paramref name="backend"/>: world size 1 →
    /// <see cref="SingleProcessGroup"/> (no socket, no NCCL); a CUDA backend → NCCL (rank 0 makes the unique id, the
    /// control channel carries it); a CPU backend → the control channel's own collectives.
    /// </summary>
    public static ProcessGroup Create(DistributedEnvironment environment, Backend backend, ControlChannelOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(environment);
        ArgumentNullException.ThrowIfNull(backend);
        if (environment.WorldSize == 1) return new SingleProcessGroup(environment);
        if (backend is CudaBackend cuda)
        {
            if (cuda.Device.Ordinal != environment.DeviceOrdinal)
                throw new DistributedConfigurationException(
                    $"Rank {environment.Rank} has LOCAL_RANK={environment.LocalRank} but its model is on {cuda.Name}: each rank must use the GPU of its local rank.");
            if (!NcclCommunicator.IsAvailable(out string reason))
                throw new DistributedConfigurationException($"{reason}; data-parallel training on GPUs needs NCCL.");
            var channel = ControlChannel.Connect(environment, () => NcclCommunicator.CreateUniqueId().ToArray(), options, cancellationToken);
            try
            {
                return new NcclProcessGroup(channel, cuda);
            }
            catch (Exception e)
            {
                channel.ReportFailure(e.Message);
                channel.Dispose();
                throw;
            }
        }
        return new TcpProcessGroup(ControlChannel.Connect(environment, null, options, cancellationToken), backend);
    }

    /// <summary>Replaces <paramref name="values"/> by their mean over the ranks (in place). Ordered after the work
    /// already queued on the tensor's backend; work queued after it sees the result.</summary>
    public void AllReduceAverage(Tensor values)
    {
        StartAllReduceAverage(values);
        FinishPending();
    }

    /// <summary>Starts averaging <paramref name="values"/> over the ranks; it may still be running when this returns
    /// (see <see cref="FinishPending"/>). Every rank must start the same collectives in the same order.</summary>
    protected internal abstract void StartAllReduceAverage(Tensor values);

    /// <summary>Makes later work on the model's backend wait for every collective started so far.</summary>
    protected internal virtual void FinishPending() { }

    /// <summary>Replaces <paramref name="values"/> on every rank by rank <paramref name="root"/>'s.</summary>
    public abstract void Broadcast(Tensor values, int root = 0);

    /// <summary>Sums host values over the ranks, in place (loss, token and sample counts, a stop request).</summary>
    public abstract void AllReduceSum(Span<double> values);

    /// <summary>Returns when every rank has called it.</summary>
    public abstract void Barrier();

    /// <summary>Tells the other ranks that this one cannot go on, so they stop instead of waiting for it.</summary>
    public virtual void ReportFailure(string reason) { }

    /// <summary>Ends the job cleanly (a final barrier); without it, disposing is taken by the other ranks as a failure.</summary>
    public virtual void Shutdown() { }

    /// <inheritdoc/>
    public virtual void Dispose() => GC.SuppressFinalize(this);

    /// <summary>Throws unless <paramref name="t"/> is fp32 on <paramref name="backend"/> (null: any backend).</summary>
    protected static void CheckTensor(Tensor t, Backend? backend, string what)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (t.DType != DType.Float32) throw new ArgumentException($"{what}: collectives on tensors take fp32, not {t.DType}.");
        if (backend is not null && !ReferenceEquals(t.Backend, backend))
            throw new ArgumentException($"{what}: the tensor is on {t.Backend.Name}, the process group on {backend.Name}.");
    }
}

/// <summary>World size 1: every collective is the identity, so one process runs exactly as without a group.</summary>
public sealed class SingleProcessGroup(DistributedEnvironment environment) : ProcessGroup(environment)
{
    /// <summary>Rank 0 of 1.</summary>
    public SingleProcessGroup() : this(DistributedEnvironment.Single) { }

    /// <inheritdoc/>
    public override string Kind => "single";
    /// <inheritdoc/>
    protected internal override void StartAllReduceAverage(Tensor values) => CheckTensor(values, null, nameof(AllReduceAverage));
    /// <inheritdoc/>
    public override void Broadcast(Tensor values, int root = 0)
    {
        CheckTensor(values, null, nameof(Broadcast));
        if (root != 0) throw new ArgumentOutOfRangeException(nameof(root), $"Root {root} is not a rank of a world of 1.");
    }
    /// <inheritdoc/>
    public override void AllReduceSum(Span<double> values) { }
    /// <inheritdoc/>
    public override void Barrier() { }
}

/// <summary>
/// CPU ranks: tensors are copied to the host and reduced over the control channel (rank 0 adds the ranks' values in
/// rank order and divides by the world size, so every rank gets the same bits). Fine for tests and small models; GPUs
/// use NCCL.
/// </summary>
public sealed class TcpProcessGroup : ProcessGroup
{
    private readonly ControlChannel _channel;
    private readonly Backend _backend;

    /// <summary>A group over an open control channel for tensors on <paramref name="backend"/>.</summary>
    public TcpProcessGroup(ControlChannel channel, Backend backend) : base(channel.Environment)
    {
        _channel = channel;
        _backend = backend;
    }

    /// <summary>The control channel.</summary>
    public ControlChannel Channel => _channel;
    /// <inheritdoc/>
    public override string Kind => "tcp";

    /// <inheritdoc/>
    protected internal override void StartAllReduceAverage(Tensor values)
    {
        CheckTensor(values, _backend, nameof(AllReduceAverage));
        if (WorldSize == 1) return;
        var host = new float[values.Length];
        _backend.Download(values, host);
        _channel.AllReduce(host, average: true);
        _backend.Upload(host, values);
    }

    /// <inheritdoc/>
    public override void Broadcast(Tensor values, int root = 0)
    {
        CheckTensor(values, _backend, nameof(Broadcast));
        if (root != 0) throw new ArgumentOutOfRangeException(nameof(root), "The CPU process group broadcasts from rank 0 only.");
        if (WorldSize == 1) return;
        var host = new float[values.Length];
        _backend.Download(values, host);
        _channel.BroadcastFromRoot(MemoryMarshal.AsBytes(host.AsSpan()));
        _backend.Upload(host, values);
    }

    /// <inheritdoc/>
    public override void AllReduceSum(Span<double> values) => _channel.AllReduceSum(values);
    /// <inheritdoc/>
    public override void Barrier() => _channel.Barrier();
    /// <inheritdoc/>
    public override void ReportFailure(string reason) => _channel.ReportFailure(reason);
    /// <inheritdoc/>
    public override void Shutdown() => _channel.Shutdown();

    /// <inheritdoc/>
    public override void Dispose()
    {
        _channel.Dispose();
        base.Dispose();
    }
}

/// <summary>
/// One GPU per rank: NCCL collectives on a communication stream of their own, ordered after the compute stream with
/// events, so that bucket k's all-reduce runs while the backward pass computes the gradients of earlier layers; the
/// compute stream waits for the communication only where it needs the results (<see cref="ProcessGroup.FinishPending"/>,
/// before the optimizer step). Host sums go over the control channel. A failed peer (noticed by the channel) or an
/// asynchronous NCCL error aborts the communicator, which releases collectives stuck waiting for a dead rank.
/// </summary>
public sealed class NcclProcessGroup : ProcessGroup
{
    private readonly ControlChannel _channel;
    private readonly CudaBackend _backend;
    private readonly NcclCommunicator _comm;
    private readonly nint _stream;
    private readonly nint _computeReady;
    private readonly nint _communicationDone;
    private bool _pending;

    /// <summary>Creates the communicator from the unique id the control channel carried (blocks until every rank joins).</summary>
    public NcclProcessGroup(ControlChannel channel, CudaBackend backend) : base(channel.Environment)
    {
        _channel = channel;
        _backend = backend;
        _comm = NcclCommunicator.Create(backend.Device, NcclUniqueId.FromBytes(channel.RootPayload), Rank, WorldSize);
        channel.OnFailure(reason => _comm.Abort(reason));
        channel.AddHealthCheck(_comm.AsyncError);
        backend.Device.MakeCurrent();
        Check(CudaDriver.cuStreamCreate(out _stream, CudaDriver.StreamNonBlocking));
        Check(CudaDriver.cuEventCreate(out _computeReady, CudaDriver.EventDisableTiming));
        Check(CudaDriver.cuEventCreate(out _communicationDone, CudaDriver.EventDisableTiming));
    }

    /// <inheritdoc/>
    public override string Kind => "nccl";
    /// <summary>The communicator.</summary>
    public NcclCommunicator Communicator => _comm;
    /// <summary>The communication stream (a CUstream).</summary>
    public nint CommunicationStream => _stream;

    /// <inheritdoc/>
    protected internal override void StartAllReduceAverage(Tensor values)
    {
        CheckTensor(values, _backend, nameof(AllReduceAverage));
        _channel.ThrowIfFailed();
        AfterCompute();
        ulong p = _backend.Ptr(values);
        _comm.AllReduce(p, p, values.Length, NcclDataType.Float32, NcclReduceOp.Average, _stream);
        _pending = true;
    }

    /// <summary>Starts an all-reduce of raw device memory (e.g. bf16 gradients) on the communication stream, after the
    /// compute stream's work so far; <see cref="ProcessGroup.FinishPending"/> joins it.</summary>
    public void StartAllReduce(ulong pointer, long count, NcclDataType type, NcclReduceOp op)
    {
        _channel.ThrowIfFailed();
        AfterCompute();
        _comm.AllReduce(pointer, pointer, count, type, op, _stream);
        _pending = true;
    }

    /// <inheritdoc/>
    protected internal override void FinishPending()
    {
        if (!_pending) return;
        _backend.Device.MakeCurrent();
        Check(CudaDriver.cuEventRecord(_communicationDone, _stream));
        Check(CudaDriver.cuStreamWaitEvent(_backend.Stream.Handle, _communicationDone, 0));
        _pending = false;
    }

    /// <inheritdoc/>
    public override void Broadcast(Tensor values, int root = 0)
    {
        CheckTensor(values, _backend, nameof(Broadcast));
        _channel.ThrowIfFailed();
        AfterCompute();
        ulong p = _backend.Ptr(values);
        _comm.Broadcast(p, p, values.Length, NcclDataType.Float32, root, _stream);
        _pending = true;
        FinishPending();
    }

    /// <summary>The communication stream waits for everything queued on the compute stream so far.</summary>
    private void AfterCompute()
    {
        _backend.Device.MakeCurrent();
        Check(CudaDriver.cuEventRecord(_computeReady, _backend.Stream.Handle));
        Check(CudaDriver.cuStreamWaitEvent(_stream, _computeReady, 0));
    }

    /// <inheritdoc/>
    public override void AllReduceSum(Span<double> values) => _channel.AllReduceSum(values);
    /// <inheritdoc/>
    public override void Barrier() => _channel.Barrier();
    /// <inheritdoc/>
    public override void ReportFailure(string reason) => _channel.ReportFailure(reason);

    /// <inheritdoc/>
    public override void Shutdown()
    {
        FinishPending();
        _backend.Synchronize();
        _channel.Shutdown();
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        _backend.Device.MakeCurrent();
        if (_channel.Failure is null) CudaDriver.cuStreamSynchronize(_stream);
        _comm.Dispose();
        CudaDriver.cuEventDestroy_v2(_computeReady);
        CudaDriver.cuEventDestroy_v2(_communicationDone);
        CudaDriver.cuStreamDestroy_v2(_stream);
        _channel.Dispose();
        base.Dispose();
    }
}
