using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace MosaicBert.Tensors.Cpu;

// Backward passes of the token-wise layers (bias sums, LayerNorm, GELU, gated GELU, tanh) and of the embedding
// lookups. Every kernel is deterministic: reductions over rows are split by column (each column is summed by one
// thread, in row order), reductions within a row use a fixed lane layout, and element-wise work does not depend on
// how it is chunked.
public sealed partial class CpuBackend
{
    /// <summary>Width of the column tiles of the row reductions (a multiple of the vector width).</summary>
    private const int ColumnTile = 64;

    /// <summary>Rows summed in float before the partial sum is added to the column total (two-level summation).</summary>
    private const int RowTile = 64;

    /// <inheritdoc/>
    /// <remarks>
    /// Deterministic column reduction: each column is summed by one thread, rows in order, in two levels (tiles of 64
    /// rows in float, tile sums added in float), so the rounding error of a column sum is at most about
    /// (64 + R/64)·2⁻²⁴·Σ|dy| instead of R·2⁻²⁴·Σ|dy|.
    /// </remarks>
    public override void SumRowsInto(Tensor dy, Tensor db)
    {
        Check(dy, nameof(dy), DType.Float32);
        Check(db, nameof(db), DType.Float32);
        if (dy.Rank < 1) throw new ArgumentException("dy must have at least one dimension.", nameof(dy));
        int rows = dy.Dim(0), width = (int)dy.RowLength;
        if (db.Length != width)
            throw new ArgumentException($"db must hold {width} elements (one per column of dy {dy.ShapeString}), not {db.Length}.", nameof(db));
        var g = Floats(dy); int go = (int)dy.Offset;
        var b = Floats(db); int bo = (int)db.Offset;
        ParallelColumns(width, rows, (c0, c1) =>
        {
            Span<float> inner = stackalloc float[ColumnTile];
            Span<float> outer = stackalloc float[ColumnTile];
            for (int c = c0; c < c1; c += ColumnTile)
            {
                int w = Math.Min(ColumnTile, c1 - c);
                var innerW = inner[..w];
                var outerW = outer[..w];
                outerW.Clear();
                for (int r0 = 0; r0 < rows; r0 += RowTile)
                {
                    innerW.Clear();
                    int r1 = Math.Min(rows, r0 + RowTile);
                    for (int r = r0; r < r1; r++) TensorPrimitives.Add(innerW, g.AsSpan(go + r * width + c, w), innerW);
                    TensorPrimitives.Add(outerW, innerW, outerW);
                }
                var dst = b.AsSpan(bo + c, w);
                TensorPrimitives.Add(dst, outerW, dst);
            }
        });
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Two passes. First dγ and dβ, split by column (each column summed by one thread over the rows in order, two-level
    /// like <see cref="SumRowsInto"/>), before dx is written, so dx may be dy itself. Then dx row by row: with
    /// x̂ = (sum − μ)·rstd and g = dy·γ, the row sums Σg and Σg·x̂ use 8 float lanes, and
    /// dx = rstd·(g − Σg/d − x̂·Σg·x̂/d).
    /// </remarks>
    public override void LayerNormBackward(Tensor dy, Tensor sum, Tensor mean, Tensor rstd, Tensor gamma,
        Tensor dx, Tensor dGamma, Tensor dBeta, bool accumulateDx = false)
    {
        Check(dy, nameof(dy), DType.Float32);
        if (dy.Rank < 1) throw new ArgumentException("dy must have at least one dimension.", nameof(dy));
        int n = dy.Dim(0), d = (int)dy.RowLength;
        CheckSameShape(sum, nameof(sum), dy, nameof(dy));
        CheckSameShape(dx, nameof(dx), dy, nameof(dy));
        Check(mean, nameof(mean), DType.Float32, n);
        Check(rstd, nameof(rstd), DType.Float32, n);
        Check(gamma, nameof(gamma), DType.Float32, d);
        Check(dGamma, nameof(dGamma), DType.Float32, d);
        Check(dBeta, nameof(dBeta), DType.Float32, d);
        var gs = Floats(dy); int gso = (int)dy.Offset;
        var ss = Floats(sum); int sso = (int)sum.Offset;
        var ms = Floats(mean); int mso = (int)mean.Offset;
        var rs = Floats(rstd); int rso = (int)rstd.Offset;
        var ga = Floats(gamma); int gao = (int)gamma.Offset;
        var xs = Floats(dx); int xso = (int)dx.Offset;
        var dg = Floats(dGamma); int dgo = (int)dGamma.Offset;
        var db = Floats(dBeta); int dbo = (int)dBeta.Offset;

        // 1) dγ += Σ_rows dy·x̂, dβ += Σ_rows dy.
        ParallelColumns(d, 4L * n, (c0, c1) =>
        {
            Span<float> innerG = stackalloc float[ColumnTile], innerB = stackalloc float[ColumnTile];
            Span<float> outerG = stackalloc float[ColumnTile], outerB = stackalloc float[ColumnTile];
            for (int c = c0; c < c1; c += ColumnTile)
            {
                int w = Math.Min(ColumnTile, c1 - c);
                outerG[..w].Clear();
                outerB[..w].Clear();
                for (int r0 = 0; r0 < n; r0 += RowTile)
                {
                    innerG[..w].Clear();
                    innerB[..w].Clear();
                    int r1 = Math.Min(n, r0 + RowTile);
                    for (int r = r0; r < r1; r++)
                    {
                        float mu = ms[mso + r], inv = rs[rso + r];
                        var dyr = gs.AsSpan(gso + r * d + c, w);
                        var sr = ss.AsSpan(sso + r * d + c, w);
                        int e = 0;
                        if (Vector256.IsHardwareAccelerated)
                        {
                            var vmu = Vector256.Create(mu);
                            var vinv = Vector256.Create(inv);
                            for (; e <= w - Vector256<float>.Count; e += Vector256<float>.Count)
                            {
                                var g = Simd8.Load(dyr, e);
                                var xh = (Simd8.Load(sr, e) - vmu) * vinv;
                                (Simd8.Load(innerG, e) + g * xh).CopyTo(innerG.Slice(e, Vector256<float>.Count));
                                (Simd8.Load(innerB, e) + g).CopyTo(innerB.Slice(e, Vector256<float>.Count));
                            }
                        }
                        for (; e < w; e++)
                        {
                            float xh = (sr[e] - mu) * inv;
                            innerG[e] += dyr[e] * xh;
                            innerB[e] += dyr[e];
                        }
                    }
                    TensorPrimitives.Add(outerG[..w], innerG[..w], outerG[..w]);
                    TensorPrimitives.Add(outerB[..w], innerB[..w], outerB[..w]);
                }
                var dgw = dg.AsSpan(dgo + c, w);
                var dbw = db.AsSpan(dbo + c, w);
                TensorPrimitives.Add(dgw, outerG[..w], dgw);
                TensorPrimitives.Add(dbw, outerB[..w], dbw);
            }
        });

        // 2) dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·γ.
        ParallelRows(n, 10L * d, (start, end) =>
        {
            var gam = ga.AsSpan(gao, d);
            for (int r = start; r < end; r++)
            {
                float mu = ms[mso + r], inv = rs[rso + r];
                var dyr = gs.AsSpan(gso + r * d, d);
                var sr = ss.AsSpan(sso + r * d, d);
                var dxr = xs.AsSpan(xso + r * d, d);
                int e = 0;
                float sumG = 0, sumGX = 0;
                var vmu = Vector256.Create(mu);
                var vinv = Vector256.Create(inv);
                if (Vector256.IsHardwareAccelerated)
                {
                    var accG = Vector256<float>.Zero;
                    var accGX = Vector256<float>.Zero;
                    for (; e <= d - Vector256<float>.Count; e += Vector256<float>.Count)
                    {
                        var g = Simd8.Load(dyr, e) * Simd8.Load(gam, e);
                        var xh = (Simd8.Load(sr, e) - vmu) * vinv;
                        accG += g;
                        accGX += g * xh;
                    }
                    sumG = Vector256.Sum(accG);
                    sumGX = Vector256.Sum(accGX);
                }
                for (; e < d; e++)
                {
                    float g = dyr[e] * gam[e];
                    sumG += g;
                    sumGX += g * ((sr[e] - mu) * inv);
                }
                float meanG = sumG / d, meanGX = sumGX / d;
                e = 0;
                if (Vector256.IsHardwareAccelerated)
                {
                    var vmg = Vector256.Create(meanG);
                    var vmgx = Vector256.Create(meanGX);
                    for (; e <= d - Vector256<float>.Count; e += Vector256<float>.Count)
                    {
                        var g = Simd8.Load(dyr, e) * Simd8.Load(gam, e);
                        var xh = (Simd8.Load(sr, e) - vmu) * vinv;
                        var v = vinv * (g - vmg - xh * vmgx);
                        if (accumulateDx) v += Simd8.Load(dxr, e);
                        v.CopyTo(dxr.Slice(e, Vector256<float>.Count));
                    }
                }
                for (; e < d; e++)
                {
                    float g = dyr[e] * gam[e];
                    float xh = (sr[e] - mu) * inv;
                    float v = inv * (g - meanG - xh * meanGX);
                    dxr[e] = accumulateDx ? dxr[e] + v : v;
                }
            }
        });
    }

    /// <inheritdoc/>
    public override void GeluBackward(Tensor x, Tensor dy, Tensor dx)
    {
        Check(x, nameof(x), DType.Float32);
        CheckSameShape(dy, nameof(dy), x, nameof(x));
        CheckSameShape(dx, nameof(dx), x, nameof(x));
        var xs = Floats(x); int xo = (int)x.Offset;
        var gs = Floats(dy); int go = (int)dy.Offset;
        var ds = Floats(dx); int dso = (int)dx.Offset;
        ParallelElements(x.Length, 30, (start, end) =>
            ActivationGradients.GeluBackward(xs.AsSpan(xo + start, end - start), gs.AsSpan(go + start, end - start),
                ds.AsSpan(dso + start, end - start)));
    }

    /// <inheritdoc/>
    public override void GatedGeluBackward(Tensor gated, Tensor dh, Tensor dGated)
    {
        Check(gated, nameof(gated), DType.Float32);
        if (gated.Rank != 2 || gated.Dim(1) % 2 != 0)
            throw new ArgumentException($"gated must be [N, 2I] with an even width, not {gated.ShapeString}.", nameof(gated));
        int n = gated.Dim(0), twoI = gated.Dim(1), inner = twoI / 2;
        Check(dh, nameof(dh), DType.Float32, n, inner);
        Check(dGated, nameof(dGated), DType.Float32, n, twoI);
        var g = Floats(gated); int go = (int)gated.Offset;
        var hs = Floats(dh); int ho = (int)dh.Offset;
        var ds = Floats(dGated); int dso = (int)dGated.Offset;
        ParallelRows(n, 40L * inner, (start, end) =>
        {
            for (int r = start; r < end; r++)
                ActivationGradients.GatedGeluBackward(g.AsSpan(go + r * twoI, inner), g.AsSpan(go + r * twoI + inner, inner),
                    hs.AsSpan(ho + r * inner, inner), ds.AsSpan(dso + r * twoI, inner), ds.AsSpan(dso + r * twoI + inner, inner));
        });
    }

    /// <inheritdoc/>
    /// <remarks>1 − y² is evaluated as (1 − y)·(1 + y), which keeps its relative accuracy where |y| is close to 1.</remarks>
    public override void TanhBackward(Tensor y, Tensor dy, Tensor dx)
    {
        Check(y, nameof(y), DType.Float32);
        CheckSameShape(dy, nameof(dy), y, nameof(y));
        CheckSameShape(dx, nameof(dx), y, nameof(y));
        var ys = Floats(y); int yo = (int)y.Offset;
        var gs = Floats(dy); int go = (int)dy.Offset;
        var ds = Floats(dx); int dso = (int)dx.Offset;
        ParallelElements(y.Length, 4, (start, end) =>
        {
            var yv = ys.AsSpan(yo + start, end - start);
            var gv = gs.AsSpan(go + start, end - start);
            var dv = ds.AsSpan(dso + start, end - start);
            int i = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                for (; i <= yv.Length - Vector256<float>.Count; i += Vector256<float>.Count)
                {
                    var t = Simd8.Load(yv, i);
                    var r = Simd8.Load(gv, i) * ((Vector256<float>.One - t) * (Vector256<float>.One + t));
                    r.CopyTo(dv.Slice(i, Vector256<float>.Count));
                }
            }
            for (; i < yv.Length; i++) dv[i] = gv[i] * ((1 - yv[i]) * (1 + yv[i]));
        });
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Split by column: each thread owns a block of embedding columns and walks the tokens in order, so repeated ids
    /// accumulate without races and in the same order on every thread count. Indices are all validated before
    /// anything is written.
    /// </remarks>
    public override void EmbeddingBackward(Tensor ids, Tensor typeIds, Tensor? positions, Tensor dOutput,
        Tensor dWordEmbeddings, Tensor dTypeEmbeddings, Tensor? dPositionEmbeddings)
    {
        if ((positions is null) != (dPositionEmbeddings is null))
            throw new ArgumentException("positions and dPositionEmbeddings must both be given or both be null.");
        Check(ids, nameof(ids), DType.Int32);
        if (ids.Rank != 1) throw new ArgumentException($"ids must be [N], not {ids.ShapeString}.", nameof(ids));
        int n = ids.Dim(0);
        Check(typeIds, nameof(typeIds), DType.Int32, n);
        if (positions is not null) Check(positions, nameof(positions), DType.Int32, n);
        Check(dWordEmbeddings, nameof(dWordEmbeddings), DType.Float32);
        if (dWordEmbeddings.Rank != 2)
            throw new ArgumentException($"dWordEmbeddings must be [vocab, d], not {dWordEmbeddings.ShapeString}.", nameof(dWordEmbeddings));
        int d = dWordEmbeddings.Dim(1);
        Check(dOutput, nameof(dOutput), DType.Float32, n, d);
        CheckTable(dTypeEmbeddings, nameof(dTypeEmbeddings), d);
        if (dPositionEmbeddings is not null) CheckTable(dPositionEmbeddings, nameof(dPositionEmbeddings), d);
        CheckIndices(ids, dWordEmbeddings.Dim(0), nameof(ids), "Token id");
        CheckIndices(typeIds, dTypeEmbeddings.Dim(0), nameof(typeIds), "Token type");
        if (positions is not null) CheckIndices(positions, dPositionEmbeddings!.Dim(0), nameof(positions), "Position");

        var idArr = Ints(ids); int idOff = (int)ids.Offset;
        var tyArr = Ints(typeIds); int tyOff = (int)typeIds.Offset;
        var posArr = positions is null ? null : Ints(positions); int posOff = (int)(positions?.Offset ?? 0);
        var go = Floats(dOutput); int goOff = (int)dOutput.Offset;
        var w = Floats(dWordEmbeddings); int wOff = (int)dWordEmbeddings.Offset;
        var t = Floats(dTypeEmbeddings); int tOff = (int)dTypeEmbeddings.Offset;
        var p = dPositionEmbeddings is null ? null : Floats(dPositionEmbeddings); int pOff = (int)(dPositionEmbeddings?.Offset ?? 0);
        ParallelColumns(d, 3L * n, (c0, c1) =>
        {
            int width = c1 - c0;
            for (int i = 0; i < n; i++)
            {
                var src = go.AsSpan(goOff + i * d + c0, width);
                var dw = w.AsSpan(wOff + idArr[idOff + i] * d + c0, width);
                TensorPrimitives.Add(dw, src, dw);
                var dt = t.AsSpan(tOff + tyArr[tyOff + i] * d + c0, width);
                TensorPrimitives.Add(dt, src, dt);
                if (p is not null)
                {
                    var dp = p.AsSpan(pOff + posArr![posOff + i] * d + c0, width);
                    TensorPrimitives.Add(dp, src, dp);
                }
            }
        });
    }

    /// <inheritdoc/>
    /// <remarks>Split by column like <see cref="EmbeddingBackward"/>: repeated indices accumulate in order, without races.</remarks>
    public override void ScatterAddRows(Tensor source, Tensor indices, Tensor destination)
    {
        Check(indices, nameof(indices), DType.Int32);
        Check(source, nameof(source), DType.Float32);
        Check(destination, nameof(destination), DType.Float32);
        if (indices.Rank != 1) throw new ArgumentException($"indices must be [K], not {indices.ShapeString}.", nameof(indices));
        if (destination.Rank < 1) throw new ArgumentException("destination must have at least one dimension.", nameof(destination));
        int k = indices.Dim(0);
        int width = (int)destination.RowLength;
        if (source.Rank < 1 || source.Dim(0) != k || source.RowLength != width)
            throw new ArgumentException($"ScatterAddRows: source {source.ShapeString} does not hold {k} rows of {width}.", nameof(source));
        CheckIndices(indices, destination.Dim(0), nameof(indices), "Row index");
        var idx = Ints(indices); int io = (int)indices.Offset;
        var src = Floats(source); int so = (int)source.Offset;
        var dst = Floats(destination); int dso = (int)destination.Offset;
        ParallelColumns(width, k, (c0, c1) =>
        {
            int w = c1 - c0;
            for (int i = 0; i < k; i++)
            {
                var to = dst.AsSpan(dso + idx[io + i] * width + c0, w);
                TensorPrimitives.Add(to, src.AsSpan(so + i * width + c0, w), to);
            }
        });
    }

    /// <summary>Throws unless <paramref name="t"/> is a float tensor of this backend with the shape of <paramref name="like"/>.</summary>
    private void CheckSameShape(Tensor t, string name, Tensor like, string likeName)
    {
        Check(t, name, DType.Float32);
        if (!t.Shape.SequenceEqual(like.Shape))
            throw new ArgumentException($"{name} must have the shape of {likeName} {like.ShapeString}, not {t.ShapeString}.", name);
    }

    private void CheckTable(Tensor table, string name, int d)
    {
        Check(table, name, DType.Float32);
        if (table.Rank != 2 || table.Dim(1) != d)
            throw new ArgumentException($"{name} must be [rows, {d}], not {table.ShapeString}.", name);
    }

    /// <summary>Throws when an index is outside [0, rows).</summary>
    private static void CheckIndices(Tensor indices, int rows, string name, string what)
    {
        var idx = Ints(indices);
        int o = (int)indices.Offset;
        for (int i = 0; i < indices.Length; i++)
        {
            int r = idx[o + i];
            if ((uint)r >= (uint)rows)
                throw new ArgumentOutOfRangeException(name, $"{what} {r} at {i} is outside 0..{rows - 1}.");
        }
    }

    /// <summary>
    /// Runs <paramref name="body"/> over column ranges [c0, c1) of [0, width) on the backend's threads. Range bounds
    /// are multiples of 16 (or the width), so vector/scalar splits inside a range depend only on the column.
    /// </summary>
    private void ParallelColumns(int width, long workPerColumn, Action<int, int> body)
    {
        const int Granule = 16;
        int blocks = (width + Granule - 1) / Granule;
        ParallelRows(blocks, workPerColumn * Granule, (b0, b1) => body(b0 * Granule, Math.Min(width, b1 * Granule)));
    }

    /// <summary>
    /// Runs <paramref name="body"/> over element ranges [start, end) of [0, length) on the backend's threads. Range
    /// bounds are multiples of 8192 (or the length), so results never depend on the thread count.
    /// </summary>
    private void ParallelElements(long length, int workPerElement, Action<int, int> body)
    {
        const int Block = 8192;
        int blocks = (int)((length + Block - 1) / Block);
        ParallelRows(blocks, (long)Block * workPerElement, (b0, b1) =>
            body(b0 * Block, (int)Math.Min(length, (long)b1 * Block)));
    }
}

/// <summary>
/// Derivatives of the activations in fp32, vectorised like <see cref="Activations"/>:
/// GELU′(x) = Φ(x) + x·φ(x), with Φ from <see cref="Activations.Phi(float)"/> and φ(x) = exp(−x²/2)/√(2π).
/// </summary>
public static class ActivationGradients
{
    private const float InvSqrt2Pi = 0.3989422804014327f;

    /// <summary>GELU′(x) = Φ(x) + x·φ(x), scalar.</summary>
    public static float GeluDerivative(float x) => Activations.Phi(x) + x * Activations.NormalDensity(x);

    /// <summary>GELU′(x) = Φ(x) + x·φ(x), vectorised.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> GeluDerivative(Vector256<float> x) => Activations.Phi(x) + x * NormalDensity(x);

    /// <summary>φ(x) = exp(−x²/2)/√(2π), vectorised.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> NormalDensity(Vector256<float> x) =>
        Vector256.Create(InvSqrt2Pi) * Vector256.Exp(Vector256.Create(-0.5f) * x * x);

    /// <summary><c>dx = dy·GELU′(x)</c>; dx may alias x or dy.</summary>
    public static void GeluBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx)
    {
        if (dy.Length != x.Length || dx.Length != x.Length) throw new ArgumentException("x, dy and dx differ in length.");
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= x.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var v = Simd8.Load(x, i);
                (Simd8.Load(dy, i) * GeluDerivative(v)).CopyTo(dx.Slice(i, Vector256<float>.Count));
            }
        }
        for (; i < x.Length; i++) dx[i] = dy[i] * GeluDerivative(x[i]);
    }

    /// <summary>
    /// Gated GELU backward for one row: <c>du = dh·v·GELU′(u)</c>, <c>dv = dh·GELU(u)</c> with GELU(u) = u·Φ(u) as in
    /// the forward. du/dv may alias u/v (each element is read before it is written).
    /// </summary>
    public static void GatedGeluBackward(ReadOnlySpan<float> u, ReadOnlySpan<float> v, ReadOnlySpan<float> dh,
        Span<float> du, Span<float> dv)
    {
        int n = u.Length;
        if (v.Length != n || dh.Length != n || du.Length != n || dv.Length != n)
            throw new ArgumentException("u, v, dh, du and dv differ in length.");
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var uu = Simd8.Load(u, i);
                var vv = Simd8.Load(v, i);
                var g = Simd8.Load(dh, i);
                var phi = Activations.Phi(uu);
                var gradU = g * vv * (phi + uu * NormalDensity(uu));
                var gradV = g * (uu * phi);
                gradU.CopyTo(du.Slice(i, Vector256<float>.Count));
                gradV.CopyTo(dv.Slice(i, Vector256<float>.Count));
            }
        }
        for (; i < n; i++)
        {
            float uu = u[i], vv = v[i], g = dh[i];
            float phi = Activations.Phi(uu);
            float gradU = g * vv * (phi + uu * Activations.NormalDensity(uu));
            float gradV = g * (uu * phi);
            du[i] = gradU;
            dv[i] = gradV;
        }
    }
}

/// <summary>Bounds-checked 8-float vector loads from spans.</summary>
internal static class Simd8
{
    /// <summary>The 8 floats of <paramref name="s"/> from <paramref name="i"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(ReadOnlySpan<float> s, int i) => Vector256.Create(s.Slice(i, Vector256<float>.Count));
}
