using System.Globalization;
using MosaicBert.ML.Data;
using MosaicBert.ML.Glue;

namespace MosaicBert.ML;

/// <summary>
/// Multiclass classification (as Microsoft.ML.MulticlassClassificationCatalog): trainers attach to
/// <see cref="Trainers"/> as extension methods, e.g. <c>TextClassification</c>.
/// </summary>
public sealed class MulticlassClassificationCatalog : CatalogBase
{
    internal MulticlassClassificationCatalog(MLContext context) : base(context) => Trainers = new MulticlassClassificationTrainers(context);

    /// <summary>The trainers (extension methods on this object).</summary>
    public MulticlassClassificationTrainers Trainers { get; }

    /// <summary>Where multiclass trainers attach.</summary>
    public sealed class MulticlassClassificationTrainers : CatalogBase
    {
        internal MulticlassClassificationTrainers(MLContext context) : base(context) { }
    }

    /// <summary>
    /// Evaluates scored data: a key label, a known-size float vector score (class probabilities for
    /// <see cref="MulticlassClassificationMetrics.LogLoss"/> to mean anything), and the key predicted label. Rows with
    /// label key 0 (missing) are skipped with a warning. When the predicted-label column is absent or no longer a key
    /// (e.g. after <c>MapKeyToValue("PredictedLabel")</c>), the class with the highest score is used, as ML.NET does.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A column is missing or has the wrong type.</exception>
    /// <exception cref="InvalidOperationException">The data has no (labelled) rows, or a label is beyond the score size.</exception>
    public MulticlassClassificationMetrics Evaluate(IDataView data, string labelColumnName = "Label", string scoreColumnName = "Score",
        string predictedLabelColumnName = "PredictedLabel", int topKPredictionCount = 0)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentOutOfRangeException.ThrowIfNegative(topKPredictionCount);
        const string Source = "MulticlassClassificationEvaluator";
        var label = Evaluation.Require(data, labelColumnName, "label", t => t is KeyDataViewType, "a key (use MapValueToKey)");
        var score = Evaluation.Require(data, scoreColumnName, "score",
            t => t is VectorDataViewType { IsKnownSize: true, ItemType: NumberDataViewType n } && n == NumberDataViewType.Single, "a known-size vector of Single");
        var k = ((VectorDataViewType)score.Type).Size;
        var predicted = data.Schema.GetColumnOrNull(predictedLabelColumnName) is { Type: KeyDataViewType } p ? p : (DataViewSchema.Column?)null;

        var labels = ColumnarDataView.Values<uint>(data, label);
        var scores = ColumnarDataView.Values<float[]>(data, score);
        var predictions = predicted is { } pc ? ColumnarDataView.Values<uint>(data, pc) : null;
        Evaluation.RequireRows(labels.Length);

        var counts = Enumerable.Range(0, k).Select(_ => new double[k]).ToArray();
        var perClassLoss = new double[k];
        var topK = new double[topKPredictionCount];
        double logLoss = 0, n = 0;
        for (var r = 0; r < labels.Length; r++)
        {
            if (labels[r] == 0) continue;
            var truth = (int)labels[r] - 1;
            if (truth >= k) throw new InvalidOperationException($"Row {r}: label key {labels[r]} has no score; '{scoreColumnName}' has {k} classes.");
            var s = scores[r];
            var guess = predictions is null ? ArgMax(s) : (int)predictions[r] - 1;
            if (guess < 0 || guess >= k) throw new InvalidOperationException($"Row {r}: predicted key {predictions![r]} is not one of the {k} classes.");
            counts[truth][guess]++;
            var loss = -Math.Log(Math.Max(s[truth], 1e-15));
            logLoss += loss;
            perClassLoss[truth] += loss;
            // Rank of the true class: classes scoring higher, or equal with a lower index (argmax picks the first).
            var rank = 0;
            for (var j = 0; j < k; j++) rank += s[j] > s[truth] || (s[j] == s[truth] && j < truth) ? 1 : 0;
            for (var t = rank; t < topK.Length; t++) topK[t]++;
            n++;
        }
        Evaluation.RequireLabelled(n, labels.Length, Context, Source);

        var perClassRows = counts.Select(row => row.Sum()).ToArray();
        var present = Enumerable.Range(0, k).Where(i => perClassRows[i] > 0).ToArray();
        var prior = -present.Sum(i => perClassRows[i] / n * Math.Log(perClassRows[i] / n));
        var confusion = new ConfusionMatrix(counts, ClassNames(label, k));
        return new MulticlassClassificationMetrics(
            microAccuracy: Enumerable.Range(0, k).Sum(i => counts[i][i]) / n,
            macroAccuracy: present.Average(i => counts[i][i] / perClassRows[i]),
            logLoss: logLoss / n,
            logLossReduction: prior == 0 ? double.NaN : (prior - logLoss / n) / prior,
            topKPredictionCount,
            topKPredictionCount == 0 ? null : [.. topK.Select(c => c / n)],
            [.. Enumerable.Range(0, k).Select(i => perClassRows[i] == 0 ? 0 : perClassLoss[i] / perClassRows[i])],
            confusion);
    }

    private static int ArgMax(float[] s)
    {
        var best = 0;
        for (var j = 1; j < s.Length; j++) if (s[j] > s[best]) best = j;
        return best;
    }

    /// <summary>The label's key values as text, or "0".."k-1" without them.</summary>
    private static string[] ClassNames(DataViewSchema.Column label, int k)
    {
        var names = Enumerable.Range(0, k).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToArray();
        if (label.Annotations.TryGetValue<Array>(AnnotationUtils.Kinds.KeyValues, out var values))
        {
            for (var i = 0; i < Math.Min(k, values.Length); i++) names[i] = Convert.ToString(values.GetValue(i), CultureInfo.InvariantCulture) ?? names[i];
        }
        return names;
    }
}

/// <summary>Binary classification (as Microsoft.ML.BinaryClassificationCatalog).</summary>
public sealed class BinaryClassificationCatalog : CatalogBase
{
    internal BinaryClassificationCatalog(MLContext context) : base(context) => Trainers = new BinaryClassificationTrainers(context);

    /// <summary>The trainers (extension methods on this object).</summary>
    public BinaryClassificationTrainers Trainers { get; }

    /// <summary>Where binary trainers attach.</summary>
    public sealed class BinaryClassificationTrainers : CatalogBase
    {
        internal BinaryClassificationTrainers(MLContext context) : base(context) { }
    }

    /// <summary>
    /// Evaluates scored data with a probability column: a Boolean label (or Single, positive when > 0, NaN = missing),
    /// Single score and probability, Boolean predicted label (when absent: score > 0).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A column is missing or has the wrong type.</exception>
    /// <exception cref="InvalidOperationException">The data has no (labelled) rows.</exception>
    public CalibratedBinaryClassificationMetrics Evaluate(IDataView data, string labelColumnName = "Label", string scoreColumnName = "Score",
        string probabilityColumnName = "Probability", string predictedLabelColumnName = "PredictedLabel")
    {
        ArgumentNullException.ThrowIfNull(data);
        var probability = Evaluation.Require(data, probabilityColumnName, "probability", t => t == NumberDataViewType.Single, "Single");
        var c = Count(data, labelColumnName, scoreColumnName, predictedLabelColumnName, ColumnarDataView.Values<float>(data, probability));
        double pos = c.Tp + c.Fn, n = c.Tp + c.Fn + c.Fp + c.Tn;
        var entropy = Entropy2(pos / n);
        return new CalibratedBinaryClassificationMetrics(c.Tp, c.Fp, c.Tn, c.Fn, c.Auc, c.LogLoss / n, entropy);
    }

    /// <summary>Evaluates scored data without probabilities (see <see cref="Evaluate"/> for the columns).</summary>
    public BinaryClassificationMetrics EvaluateNonCalibrated(IDataView data, string labelColumnName = "Label", string scoreColumnName = "Score",
        string predictedLabelColumnName = "PredictedLabel")
    {
        ArgumentNullException.ThrowIfNull(data);
        var c = Count(data, labelColumnName, scoreColumnName, predictedLabelColumnName, probabilities: null);
        return BinaryClassificationMetrics.Create(c.Tp, c.Fp, c.Tn, c.Fn, c.Auc);
    }

    private (double Tp, double Fp, double Tn, double Fn, double Auc, double LogLoss) Count(IDataView data, string labelName,
        string scoreName, string predictedName, float[]? probabilities)
    {
        const string Source = "BinaryClassifierEvaluator";
        var label = Evaluation.Require(data, labelName, "label", t => t == BooleanDataViewType.Instance || t == NumberDataViewType.Single, "Boolean or Single");
        var score = Evaluation.Require(data, scoreName, "score", t => t == NumberDataViewType.Single, "Single");
        var predicted = data.Schema.GetColumnOrNull(predictedName) is { } p && p.Type == BooleanDataViewType.Instance ? p : (DataViewSchema.Column?)null;
        var rows = ColumnarDataView.RowCountOf(data);
        Evaluation.RequireRows(rows);
        var truths = label.Type == BooleanDataViewType.Instance
            ? ColumnarDataView.Values<bool>(data, label).Select(b => b ? 1f : 0f).ToArray()
            : ColumnarDataView.Values<float>(data, label);
        var scores = ColumnarDataView.Values<float>(data, score);
        var predictions = predicted is { } pc ? ColumnarDataView.Values<bool>(data, pc) : null;

        double tp = 0, fp = 0, tn = 0, fn = 0, logLoss = 0, badScores = 0;
        var aucLabels = new List<bool>();
        var aucScores = new List<double>();
        for (var r = 0; r < rows; r++)
        {
            if (float.IsNaN(truths[r])) continue;
            if (!float.IsFinite(scores[r]))
            {
                badScores++;
                continue;
            }
            var truth = truths[r] > 0;
            var guess = predictions?[r] ?? scores[r] > 0;
            if (truth && guess) tp++;
            else if (guess) fp++;
            else if (!truth) tn++;
            else fn++;
            aucLabels.Add(truth);
            aucScores.Add(scores[r]);
            if (probabilities is not null)
            {
                var pr = Math.Clamp(probabilities[r], 1e-15, 1 - 1e-15);
                logLoss -= Math.Log2(truth ? pr : 1 - pr);
            }
        }
        if (badScores > 0) Context.WriteLog(ChannelMessageKind.Warning, Source, $"{badScores} rows with a non-finite score were skipped.");
        Evaluation.RequireLabelled(aucLabels.Count, rows - badScores, Context, Source);
        return (tp, fp, tn, fn, Auc(aucLabels, aucScores), logLoss);
    }

    /// <summary>ROC AUC as the Mann–Whitney statistic: (Σ ranks of positives − P(P+1)/2) / (P·N), ties getting average ranks.</summary>
    private static double Auc(List<bool> labels, List<double> scores)
    {
        var ranks = GlueMetrics.AverageRanks([.. scores]);
        double positives = labels.Count(l => l), negatives = labels.Count - positives, rankSum = 0;
        for (var i = 0; i < labels.Count; i++) if (labels[i]) rankSum += ranks[i];
        return positives == 0 || negatives == 0 ? double.NaN : (rankSum - positives * (positives + 1) / 2) / (positives * negatives);
    }

    private static double Entropy2(double p) => p is <= 0 or >= 1 ? 0 : -(p * Math.Log2(p) + (1 - p) * Math.Log2(1 - p));
}

/// <summary>Regression (as Microsoft.ML.RegressionCatalog); sentence-similarity trainers attach to <see cref="Trainers"/>.</summary>
public sealed class RegressionCatalog : CatalogBase
{
    internal RegressionCatalog(MLContext context) : base(context) => Trainers = new RegressionTrainers(context);

    /// <summary>The trainers (extension methods on this object).</summary>
    public RegressionTrainers Trainers { get; }

    /// <summary>Where regression trainers attach.</summary>
    public sealed class RegressionTrainers : CatalogBase
    {
        internal RegressionTrainers(MLContext context) : base(context) { }
    }

    /// <summary>Evaluates scored data: Single label (NaN = missing, skipped) and Single score (non-finite scores are
    /// skipped with a warning, as ML.NET does).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A column is missing or has the wrong type.</exception>
    /// <exception cref="InvalidOperationException">The data has no (labelled) rows.</exception>
    public RegressionMetrics Evaluate(IDataView data, string labelColumnName = "Label", string scoreColumnName = "Score")
    {
        ArgumentNullException.ThrowIfNull(data);
        const string Source = "RegressionEvaluator";
        var label = Evaluation.Require(data, labelColumnName, "label", t => t == NumberDataViewType.Single, "Single");
        var score = Evaluation.Require(data, scoreColumnName, "score", t => t == NumberDataViewType.Single, "Single");
        var labels = ColumnarDataView.Values<float>(data, label);
        var scores = ColumnarDataView.Values<float>(data, score);
        Evaluation.RequireRows(labels.Length);
        var kept = Enumerable.Range(0, labels.Length).Where(r => !float.IsNaN(labels[r]) && float.IsFinite(scores[r])).ToArray();
        var badScores = Enumerable.Range(0, labels.Length).Count(r => !float.IsNaN(labels[r]) && !float.IsFinite(scores[r]));
        if (badScores > 0) Context.WriteLog(ChannelMessageKind.Warning, Source, $"{badScores} rows with a non-finite score were skipped.");
        Evaluation.RequireLabelled(kept.Length, labels.Length - badScores, Context, Source);

        double[] y = [.. kept.Select(r => (double)labels[r])], f = [.. kept.Select(r => (double)scores[r])];
        var mean = y.Average();
        double abs = 0, sq = 0, total = 0;
        for (var i = 0; i < y.Length; i++)
        {
            abs += Math.Abs(y[i] - f[i]);
            sq += (y[i] - f[i]) * (y[i] - f[i]);
            total += (y[i] - mean) * (y[i] - mean);
        }
        return new RegressionMetrics(abs / y.Length, sq / y.Length, total == 0 ? double.NaN : 1 - sq / total,
            GlueMetrics.PearsonCorrelation(y, f), GlueMetrics.SpearmanCorrelation(y, f));
    }
}

/// <summary>Column and row checks shared by the evaluators.</summary>
internal static class Evaluation
{
    public static DataViewSchema.Column Require(IDataView data, string name, string role, Func<DataViewType, bool> accepts, string expected)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        var column = data.Schema.GetColumnOrNull(name)
            ?? throw new ArgumentOutOfRangeException(nameof(data), $"The {role} column '{name}' is missing; the columns are: {data.Schema}.");
        return accepts(column.Type)
            ? column
            : throw new ArgumentOutOfRangeException(nameof(data), $"The {role} column '{name}' must be {expected}, but is {column.Type}.");
    }

    public static void RequireRows(int rows)
    {
        if (rows == 0) throw new InvalidOperationException("Cannot evaluate: the data has no rows (is the file empty, or was everything filtered out?).");
    }

    /// <summary>Fails when no row had a label; warns about skipped unlabelled rows.</summary>
    public static void RequireLabelled(double labelled, double candidates, MLContext context, string source)
    {
        if (labelled == 0) throw new InvalidOperationException("Cannot evaluate: no row has a label (all labels are missing).");
        if (candidates > labelled) context.WriteLog(ChannelMessageKind.Warning, source, $"{candidates - labelled} rows without a label were skipped.");
    }
}
