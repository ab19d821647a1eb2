using System.Collections.Immutable;

namespace MosaicBert.ML.Glue;

/// <summary>The GLUE tasks. MNLI has two dev sets, so two entries sharing the training file.</summary>
public enum GlueTask
{
    /// <summary>CoLA: grammatical acceptability of one sentence (Matthews correlation).</summary>
    Cola,

    /// <summary>SST-2: sentiment of one sentence (accuracy).</summary>
    Sst2,

    /// <summary>MRPC: whether two sentences are paraphrases (accuracy and F1).</summary>
    Mrpc,

    /// <summary>QQP: whether two questions are duplicates (accuracy and F1).</summary>
    Qqp,

    /// <summary>STS-B: similarity of two sentences, 0 to 5 (regression; Spearman correlation).</summary>
    StsB,

    /// <summary>MNLI, matched dev set: entailment, neutral or contradiction (accuracy).</summary>
    Mnli,

    /// <summary>MNLI, mismatched dev set (accuracy).</summary>
    MnliMismatched,

    /// <summary>QNLI: whether a sentence answers a question (accuracy).</summary>
    Qnli,

    /// <summary>RTE: textual entailment (accuracy).</summary>
    Rte,

    /// <summary>WNLI: Winograd entailment (accuracy; left out of the GLUE average).</summary>
    Wnli,
}

/// <summary>A metric GLUE reports.</summary>
public enum GlueMetricKind
{
    /// <summary>Fraction of correct predictions.</summary>
    Accuracy,

    /// <summary>F1 of the positive class (label "1").</summary>
    F1Score,

    /// <summary>Matthews correlation coefficient.</summary>
    MatthewsCorrelation,

    /// <summary>Pearson correlation.</summary>
    PearsonCorrelation,

    /// <summary>Spearman rank correlation.</summary>
    SpearmanCorrelation,
}

/// <summary>Which file of a task.</summary>
public enum GlueSplit
{
    /// <summary>train.tsv.</summary>
    Train,

    /// <summary>The labelled dev file (dev.tsv; dev_matched.tsv / dev_mismatched.tsv for MNLI).</summary>
    Dev,
}

/// <summary>
/// The layout of a GLUE task's TSV files (as distributed by the GLUE benchmark) and how the task is scored (the
/// metrics of the MosaicBERT GLUE recipe, mosaicbert-spec §4).
/// </summary>
public sealed class GlueTaskInfo
{
    private static readonly ImmutableArray<string> s_binary = ["0", "1"];
    private static readonly ImmutableArray<string> s_entailment = ["entailment", "not_entailment"];

    // Label values are in ordinal order, so MapValueToKey(keyOrdinality: ByValue) gives exactly this class order.
    private static readonly ImmutableArray<GlueTaskInfo> s_all =
    [
        // CoLA: no header; source, label, original judgement ('*' or empty), sentence.
        new(GlueTask.Cola, "CoLA", "CoLA", "dev.tsv", hasHeader: false, 3, null, 1, null, null, null, s_binary, [GlueMetricKind.MatthewsCorrelation]),
        new(GlueTask.Sst2, "SST-2", "SST-2", "dev.tsv", hasHeader: true, 0, null, 1, "sentence", null, "label", s_binary, [GlueMetricKind.Accuracy]),
        // MRPC: Quality, #1 ID, #2 ID, #1 String, #2 String; the header starts with a UTF-8 BOM.
        new(GlueTask.Mrpc, "MRPC", "MRPC", "dev.tsv", hasHeader: true, 3, 4, 0, "#1 String", "#2 String", "Quality", s_binary, [GlueMetricKind.Accuracy, GlueMetricKind.F1Score]),
        new(GlueTask.Qqp, "QQP", "QQP", "dev.tsv", hasHeader: true, 3, 4, 5, "question1", "question2", "is_duplicate", s_binary, [GlueMetricKind.Accuracy, GlueMetricKind.F1Score]),
        // STS-B: index, genre, filename, year, old_index, source1, source2, sentence1, sentence2, score.
        new(GlueTask.StsB, "STS-B", "STS-B", "dev.tsv", hasHeader: true, 7, 8, 9, "sentence1", "sentence2", "score", [], [GlueMetricKind.SpearmanCorrelation]),
        // MNLI: train has one annotator label before gold_label (12 columns), dev has five (16): the label is the last column.
        new(GlueTask.Mnli, "MNLI-m", "MNLI", "dev_matched.tsv", hasHeader: true, 8, 9, -1, "sentence1", "sentence2", "gold_label", ["contradiction", "entailment", "neutral"], [GlueMetricKind.Accuracy]),
        new(GlueTask.MnliMismatched, "MNLI-mm", "MNLI", "dev_mismatched.tsv", hasHeader: true, 8, 9, -1, "sentence1", "sentence2", "gold_label", ["contradiction", "entailment", "neutral"], [GlueMetricKind.Accuracy]),
        new(GlueTask.Qnli, "QNLI", "QNLI", "dev.tsv", hasHeader: true, 1, 2, 3, "question", "sentence", "label", s_entailment, [GlueMetricKind.Accuracy]),
        new(GlueTask.Rte, "RTE", "RTE", "dev.tsv", hasHeader: true, 1, 2, 3, "sentence1", "sentence2", "label", s_entailment, [GlueMetricKind.Accuracy]),
        new(GlueTask.Wnli, "WNLI", "WNLI", "dev.tsv", hasHeader: true, 1, 2, 3, "sentence1", "sentence2", "label", s_binary, [GlueMetricKind.Accuracy]),
    ];

    private GlueTaskInfo(GlueTask task, string name, string directoryName, string devFileName, bool hasHeader,
        int sentence1Column, int? sentence2Column, int labelColumn, string? sentence1Header, string? sentence2Header,
        string? labelHeader, ImmutableArray<string> labelValues, ImmutableArray<GlueMetricKind> metrics)
    {
        Task = task;
        Name = name;
        DirectoryName = directoryName;
        DevFileName = devFileName;
        HasHeader = hasHeader;
        Sentence1ColumnIndex = sentence1Column;
        Sentence2ColumnIndex = sentence2Column;
        LabelColumnIndex = labelColumn;
        Sentence1HeaderName = sentence1Header;
        Sentence2HeaderName = sentence2Header;
        LabelHeaderName = labelHeader;
        LabelValues = labelValues;
        Metrics = metrics;
    }

    /// <summary>All tasks, in <see cref="GlueTask"/> order.</summary>
    public static IReadOnlyList<GlueTaskInfo> All => s_all;

    /// <summary>The definition of <paramref name="task"/>.</summary>
    public static GlueTaskInfo Get(GlueTask task) =>
        s_all.FirstOrDefault(t => t.Task == task) ?? throw new ArgumentOutOfRangeException(nameof(task), task, "Unknown GLUE task.");

    /// <summary>The task.</summary>
    public GlueTask Task { get; }

    /// <summary>The name GLUE uses (e.g. "SST-2", "MNLI-mm").</summary>
    public string Name { get; }

    /// <summary>The task's folder in the GLUE download (e.g. "SST-2"; "MNLI" for both MNLI dev sets).</summary>
    public string DirectoryName { get; }

    /// <summary>The training file name: train.tsv.</summary>
    public string TrainFileName => "train.tsv";

    /// <summary>The labelled dev file name: dev.tsv, or dev_matched.tsv / dev_mismatched.tsv for MNLI.</summary>
    public string DevFileName { get; }

    /// <summary>Whether the files start with a header line (all but CoLA).</summary>
    public bool HasHeader { get; }

    /// <summary>The 0-based column of the first sentence.</summary>
    public int Sentence1ColumnIndex { get; }

    /// <summary>The 0-based column of the second sentence; null for single-sentence tasks (CoLA, SST-2).</summary>
    public int? Sentence2ColumnIndex { get; }

    /// <summary>The 0-based column of the label; -1 means the last column (MNLI, whose train and dev files differ in width).</summary>
    public int LabelColumnIndex { get; }

    /// <summary>The header name expected at <see cref="Sentence1ColumnIndex"/> (null without a header); checked, since
    /// many copies of GLUE files in circulation have renamed or reordered columns.</summary>
    public string? Sentence1HeaderName { get; }

    /// <summary>The header name expected at <see cref="Sentence2ColumnIndex"/>.</summary>
    public string? Sentence2HeaderName { get; }

    /// <summary>The header name expected at the label column.</summary>
    public string? LabelHeaderName { get; }

    /// <summary>The class labels as written in the files, in class order (ordinal order, which
    /// <c>MapValueToKey(keyOrdinality: ByValue)</c> reproduces); empty for STS-B.</summary>
    public IReadOnlyList<string> LabelValues { get; }

    /// <summary>Whether the task has two sentences per example.</summary>
    public bool IsSentencePair => Sentence2ColumnIndex is not null;

    /// <summary>Whether the label is a real number (STS-B) rather than a class.</summary>
    public bool IsRegression => LabelValues.Count == 0;

    /// <summary>The number of classes; 1 for STS-B (one regression output).</summary>
    public int NumberOfClasses => IsRegression ? 1 : LabelValues.Count;

    /// <summary>The metrics the task is scored with; the task score is their mean. STS-B uses Spearman only, as the
    /// MosaicBERT recipe does (the GLUE leaderboard averages Pearson and Spearman).</summary>
    public IReadOnlyList<GlueMetricKind> Metrics { get; }

    /// <summary>The path of a split's file under a GLUE folder (the folder holding CoLA/, SST-2/, ...).</summary>
    public string GetFilePath(string glueDirectory, GlueSplit split) =>
        Path.Combine(glueDirectory, DirectoryName, split == GlueSplit.Train ? TrainFileName : DevFileName);

    /// <inheritdoc/>
    public override string ToString() => Name;
}
