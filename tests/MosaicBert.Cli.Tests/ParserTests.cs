using System.Text;

namespace MosaicBert.Cli.Tests;

public sealed class JsonlPairParserTests
{
    private static (string? Error, string A, string? B) Parse(string line)
    {
        var error = JsonlPairParser.TryParse(Encoding.UTF8.GetBytes(line), out var a, out var b);
        return (error, a, b);
    }

    [Theory]
    [InlineData("{\"a\":\"x\"}", "x", null)]
    [InlineData("{\"a\":\"x\",\"b\":\"y\"}", "x", "y")]
    [InlineData("{\"a\":\"\",\"b\":\"\"}", "", "")]
    [InlineData("  {\"b\":null,\"a\":\"x\"}  ", "x", null)]
    [InlineData("{\"\\u0061\":\"x\"}", "x", null)]
    [InlineData("{\"a\":\"q\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00é\"}", "q\"\\/\b\f\n\r\té\U0001F600é", null)]
    public void ParsesValidLines(string line, string a, string? b)
    {
        var r = Parse(line);

        Assert.Null(r.Error);
        Assert.Equal(a, r.A);
        Assert.Equal(b, r.B);
    }

    [Fact]
    public void KeepsLoneSurrogateEscapesForTheError()
    {
        Assert.StartsWith("field \"a\" holds a lone surrogate U+D800 at UTF-16 index 1;", Parse("{\"a\":\"x\\ud800\"}").Error);
    }

    [Theory]
    [InlineData("abc", null)]
    [InlineData("a\\uD83D\\uDE00b", null)]
    [InlineData("\\uD800", "U+D800 at UTF-16 index 0")]
    [InlineData("ab\\uDC00", "U+DC00 at UTF-16 index 2")]
    [InlineData("\\uD83D\\uDE00\\uD83D", "U+D83D at UTF-16 index 2")]
    [InlineData("\\uDE00\\uD83D", "U+DE00 at UTF-16 index 0")]
    public void FindsLoneSurrogates(string escaped, string? where)
    {
        // Escaped in the attribute: test runners do not carry lone surrogates in test data intact.
        var text = System.Text.RegularExpressions.Regex.Unescape(escaped);
        var message = JsonlPairParser.LoneSurrogate(text);
        if (where is null) Assert.Null(message);
        else Assert.Contains(where, message);
    }
}

public sealed class LineChunkReaderTests
{
    private static List<string> ReadAll(byte[] data, int bufferSize, int maxLine = LineChunkReader.DefaultMaxLineBytes)
    {
        var reader = new LineChunkReader(new MemoryStream(data), "t", bufferSize, maxLine);
        var lines = new List<(int Start, int Length)>();
        var all = new List<string>();
        long expectedFirst = 1;
        while (reader.ReadChunk(lines, out long first))
        {
            Assert.Equal(expectedFirst, first);
            expectedFirst += lines.Count;
            foreach (var (s, l) in lines) all.Add(Encoding.UTF8.GetString(reader.Buffer, s, l));
        }
        return all;
    }

    [Theory]
    [InlineData(16)]
    [InlineData(17)]
    [InlineData(4096)]
    public void SplitsLinesWhateverTheBufferSize(int bufferSize)
    {
        var text = "\uFEFFfirst\r\n\nthird line is a longer one than the buffer\nlast";
        Assert.Equal(["first", "", "third line is a longer one than the buffer", "last"], ReadAll(Encoding.UTF8.GetBytes(text), bufferSize));
    }

    [Fact]
    public void FinalLineBreakOpensNoEmptyLine()
    {
        Assert.Equal(["a", "b"], ReadAll("a\nb\n"u8.ToArray(), 16));
        Assert.Empty(ReadAll([], 16));
        Assert.Equal([""], ReadAll("\n"u8.ToArray(), 16));
        Assert.Empty(ReadAll([0xEF, 0xBB, 0xBF], 16));
    }

    [Fact]
    public void TooLongLineIsAnError()
    {
        var e = Assert.Throws<CliException>(() => ReadAll(Encoding.ASCII.GetBytes("ok\n" + new string('x', 3 << 20) + "\n"), 1 << 16, 1 << 20));
        Assert.Equal("t:2: the line is longer than 1 MiB", e.Message);
    }
}
