using System.Text;
using MosaicBert.ML;
using MosaicBert.ML.Data;

namespace MosaicBert.MLNet.Tests;

public sealed class TextLoaderTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mlnet-loader-");
    private readonly MLContext _ctx = new(seed: 1);

    public void Dispose() => _dir.Delete(recursive: true);

    private string Write(string content, string name = "data.tsv")
    {
        var path = Path.Combine(_dir.FullName, name);
        File.WriteAllBytes(path, Encoding.UTF8.GetBytes(content));
        return path;
    }

    public sealed class Row
    {
        [LoadColumn(0)] public float Label { get; set; }

        [LoadColumn(1), ColumnName("Text")] public string Sentence = "";

        [LoadColumn(2, 4)] public float[] Features { get; set; } = [];

        [LoadColumn(5)] public bool Flag { get; set; }

        [NoColumn] public string Ignored { get; set; } = "untouched";

        public string Computed => Sentence.ToUpperInvariant(); // get-only: not a column
    }

    [Fact]
    public void BindsLoadColumnColumnNameRangesAndSkipsNoColumn()
    {
        var path = Write("1\tfirst row\t0.5\t1.5\t2.5\ttrue\n0\tsecond \"quoted\t3\t4\t5\t0\n");

        var data = _ctx.Data.LoadFromTextFile<Row>(path);

        // Fields first, then properties, each in declaration order (as ML.NET).
        Assert.Equal("Text: String, Label: Single, Features: Vector<Single, 3>, Flag: Boolean", data.Schema.ToString());
        var rows = _ctx.Data.CreateEnumerable<Row>(data, reuseRowObject: false).ToList();
        Assert.Equal(2, rows.Count);
        Assert.Equal(1f, rows[0].Label);
        Assert.Equal("first row", rows[0].Sentence);
        Assert.Equal([0.5f, 1.5f, 2.5f], rows[0].Features);
        Assert.True(rows[0].Flag);
        Assert.Equal("second \"quoted", rows[1].Sentence); // quotes are literal by default (GLUE needs that)
        Assert.False(rows[1].Flag);
        Assert.Equal("untouched", rows[1].Ignored);
    }

    public sealed class Pair
    {
        [LoadColumn(0)] public string A { get; set; } = "";

        [LoadColumn(1)] public float B { get; set; }
    }

    [Fact]
    public void SkipsHeaderBomEmptyLinesAndHandlesCrLf()
    {
        var path = Write("\uFEFFname\tvalue\r\nx\t1\r\n\r\ny\t2.5\r\n\n");

        var data = _ctx.Data.LoadFromTextFile<Pair>(path, hasHeader: true);

        Assert.Equal(["x", "y"], data.GetColumn<string>("A"));
        Assert.Equal([1f, 2.5f], data.GetColumn<float>("B"));
    }

    [Fact]
    public void BomIsNotPartOfTheFirstValueWithoutHeader()
    {
        var data = _ctx.Data.LoadFromTextFile<Pair>(Write("\uFEFFa\t1\n"));
        Assert.Equal("a", data.GetColumn<string>("A")[0]);
    }

    [Fact]
    public void QuotingWhenAllowed()
    {
        var path = Write("\"a,b\",1\n\"say \"\"hi\"\"\",2\nplain \"x,3\n\"\",4\n");

        var data = _ctx.Data.LoadFromTextFile<Pair>(path, separatorChar: ',', allowQuoting: true);

        Assert.Equal(["a,b", "say \"hi\"", "plain \"x", ""], data.GetColumn<string>("A"));
        Assert.Equal([1f, 2f, 3f, 4f], data.GetColumn<float>("B"));
    }

    [Fact]
    public void UnclosedQuoteNamesFileLineAndColumn()
    {
        var path = Write("a\t1\n\"open\t2\n");

        var e = Assert.Throws<DataFormatException>(() => _ctx.Data.LoadFromTextFile<Pair>(path, allowQuoting: true));

        Assert.Equal((path, 2, 0), (e.Path, e.Line, e.Column));
        Assert.StartsWith($"{path}:2: column 0: the quoted value is not closed", e.Message);
    }

    [Fact]
    public void TrimWhitespaceRemovesTrailingWhitespaceFromLines()
    {
        // Space-separated with trailing blanks: without trimming, "a 1  " would have two extra empty fields.
        var data = _ctx.Data.LoadFromTextFile<Pair>(Write("a 1  \nc 2 \t \n"), separatorChar: ' ', trimWhitespace: true);
        Assert.Equal(["a", "c"], data.GetColumn<string>("A"));
        Assert.Equal([1f, 2f], data.GetColumn<float>("B"));
    }

    public sealed class Numbers
    {
        [LoadColumn(0)] public string Text { get; set; } = "";

        [LoadColumn(1)] public float Score { get; set; }

        [LoadColumn(2)] public int Count { get; set; }
    }

    [Fact]
    public void MissingColumnNamesFileLineAndCounts()
    {
        var path = Write("h1\th2\th3\na\t1\t2\nb\t3\n");

        var e = Assert.Throws<DataFormatException>(() => _ctx.Data.LoadFromTextFile<Numbers>(path, hasHeader: true));

        Assert.Equal(3, e.Line);
        Assert.Equal($"{path}:3: expected 3 columns (as on line 1), found 2", e.Message);
    }

    [Fact]
    public void ExtraTabIsAnErrorUnlessExtraColumnsAreIgnored()
    {
        var path = Write("a\t1\t2\nb\t3\t4\t\nc\t5\t6\textra\n");

        var e = Assert.Throws<DataFormatException>(() => _ctx.Data.LoadFromTextFile<Numbers>(path));
        Assert.Equal(2, e.Line);
        Assert.Contains("expected 3 columns (as on line 1), found 4; a value may contain a separator", e.Message);

        var data = _ctx.Data.LoadFromTextFile<Numbers>(path, new TextLoader.Options { IgnoreExtraColumns = true });
        Assert.Equal([2, 4, 6], data.GetColumn<int>("Count"));
    }

    [Fact]
    public void FileNarrowerThanTheBindingIsReportedOnItsFirstLine()
    {
        var path = Write("a\t1\n");
        var e = Assert.Throws<DataFormatException>(() => _ctx.Data.LoadFromTextFile<Numbers>(path));
        Assert.Equal($"{path}:1: Numbers.Count loads column 2, but this line has 2 columns", e.Message);
    }

    [Fact]
    public void UnparsableNumberNamesFileLineAndColumn()
    {
        var path = Write("a\t1.5\t2\nb\tnot-a-number\t3\n");

        var e = Assert.Throws<DataFormatException>(() => _ctx.Data.LoadFromTextFile<Numbers>(path));

        Assert.Equal((2, 1), (e.Line, e.Column));
        Assert.Equal($"{path}:2: column 1 ('Score'): cannot parse \"not-a-number\" as Single", e.Message);
    }

    [Fact]
    public void EmptyFloatIsMissingButEmptyIntegerIsAnError()
    {
        var data = _ctx.Data.LoadFromTextFile<Numbers>(Write("a\t\t1\n"));
        Assert.True(float.IsNaN(data.GetColumn<float>("Score")[0]));

        var path = Write("a\t1\t\n", "int.tsv");
        var e = Assert.Throws<DataFormatException>(() => _ctx.Data.LoadFromTextFile<Numbers>(path));
        Assert.Equal((1, 2), (e.Line, e.Column));
        Assert.Contains("cannot parse \"\" as Int32", e.Message);
    }

    [Fact]
    public void EmptyFileLoadsNoRowsAndFailsClearlyWhenUsed()
    {
        var data = _ctx.Data.LoadFromTextFile<Pair>(Write("header\tonly\n"), hasHeader: true);
        Assert.Equal(0, data.GetRowCount());

        var fit = Assert.Throws<InvalidOperationException>(() => _ctx.Transforms.Conversion.MapValueToKey("Key", "A").Fit(data));
        Assert.Contains("the training data has no rows", fit.Message);
    }

    public sealed class Unbound
    {
        [LoadColumn(0)] public string A { get; set; } = "";

        public string B { get; set; } = "";
    }

    public sealed class Unsupported
    {
        [LoadColumn(0)] public decimal A { get; set; }
    }

    [Fact]
    public void BadRowClassesAreRejectedNamingTheMember()
    {
        var path = Write("a\tb\n");
        var e1 = Assert.Throws<InvalidOperationException>(() => _ctx.Data.LoadFromTextFile<Unbound>(path));
        Assert.Equal("Unbound.B has no [LoadColumn] attribute; add one, or mark it [NoColumn] to leave it out.", e1.Message);
        var e2 = Assert.Throws<InvalidOperationException>(() => _ctx.Data.LoadFromTextFile<Unsupported>(path));
        Assert.StartsWith("Unsupported.A is Decimal: columns are string, float, double, int, uint, long, bool", e2.Message);
    }

    [Fact]
    public void MissingFileIsFileNotFound()
    {
        Assert.Throws<FileNotFoundException>(() => _ctx.Data.LoadFromTextFile<Pair>(Path.Combine(_dir.FullName, "absent.tsv")));
    }

    [Fact]
    public void LoadingIsLoggedAndTheLoaderExposesItsSchema()
    {
        var messages = new List<LoggingEventArgs>();
        _ctx.Log += (_, e) => messages.Add(e);
        var loader = _ctx.Data.CreateTextLoader<Pair>();
        Assert.Equal("A: String, B: Single", loader.GetOutputSchema().ToString());

        var path = Write("a\t1\n");
        loader.Load(path);

        var m = Assert.Single(messages);
        Assert.Equal(("TextLoader", ChannelMessageKind.Info), (m.Source, m.Kind));
        Assert.Equal($"[Source=TextLoader, Kind=Info] Loaded 1 rows from {path}.", m.Message);
    }
}
