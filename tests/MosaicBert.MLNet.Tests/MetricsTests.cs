using MosaicBert.ML;
using MosaicBert.ML.Data;
using MosaicBert.ML.Glue;

namespace MosaicBert.MLNet.Tests;

/// <summary>Metrics against cases computed by hand (the computation is in the comments).</summary>
public sealed class MetricsTests
{
    // Shared binary case. Pairs (label, prediction):
    //   (1,1) (1,0) (1,1) (0,0) (0,1) (0,0) (1,1) (0,0)  →  TP = 3, FN = 1, FP = 1, TN = 3.
    private static readonly int[] s_labels = [1, 1, 1, 0, 0, 0, 1, 0];
    private static readonly int[] s_predictions = [1, 0, 1, 0, 1, 0, 1, 0];

    [Fact]
    public void AccuracyAndF1()
    {
        Assert.Equal(6 / 8.0, GlueMetrics.Accuracy(s_labels, s_predictions));
        // F1 = 2·TP / (2·TP + FP + FN) = 6 / (6 + 1 + 1) = 0.75.
        Assert.Equal(0.75, GlueMetrics.F1Score(s_labels, s_predictions));
        // Class 0 as positive: TP = 3, FP = 1 (row 1), FN = 1 (row 4): also 0.75.
        Assert.Equal(0.75, GlueMetrics.F1Score(s_labels, s_predictions, positiveClass: 0));
        // No positive label or prediction: 0 (scikit-learn's zero_division).
        Assert.Equal(0, GlueMetrics.F1Score([0, 0], [0, 0]));
    }

    [Fact]
    public void MatthewsBinary()
    {
        // (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (9 − 1) / √(4·4·4·4) = 8 / 16.
        Assert.Equal(0.5, GlueMetrics.MatthewsCorrelation(s_labels, s_predictions), 12);
        Assert.Equal(1, GlueMetrics.MatthewsCorrelation([0, 1, 1], [0, 1, 1]), 12);
        Assert.Equal(-1, GlueMetrics.MatthewsCorrelation([0, 1, 1], [1, 0, 0]), 12);
    }

    [Fact]
    public void MatthewsDegenerateIsZero()
    {
        // All labels one class: s² − Σt² = 0, so the denominator is 0 and MCC is defined as 0.
        Assert.Equal(0, GlueMetrics.MatthewsCorrelation([1, 1, 1, 1], [1, 0, 1, 0]));
        // All predictions one class (a CoLA model that always says "acceptable").
        Assert.Equal(0, GlueMetrics.MatthewsCorrelation([1, 0, 1, 0], [1, 1, 1, 1]));
        Assert.Equal(0, GlueMetrics.MatthewsCorrelation([1, 1], [1, 1]));
    }

    [Fact]
    public void MatthewsMulticlass()
    {
        // labels 0 0 1 1 2 2, predictions 0 1 1 1 2 0. Confusion (rows = label):
        //   [1 1 0]   t (row sums) = 2 2 2, p (column sums) = 2 3 1, c (trace) = 4, s = 6
        //   [0 2 0]   c·s − Σt·p = 24 − (4 + 6 + 2) = 12
        //   [1 0 1]   s² − Σp² = 36 − 14 = 22,  s² − Σt² = 36 − 12 = 24  →  MCC = 12 / √(22·24)
        Assert.Equal(12 / Math.Sqrt(22 * 24), GlueMetrics.MatthewsCorrelation([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]), 12);
    }

    [Fact]
    public void Pearson()
    {
        // x = 1..5 (mean 3), y = 2 4 5 4 5 (mean 4); dx = −2 −1 0 1 2, dy = −2 0 1 0 1.
        // Σdx·dy = 4 + 0 + 0 + 0 + 2 = 6, Σdx² = 10, Σdy² = 6  →  r = 6 / √60.
        Assert.Equal(6 / Math.Sqrt(60), GlueMetrics.PearsonCorrelation([1, 2, 3, 4, 5], [2, 4, 5, 4, 5]), 12);
        Assert.Equal(-1, GlueMetrics.PearsonCorrelation([1, 2, 3], [6, 4, 2]), 12);
        Assert.True(double.IsNaN(GlueMetrics.PearsonCorrelation([1, 2, 3], [5, 5, 5]))); // constant side: undefined, as SciPy
    }

    [Fact]
    public void SpearmanAveragesTiedRanks()
    {
        // y = 2 4 5 4 5: sorted 2 | 4 4 | 5 5 take ranks 1 | 2,3 | 4,5, so ties get 2.5 and 4.5:
        // ranks(y) = 1 2.5 4.5 2.5 4.5 (mean 3), ranks(x) = 1..5.
        // d(ranks x) = −2 −1 0 1 2, d(ranks y) = −2 −0.5 1.5 −0.5 1.5
        // Σ = 4 + 0.5 + 0 − 0.5 + 3 = 7, Σdx² = 10, Σdy² = 4 + 0.25 + 2.25 + 0.25 + 2.25 = 9  →  ρ = 7 / √90.
        Assert.Equal([1, 2.5, 4.5, 2.5, 4.5], GlueMetrics.AverageRanks([2, 4, 5, 4, 5]));
        Assert.Equal(7 / Math.Sqrt(90), GlueMetrics.SpearmanCorrelation([1, 2, 3, 4, 5], [2, 4, 5, 4, 5]), 12);
        // Monotone but not linear: Spearman 1, Pearson below 1.
        Assert.Equal(1, GlueMetrics.SpearmanCorrelation([1, 2, 3, 4], [1, 4, 9, 100]), 12);
    }

    [Fact]
    public void InvalidInputsAreRejected()
    {
        Assert.Throws<ArgumentException>(() => GlueMetrics.Accuracy([], []));
        Assert.Throws<ArgumentException>(() => GlueMetrics.Accuracy([1], [1, 0]));
        Assert.Throws<ArgumentOutOfRangeException>(() => GlueMetrics.MatthewsCorrelation([-1], [0]));
        Assert.Throws<ArgumentException>(() => GlueMetrics.PearsonCorrelation([1, double.NaN], [1, 2]));
    }

    [Fact]
    public void TaskEvaluationUsesTheTaskMetrics()
    {
        var mrpc = GlueMetrics.Evaluate(GlueTask.Mrpc, s_labels, s_predictions);
        Assert.Equal([GlueMetricKind.Accuracy, GlueMetricKind.F1Score], mrpc.Metrics.Keys);
        Assert.Equal((0.75 + 0.75) / 2, mrpc.Score);
        Assert.Equal("MRPC: Accuracy 0.7500, F1Score 0.7500, score 0.7500", mrpc.ToString());

        Assert.Equal(0.5, GlueMetrics.Evaluate(GlueTask.Cola, s_labels, s_predictions).Score, 12);
        var stsb = GlueMetrics.Evaluate(GlueTask.StsB, [1.0, 2, 3, 4, 5], [2.0, 4, 5, 4, 5]);
        Assert.Equal([GlueMetricKind.SpearmanCorrelation], stsb.Metrics.Keys);
        Assert.Equal(7 / Math.Sqrt(90), stsb.Score, 12);
        Assert.Throws<ArgumentException>(() => GlueMetrics.Evaluate(GlueTask.StsB, s_labels, s_predictions));
        Assert.Throws<ArgumentException>(() => GlueMetrics.Evaluate(GlueTask.Sst2, [1.0], [1.0]));
    }

    private sealed class BinaryRow
    {
        public bool Label { get; set; }

        public float Score { get; set; }

        public float Probability { get; set; }

        public bool PredictedLabel { get; set; }
    }

    [Fact]
    public void BinaryCatalogEvaluate()
    {
        var ctx = new MLContext(seed: 1);
        // Labels and predictions (Score > 0) as in s_labels / s_predictions; the negative in row 4 ties the positive in row 2 at 0.5.
        float[] scores = [2.0f, -1.0f, 0.5f, -2.0f, 0.5f, -0.5f, 3.0f, -3.0f];
        float[] probabilities = [0.8f, 0.4f, 0.6f, 0.1f, 0.6f, 0.3f, 0.9f, 0.05f];
        var data = ctx.Data.LoadFromEnumerable(Enumerable.Range(0, 8).Select(i => new BinaryRow
        {
            Label = s_labels[i] == 1, Score = scores[i], Probability = probabilities[i], PredictedLabel = scores[i] > 0,
        }));

        var m = ctx.BinaryClassification.Evaluate(data);

        Assert.Equal(0.75, m.Accuracy);
        Assert.Equal((0.75, 0.75, 0.75, 0.75, 0.75), (m.PositivePrecision, m.PositiveRecall, m.NegativePrecision, m.NegativeRecall, m.F1Score));
        Assert.Equal(0.5, m.MatthewsCorrelation, 12);
        // AUC: pairs (positive, negative) with the positive scoring higher, out of 4·4 = 16:
        //   2.0 beats 4, −1.0 beats 2 (−2, −3), 0.5 beats 3 and ties 1 (counts ½), 3.0 beats 4  →  13.5 / 16.
        Assert.Equal(13.5 / 16, m.AreaUnderRocCurve, 12);
        Assert.Equal([[3.0, 1.0], [1.0, 3.0]], m.ConfusionMatrix.Counts.Select(r => r.ToArray()));
        Assert.Equal(["positive", "negative"], m.ConfusionMatrix.PredictedClassesIndicators);
        // Log loss in bits: positives −log2 p, negatives −log2 (1 − p); prior entropy of a 4/4 split is 1 bit.
        var expected = -(Math.Log2(0.8f) + Math.Log2(0.4f) + Math.Log2(0.6f) + Math.Log2(0.9f)
            + Math.Log2(1 - (double)0.1f) + Math.Log2(1 - (double)0.6f) + Math.Log2(1 - (double)0.3f) + Math.Log2(1 - (double)0.05f)) / 8;
        Assert.Equal(expected, m.LogLoss, 12);
        Assert.Equal(1, m.Entropy, 12);
        Assert.Equal(1 - expected, m.LogLossReduction, 12);

        var nonCalibrated = ctx.BinaryClassification.EvaluateNonCalibrated(data);
        Assert.Equal(m.AreaUnderRocCurve, nonCalibrated.AreaUnderRocCurve);
        Assert.IsNotType<CalibratedBinaryClassificationMetrics>(nonCalibrated);
    }

    private sealed class RegressionRow
    {
        public float Label { get; set; }

        public float Score { get; set; }
    }

    [Fact]
    public void RegressionCatalogEvaluateSkipsUnlabelledRowsWithAWarning()
    {
        var ctx = new MLContext(seed: 1);
        var warnings = new List<string>();
        ctx.Log += (_, e) => { if (e.Kind == ChannelMessageKind.Warning) warnings.Add(e.RawMessage); };
        float[] labels = [1, 2, 3, 4, 5, float.NaN];
        float[] scores = [2, 4, 5, 4, 5, 0];
        var data = ctx.Data.LoadFromEnumerable(labels.Zip(scores, (l, s) => new RegressionRow { Label = l, Score = s }));

        var m = ctx.Regression.Evaluate(data);

        // Errors 1 2 2 0 0: MAE = 5/5, MSE = (1 + 4 + 4)/5 = 1.8; Σ(y − 3)² = 10, so R² = 1 − 9/10.
        Assert.Equal(1.0, m.MeanAbsoluteError, 12);
        Assert.Equal(1.8, m.MeanSquaredError, 12);
        Assert.Equal(Math.Sqrt(1.8), m.RootMeanSquaredError, 12);
        Assert.Equal(m.MeanSquaredError, m.LossFunction);
        Assert.Equal(0.1, m.RSquared, 12);
        Assert.Equal(6 / Math.Sqrt(60), m.PearsonCorrelation, 12);
        Assert.Equal(7 / Math.Sqrt(90), m.SpearmanCorrelation, 12);
        Assert.Equal(["1 rows without a label were skipped."], warnings);
    }

    private sealed class ScoredRow
    {
        [KeyType(3)] public uint Label { get; set; }

        [VectorType(3)] public float[] Score { get; set; } = [];
    }

    [Fact]
    public void MulticlassCatalogEvaluateWithoutPredictedLabelUsesArgMax()
    {
        var ctx = new MLContext(seed: 1);
        ScoredRow[] rows =
        [
            new() { Label = 1, Score = [0.7f, 0.2f, 0.1f] }, // predicted 1, right
            new() { Label = 2, Score = [0.1f, 0.8f, 0.1f] }, // predicted 2, right
            new() { Label = 3, Score = [0.3f, 0.3f, 0.4f] }, // predicted 3, right
            new() { Label = 1, Score = [0.3f, 0.5f, 0.2f] }, // predicted 2, wrong; true class second-best
            new() { Label = 0, Score = [1f, 0f, 0f] },       // missing label: skipped
        ];
        var m = ctx.MulticlassClassification.Evaluate(ctx.Data.LoadFromEnumerable(rows), topKPredictionCount: 2);

        Assert.Equal(3 / 4.0, m.MicroAccuracy, 12);
        Assert.Equal((1 / 2.0 + 1 + 1) / 3, m.MacroAccuracy, 12); // class 1: one of two rows right
        // Log loss: mean of −ln(score of the true class) = −(ln 0.7 + ln 0.8 + ln 0.4 + ln 0.3) / 4 (the scores are floats).
        var logLoss = -(Math.Log(0.7f) + Math.Log(0.8f) + Math.Log(0.4f) + Math.Log(0.3f)) / 4;
        Assert.Equal(logLoss, m.LogLoss, 12);
        // Prior: class frequencies ½, ¼, ¼ → −(½ ln ½ + 2 · ¼ ln ¼).
        var prior = -(0.5 * Math.Log(0.5) + 0.5 * Math.Log(0.25));
        Assert.Equal((prior - logLoss) / prior, m.LogLossReduction, 12);
        Assert.Equal([0.75, 1.0], m.TopKAccuracyForAllK!);
        Assert.Equal(1.0, m.TopKAccuracy);
        Assert.Equal(-(Math.Log(0.7f) + Math.Log(0.3f)) / 2, m.PerClassLogLoss[0], 12);
        Assert.Null(m.F1Score); // three classes
        Assert.Equal(1, m.ConfusionMatrix.GetCountForClassPair(predictedClassIndicatorIndex: 1, actualClassIndicatorIndex: 0));
        Assert.Equal(
            """
            Confusion table
                      ||===========================
            PREDICTED ||      0 |      1 |      2 | Recall
            TRUTH     ||===========================
                    0 ||      1 |      1 |      0 | 0.5000
                    1 ||      0 |      1 |      0 | 1.0000
                    2 ||      0 |      0 |      1 | 1.0000
                      ||===========================
            Precision || 1.0000 | 0.5000 | 1.0000 |

            """.ReplaceLineEndings(), m.ConfusionMatrix.GetFormattedConfusionTable());
    }

    [Fact]
    public void EvaluatingEmptyOrMiswiredDataFailsClearly()
    {
        var ctx = new MLContext(seed: 1);
        var empty = ctx.Data.LoadFromEnumerable(Array.Empty<RegressionRow>());
        var e = Assert.Throws<InvalidOperationException>(() => ctx.Regression.Evaluate(empty));
        Assert.StartsWith("Cannot evaluate: the data has no rows", e.Message);

        var data = ctx.Data.LoadFromEnumerable(new[] { new RegressionRow { Label = 1, Score = 1 } });
        var missing = Assert.Throws<ArgumentOutOfRangeException>(() => ctx.Regression.Evaluate(data, scoreColumnName: "Prediction"));
        Assert.Contains("The score column 'Prediction' is missing; the columns are: Label: Single, Score: Single.", missing.Message);
        var notKey = Assert.Throws<ArgumentOutOfRangeException>(() => ctx.MulticlassClassification.Evaluate(data));
        Assert.Contains("The label column 'Label' must be a key (use MapValueToKey), but is Single.", notKey.Message);

        var unlabelled = ctx.Data.LoadFromEnumerable(new[] { new RegressionRow { Label = float.NaN, Score = 1 } });
        Assert.Throws<InvalidOperationException>(() => ctx.Regression.Evaluate(unlabelled));
    }
}
