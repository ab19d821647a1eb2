using System.Globalization;

namespace MosaicBert.ML.Glue;

/// <summary>
/// The metrics GLUE reports and ML.NET lacks (Matthews, Pearson, Spearman), plus accuracy and F1 on class indexes,
/// with the conventions of scikit-learn and SciPy that GLUE's reference scorers use. The catalogs' metrics objects
/// expose the same numbers (<c>MatthewsCorrelation</c>, <c>PearsonCorrelation</c>, <c>SpearmanCorrelation</c>).
/// </summary>
public static class GlueMetrics
{
    /// <summary>Fraction of predictions equal to the label.</summary>
    public static double Accuracy(ReadOnlySpan<int> labels, ReadOnlySpan<int> predictions)
    {
        CheckClasses(labels, predictions);
        var correct = 0;
        for (var i = 0; i < labels.Length; i++) correct += labels[i] == predictions[i] ? 1 : 0;
        return (double)correct / labels.Length;
    }

    /// <summary>F1 of <paramref name="positiveClass"/>: 2·TP / (2·TP + FP + FN); 0 when there is no positive label nor
    /// prediction (scikit-learn's zero_division=0).</summary>
    public static double F1Score(ReadOnlySpan<int> labels, ReadOnlySpan<int> predictions, int positiveClass = 1)
    {
        CheckClasses(labels, predictions);
        long tp = 0, fp = 0, fn = 0;
        for (var i = 0; i < labels.Length; i++)
        {
            var (l, p) = (labels[i] == positiveClass, predictions[i] == positiveClass);
            if (l && p) tp++;
            else if (p) fp++;
            else if (l) fn++;
        }
        return F1(tp, fp, fn);
    }

    internal static double F1(double tp, double fp, double fn) => tp == 0 ? 0 : 2 * tp / (2 * tp + fp + fn);

    /// <summary>
    /// Matthews correlation coefficient, for two or more classes (scikit-learn's matthews_corrcoef): with confusion
    /// counts C (rows = label), t = row sums, p = column sums, c = trace, s = total,
    /// MCC = (c·s − Σ t·p) / √((s² − Σ p²)(s² − Σ t²)). 0 when either factor is 0, i.e. when all labels or all
    /// predictions are one class.
    /// </summary>
    public static double MatthewsCorrelation(ReadOnlySpan<int> labels, ReadOnlySpan<int> predictions)
    {
        CheckClasses(labels, predictions);
        var k = 0;
        foreach (var v in labels) k = Math.Max(k, v + 1);
        foreach (var v in predictions) k = Math.Max(k, v + 1);
        var counts = new double[k][];
        for (var i = 0; i < k; i++) counts[i] = new double[k];
        for (var i = 0; i < labels.Length; i++) counts[labels[i]][predictions[i]]++;
        return MatthewsCorrelation(counts);
    }

    /// <summary>Matthews correlation from a square confusion matrix (rows = label, columns = prediction).</summary>
    internal static double MatthewsCorrelation(IReadOnlyList<IReadOnlyList<double>> counts)
    {
        var k = counts.Count;
        double s = 0, c = 0, tp = 0, pp = 0, tt = 0;
        var t = new double[k];
        var p = new double[k];
        for (var i = 0; i < k; i++)
        {
            for (var j = 0; j < k; j++)
            {
                t[i] += counts[i][j];
                p[j] += counts[i][j];
            }
            c += counts[i][i];
        }
        for (var i = 0; i < k; i++)
        {
            s += t[i];
            tp += t[i] * p[i];
            pp += p[i] * p[i];
            tt += t[i] * t[i];
        }
        var denominator = (s * s - pp) * (s * s - tt);
        return denominator == 0 ? 0 : (c * s - tp) / Math.Sqrt(denominator);
    }

    /// <summary>Pearson correlation, Σ(x−x̄)(y−ȳ) / √(Σ(x−x̄)² Σ(y−ȳ)²); NaN when either side is constant (as SciPy).</summary>
    public static double PearsonCorrelation(ReadOnlySpan<double> x, ReadOnlySpan<double> y)
    {
        CheckValues(x, y);
        double mx = 0, my = 0;
        for (var i = 0; i < x.Length; i++)
        {
            mx += x[i];
            my += y[i];
        }
        mx /= x.Length;
        my /= y.Length;
        double sxy = 0, sxx = 0, syy = 0;
        for (var i = 0; i < x.Length; i++)
        {
            var (dx, dy) = (x[i] - mx, y[i] - my);
            sxy += dx * dy;
            sxx += dx * dx;
            syy += dy * dy;
        }
        // Clamp: rounding can push |r| a hair above 1 for perfectly correlated data.
        return sxx == 0 || syy == 0 ? double.NaN : Math.Clamp(sxy / Math.Sqrt(sxx * syy), -1, 1);
    }

    /// <summary>Spearman rank correlation: Pearson of the ranks, tied values sharing the mean of their ranks (SciPy's
    /// spearmanr); NaN when either side is constant.</summary>
    public static double SpearmanCorrelation(ReadOnlySpan<double> x, ReadOnlySpan<double> y)
    {
        CheckValues(x, y);
        return PearsonCorrelation(AverageRanks(x), AverageRanks(y));
    }

    /// <summary>1-based ranks in ascending order; tied values get the mean of the ranks they span (e.g. 10, 20, 20, 30 →
    /// 1, 2.5, 2.5, 4).</summary>
    public static double[] AverageRanks(ReadOnlySpan<double> values)
    {
        var order = new int[values.Length];
        for (var i = 0; i < order.Length; i++) order[i] = i;
        var keys = values.ToArray();
        Array.Sort(keys, order);
        var ranks = new double[values.Length];
        for (var start = 0; start < keys.Length;)
        {
            var end = start;
            while (end + 1 < keys.Length && keys[end + 1] == keys[start]) end++;
            var rank = (start + end) / 2.0 + 1; // mean of the 1-based ranks start+1 .. end+1
            for (var i = start; i <= end; i++) ranks[order[i]] = rank;
            start = end + 1;
        }
        return ranks;
    }

    /// <summary>The task's metrics (<see cref="GlueTaskInfo.Metrics"/>) for class predictions (class indexes into
    /// <see cref="GlueTaskInfo.LabelValues"/>; F1 is of label "1").</summary>
    /// <exception cref="ArgumentException">The task is STS-B (use the overload for scores).</exception>
    public static GlueResult Evaluate(GlueTask task, ReadOnlySpan<int> labels, ReadOnlySpan<int> predictions)
    {
        var info = GlueTaskInfo.Get(task);
        if (info.IsRegression) throw new ArgumentException($"{info.Name} is scored on real-valued predictions; use the double overload.", nameof(task));
        var metrics = new Dictionary<GlueMetricKind, double>();
        foreach (var m in info.Metrics)
        {
            metrics[m] = m switch
            {
                GlueMetricKind.Accuracy => Accuracy(labels, predictions),
                GlueMetricKind.F1Score => F1Score(labels, predictions, positiveClass: 1), // label "1" (MRPC, QQP)
                GlueMetricKind.MatthewsCorrelation => MatthewsCorrelation(labels, predictions),
                _ => throw new InvalidOperationException($"{m} does not apply to class predictions."),
            };
        }
        return new GlueResult(task, metrics);
    }

    /// <summary>The task's metrics for real-valued predictions (STS-B).</summary>
    /// <exception cref="ArgumentException">The task is a classification task (use the overload for classes).</exception>
    public static GlueResult Evaluate(GlueTask task, ReadOnlySpan<double> labels, ReadOnlySpan<double> predictions)
    {
        var info = GlueTaskInfo.Get(task);
        if (!info.IsRegression) throw new ArgumentException($"{info.Name} is scored on class predictions; use the int overload.", nameof(task));
        var metrics = new Dictionary<GlueMetricKind, double>();
        foreach (var m in info.Metrics)
        {
            metrics[m] = m switch
            {
                GlueMetricKind.PearsonCorrelation => PearsonCorrelation(labels, predictions),
                GlueMetricKind.SpearmanCorrelation => SpearmanCorrelation(labels, predictions),
                _ => throw new InvalidOperationException($"{m} does not apply to real-valued predictions."),
            };
        }
        return new GlueResult(task, metrics);
    }

    private static void CheckClasses(ReadOnlySpan<int> labels, ReadOnlySpan<int> predictions)
    {
        CheckLengths(labels.Length, predictions.Length);
        foreach (var v in labels) if (v < 0) throw new ArgumentOutOfRangeException(nameof(labels), v, "Class indexes are 0 or more.");
        foreach (var v in predictions) if (v < 0) throw new ArgumentOutOfRangeException(nameof(predictions), v, "Class indexes are 0 or more.");
    }

    private static void CheckValues(ReadOnlySpan<double> x, ReadOnlySpan<double> y)
    {
        CheckLengths(x.Length, y.Length);
        foreach (var v in x) if (double.IsNaN(v)) throw new ArgumentException("The labels contain NaN.", nameof(x));
        foreach (var v in y) if (double.IsNaN(v)) throw new ArgumentException("The predictions contain NaN.", nameof(y));
    }

    private static void CheckLengths(int labels, int predictions)
    {
        if (labels != predictions) throw new ArgumentException($"{labels} labels but {predictions} predictions.");
        if (labels == 0) throw new ArgumentException("There are no examples to score.");
    }
}

/// <summary>A GLUE task's metrics and its score (their mean, as GLUE and the MosaicBERT recipe average them).</summary>
public sealed class GlueResult
{
    internal GlueResult(GlueTask task, IReadOnlyDictionary<GlueMetricKind, double> metrics)
    {
        Task = task;
        Metrics = metrics;
        Score = metrics.Values.Average();
    }

    /// <summary>The task.</summary>
    public GlueTask Task { get; }

    /// <summary>Each of the task's metrics.</summary>
    public IReadOnlyDictionary<GlueMetricKind, double> Metrics { get; }

    /// <summary>The mean of <see cref="Metrics"/>.</summary>
    public double Score { get; }

    /// <summary>E.g. <c>MRPC: Accuracy 0.8500, F1Score 0.8900, score 0.8700</c>.</summary>
    public override string ToString() =>
        $"{GlueTaskInfo.Get(Task).Name}: {string.Join(", ", Metrics.Select(m => string.Create(CultureInfo.InvariantCulture, $"{m.Key} {m.Value:F4}")))}, score {Score.ToString("F4", CultureInfo.InvariantCulture)}";
}
