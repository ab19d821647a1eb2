using System.Text;
using MosaicBert.ML;
using MosaicBert.ML.Data;
using MosaicBert.ML.Glue;
using MosaicBert.ML.Transforms;

namespace MosaicBert.MLNet.Tests;

public sealed class GlueTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mlnet-glue-");

    public void Dispose() => _dir.Delete(recursive: true);

    private string Write(string content)
    {
        var path = Path.Combine(_dir.FullName, $"{Guid.NewGuid():N}.tsv");
        File.WriteAllText(path, content, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));
        return path;
    }

    /// <summary>Official row counts (../shared/datasets/MANIFEST.md; QQP, MNLI and QNLI train from the GLUE paper,
    /// skipped while those files are absent).</summary>
    public static TheoryData<GlueTask, GlueSplit, int> Files => new()
    {
        { GlueTask.Cola, GlueSplit.Train, 8_551 }, { GlueTask.Cola, GlueSplit.Dev, 1_043 },
        { GlueTask.Sst2, GlueSplit.Train, 67_349 }, { GlueTask.Sst2, GlueSplit.Dev, 872 },
        { GlueTask.Mrpc, GlueSplit.Train, 3_668 }, { GlueTask.Mrpc, GlueSplit.Dev, 408 },
        { GlueTask.StsB, GlueSplit.Train, 5_749 }, { GlueTask.StsB, GlueSplit.Dev, 1_500 },
        { GlueTask.Qnli, GlueSplit.Train, 104_743 }, { GlueTask.Qnli, GlueSplit.Dev, 5_463 },
        { GlueTask.Rte, GlueSplit.Train, 2_490 }, { GlueTask.Rte, GlueSplit.Dev, 277 },
        { GlueTask.Wnli, GlueSplit.Train, 635 }, { GlueTask.Wnli, GlueSplit.Dev, 71 },
        { GlueTask.Qqp, GlueSplit.Train, 363_846 }, { GlueTask.Qqp, GlueSplit.Dev, 40_430 },
        { GlueTask.Mnli, GlueSplit.Train, 392_702 }, { GlueTask.Mnli, GlueSplit.Dev, 9_815 },
        { GlueTask.MnliMismatched, GlueSplit.Dev, 9_832 },
    };

    private static string SharedFile(GlueTask task, GlueSplit split)
    {
        var info = GlueTaskInfo.Get(task);
        return SharedData.Get(Path.Combine("glue", info.DirectoryName, split == GlueSplit.Train ? info.TrainFileName : info.DevFileName));
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void EveryPresentFileReadsWithItsOfficialRowCount(GlueTask task, GlueSplit split, int rows)
    {
        var dataset = GlueReader.Read(task, SharedFile(task, split));
        var info = dataset.TaskInfo;

        Assert.Equal(rows, dataset.Examples.Count);
        Assert.Empty(dataset.SkippedLines);
        Assert.All(dataset.Examples, e =>
        {
            Assert.False(string.IsNullOrEmpty(e.Sentence1));
            Assert.Equal(info.IsSentencePair, e.Sentence2 is not null);
            if (info.IsRegression) Assert.InRange(e.RegressionLabel, 0f, 5f);
            else Assert.Equal(info.LabelValues[e.ClassIndex], e.Label);
        });
        // Every class occurs (no file is a one-label slice of its task).
        if (!info.IsRegression) Assert.Equal(info.NumberOfClasses, dataset.Examples.Select(e => e.ClassIndex).Distinct().Count());
        // Line numbers: one example per line after the header.
        Assert.Equal(rows + (info.HasHeader ? 1 : 0), dataset.Examples[^1].LineNumber);
    }

    [Fact]
    public void ColaHasNoHeaderAndFourColumns()
    {
        var first = GlueReader.Read(GlueTask.Cola, SharedFile(GlueTask.Cola, GlueSplit.Train)).Examples[0];
        Assert.Equal(("Our friends won't buy this analysis, let alone the next one we propose.", "1", 1), (first.Sentence1, first.Label, first.LineNumber));
    }

    [Fact]
    public void MrpcBomHeaderAndStrayQuotes()
    {
        var dev = GlueReader.Read(GlueTask.Mrpc, SharedFile(GlueTask.Mrpc, GlueSplit.Dev)).Examples;
        // Line 2: the second sentence opens a quote it never closes; with quoting on it would swallow the row.
        Assert.Equal("\"The foodservice pie business does not fit our long-term growth strategy.", dev[0].Sentence2);
        Assert.Equal((1, 2), (dev[0].ClassIndex, dev[0].LineNumber));
        Assert.Contains(dev, e => e.Sentence1.Count(c => c == '"') % 2 == 1);
    }

    [Fact]
    public void SstLabelsMatchTheManifestBalance()
    {
        var train = GlueReader.Read(GlueTask.Sst2, SharedFile(GlueTask.Sst2, GlueSplit.Train)).Examples;
        Assert.Equal(37_569, train.Count(e => e.Label == "1"));
        Assert.Equal(29_780, train.Count(e => e.Label == "0"));
        Assert.Equal("hide new secretions from the parental units ", train[0].Sentence1); // trailing space kept
    }

    [Fact]
    public void WnliAndRteQuirks()
    {
        var wnli = GlueReader.Read(GlueTask.Wnli, SharedFile(GlueTask.Wnli, GlueSplit.Train)).Examples;
        Assert.Equal((323, 312), (wnli.Count(e => e.Label == "0"), wnli.Count(e => e.Label == "1")));
        // RTE train index 2164 (line 2166) has a leading space in sentence1: kept as in the file.
        var rte = GlueReader.Read(GlueTask.Rte, SharedFile(GlueTask.Rte, GlueSplit.Train)).Examples;
        Assert.StartsWith(" ", rte.Single(e => e.LineNumber == 2166).Sentence1);
        Assert.Equal(["entailment", "not_entailment"], rte.Select(e => e.Label).Distinct().Order());
    }

    [Fact]
    public void StsbFloatLabels()
    {
        var dev = GlueReader.Read(GlueTask.StsB, SharedFile(GlueTask.StsB, GlueSplit.Dev)).Examples;
        Assert.Equal(("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5f), (dev[0].Sentence1, dev[0].Sentence2, dev[0].RegressionLabel));
        Assert.Equal(4.75f, dev[1].RegressionLabel);
        Assert.All(dev, e => Assert.Equal(-1, e.ClassIndex));
    }

    [Fact]
    public void LoadGlueGivesAnMLNetPipelineItsColumns()
    {
        var ctx = new MLContext(seed: 1);
        var path = SharedFile(GlueTask.Qnli, GlueSplit.Dev);

        var data = ctx.Data.LoadGlue(GlueTask.Qnli, path);
        var keyed = ctx.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
            .Fit(data).Transform(data);

        Assert.Equal("Sentence1: String, Sentence2: String, Label: String", data.Schema.ToString());
        string[] values = [];
        keyed.Schema["Label"].GetKeyValues(ref values);
        Assert.Equal(GlueTaskInfo.Get(GlueTask.Qnli).LabelValues, values);
        Assert.Equal(5_463, keyed.GetRowCount());

        var stsb = ctx.Data.LoadGlue(GlueTask.StsB, SharedFile(GlueTask.StsB, GlueSplit.Dev));
        Assert.Equal(NumberDataViewType.Single, stsb.Schema["Label"].Type);
        var single = ctx.Data.LoadGlue(GlueTask.Cola, SharedFile(GlueTask.Cola, GlueSplit.Dev));
        Assert.Equal("Sentence1: String, Label: String", single.Schema.ToString());
    }

    [Fact]
    public void MrpcThroughTheGenericTextLoader()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromTextFile<MrpcRow>(SharedFile(GlueTask.Mrpc, GlueSplit.Dev), hasHeader: true);
        Assert.Equal(408, data.GetRowCount());
        Assert.Equal(279, data.GetColumn<float>("Quality").Count(q => q == 1)); // MRPC dev: 68% paraphrases
    }

    public sealed class MrpcRow
    {
        [LoadColumn(0)] public float Quality { get; set; }

        [LoadColumn(3)] public string Sentence1 { get; set; } = "";

        [LoadColumn(4)] public string Sentence2 { get; set; } = "";
    }

    // ---- The quirks of the files that are not in ../shared/datasets (MNLI, QQP), on synthetic files. ----

    private const string MnliTrainHeader = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n";

    private static string MnliRow(int i, string s1, string s2, string gold, int annotators) =>
        $"{i}\tp\tq\tfiction\t( x )\t( y )\t(ROOT x)\t(ROOT y)\t{s1}\t{s2}\t{string.Join("\t", Enumerable.Repeat(gold, annotators))}\t{gold}\n";

    [Fact]
    public void MnliLabelIsTheLastColumnOfTrainAndDevLayouts()
    {
        var train = Write(MnliTrainHeader + MnliRow(0, "A man \"sleeps.", "Nobody sleeps.", "contradiction", 1) + MnliRow(1, "a", "b", "neutral", 1));
        var devHeader = MnliTrainHeader.Replace("label1\t", "label1\tlabel2\tlabel3\tlabel4\tlabel5\t", StringComparison.Ordinal);
        var dev = Write(devHeader + MnliRow(0, "s1", "s2", "entailment", 5));

        var t = GlueReader.Read(GlueTask.Mnli, train).Examples;
        var d = GlueReader.Read(GlueTask.MnliMismatched, dev).Examples;

        Assert.Equal([0, 2], t.Select(e => e.ClassIndex));
        Assert.Equal("A man \"sleeps.", t[0].Sentence1);
        Assert.Equal(("s1", "s2", 1), (d[0].Sentence1, d[0].Sentence2, d[0].ClassIndex));
    }

    [Fact]
    public void MalformedRowsFailWithFileAndLineOrAreSkipped()
    {
        var path = Write("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n" +
            "0\t1\t2\tHow?\tWhy?\t0\n" +
            "1\t3\t4\tA question cut short\n" +           // line 3: too few fields
            "2\t5\t6\tWhat?\tWhich?\t1\n" +
            "3\t7\t8\tWho?\tWhom?\tmaybe\n");            // line 5: label outside 0/1

        var e = Assert.Throws<DataFormatException>(() => GlueReader.Read(GlueTask.Qqp, path));
        Assert.Equal($"{path}:3: expected 6 columns (as on line 1), found 4 (pass skipMalformedRows: true to skip such rows)", e.Message);

        var dataset = GlueReader.Read(GlueTask.Qqp, path, skipMalformedRows: true);
        Assert.Equal([2, 4], dataset.Examples.Select(x => x.LineNumber));
        Assert.Equal([3, 5], dataset.SkippedLines);

        var warnings = new List<string>();
        var ctx = new MLContext(seed: 1);
        ctx.Log += (_, args) => { if (args.Kind == ChannelMessageKind.Warning) warnings.Add(args.RawMessage); };
        Assert.Equal(2, ctx.Data.LoadGlue(GlueTask.Qqp, path, skipMalformedRows: true).GetRowCount());
        Assert.Equal([$"{path}: skipped 2 malformed rows (lines 3, 5)."], warnings);
    }

    [Fact]
    public void BadLabelsAreReportedWithTheirColumn()
    {
        var stsb = Write("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n0\tg\tf\ty\to\ts\ts\tA\tB\t5.5\n");
        var e = Assert.Throws<DataFormatException>(() => GlueReader.Read(GlueTask.StsB, stsb));
        Assert.Equal((2, 9), (e.Line, e.Column));
        Assert.Contains("the STS-B label \"5.5\" is not a number from 0 to 5", e.Message);

        var rte = Write("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentails\n");
        var e2 = Assert.Throws<DataFormatException>(() => GlueReader.Read(GlueTask.Rte, rte));
        Assert.Contains("column 3: the RTE label \"entails\" is not one of entailment, not_entailment", e2.Message);
    }

    [Fact]
    public void RenamedOrSwappedHeaderIsRejected()
    {
        // A circulating SST-2 copy renamed 'sentence' to 'text'; another swaps the columns.
        var renamed = Write("text\tlabel\nfine film\t1\n");
        var e = Assert.Throws<DataFormatException>(() => GlueReader.Read(GlueTask.Sst2, renamed));
        Assert.Equal($"{renamed}:1: column 0 of the header is 'text', expected 'sentence': not GLUE's SST-2 layout", e.Message);
        var swapped = Write("label\tsentence\n1\tfine film\n");
        Assert.Throws<DataFormatException>(() => GlueReader.Read(GlueTask.Sst2, swapped));
    }

    [Fact]
    public void EmptyFilesReadAsNoExamples()
    {
        Assert.Empty(GlueReader.Read(GlueTask.Cola, Write("")).Examples);
        Assert.Empty(GlueReader.Read(GlueTask.Sst2, Write("sentence\tlabel\n")).Examples);
    }

    [Fact]
    public void TaskTable()
    {
        Assert.Equal(Enum.GetValues<GlueTask>(), GlueTaskInfo.All.Select(t => t.Task));
        var mnliMm = GlueTaskInfo.Get(GlueTask.MnliMismatched);
        Assert.Equal(Path.Combine("glue", "MNLI", "dev_mismatched.tsv"), mnliMm.GetFilePath("glue", GlueSplit.Dev));
        Assert.Equal(Path.Combine("glue", "MNLI", "train.tsv"), mnliMm.GetFilePath("glue", GlueSplit.Train));
        Assert.Equal(3, mnliMm.NumberOfClasses);
        Assert.True(GlueTaskInfo.Get(GlueTask.StsB).IsRegression);
        Assert.Equal(1, GlueTaskInfo.Get(GlueTask.StsB).NumberOfClasses);
        Assert.False(GlueTaskInfo.Get(GlueTask.Cola).HasHeader);
        Assert.False(GlueTaskInfo.Get(GlueTask.Sst2).IsSentencePair);
        Assert.Equal([GlueMetricKind.MatthewsCorrelation], GlueTaskInfo.Get(GlueTask.Cola).Metrics);
        Assert.Equal([GlueMetricKind.Accuracy, GlueMetricKind.F1Score], GlueTaskInfo.Get(GlueTask.Qqp).Metrics);
        // Label values are in ordinal order, so MapValueToKey(ByValue) reproduces the class order.
        Assert.All(GlueTaskInfo.All, t => Assert.Equal(t.LabelValues.Order(StringComparer.Ordinal), t.LabelValues));
    }
}
