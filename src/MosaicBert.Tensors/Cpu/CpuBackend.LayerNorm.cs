using System.Numerics.Tensors;

namespace MosaicBert.Tensors.Cpu;

public sealed partial class CpuBackend
{
    /// <inheritdoc/>
    public override void LayerNorm(Tensor x, Tensor? residual, Tensor gamma, Tensor beta, float eps,
        Tensor sum, Tensor y, Tensor mean, Tensor rstd)
    {
        int n = x.Dim(0), d = (int)x.RowLength;
        if (residual is not null) Check(residual, nameof(residual), DType.Float32, x.Shape.ToArray());
        Check(gamma, nameof(gamma), DType.Float32, d);
        Check(beta, nameof(beta), DType.Float32, d);
        Check(sum, nameof(sum), DType.Float32, x.Shape.ToArray());
        Check(y, nameof(y), DType.Float32, x.Shape.ToArray());
        Check(mean, nameof(mean), DType.Float32, n);
        Check(rstd, nameof(rstd), DType.Float32, n);
        var xs = Floats(x); int xo = (int)x.Offset;
        var rs = residual is null ? null : Floats(residual); int ro = (int)(residual?.Offset ?? 0);
        var ss = Floats(sum); int so = (int)sum.Offset;
        var ys = Floats(y); int yo = (int)y.Offset;
        var ms = Floats(mean); int mo = (int)mean.Offset;
        var qs = Floats(rstd); int qo = (int)rstd.Offset;
        var ga = Floats(gamma); int gao = (int)gamma.Offset;
        var ba = Floats(beta); int bao = (int)beta.Offset;
        ParallelRows(n, d * 6, (start, end) =>
        {
            for (int r = start; r < end; r++)
            {
                var s = ss.AsSpan(so + r * d, d);
                if (rs is not null) TensorPrimitives.Add(xs.AsSpan(xo + r * d, d), rs.AsSpan(ro + r * d, d), s);
                else if (!ReferenceEquals(xs, ss) || xo != so) xs.AsSpan(xo + r * d, d).CopyTo(s);
                var dst = ys.AsSpan(yo + r * d, d);
                // Two passes (mean, then centred squares) in float: as accurate as PyTorch's CPU kernel for d ≤ 4096.
                float mu = TensorPrimitives.Sum<float>(s) / d;
                TensorPrimitives.Subtract(s, mu, dst);
                float variance = TensorPrimitives.SumOfSquares<float>(dst) / d;
                float inv = 1f / MathF.Sqrt(variance + eps);
                TensorPrimitives.Multiply(dst, inv, dst);
                TensorPrimitives.FusedMultiplyAdd(dst, ga.AsSpan(gao, d), ba.AsSpan(bao, d), dst);
                ms[mo + r] = mu;
                qs[qo + r] = inv;
            }
        });
    }
}
