using System.Globalization;
using MosaicBert.ML.Data;

namespace MosaicBert.ML.Glue;

/// <summary>One labelled example of a GLUE file.</summary>
/// <param name="Sentence1">The first (or only) sentence, exactly as in the file.</param>
/// <param name="Sentence2">The second sentence; null for single-sentence tasks.</param>
/// <param name="Label">The label as written ("1", "entailment", "4.750").</param>
/// <param name="ClassIndex">The index of <paramref name="Label"/> in <see cref="GlueTaskInfo.LabelValues"/>; -1 for STS-B.</param>
/// <param name="RegressionLabel">The STS-B similarity (0 to 5); NaN for classification tasks.</param>
/// <param name="LineNumber">The 1-based line of the example in its file.</param>
public sealed record GlueExample(string Sentence1, string? Sentence2, string Label, int ClassIndex, float RegressionLabel, int LineNumber);

/// <summary>The examples read from one GLUE file.</summary>
public sealed class GlueDataset
{
    internal GlueDataset(GlueTaskInfo taskInfo, string path, IReadOnlyList<GlueExample> examples, IReadOnlyList<int> skippedLines)
    {
        TaskInfo = taskInfo;
        Path = path;
        Examples = examples;
        SkippedLines = skippedLines;
    }

    /// <summary>The task's definition.</summary>
    public GlueTaskInfo TaskInfo { get; }

    /// <summary>The file read.</summary>
    public string Path { get; }

    /// <summary>The examples, in file order.</summary>
    public IReadOnlyList<GlueExample> Examples { get; }

    /// <summary>The 1-based lines of malformed rows skipped (only with <c>skipMalformedRows</c>).</summary>
    public IReadOnlyList<int> SkippedLines { get; }
}

/// <summary>
/// Reads the labelled GLUE TSV files (train and dev) of every task, with the quirks of the real files: no quoting
/// (sentences hold unbalanced <c>"</c>), CoLA's missing header, MRPC's BOM, MNLI's label in the last column of
/// files of different widths, string labels for QNLI/RTE/MNLI and float labels for STS-B.
/// </summary>
/// <remarks>
/// The header's names at the sentence and label columns are checked, so a re-split copy with renamed or swapped
/// columns is reported rather than read wrongly. A row with a different number of fields than the header (or, for
/// CoLA, the first row), or with a label outside the task's label set, is an error naming the file and line, or is
/// skipped and listed when <c>skipMalformedRows</c> is set (Hugging Face's QQP reader skips such rows too).
/// </remarks>
public static class GlueReader
{
    /// <summary>Reads a train or dev file of <paramref name="task"/>.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="DataFormatException">The header does not match the task, or a row is malformed (and not skipped).</exception>
    public static GlueDataset Read(GlueTask task, string path, bool skipMalformedRows = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"GLUE file '{path}' not found.", path);
        var info = GlueTaskInfo.Get(task);
        var examples = new List<GlueExample>();
        var skipped = new List<int>();
        using var reader = new DelimitedTextReader(path, ['\t'], allowQuoting: false, trimWhitespace: false);
        var fields = new List<string>();
        int? width = null;
        var widthLine = 0;

        if (info.HasHeader && reader.ReadRecord(fields))
        {
            (width, widthLine) = (fields.Count, reader.LineNumber);
            CheckHeader(info, fields, reader);
        }
        while (reader.ReadRecord(fields))
        {
            if (width is null)
            {
                (width, widthLine) = (fields.Count, reader.LineNumber);
                if (width <= Math.Max(info.Sentence1ColumnIndex, info.LabelColumnIndex))
                    throw reader.Error($"{info.Name} rows have at least {Math.Max(info.Sentence1ColumnIndex, info.LabelColumnIndex) + 1} columns; this one has {width}");
            }
            var (example, problem, column) = Parse(info, fields, width.Value, widthLine, reader.LineNumber);
            if (example is not null)
            {
                examples.Add(example);
            }
            else if (skipMalformedRows)
            {
                skipped.Add(reader.LineNumber);
            }
            else
            {
                throw reader.Error($"{problem} (pass skipMalformedRows: true to skip such rows)", column);
            }
        }
        return new GlueDataset(info, path, examples, skipped);
    }

    private static void CheckHeader(GlueTaskInfo info, List<string> header, DelimitedTextReader reader)
    {
        Check(info.Sentence1ColumnIndex, info.Sentence1HeaderName);
        if (info.Sentence2ColumnIndex is int s2) Check(s2, info.Sentence2HeaderName);
        Check(info.LabelColumnIndex < 0 ? header.Count - 1 : info.LabelColumnIndex, info.LabelHeaderName);

        void Check(int index, string? expected)
        {
            if (expected is null) return;
            var actual = index < header.Count ? header[index] : null;
            if (actual != expected)
                throw reader.Error($"column {index} of the header is {(actual is null ? "missing" : $"'{actual}'")}, expected '{expected}': not GLUE's {info.Name} layout", index);
        }
    }

    private static (GlueExample? Example, string? Problem, int? Column) Parse(GlueTaskInfo info, List<string> fields, int width, int widthLine, int line)
    {
        if (fields.Count != width)
            return (null, $"expected {width} columns (as on line {widthLine}), found {fields.Count}", null);
        var labelColumn = info.LabelColumnIndex < 0 ? fields.Count - 1 : info.LabelColumnIndex;
        var label = fields[labelColumn];
        var sentence2 = info.Sentence2ColumnIndex is int s2 ? fields[s2] : null;
        if (info.IsRegression)
        {
            if (!float.TryParse(label, NumberStyles.Float, CultureInfo.InvariantCulture, out var score) || !(score >= 0 && score <= 5))
                return (null, $"column {labelColumn}: the {info.Name} label \"{label}\" is not a number from 0 to 5", labelColumn);
            return (new GlueExample(fields[info.Sentence1ColumnIndex], sentence2, label, -1, score, line), null, null);
        }
        var classIndex = info.LabelValues.IndexOf(label);
        if (classIndex < 0)
            return (null, $"column {labelColumn}: the {info.Name} label \"{label}\" is not one of {string.Join(", ", info.LabelValues)}", labelColumn);
        return (new GlueExample(fields[info.Sentence1ColumnIndex], sentence2, label, classIndex, float.NaN, line), null, null);
    }

    private static int IndexOf(this IReadOnlyList<string> values, string value)
    {
        for (var i = 0; i < values.Count; i++)
        {
            if (values[i] == value) return i;
        }
        return -1;
    }
}
