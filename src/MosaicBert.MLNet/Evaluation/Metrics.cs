using System.Collections.Immutable;
using System.Globalization;
using System.Text;
using MosaicBert.ML.Glue;

namespace MosaicBert.ML.Data;

/// <summary>
/// Counts of (actual class, predicted class) pairs (as Microsoft.ML.Data.ConfusionMatrix). Rows are actual classes,
/// columns predicted ones.
/// </summary>
public sealed class ConfusionMatrix
{
    internal ConfusionMatrix(double[][] counts, IReadOnlyList<string> classNames)
    {
        var k = counts.Length;
        Counts = [.. counts.Select(row => (IReadOnlyList<double>)row.ToImmutableArray())];
        PredictedClassesIndicators = [.. classNames];
        var recall = new double[k];
        var precision = new double[k];
        for (var i = 0; i < k; i++)
        {
            var actual = counts[i].Sum();
            var predicted = counts.Sum(row => row[i]);
            recall[i] = actual == 0 ? 0 : counts[i][i] / actual;
            precision[i] = predicted == 0 ? 0 : counts[i][i] / predicted;
        }
        PerClassRecall = [.. recall];
        PerClassPrecision = [.. precision];
    }

    /// <summary>For each class: correct predictions of it / all predictions of it (0 when never predicted).</summary>
    public IReadOnlyList<double> PerClassPrecision { get; }

    /// <summary>For each class: correct predictions of it / all rows of it (0 when absent).</summary>
    public IReadOnlyList<double> PerClassRecall { get; }

    /// <summary>The counts: <c>Counts[actual][predicted]</c>.</summary>
    public IReadOnlyList<IReadOnlyList<double>> Counts { get; }

    /// <summary>The number of classes.</summary>
    public int NumberOfClasses => Counts.Count;

    /// <summary>The class names (the label's key values, or "positive"/"negative" for binary classification).</summary>
    public IReadOnlyList<string> PredictedClassesIndicators { get; }

    /// <summary>The count of rows of class <paramref name="actualClassIndicatorIndex"/> predicted as <paramref name="predictedClassIndicatorIndex"/>.</summary>
    public double GetCountForClassPair(int predictedClassIndicatorIndex, int actualClassIndicatorIndex) =>
        Counts[actualClassIndicatorIndex][predictedClassIndicatorIndex];

    /// <summary>The table as ML.NET prints it: counts, recall per row, precision per column.</summary>
    public string GetFormattedConfusionTable()
    {
        var names = PredictedClassesIndicators;
        var cells = Counts.Select(row => row.Select(c => c.ToString(CultureInfo.InvariantCulture)).ToArray()).ToArray();
        var width = Math.Max(6, Math.Max(names.Max(n => n.Length), cells.SelectMany(r => r).Max(c => c.Length)));
        var head = Math.Max(9, names.Max(n => n.Length));
        var rule = new string(' ', head) + " ||" + new string('=', (width + 3) * names.Count);
        var sb = new StringBuilder();
        sb.AppendLine("Confusion table");
        sb.AppendLine(rule);
        sb.Append("PREDICTED".PadRight(head)).Append(" ||");
        foreach (var n in names) sb.Append(' ').Append(n.PadLeft(width)).Append(" |");
        sb.AppendLine(" Recall");
        sb.AppendLine("TRUTH".PadRight(head) + " ||" + rule[(head + 3)..]);
        for (var i = 0; i < names.Count; i++)
        {
            sb.Append(names[i].PadLeft(head)).Append(" ||");
            foreach (var c in cells[i]) sb.Append(' ').Append(c.PadLeft(width)).Append(" |");
            sb.Append(' ').AppendLine(PerClassRecall[i].ToString("F4", CultureInfo.InvariantCulture));
        }
        sb.AppendLine(rule);
        sb.Append("Precision".PadRight(head)).Append(" ||");
        foreach (var p in PerClassPrecision) sb.Append(' ').Append(p.ToString("F4", CultureInfo.InvariantCulture).PadLeft(width)).Append(" |");
        return sb.AppendLine().ToString();
    }

    /// <inheritdoc/>
    public override string ToString() => GetFormattedConfusionTable();
}

/// <summary>
/// Multiclass classification quality (as Microsoft.ML.Data.MulticlassClassificationMetrics), plus the GLUE metrics
/// ML.NET lacks: <see cref="MatthewsCorrelation"/> and, for two classes, <see cref="F1Score"/>.
/// </summary>
public sealed class MulticlassClassificationMetrics
{
    internal MulticlassClassificationMetrics(double microAccuracy, double macroAccuracy, double logLoss, double logLossReduction,
        int topKPredictionCount, IReadOnlyList<double>? topKAccuracyForAllK, IReadOnlyList<double> perClassLogLoss, ConfusionMatrix confusionMatrix)
    {
        MicroAccuracy = microAccuracy;
        MacroAccuracy = macroAccuracy;
        LogLoss = logLoss;
        LogLossReduction = logLossReduction;
        TopKPredictionCount = topKPredictionCount;
        TopKAccuracyForAllK = topKAccuracyForAllK;
        TopKAccuracy = topKAccuracyForAllK is { Count: > 0 } all ? all[^1] : 0;
        PerClassLogLoss = perClassLogLoss;
        ConfusionMatrix = confusionMatrix;
        MatthewsCorrelation = GlueMetrics.MatthewsCorrelation(confusionMatrix.Counts);
        if (confusionMatrix.NumberOfClasses == 2)
        {
            var c = confusionMatrix.Counts;
            F1Score = GlueMetrics.F1(tp: c[1][1], fp: c[0][1], fn: c[1][0]);
        }
    }

    /// <summary>Fraction of rows predicted correctly (GLUE's accuracy).</summary>
    public double MicroAccuracy { get; }

    /// <summary>Mean over classes present in the labels of the fraction of their rows predicted correctly.</summary>
    public double MacroAccuracy { get; }

    /// <summary>Mean of −ln(score of the true class), scores clamped below at 1e-15. Meaningful when scores are probabilities.</summary>
    public double LogLoss { get; }

    /// <summary>(prior log loss − <see cref="LogLoss"/>) / prior log loss, the prior predicting the label frequencies; NaN with one class.</summary>
    public double LogLossReduction { get; }

    /// <summary>The k of <see cref="TopKAccuracy"/>; 0 when not requested.</summary>
    public int TopKPredictionCount { get; }

    /// <summary>Fraction of rows whose true class is among the k highest scores; 0 when not requested.</summary>
    public double TopKAccuracy { get; }

    /// <summary>Top-k accuracy for k = 1..<see cref="TopKPredictionCount"/>; null when not requested.</summary>
    public IReadOnlyList<double>? TopKAccuracyForAllK { get; }

    /// <summary><see cref="LogLoss"/> over the rows of each class (0 for classes without rows).</summary>
    public IReadOnlyList<double> PerClassLogLoss { get; }

    /// <summary>The confusion matrix.</summary>
    public ConfusionMatrix ConfusionMatrix { get; }

    /// <summary>Matthews correlation coefficient (multiclass form; 0 when labels or predictions are all one class). CoLA's metric.</summary>
    public double MatthewsCorrelation { get; }

    /// <summary>For two classes, F1 of the second class (key 2; with ByValue keys on "0"/"1" labels, label "1", as GLUE's
    /// MRPC and QQP F1); null otherwise.</summary>
    public double? F1Score { get; }
}

/// <summary>
/// Binary classification quality (as Microsoft.ML.Data.BinaryClassificationMetrics, without the precision-recall
/// curve area), plus <see cref="MatthewsCorrelation"/>.
/// </summary>
public class BinaryClassificationMetrics
{
    private protected BinaryClassificationMetrics(double tp, double fp, double tn, double fn, double auc)
    {
        var n = tp + fp + tn + fn;
        Accuracy = (tp + tn) / n;
        PositivePrecision = tp + fp == 0 ? 0 : tp / (tp + fp);
        PositiveRecall = tp + fn == 0 ? 0 : tp / (tp + fn);
        NegativePrecision = tn + fn == 0 ? 0 : tn / (tn + fn);
        NegativeRecall = tn + fp == 0 ? 0 : tn / (tn + fp);
        F1Score = GlueMetrics.F1(tp, fp, fn);
        AreaUnderRocCurve = auc;
        ConfusionMatrix = new ConfusionMatrix([[tp, fn], [fp, tn]], ["positive", "negative"]);
        MatthewsCorrelation = GlueMetrics.MatthewsCorrelation(ConfusionMatrix.Counts);
    }

    internal static BinaryClassificationMetrics Create(double tp, double fp, double tn, double fn, double auc) => new(tp, fp, tn, fn, auc);

    /// <summary>Fraction of rows predicted correctly.</summary>
    public double Accuracy { get; }

    /// <summary>Probability that a random positive row scores above a random negative one (ties count half); NaN
    /// without both classes.</summary>
    public double AreaUnderRocCurve { get; }

    /// <summary>F1 of the positive class (0 when it is never labelled nor predicted).</summary>
    public double F1Score { get; }

    /// <summary>TP / (TP + FP), 0 when nothing is predicted positive.</summary>
    public double PositivePrecision { get; }

    /// <summary>TP / (TP + FN), 0 without positive rows.</summary>
    public double PositiveRecall { get; }

    /// <summary>TN / (TN + FN), 0 when nothing is predicted negative.</summary>
    public double NegativePrecision { get; }

    /// <summary>TN / (TN + FP), 0 without negative rows.</summary>
    public double NegativeRecall { get; }

    /// <summary>The 2×2 confusion matrix, class "positive" first (as ML.NET).</summary>
    public ConfusionMatrix ConfusionMatrix { get; }

    /// <summary>Matthews correlation coefficient, (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 when a factor is 0.</summary>
    public double MatthewsCorrelation { get; }
}

/// <summary>Binary classification quality with probability-based metrics (as Microsoft.ML.Data.CalibratedBinaryClassificationMetrics).</summary>
public sealed class CalibratedBinaryClassificationMetrics : BinaryClassificationMetrics
{
    internal CalibratedBinaryClassificationMetrics(double tp, double fp, double tn, double fn, double auc, double logLoss, double entropy)
        : base(tp, fp, tn, fn, auc)
    {
        LogLoss = logLoss;
        Entropy = entropy;
        LogLossReduction = entropy == 0 ? double.NaN : (entropy - logLoss) / entropy;
    }

    /// <summary>Mean of −log2(probability of the true class), probabilities clamped to [1e-15, 1 − 1e-15] (ML.NET uses base 2 for binary).</summary>
    public double LogLoss { get; }

    /// <summary>(<see cref="Entropy"/> − <see cref="LogLoss"/>) / <see cref="Entropy"/>; NaN with one class.</summary>
    public double LogLossReduction { get; }

    /// <summary>Entropy of the label distribution in bits: the log loss of always predicting the positive rate.</summary>
    public double Entropy { get; }
}

/// <summary>
/// Regression quality (as Microsoft.ML.Data.RegressionMetrics), plus the correlations STS-B is scored with.
/// </summary>
public sealed class RegressionMetrics
{
    internal RegressionMetrics(double meanAbsoluteError, double meanSquaredError, double rSquared, double pearson, double spearman)
    {
        MeanAbsoluteError = meanAbsoluteError;
        MeanSquaredError = meanSquaredError;
        RootMeanSquaredError = Math.Sqrt(meanSquaredError);
        LossFunction = meanSquaredError;
        RSquared = rSquared;
        PearsonCorrelation = pearson;
        SpearmanCorrelation = spearman;
    }

    /// <summary>Mean of |label − score|.</summary>
    public double MeanAbsoluteError { get; }

    /// <summary>Mean of (label − score)².</summary>
    public double MeanSquaredError { get; }

    /// <summary>√<see cref="MeanSquaredError"/>.</summary>
    public double RootMeanSquaredError { get; }

    /// <summary>Mean of the loss function (squared loss, so equal to <see cref="MeanSquaredError"/>).</summary>
    public double LossFunction { get; }

    /// <summary>1 − Σ(label − score)² / Σ(label − mean label)²; NaN when the labels are constant.</summary>
    public double RSquared { get; }

    /// <summary>Pearson correlation of labels and scores; NaN when either is constant.</summary>
    public double PearsonCorrelation { get; }

    /// <summary>Spearman rank correlation (tied ranks averaged); NaN when either is constant. STS-B's metric.</summary>
    public double SpearmanCorrelation { get; }
}
