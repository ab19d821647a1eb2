namespace MosaicBert.Tensors;

/// <summary>
/// The obvious triple loop with double accumulation: the oracle the blocked kernels are tested against. Same
/// arguments, validation and BLAS conventions as <see cref="Gemm"/> (beta == 0 ignores C; alpha == 0 or k == 0 does
/// not read A or B). Slow: O(m·n·k) scalar operations on one thread.
/// </summary>
public static class ReferenceGemm
{
    /// <summary>C = alpha · op(A) · op(B) + beta · C, each element computed in double and rounded once.</summary>
    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc)
    {
        GemmArguments.Validate(transA, transB, m, n, k, lda, ldb, ldc);
        GemmArguments.ValidateLengths(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc);
        bool skipProduct = k == 0 || alpha == 0f;
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double sum = 0;
                if (!skipProduct)
                {
                    for (int p = 0; p < k; p++)
                    {
                        float x = transA ? a[p * lda + i] : a[i * lda + p];
                        float y = transB ? b[j * ldb + p] : b[p * ldb + j];
                        sum += (double)x * y;
                    }
                }
                ref float cij = ref c[i * ldc + j];
                double result = (double)alpha * sum;
                if (beta != 0f) result += (double)beta * cij;
                cij = (float)result;
            }
        }
    }
}
