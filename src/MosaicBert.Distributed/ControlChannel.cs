using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

namespace MosaicBert.Distributed;

/// <summary>Timing of the rendezvous and of failure detection.</summary>
public sealed record ControlChannelOptions
{
    /// <summary>How long rank 0 waits for every rank to connect, and the others keep retrying to reach rank 0
    /// (MOSAICBERT_RENDEZVOUS_TIMEOUT, seconds; 300 by default).</summary>
    public TimeSpan RendezvousTimeout { get; init; } = Seconds("MOSAICBERT_RENDEZVOUS_TIMEOUT", 300);
    /// <summary>Between heartbeats.</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromMilliseconds(500);
    /// <summary>A peer silent for this long has failed (MOSAICBERT_HEARTBEAT_TIMEOUT, seconds; 5 by default). A
    /// process that dies is noticed at once (its connection closes); this covers hung or unreachable hosts.</summary>
    public TimeSpan HeartbeatTimeout { get; init; } = Seconds("MOSAICBERT_HEARTBEAT_TIMEOUT", 5);
    /// <summary>After a failure, exit the process with <see cref="FailureExitCode"/> if it has not ended on its own
    /// within this time (a thread stuck in a device wait must not keep it alive); null never exits (tests).</summary>
    public TimeSpan? ExitProcessAfterFailure { get; init; }
    /// <summary>Exit code of that forced exit.</summary>
    public int FailureExitCode { get; init; } = 3;

    private static TimeSpan Seconds(string variable, double fallback) =>
        Environment.GetEnvironmentVariable(variable) is { Length: > 0 } text
        && double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double s) && s > 0
            ? TimeSpan.FromSeconds(s) : TimeSpan.FromSeconds(fallback);
}

/// <summary>
/// The ranks' own TCP connections, without NCCL's bootstrap: rank 0 listens on MASTER_ADDR:MASTER_PORT, every other
/// rank connects (retrying until the rendezvous timeout) and says who it is; when all have joined, rank 0 sends each
/// the same payload (the NCCL unique id). The connections then stay open as a control channel in a star around
/// rank 0: heartbeats both ways, small host collectives (loss and token counts; whole gradients for CPU ranks), and
/// failure news.
/// </summary>
/// <remarks>
/// Failure: a peer whose connection closes (its process exited or was killed) or that sends no heartbeat for
/// <see cref="ControlChannelOptions.HeartbeatTimeout"/> has failed. Rank 0 tells every other rank which rank failed
/// and why; every rank then runs its failure callbacks (ncclCommAbort, which ends a collective stuck waiting for the
/// dead rank), and any collective in progress or started later throws <see cref="DistributedFailureException"/>
/// naming the failed rank. Collectives are deterministic: rank 0 adds the ranks' values in rank order.
/// Wire format: frames of [type: 1 byte][length: int32 LE][payload].
/// </remarks>
public sealed class ControlChannel : IDisposable
{
    private const uint Magic = 0x4E44424D; // "MBDN"
    private const int ProtocolVersion = 1;
    private const int ChunkBytes = 1 << 20;

    private enum Frame : byte { Hello = 1, Welcome = 2, Heartbeat = 3, Data = 4, Abort = 5, Goodbye = 6 }

    private readonly ControlChannelOptions _options;
    private readonly Peer?[] _peers; // rank 0: one per other rank; others: [0] is rank 0
    private readonly CancellationTokenSource _failed = new();
    private readonly List<Action<string>> _failureCallbacks = [];
    private readonly Lock _lock = new();
    private readonly Thread? _watchdog;
    private readonly List<Func<string?>> _healthChecks = [];
    private volatile bool _closing;
    private string? _failure;
    private int? _failedRank;

    private ControlChannel(DistributedEnvironment environment, ControlChannelOptions options, Peer?[] peers, byte[] payload)
    {
        Environment = environment;
        _options = options;
        _peers = peers;
        RootPayload = payload;
        foreach (var peer in peers) peer?.StartReading(this);
        if (peers.Any(p => p is not null))
        {
            _watchdog = new Thread(Watch) { IsBackground = true, Name = $"mosaicbert-control-rank{Rank}" };
            _watchdog.Start();
        }
    }

    /// <summary>This rank's environment.</summary>
    public DistributedEnvironment Environment { get; }
    /// <summary>This rank.</summary>
    public int Rank => Environment.Rank;
    /// <summary>Number of ranks.</summary>
    public int WorldSize => Environment.WorldSize;
    /// <summary>What rank 0 sent every rank at the rendezvous (e.g. the NCCL unique id; empty when none).</summary>
    public byte[] RootPayload { get; }
    /// <summary>Why the job failed, once it has (null while healthy).</summary>
    public string? Failure => _failure;
    /// <summary>The rank that failed, when known.</summary>
    public int? FailedRank => _failedRank;

    /// <summary>
    /// Joins the job described by <paramref name="environment"/>. Rank 0 listens, waits for every rank and sends
    /// them <paramref name="rootPayload"/>'s bytes (called once, after all have joined); the others connect with
    /// retries. World size 1 opens no socket.
    /// </summary>
    /// <exception cref="DistributedConfigurationException">The rendezvous failed (timeout, port in use, a rank
    /// joined twice or with another world size); the message says which.</exception>
    public static ControlChannel Connect(DistributedEnvironment environment, Func<byte[]>? rootPayload = null,
        ControlChannelOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(environment);
        options ??= new ControlChannelOptions();
        if (environment.WorldSize == 1) return new ControlChannel(environment, options, [], rootPayload?.Invoke() ?? []);
        return environment.IsRoot
            ? AcceptAll(environment, rootPayload, options, cancellationToken)
            : JoinRoot(environment, options, cancellationToken);
    }

    // ---- rendezvous ----

    private static ControlChannel AcceptAll(DistributedEnvironment env, Func<byte[]>? rootPayload, ControlChannelOptions options, CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        var listener = new TcpListener(BindAddress(env.MasterAddress), env.MasterPort);
        try
        {
            listener.Start(env.WorldSize);
        }
        catch (SocketException e)
        {
            throw new DistributedConfigurationException(
                $"Rank 0 cannot listen on MASTER_ADDR:MASTER_PORT {env.MasterAddress}:{env.MasterPort}: {e.Message} (is another job using the port?).");
        }
        var peers = new Peer?[env.WorldSize];
        try
        {
            int joined = 0;
            while (joined < env.WorldSize - 1)
            {
                var remaining = options.RendezvousTimeout - deadline.Elapsed;
                if (remaining <= TimeSpan.Zero)
                {
                    var missing = Enumerable.Range(1, env.WorldSize - 1).Where(r => peers[r] is null);
                    throw new DistributedConfigurationException(
                        $"Rendezvous timed out after {options.RendezvousTimeout.TotalSeconds:F0} s on {env.MasterAddress}:{env.MasterPort}: " +
                        $"rank(s) {string.Join(", ", missing)} of {env.WorldSize} never connected (MOSAICBERT_RENDEZVOUS_TIMEOUT sets the wait).");
                }
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(ct);
                wait.CancelAfter(remaining);
                Socket socket;
                try
                {
                    socket = listener.AcceptSocketAsync(wait.Token).AsTask().GetAwaiter().GetResult();
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    continue; // the deadline check above reports it
                }
                var peer = new Peer(socket, -1);
                int rank;
                try
                {
                    rank = peer.ReadHello(env, TimeSpan.FromSeconds(10));
                }
                catch (Exception e) when (e is IOException or SocketException or InvalidDataException)
                {
                    peer.Close(); // not one of ours (a port scanner, a stale job): ignore it
                    continue;
                }
                catch (DistributedConfigurationException e)
                {
                    peer.TrySend(Frame.Abort, AbortPayload(-1, e.Message));
                    peer.Close();
                    throw;
                }
                if (peers[rank] is not null)
                {
                    string message = $"Rank {rank} joined twice at {env.MasterAddress}:{env.MasterPort}: two processes have RANK={rank}.";
                    peer.TrySend(Frame.Abort, AbortPayload(rank, message));
                    peer.Close();
                    throw new DistributedConfigurationException(message);
                }
                peers[rank] = peer;
                peer.Rank = rank;
                joined++;
            }
            byte[] payload;
            try
            {
                payload = rootPayload?.Invoke() ?? [];
            }
            catch (Exception e)
            {
                foreach (var p in peers) p?.TrySend(Frame.Abort, AbortPayload(0, $"rank 0 failed before training: {e.Message}"));
                throw;
            }
            foreach (var p in peers) p?.Send(Frame.Welcome, payload);
            return new ControlChannel(env, options, peers, payload);
        }
        catch
        {
            foreach (var p in peers) p?.Close();
            throw;
        }
        finally
        {
            listener.Stop();
        }
    }

    private static ControlChannel JoinRoot(DistributedEnvironment env, ControlChannelOptions options, CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        string lastError = "";
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            var remaining = options.RendezvousTimeout - deadline.Elapsed;
            if (remaining <= TimeSpan.Zero)
                throw new DistributedConfigurationException(
                    $"Rank {env.Rank} could not reach rank 0 at MASTER_ADDR:MASTER_PORT {env.MasterAddress}:{env.MasterPort} within " +
                    $"{options.RendezvousTimeout.TotalSeconds:F0} s (last error: {lastError}).");
            var client = new TcpClient { NoDelay = true };
            try
            {
                using (var attempt = CancellationTokenSource.CreateLinkedTokenSource(ct))
                {
                    attempt.CancelAfter(TimeSpan.FromSeconds(Math.Min(5, Math.Max(0.1, remaining.TotalSeconds))));
                    client.ConnectAsync(env.MasterAddress, env.MasterPort, attempt.Token).AsTask().GetAwaiter().GetResult();
                }
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException && !ct.IsCancellationRequested)
            {
                lastError = e is SocketException se ? se.SocketErrorCode.ToString() : "connect timed out";
                client.Dispose();
                Thread.Sleep(200);
                continue;
            }
            var peer = new Peer(client.Client, 0);
            try
            {
                peer.Send(Frame.Hello, HelloPayload(env));
                // Rank 0 answers once every rank has joined: wait as long as the rendezvous may take.
                var (type, payload) = peer.ReadFrame(options.RendezvousTimeout - deadline.Elapsed + TimeSpan.FromSeconds(10));
                if (type == Frame.Abort)
                {
                    var (_, reason) = ParseAbort(payload);
                    throw new DistributedConfigurationException($"Rank 0 refused rank {env.Rank}: {reason}");
                }
                if (type != Frame.Welcome) throw new InvalidDataException($"expected the rendezvous answer, got frame {type}");
                var peers = new Peer?[1];
                peers[0] = peer;
                return new ControlChannel(env, options, peers, payload);
            }
            catch (Exception e) when (e is IOException or SocketException or InvalidDataException)
            {
                peer.Close();
                throw new DistributedConfigurationException(
                    $"Rank {env.Rank} lost rank 0 at {env.MasterAddress}:{env.MasterPort} during the rendezvous: {e.Message}");
            }
            catch
            {
                peer.Close();
                throw;
            }
        }
    }

    private static IPAddress BindAddress(string host)
    {
        if (IPAddress.TryParse(host, out var ip)) return IPAddress.IsLoopback(ip) ? ip : ip.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any;
        if (host.Equals("localhost", StringComparison.OrdinalIgnoreCase)) return IPAddress.Loopback;
        return IPAddress.Any; // the host's name: accept on every interface, as torchrun's store does
    }

    private static byte[] HelloPayload(DistributedEnvironment env)
    {
        var b = new byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(b, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(4), ProtocolVersion);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(8), env.Rank);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(12), env.WorldSize);
        return b;
    }

    private static byte[] AbortPayload(int failedRank, string reason)
    {
        var text = Encoding.UTF8.GetBytes(reason);
        var b = new byte[4 + text.Length];
        BinaryPrimitives.WriteInt32LittleEndian(b, failedRank);
        text.CopyTo(b, 4);
        return b;
    }

    private static (int? Rank, string Reason) ParseAbort(byte[] payload)
    {
        if (payload.Length < 4) return (null, "unknown reason");
        int rank = BinaryPrimitives.ReadInt32LittleEndian(payload);
        return (rank >= 0 ? rank : null, Encoding.UTF8.GetString(payload, 4, payload.Length - 4));
    }

    // ---- failure ----

    /// <summary>Runs <paramref name="callback"/> (on the watchdog or a reader thread) when the job fails; at once if it already has.</summary>
    public void OnFailure(Action<string> callback)
    {
        string? now;
        lock (_lock)
        {
            now = _failure;
            if (now is null) _failureCallbacks.Add(callback);
        }
        if (now is not null) callback(now);
    }

    /// <summary>Adds a check the watchdog runs with each heartbeat (e.g. NCCL's asynchronous error); a non-null
    /// answer fails the job with this rank named.</summary>
    public void AddHealthCheck(Func<string?> check)
    {
        lock (_lock) _healthChecks.Add(check);
    }

    /// <summary>Throws <see cref="DistributedFailureException"/> once the job has failed.</summary>
    public void ThrowIfFailed()
    {
        if (_failure is string f) throw new DistributedFailureException(f, _failedRank);
    }

    /// <summary>
    /// Reports that this rank cannot go on (an exception of its own): the other ranks stop with
    /// <paramref name="reason"/> instead of waiting for it.
    /// </summary>
    public void ReportFailure(string reason) => Fail($"rank {Rank} failed: {reason}", Rank);

    private void Fail(string reason, int? failedRank)
    {
        List<Action<string>> callbacks;
        lock (_lock)
        {
            if (_failure is not null || _closing) return;
            _failure = reason;
            _failedRank = failedRank;
            callbacks = [.. _failureCallbacks];
        }
        // Rank 0 relays the news; a non-root rank tells rank 0 when the failure is its own.
        var payload = AbortPayload(failedRank ?? -1, reason);
        if (Rank == 0) foreach (var p in _peers) { if (p is not null && p.Rank != failedRank) p.TrySend(Frame.Abort, payload); }
        else if (failedRank == Rank) _peers[0]?.TrySend(Frame.Abort, payload);
        _failed.Cancel();
        foreach (var callback in callbacks)
        {
            try
            {
                callback(reason);
            }
            catch (Exception e)
            {
                Console.Error.WriteLine($"rank {Rank}: a failure handler threw: {e.Message}");
            }
        }
        if (_options.ExitProcessAfterFailure is TimeSpan grace)
        {
            var exit = new Thread(() =>
            {
                Thread.Sleep(grace);
                Console.Error.WriteLine($"error: rank {Rank}: {reason} (exiting: the training thread did not stop within {grace.TotalSeconds:F0} s)");
                System.Environment.Exit(_options.FailureExitCode);
            }) { IsBackground = true, Name = "mosaicbert-failure-exit" };
            exit.Start();
        }
        // Closing the sockets unblocks any send or receive in progress.
        foreach (var p in _peers) p?.Close();
    }

    private void Watch()
    {
        var tick = TimeSpan.FromMilliseconds(Math.Min(250, _options.HeartbeatInterval.TotalMilliseconds));
        long nextBeat = 0;
        while (!_closing && _failure is null)
        {
            long now = Stopwatch.GetTimestamp();
            if (now >= nextBeat)
            {
                foreach (var p in _peers) p?.TrySendHeartbeat();
                nextBeat = now + (long)(_options.HeartbeatInterval.TotalSeconds * Stopwatch.Frequency);
            }
            foreach (var p in _peers)
            {
                if (p is null || p.Left) continue;
                var silent = Stopwatch.GetElapsedTime(p.LastSeen);
                if (silent > _options.HeartbeatTimeout)
                    Fail($"rank {p.Rank} failed: no heartbeat for {silent.TotalSeconds:F1} s (hung, or its host is unreachable)", p.Rank);
            }
            Func<string?>[] checks;
            lock (_lock) checks = [.. _healthChecks];
            foreach (var check in checks)
                if (check() is string problem) Fail($"rank {Rank} failed: {problem}", Rank);
            Thread.Sleep(tick);
        }
    }

    private void OnFrame(Peer peer, Frame type, byte[] payload)
    {
        switch (type)
        {
            case Frame.Heartbeat:
                break;
            case Frame.Data:
                peer.Inbox.Add(payload);
                break;
            case Frame.Abort:
                var (rank, reason) = ParseAbort(payload);
                Fail(reason, rank ?? peer.Rank);
                break;
            case Frame.Goodbye:
                peer.Left = true;
                break;
            default:
                Fail($"rank {peer.Rank} sent an unexpected control frame ({type})", peer.Rank);
                break;
        }
    }

    private void OnConnectionLost(Peer peer, Exception? error)
    {
        if (_closing || peer.Left)
        {
            peer.Inbox.CompleteAdding();
            return;
        }
        Fail($"rank {peer.Rank} failed: its connection closed ({error?.Message ?? "end of stream"}; the process exited or was killed)", peer.Rank);
    }

    // ---- host collectives (star around rank 0, rank-order sums) ----

    /// <summary>Sums <paramref name="values"/> over the ranks, in place (every rank gets the same result).</summary>
    public void AllReduceSum(Span<double> values)
    {
        var bytes = MemoryMarshal.AsBytes(values);
        Exchange(bytes, (total, other) =>
        {
            var t = MemoryMarshal.Cast<byte, double>(total);
            var o = MemoryMarshal.Cast<byte, double>(other);
            for (int i = 0; i < t.Length; i++) t[i] += o[i];
        }, finish: null);
    }

    /// <summary>Sums (or averages, dividing the sum by the world size) <paramref name="values"/> over the ranks, in place.</summary>
    public void AllReduce(Span<float> values, bool average)
    {
        int world = WorldSize;
        Exchange(MemoryMarshal.AsBytes(values), (total, other) =>
        {
            var t = MemoryMarshal.Cast<byte, float>(total);
            System.Numerics.Tensors.TensorPrimitives.Add(t, MemoryMarshal.Cast<byte, float>(other), t);
        }, finish: average && world > 1 ? total =>
        {
            var t = MemoryMarshal.Cast<byte, float>(total);
            System.Numerics.Tensors.TensorPrimitives.Divide(t, world, t);
        } : null);
    }

    /// <summary>Replaces <paramref name="values"/> on every rank by rank 0's.</summary>
    public void BroadcastFromRoot(Span<byte> values) => Exchange(values, null, null);

    /// <summary>Returns when every rank has called it.</summary>
    public void Barrier() => Exchange([], null, null);

    private delegate void Combine(Span<byte> total, ReadOnlySpan<byte> other);
    private delegate void Finish(Span<byte> total);

    /// <summary>One round: every rank sends its bytes to rank 0, which folds them in rank order (or, with no
    /// <paramref name="combine"/>, keeps its own) and sends the result back.</summary>
    private void Exchange(Span<byte> values, Combine? combine, Finish? finish)
    {
        ThrowIfFailed();
        if (WorldSize == 1)
        {
            finish?.Invoke(values);
            return;
        }
        try
        {
            if (Rank == 0)
            {
                for (int r = 1; r < WorldSize; r++)
                {
                    var other = Receive(_peers[r]!);
                    if (other.Length != values.Length)
                        throw new InvalidOperationException($"Rank {r} sent {other.Length} bytes to a collective where rank 0 has {values.Length}: the ranks are out of step.");
                    combine?.Invoke(values, other);
                }
                finish?.Invoke(values);
                var result = values.ToArray();
                for (int r = 1; r < WorldSize; r++) _peers[r]!.Send(Frame.Data, result);
            }
            else
            {
                _peers[0]!.Send(Frame.Data, values);
                var result = Receive(_peers[0]!);
                if (result.Length != values.Length)
                    throw new InvalidOperationException($"Rank 0 answered a collective with {result.Length} bytes, not {values.Length}: the ranks are out of step.");
                result.CopyTo(values);
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            // A broken connection is usually reported by its reader a moment later, with the rank that failed.
            _failed.Token.WaitHandle.WaitOne(TimeSpan.FromSeconds(2));
            throw new DistributedFailureException(_failure ?? $"rank {Rank}: the control channel broke ({e.Message})", _failedRank);
        }
    }

    private byte[] Receive(Peer peer)
    {
        try
        {
            return peer.Inbox.Take(_failed.Token);
        }
        catch (InvalidOperationException) when (peer.Inbox.IsCompleted)
        {
            throw new DistributedFailureException(_failure ?? $"rank {peer.Rank} left the job while rank {Rank} waited for it", _failedRank ?? peer.Rank);
        }
    }

    // ---- shutdown ----

    /// <summary>
    /// Ends the job cleanly: a barrier (so no rank leaves while another still needs it), then a goodbye on every
    /// connection so that closing them is not taken for a failure.
    /// </summary>
    public void Shutdown()
    {
        if (_closing) return;
        Barrier();
        lock (_lock) _closing = true;
        foreach (var p in _peers) p?.TrySend(Frame.Goodbye, []);
    }

    /// <summary>Closes the connections. Without <see cref="Shutdown"/> first, the other ranks take it for a failure
    /// of this rank (which is what a rank that stops on an error should cause).</summary>
    public void Dispose()
    {
        _closing = true;
        foreach (var p in _peers) p?.Close();
        _watchdog?.Join(TimeSpan.FromSeconds(2));
    }

    /// <summary>One TCP connection to another rank, with its reader thread and inbox of data frames.</summary>
    private sealed class Peer(Socket socket, int rank)
    {
        private readonly NetworkStream _stream = new(socket, ownsSocket: true);
        private readonly Lock _send = new();
        private long _lastSeen = Stopwatch.GetTimestamp();
        private int _closed;

        public int Rank { get; set; } = rank;
        public BlockingCollection<byte[]> Inbox { get; } = [];
        public volatile bool Left;
        public long LastSeen => Interlocked.Read(ref _lastSeen);

        public int ReadHello(DistributedEnvironment root, TimeSpan timeout)
        {
            var (type, b) = ReadFrame(timeout);
            if (type != Frame.Hello || b.Length != 16 || BinaryPrimitives.ReadUInt32LittleEndian(b) != Magic)
                throw new InvalidDataException("not a MosaicBert rank");
            int version = BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(4));
            int rank = BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(8));
            int world = BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(12));
            if (version != ProtocolVersion)
                throw new DistributedConfigurationException($"Rank {rank} speaks control protocol {version}, rank 0 speaks {ProtocolVersion}: run the same build on every rank.");
            if (world != root.WorldSize)
                throw new DistributedConfigurationException($"Rank {rank} has WORLD_SIZE={world}, rank 0 has WORLD_SIZE={root.WorldSize}: every rank must have the same.");
            if (rank < 1 || rank >= root.WorldSize)
                throw new DistributedConfigurationException($"A process joined with RANK={rank}; the other ranks of WORLD_SIZE={root.WorldSize} are 1..{root.WorldSize - 1}.");
            return rank;
        }

        public (Frame Type, byte[] Payload) ReadFrame(TimeSpan timeout)
        {
            _stream.ReadTimeout = (int)Math.Clamp(timeout.TotalMilliseconds, 1, int.MaxValue);
            try
            {
                return ReadFrame();
            }
            finally
            {
                _stream.ReadTimeout = Timeout.Infinite;
            }
        }

        private (Frame, byte[]) ReadFrame()
        {
            Span<byte> header = stackalloc byte[5];
            _stream.ReadExactly(header);
            var type = (Frame)header[0];
            int length = BinaryPrimitives.ReadInt32LittleEndian(header[1..]);
            if (length < 0) throw new InvalidDataException($"negative frame length {length}");
            var payload = new byte[length];
            // Big frames (CPU gradients) arrive in chunks; each chunk counts as a sign of life.
            for (int done = 0; done < length;)
            {
                int n = _stream.Read(payload, done, Math.Min(ChunkBytes, length - done));
                if (n == 0) throw new EndOfStreamException();
                done += n;
                Interlocked.Exchange(ref _lastSeen, Stopwatch.GetTimestamp());
            }
            Interlocked.Exchange(ref _lastSeen, Stopwatch.GetTimestamp());
            return (type, payload);
        }

        public void StartReading(ControlChannel channel)
        {
            Interlocked.Exchange(ref _lastSeen, Stopwatch.GetTimestamp());
            var thread = new Thread(() =>
            {
                try
                {
                    while (true)
                    {
                        var (type, payload) = ReadFrame();
                        channel.OnFrame(this, type, payload);
                    }
                }
                catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or InvalidDataException)
                {
                    channel.OnConnectionLost(this, e is EndOfStreamException ? null : e);
                }
            }) { IsBackground = true, Name = $"mosaicbert-control-peer{Rank}" };
            thread.Start();
        }

        public void Send(Frame type, ReadOnlySpan<byte> payload)
        {
            Span<byte> header = stackalloc byte[5];
            header[0] = (byte)type;
            BinaryPrimitives.WriteInt32LittleEndian(header[1..], payload.Length);
            lock (_send)
            {
                _stream.Write(header);
                _stream.Write(payload);
            }
        }

        public void TrySend(Frame type, ReadOnlySpan<byte> payload)
        {
            try
            {
                Send(type, payload);
            }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
            {
                // The peer is gone already.
            }
        }

        /// <summary>A heartbeat, unless a data frame is being written (which the peer counts as a sign of life).</summary>
        public void TrySendHeartbeat()
        {
            if (!_send.TryEnter()) return;
            try
            {
                Span<byte> frame = [(byte)Frame.Heartbeat, 0, 0, 0, 0];
                _stream.Write(frame);
            }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
            {
                // Reported by the reader.
            }
            finally
            {
                _send.Exit();
            }
        }

        public void Close()
        {
            if (Interlocked.Exchange(ref _closed, 1) != 0) return;
            try
            {
                socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // already closed by the other side
            }
            _stream.Dispose();
        }
    }
}
