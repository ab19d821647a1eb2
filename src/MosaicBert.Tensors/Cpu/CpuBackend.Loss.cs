using System.Numerics.Tensors;

namespace MosaicBert.Tensors.Cpu;

public sealed partial class CpuBackend
{
    /// <inheritdoc/>
    public override void CrossEntropy(Tensor logits, Tensor labels, Tensor losses, Tensor? gradient = null, float gradientScale = 1)
    {
        int k = logits.Dim(0), v = logits.Dim(1);
        Check(labels, nameof(labels), DType.Int32, k);
        Check(losses, nameof(losses), DType.Float32, k);
        if (gradient is not null) Check(gradient, nameof(gradient), DType.Float32, k, v);
        var x = Floats(logits); int xo = (int)logits.Offset;
        var y = Ints(labels); int yo = (int)labels.Offset;
        var l = Floats(losses); int lo = (int)losses.Offset;
        var g = gradient is null ? null : Floats(gradient); int go = (int)(gradient?.Offset ?? 0);
        ParallelRows(k, v * 4L, (start, end) =>
        {
            for (int r = start; r < end; r++)
            {
                int label = y[yo + r];
                if ((uint)label >= (uint)v) throw new ArgumentOutOfRangeException(nameof(labels), $"Label {label} at row {r} is outside 0..{v - 1}.");
                var row = x.AsSpan(xo + r * v, v);
                // log Σ exp(x) = max + log Σ exp(x − max)
                float max = TensorPrimitives.Max<float>(row);
                float sum = 0;
                if (g is null)
                {
                    foreach (float z in row) sum += MathF.Exp(z - max);
                }
                else
                {
                    var grow = g.AsSpan(go + r * v, v);
                    TensorPrimitives.Subtract(row, max, grow);
                    TensorPrimitives.Exp(grow, grow);
                    sum = TensorPrimitives.Sum<float>(grow);
                    TensorPrimitives.Multiply(grow, gradientScale / sum, grow);
                    grow[label] -= gradientScale;
                }
                l[lo + r] = max + MathF.Log(sum) - row[label];
            }
        });
    }
}
