namespace MosaicBert.Tensors.Tests;

/// <summary>
/// One GEMM problem with random operands, stored with the requested leading dimensions. Elements between a row's
/// logical end and its leading dimension are NaN in A and B (a kernel that reads them poisons C) and a sentinel in C
/// (a kernel that writes them is caught by <see cref="AssertPaddingUntouched"/>).
/// </summary>
internal sealed class GemmTestCase
{
    public const float CPadding = 12345.5f;

    public bool TransA { get; }
    public bool TransB { get; }
    public int M { get; }
    public int N { get; }
    public int K { get; }
    public int Lda { get; }
    public int Ldb { get; }
    public int Ldc { get; }
    public float[] A { get; }
    public float[] B { get; }
    public float[] C0 { get; }

    public GemmTestCase(bool transA, bool transB, int m, int n, int k, int seed, int padA = 0, int padB = 0, int padC = 0, bool nanC = false)
    {
        (TransA, TransB, M, N, K) = (transA, transB, m, n, k);
        var random = new Random(seed);
        int aRows = transA ? k : m, aCols = transA ? m : k;
        int bRows = transB ? n : k, bCols = transB ? k : n;
        Lda = Math.Max(1, aCols + padA);
        Ldb = Math.Max(1, bCols + padB);
        Ldc = Math.Max(1, n + padC);
        A = Matrix(random, aRows, aCols, Lda, float.NaN);
        B = Matrix(random, bRows, bCols, Ldb, float.NaN);
        C0 = Matrix(random, m, n, Ldc, CPadding);
        if (nanC)
            for (int i = 0; i < m; i++) C0.AsSpan(i * Ldc, n).Fill(float.NaN);
    }

    private static float[] Matrix(Random random, int rows, int cols, int ld, float padding)
    {
        // Exact length (rows−1)·ld + cols: a kernel reading past the last element fails on bounds (spans) or reads
        // padding of the row before (NaN), never silently.
        var data = new float[rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols];
        data.AsSpan().Fill(padding);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                data[r * ld + c] = (float)(random.NextDouble() * 2 - 1);
        return data;
    }

    public float OpA(int i, int p) => TransA ? A[p * Lda + i] : A[i * Lda + p];

    public float OpB(int p, int j) => TransB ? B[j * Ldb + p] : B[p * Ldb + j];

    public float[] Reference(float alpha, float beta)
    {
        var c = (float[])C0.Clone();
        ReferenceGemm.Sgemm(TransA, TransB, M, N, K, alpha, A, Lda, B, Ldb, beta, c, Ldc);
        return c;
    }

    /// <summary>
    /// Error bound per element of C. An fp32 result computed by any summation order in which each element's value
    /// passes through at most R roundings satisfies |computed − exact| ≤ R·u·(|alpha|·Σ_p |a_ip·b_pj| + |beta|·|c_ij|)
    /// to first order, u = 2⁻²⁴ (Higham, Accuracy and Stability, §3.1: the γ_n bound). The blocked kernel does kc FMAs
    /// per k block plus an alpha product and an fma into C per block: R = k + 2·blocks + 2 (the last 2: the
    /// reference's own rounding to float, and slack for the first-order approximation). 1.01·R·u covers γ_R's
    /// 1/(1 − R·u) factor. Zero magnitude → exact zero required (denormals do not occur with these inputs).
    /// </summary>
    public double[] Bounds(float alpha, float beta, int roundings)
    {
        double u = Math.ScaleB(1.0, -24);
        var bounds = new double[M * N];
        for (int i = 0; i < M; i++)
        {
            for (int j = 0; j < N; j++)
            {
                double magnitude = 0;
                if (alpha != 0)
                    for (int p = 0; p < K; p++) magnitude += Math.Abs((double)OpA(i, p) * OpB(p, j));
                magnitude *= Math.Abs(alpha);
                if (beta != 0) magnitude += Math.Abs(beta * (double)C0[i * Ldc + j]);
                bounds[i * N + j] = 1.01 * roundings * u * magnitude;
            }
        }
        return bounds;
    }

    /// <summary>R for the managed kernel with k-block depth <paramref name="kc"/> (see <see cref="Bounds"/>).</summary>
    public int ManagedRoundings(int kc) => K + 2 * ((K + kc - 1) / kc) + 2;

    /// <summary>
    /// R for a kernel whose blocking is unknown (OpenBLAS): at most k − 1 additions and k products on any path of a
    /// reduction tree, plus per-block alpha/beta work bounded by another k: 2k + 4.
    /// </summary>
    public int AnyOrderRoundings => 2 * K + 4;

    public void AssertClose(float[] expected, float[] actual, double[] bounds, string what)
    {
        for (int i = 0; i < M; i++)
        {
            for (int j = 0; j < N; j++)
            {
                float e = expected[i * Ldc + j], a = actual[i * Ldc + j];
                double diff = Math.Abs((double)e - a);
                if (!(diff <= bounds[i * N + j]))
                    Assert.Fail($"{what}: C[{i},{j}] = {a:R}, reference {e:R}, |diff| {diff:E3} > bound {bounds[i * N + j]:E3} " +
                        $"(transA={TransA}, transB={TransB}, m={M}, n={N}, k={K}, lda={Lda}, ldb={Ldb}, ldc={Ldc})");
            }
        }
        AssertPaddingUntouched(actual);
    }

    public void AssertPaddingUntouched(float[] c)
    {
        if (N == 0) return;
        for (int i = 0; i + 1 < M; i++)
            for (int j = N; j < Ldc; j++)
                if (c[i * Ldc + j] != CPadding) Assert.Fail($"C padding [{i},{j}] (ldc={Ldc}, n={N}) was written: {c[i * Ldc + j]}");
    }

    public override string ToString() =>
        $"transA={TransA} transB={TransB} m={M} n={N} k={K} lda={Lda} ldb={Ldb} ldc={Ldc}";
}
