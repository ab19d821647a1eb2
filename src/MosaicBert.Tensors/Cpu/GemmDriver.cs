using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;

namespace MosaicBert.Tensors;

/// <summary>One validated GEMM call: m, n, k &gt; 0 and alpha ≠ 0 (the driver's preconditions).</summary>
internal unsafe struct GemmProblem
{
    public bool TransA, TransB;
    public int M, N, K;
    public float Alpha, Beta;
    public float* A, B, C;
    public nint Lda, Ldb, Ldc;
}

/// <summary>How C is cut into tiles: RowTiles × ColTiles tiles of at most Tm × Tn (the last row/column smaller).</summary>
internal readonly record struct TilePlan(int RowTiles, int ColTiles, int Tm, int Tn)
{
    public int Count => RowTiles * ColTiles;
}

/// <summary>
/// The blocked GEMM (Goto/BLIS structure, with the outer loops replaced by independent tiles of C):
/// <code>
/// for each tile of C (tm ≤ maxTileRows × tn ≤ ncMax)               ← threads take tiles from a shared counter
///   for p0 in k, step kc                                            ← k blocks in order: C gets beta once, then +=
///     pack op(B)[p0..p0+kc, tile columns] → kc×NR micro-panels      (kc×tn, L2)
///     for each block of mc tile rows
///       pack op(A)[rows, p0..p0+kc] → MR×kc micro-panels            (mc×kc, L2)
///       for each NR-column micro-panel of B                         (kc×NR, L1 while the A panels stream past)
///         for each MR-row micro-panel of A: micro-kernel → C[MR×NR] (C prefetched, then loaded/stored once)
/// </code>
/// Every tile packs its own A and B, so threads never wait for each other inside a call (no barriers per k block as
/// in BLIS' shared packed B); the price is packing A once per column tile and B once per row tile, which
/// <see cref="Plan"/> weighs when it cuts C for several threads (≈ 7 % for 256×192 tiles, none for one thread).
/// The k loop is blocked identically for every tiling, so each element of C sees the same sequence of fp32 operations
/// whatever the thread count: results are bitwise identical single- and multi-threaded.
/// </summary>
internal static unsafe class GemmDriver
{
    /// <summary>
    /// Below this many flops per thread another thread is not worth waking: 4 Mflop is ≈ 20 µs of one core at
    /// ≈ 200 GFLOP/s, against a few µs to wake a pool thread and join it.
    /// </summary>
    internal const long MinFlopsPerThread = 1L << 22;

    /// <summary>
    /// Packing cost per packed element relative to kernel cost per C element per k step, for the tiling cost model
    /// (see <see cref="Plan"/>). Fitted single-threaded on Zen 5: 1024×768×768 with forced tiles of 128×96, 256×192,
    /// 128×384 and 512×96 ran 13.9 %, 7.5 %, 8.1 % and 10.4 % slower than one 1024×768 tile, i.e. W ≈ 9-12 (packing
    /// moves 5-9 G floats/s against ≈ 105 G FMA/s in the kernel).
    /// </summary>
    private const int PackWeight = 10;

    public static void Run(in GemmProblem p, GemmKernel kernel, int maxThreads, long minFlopsPerThread = MinFlopsPerThread)
    {
        long flops = 2L * p.M * p.N * p.K;
        int threads = Math.Max(1, maxThreads);
        if (minFlopsPerThread > 0) threads = (int)Math.Clamp(flops / minFlopsPerThread, 1, threads);
        var plan = Plan(p.M, p.N, kernel, threads);
        threads = Math.Min(threads, plan.Count);
        if (threads == 1)
        {
            var buffers = ThreadBuffers.Get(kernel);
            for (int t = 0; t < plan.Count; t++) RunTile(p, kernel, plan, t, buffers);
            return;
        }
        GemmJob.Rent().Run(p, kernel, plan, threads);
    }

    /// <summary>
    /// Chooses the tiling for <paramref name="threads"/> workers by a small cost model: makespan ≈
    /// ceil(tiles / threads) × (tm·tn + PackWeight·(tm + tn)) per k: kernel work per tile plus the packing of its A
    /// rows (tm·k) and B columns (tn·k). With one thread it is simply maxTileRows × ncMax tiles. Tiles are multiples of
    /// MR × NR so that only the last row/column of tiles has edge micro-tiles.
    /// </summary>
    internal static TilePlan Plan(int m, int n, GemmKernel kn, int threads)
    {
        int r0 = CeilDiv(m, kn.MaxTileRows), c0 = CeilDiv(n, kn.NcMax);
        if (threads <= 1) return Make(m, n, kn, r0, c0);
        int rMax = Math.Min(CeilDiv(m, kn.Mr), r0 + 2 * threads);
        int cMax = Math.Min(CeilDiv(n, kn.Nr), c0 + 2 * threads);
        TilePlan best = Make(m, n, kn, r0, c0);
        double bestCost = Cost(best, threads);
        for (int r = r0; r <= rMax; r++)
        {
            for (int c = c0; c <= cMax; c++)
            {
                var plan = Make(m, n, kn, r, c);
                double cost = Cost(plan, threads);
                // Strictly better by 0.5 %: ties go to fewer, larger tiles (less packing, fewer hand-offs).
                if (cost < bestCost * 0.995)
                {
                    best = plan;
                    bestCost = cost;
                }
            }
        }
        return best;

        static double Cost(TilePlan plan, int threads) =>
            (double)CeilDiv(plan.Count, threads) * ((double)plan.Tm * plan.Tn + PackWeight * (plan.Tm + plan.Tn));
    }

    private static TilePlan Make(int m, int n, GemmKernel kn, int rowTiles, int colTiles)
    {
        int tm = RoundUp(CeilDiv(m, rowTiles), kn.Mr);
        int tn = RoundUp(CeilDiv(n, colTiles), kn.Nr);
        return new TilePlan(CeilDiv(m, tm), CeilDiv(n, tn), tm, tn);
    }

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;

    private static int RoundUp(int a, int b) => CeilDiv(a, b) * b;

    /// <summary>Computes tile <paramref name="tile"/> (row-major over the plan) completely, all k blocks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loops: straight to optimized code, no tier-0/OSR phase
    internal static void RunTile(in GemmProblem pr, GemmKernel kn, TilePlan plan, int tile, ThreadBuffers buffers)
    {
        int i0 = tile / plan.ColTiles * plan.Tm, j0 = tile % plan.ColTiles * plan.Tn;
        int mc = Math.Min(plan.Tm, pr.M - i0), nc = Math.Min(plan.Tn, pr.N - j0);
        int mr = kn.Mr, nr = kn.Nr;
        var run = kn.Run;
        float* ap = buffers.A, bp = buffers.B, tmp = buffers.Edge;
        for (int p0 = 0; p0 < pr.K; p0 += kn.Kc)
        {
            int kc = Math.Min(kn.Kc, pr.K - p0);
            // First k block applies beta (beta == 0: C is overwritten, never read); later blocks accumulate.
            bool first = p0 == 0;
            float beta = first ? pr.Beta : 1f;
            bool loadC = !first || pr.Beta != 0f;
            // The tile's whole kc×nc panel of op(B), once per k block, reused by every A block of the tile.
            Packing.PackB(pr.TransB, pr.B, pr.Ldb, p0, kc, j0, nc, nr, bp);
            for (int ib = 0; ib < mc; ib += kn.Mc)
            {
                int mb = Math.Min(kn.Mc, mc - ib);
                Packing.PackA(pr.TransA, pr.A, pr.Lda, i0 + ib, mb, p0, kc, mr, ap);
                float* bpanel = bp;
                for (int j = 0; j < nc; j += nr, bpanel += nr * kc)
                {
                    int cols = Math.Min(nr, nc - j);
                    float* apanel = ap;
                    float* c = pr.C + (nint)(i0 + ib) * pr.Ldc + j0 + j;
                    for (int i = 0; i < mb; i += mr, apanel += mr * kc, c += mr * pr.Ldc)
                    {
                        int rows = Math.Min(mr, mb - i);
                        if (rows == mr && cols == nr)
                        {
                            run(kc, apanel, bpanel, c, pr.Ldc, pr.Alpha, beta, loadC);
                        }
                        else
                        {
                            run(kc, apanel, bpanel, tmp, nr, 1f, 0f, false);
                            MergeEdge(tmp, nr, c, pr.Ldc, rows, cols, pr.Alpha, beta, loadC);
                        }
                    }
                }
            }
        }
    }

    /// <summary>Edge micro-tile: the same fp32 operations as the kernels' store (alpha·acc, then fma(C, beta, ·)).</summary>
    private static void MergeEdge(float* acc, nint ldAcc, float* c, nint ldc, int rows, int cols, float alpha, float beta, bool loadC)
    {
        for (int r = 0; r < rows; r++, acc += ldAcc, c += ldc)
        {
            if (loadC)
                for (int j = 0; j < cols; j++) c[j] = MathF.FusedMultiplyAdd(c[j], beta, acc[j] * alpha);
            else
                for (int j = 0; j < cols; j++) c[j] = acc[j] * alpha;
        }
    }

    /// <summary>C = beta·C over m×n (k == 0 or alpha == 0); beta == 0 writes zeros without reading C.</summary>
    public static void ScaleC(int m, int n, float beta, float* c, nint ldc)
    {
        if (beta == 1f) return;
        for (int i = 0; i < m; i++, c += ldc)
        {
            var row = new Span<float>(c, n);
            if (beta == 0f) row.Clear();
            else
                for (int j = 0; j < row.Length; j++) row[j] *= beta;
        }
    }
}

/// <summary>
/// Per-thread packing buffers, allocated once per thread (pinned, 64-byte aligned) and grown only when a larger
/// blocking is used: no allocation per call in steady state.
/// </summary>
internal sealed unsafe class ThreadBuffers
{
    [ThreadStatic] private static ThreadBuffers? t_current;

    private readonly float[] _storage;
    private readonly int _aLength, _bLength;

    public float* A { get; }
    public float* B { get; }
    public float* Edge { get; }

    private ThreadBuffers(int aLength, int bLength)
    {
        _aLength = aLength;
        _bLength = bLength;
        // Three 64-byte aligned regions in one pinned (POH) array: A block, B micro-panel, edge micro-tile.
        int edge = 64 * 64;
        _storage = GC.AllocateUninitializedArray<float>(aLength + bLength + edge + 3 * 16, pinned: true);
        float* p = (float*)Unsafe.AsPointer(ref _storage[0]);
        float* aligned = (float*)(((nint)p + 63) & ~(nint)63);
        A = aligned;
        B = A + RoundUp16(aLength);
        Edge = B + RoundUp16(bLength);
    }

    private static int RoundUp16(int x) => (x + 15) & ~15;

    public static ThreadBuffers Get(GemmKernel kn)
    {
        int a = kn.Mc * kn.Kc + Packing.Slack, b = kn.Kc * kn.NcMax + Packing.Slack;
        var current = t_current;
        if (current is null || current._aLength < a || current._bLength < b)
            t_current = current = new ThreadBuffers(Math.Max(a, current?._aLength ?? 0), Math.Max(b, current?._bLength ?? 0));
        return current;
    }
}

/// <summary>
/// One multi-threaded GEMM call: the caller and up to threads − 1 thread-pool work items take tiles from a shared
/// counter until none are left; the caller waits only for tiles in progress, not for helpers that have not started.
/// </summary>
/// <remarks>
/// Why not Parallel.For: this is the same dynamic scheme without its per-call allocations and task replication. Why it
/// does not oversubscribe: helpers are ordinary pool work items, so they only run on idle pool threads. A caller that
/// is itself parallel (Parallel.For over sequences, heads, ...) keeps the pool busy, its helpers start late, find no
/// tile left and return at once — the GEMM then runs on the calling thread, and pool threads that do free up join in.
/// Jobs are pooled; a job goes back to the pool only after every helper that was queued for it has run.
/// </remarks>
internal sealed unsafe class GemmJob : IThreadPoolWorkItem
{
    private static readonly ConcurrentQueue<GemmJob> s_pool = new();

    private readonly ManualResetEventSlim _done = new(false, spinCount: 200);
    private GemmProblem _problem;
    private GemmKernel _kernel = GemmKernel.Best;
    private TilePlan _plan;
    private int _nextTile, _remainingTiles, _references;
    private ExceptionDispatchInfo? _error;

    public static GemmJob Rent() => s_pool.TryDequeue(out var job) ? job : new GemmJob();

    public void Run(in GemmProblem problem, GemmKernel kernel, TilePlan plan, int threads)
    {
        _problem = problem;
        _kernel = kernel;
        _plan = plan;
        _error = null;
        _done.Reset();
        _remainingTiles = plan.Count;
        _references = threads;
        Volatile.Write(ref _nextTile, 0);
        for (int i = 1; i < threads; i++) ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        WorkLoop();
        if (Volatile.Read(ref _remainingTiles) != 0) _done.Wait();
        var error = _error;
        Release();
        error?.Throw();
    }

    void IThreadPoolWorkItem.Execute()
    {
        WorkLoop();
        Release();
    }

    private void WorkLoop()
    {
        int count = _plan.Count;
        ThreadBuffers? buffers = null;
        while (true)
        {
            int tile = Interlocked.Increment(ref _nextTile) - 1;
            if (tile >= count) return;
            try
            {
                buffers ??= ThreadBuffers.Get(_kernel);
                GemmDriver.RunTile(_problem, _kernel, _plan, tile, buffers);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _error, ExceptionDispatchInfo.Capture(e), null);
            }
            finally
            {
                if (Interlocked.Decrement(ref _remainingTiles) == 0) _done.Set();
            }
        }
    }

    private void Release()
    {
        if (Interlocked.Decrement(ref _references) == 0) s_pool.Enqueue(this);
    }
}
