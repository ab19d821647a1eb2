using System.IO.Compression;
using System.Text;

namespace MosaicBert.Data.Tests;

public sealed class TextCorpusTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("text-corpus-");

    public void Dispose() => _dir.Delete(recursive: true);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private string Write(string name, string content, bool gzip = false)
    {
        var path = Path.Combine(_dir.FullName, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var bytes = Encoding.UTF8.GetBytes(content);
        if (gzip)
        {
            using var file = File.Create(path);
            using var gz = new GZipStream(file, CompressionLevel.Optimal);
            gz.Write(bytes);
        }
        else
        {
            File.WriteAllBytes(path, bytes);
        }
        return path;
    }

    private static List<CorpusDocument> Read(params string[] paths) => new TextCorpus(paths).ReadDocuments(Ct).ToList();

    private const string PlainText =
        "\uFEFF\n" +                              // 1: BOM, blank
        "  First paragraph.  \r\n" +              // 2
        "Second paragraph.\n" +                   // 3
        "\n" +                                    // 4
        " \t \n" +                                // 5: whitespace only: a blank line too
        "Second document.\n" +                    // 6
        "\n" +                                    // 7
        "Third document, no final newline";      // 8

    private static void AssertPlainText(List<CorpusDocument> docs, string path)
    {
        Assert.Equal(3, docs.Count);
        Assert.Equal(["First paragraph.", "Second paragraph."], docs[0].Paragraphs);
        Assert.Equal(["Second document."], docs[1].Paragraphs);
        Assert.Equal(["Third document, no final newline"], docs[2].Paragraphs);
        Assert.Equal([2, 6, 8], docs.Select(d => d.Line));
        Assert.All(docs, d => Assert.Equal(path, d.Source));
        Assert.All(docs, d => Assert.Null(d.Id));
        Assert.All(docs, d => Assert.Null(d.Title));
        Assert.Equal("First paragraph.\nSecond paragraph.", docs[0].Text);
    }

    [Fact]
    public void PlainTextHasOneParagraphPerLineAndBlankLinesBetweenDocuments()
    {
        var path = Write("corpus.txt", PlainText);
        Assert.Equal(CorpusFileFormat.PlainText, TextCorpus.DetectFormat(path));
        AssertPlainText(Read(path), path);
    }

    [Fact]
    public void GzippedPlainTextReadsTheSame()
    {
        var txtGz = Write("corpus.txt.gz", PlainText, gzip: true);
        AssertPlainText(Read(txtGz), txtGz);
        var bareGz = Write("notes.gz", PlainText, gzip: true);
        Assert.Equal(CorpusFileFormat.PlainText, TextCorpus.DetectFormat(bareGz));
        AssertPlainText(Read(bareGz), bareGz);
    }

    private const string JsonLines =
        """{"text":"Para one.\n  Para two.\n\n","url":"https://example.com/a","timestamp":"2019-04-25T12:57:54Z"}""" + "\n" +
        "\n" +
        """{"id": 7, "title": "Seven", "text": "Only paragraph", "url": "https://example.com/b"}""" + "\n" +
        """{"text": "   \n "}""" + "\n" +  // no paragraph: skipped
        """{"text":"caf\u00e9 \ud83d\ude00"}""";

    private static void AssertJsonLines(List<CorpusDocument> docs)
    {
        Assert.Equal(3, docs.Count);
        Assert.Equal(["Para one.", "Para two."], docs[0].Paragraphs);
        Assert.Equal("https://example.com/a", docs[0].Id);
        Assert.Null(docs[0].Title);
        Assert.Equal(["Only paragraph"], docs[1].Paragraphs);
        Assert.Equal("7", docs[1].Id); // "id" wins over "url"; a number keeps its JSON spelling
        Assert.Equal("Seven", docs[1].Title);
        Assert.Equal(["café 😀"], docs[2].Paragraphs);
        Assert.Null(docs[2].Id);
        Assert.Equal([1, 3, 5], docs.Select(d => d.Line));
    }

    [Fact]
    public void JsonLinesReadTheTextField()
    {
        var path = Write("part.jsonl", JsonLines);
        Assert.Equal(CorpusFileFormat.JsonLines, TextCorpus.DetectFormat(path));
        AssertJsonLines(Read(path));
    }

    [Fact]
    public void GzippedJsonLinesInC4NamingReadTheSame()
    {
        var c4 = Write("c4-train.00000-of-01024.json.gz", JsonLines, gzip: true);
        Assert.Equal(CorpusFileFormat.JsonLines, TextCorpus.DetectFormat(c4));
        AssertJsonLines(Read(c4));
        AssertJsonLines(Read(Write("part.JSONL.GZ", JsonLines, gzip: true)));
    }

    private const string Wiki =
        "\n" +
        "<doc id=\"12\" url=\"http://en.wikipedia.org/wiki?curid=12\" title=\"Anarchism\">\n" + // 2
        "Anarchism\n" +
        "\n" +
        "Anarchism is a political philosophy.\n" +
        "Etymology and terminology.\n" +
        "</doc>\n" +
        "<doc id=\"25\" url=\"u\" title=\"Stub\">\n" +         // 8: title only: skipped
        "Stub\n" +
        "</doc>\n" +
        "<doc id=\"39\" url=\"u\" title=\"Say \"Hi\"\">\n" +  // 11: WikiExtractor leaves quotes in titles unescaped
        "Say \"Hi\"\n" +
        "Say \"Hi\" is a song.\n" +
        "</doc>\n";

    private static void AssertWiki(List<CorpusDocument> docs, string path)
    {
        Assert.Equal(2, docs.Count);
        Assert.Equal("12", docs[0].Id);
        Assert.Equal("Anarchism", docs[0].Title);
        Assert.Equal(["Anarchism is a political philosophy.", "Etymology and terminology."], docs[0].Paragraphs);
        Assert.Equal("39", docs[1].Id);
        Assert.Equal("Say \"Hi\"", docs[1].Title);
        Assert.Equal(["Say \"Hi\" is a song."], docs[1].Paragraphs);
        Assert.Equal([2, 11], docs.Select(d => d.Line));
        Assert.All(docs, d => Assert.Equal(path, d.Source));
    }

    [Fact]
    public void WikiExtractorFilesAreDetectedByContent()
    {
        var plain = Write("AA/wiki_00", Wiki);
        var gz = Write("AA/wiki_01.gz", Wiki, gzip: true);
        Assert.Equal(CorpusFileFormat.WikiExtractor, TextCorpus.DetectFormat(plain));
        Assert.Equal(CorpusFileFormat.WikiExtractor, TextCorpus.DetectFormat(gz));
        AssertWiki(Read(plain), plain);
        AssertWiki(Read(gz), gz);
        // The title line is only dropped right after the header; the same text later is a paragraph.
        var repeated = Write("wiki_02", "<doc id=\"1\" title=\"T\">\nT\nT\n</doc>\n");
        Assert.Equal(["T"], Read(repeated).Single().Paragraphs);
    }

    [Fact]
    public void RealWikiExtractorFileFromSharedDatasets()
    {
        var path = SharedData.Get("corpus/enwiki-2015-wikiextractor/AA/wiki_00.gz");
        var corpus = new TextCorpus(path);
        var docs = corpus.ReadDocuments(Ct).ToList();
        // Counted independently (Python, gzip module) on the file recorded in shared/datasets/MANIFEST.md.
        Assert.Equal(38, docs.Count);
        Assert.Equal(2615, docs.Sum(d => d.Paragraphs.Count));
        Assert.Equal(("12", "Anarchism", 113), (docs[0].Id, docs[0].Title, docs[0].Paragraphs.Count));
        Assert.StartsWith("Anarchism is a political philosophy that advocates stateless", docs[0].Paragraphs[0], StringComparison.Ordinal);
        Assert.Equal(["Anarchism", "Autism", "Albedo", "A", "Alabama"], docs.Take(5).Select(d => d.Title));
        Assert.Equal(("624", "Alaska", 187), (docs[^1].Id, docs[^1].Title, docs[^1].Paragraphs.Count));
        Assert.Equal(new FileInfo(path).Length, corpus.TotalBytes);
        Assert.Equal(corpus.TotalBytes, corpus.BytesRead);
    }

    [Fact]
    public void DirectoriesAreExpandedRecursivelyInOrdinalOrderSkippingHiddenFiles()
    {
        var root = Path.Combine(_dir.FullName, "corpus");
        foreach (var name in new[] { "b.txt", "a/z.txt", "A.txt", "a.txt", "a-b.jsonl", ".hidden.txt", ".cache/x.txt" })
        {
            var text = name.EndsWith(".jsonl", StringComparison.Ordinal) ? $"{{\"text\":\"{name}\"}}" : name;
            Write(Path.Combine("corpus", name), text);
        }
        var corpus = new TextCorpus(root);
        // Ordinal: upper case before lower case, '-' (0x2D) < '.' (0x2E) < '/' (0x2F).
        string[] expected = ["A.txt", "a-b.jsonl", "a.txt", "a/z.txt", "b.txt"];
        Assert.Equal(expected.Select(n => Path.Combine(root, n)), corpus.Files);
        Assert.Equal(expected, corpus.ReadParagraphs(Ct));
    }

    [Fact]
    public void SeveralPathsAreReadInTheGivenOrderAndBytesAreCounted()
    {
        var wiki = Write("x/wiki_00.gz", Wiki, gzip: true);
        var json = Write("x/b.jsonl", JsonLines);
        var corpus = new TextCorpus(json, wiki);
        Assert.Equal([json, wiki], corpus.Files);
        Assert.Equal(new FileInfo(wiki).Length + new FileInfo(json).Length, corpus.TotalBytes);
        Assert.Equal(0, corpus.BytesRead);

        using (var e = corpus.ReadDocuments(Ct).GetEnumerator())
        {
            Assert.True(e.MoveNext());
            Assert.Equal(json, e.Current.Source);
            Assert.InRange(corpus.BytesRead, 1, new FileInfo(json).Length);
        }
        var paragraphs = corpus.ReadParagraphs(Ct).ToList();
        Assert.Equal(4 + 3, paragraphs.Count);
        Assert.Equal("Para one.", paragraphs[0]);
        Assert.Equal("Say \"Hi\" is a song.", paragraphs[^1]);
        // The bytes of every pass add up: one full pass is TotalBytes.
        long afterPartialPass = corpus.BytesRead - corpus.TotalBytes;
        Assert.InRange(afterPartialPass, 1, new FileInfo(json).Length);
    }

    [Fact]
    public void MissingPathIsReportedByName()
    {
        var missing = Path.Combine(_dir.FullName, "nope", "wiki_00.gz");
        var e = Assert.Throws<FileNotFoundException>(() => new TextCorpus(Write("ok.txt", "text"), missing));
        Assert.Contains(missing, e.Message, StringComparison.Ordinal);
        Assert.Equal(missing, e.FileName);
        Assert.Throws<ArgumentException>(() => new TextCorpus());
        Assert.Throws<ArgumentException>(() => new TextCorpus(""));
    }

    [Fact]
    public void EmptyCorpusIsAnError()
    {
        var emptyDir = Directory.CreateDirectory(Path.Combine(_dir.FullName, "empty")).FullName;
        Write("empty/.hidden", "text that is skipped");
        var e = Assert.Throws<CorpusFormatException>(() => new TextCorpus(emptyDir));
        Assert.Contains(emptyDir, e.Message, StringComparison.Ordinal);
        Assert.Contains("holds no file", e.Message, StringComparison.Ordinal);

        var blank = Write("blank.txt", "\n  \n\r\n");
        var noText = Write("c4.jsonl.gz", "{\"text\":\"\"}\n{\"text\":\" \\n \"}\n", gzip: true);
        var wikiStubs = Write("wiki_00", "<doc id=\"1\" title=\"T\">\nT\n</doc>\n");
        e = Assert.Throws<CorpusFormatException>(() => Read(blank, noText, wikiStubs));
        Assert.Contains(blank, e.Message, StringComparison.Ordinal);
        Assert.Contains("hold no text", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void InvalidJsonLineIsReportedWithFileAndLine()
    {
        var path = Write("bad.jsonl", "{\"text\":\"fine\"}\n\n{\"text\": \"unterminated}\n");
        var corpus = new TextCorpus(path);
        using var docs = corpus.ReadDocuments(Ct).GetEnumerator();
        Assert.True(docs.MoveNext()); // documents before the bad line are delivered
        var e = Assert.Throws<CorpusFormatException>(() => docs.MoveNext());
        Assert.Equal(3, e.Line);
        Assert.Equal(path, e.Path);
        Assert.StartsWith($"{path}:3: invalid JSON", e.Message, StringComparison.Ordinal);
        Assert.IsAssignableFrom<System.Text.Json.JsonException>(e.InnerException);
    }

    [Theory]
    [InlineData("{\"content\":\"x\"}", "the JSON object has no \"text\" field")]
    [InlineData("{\"text\":5}", "the \"text\" field is a number, not a string")]
    [InlineData("{\"text\":null}", "the \"text\" field is null, not a string")]
    [InlineData("{\"text\":[\"a\"]}", "the \"text\" field is an array, not a string")]
    [InlineData("[\"text\"]", "a JSON line must be an object with a string \"text\" field, not an array")]
    [InlineData("\"text\"", "a JSON line must be an object with a string \"text\" field, not a string")]
    public void JsonLineWithoutAStringTextFieldIsReported(string line, string detail)
    {
        var path = Write("c4.jsonl", "{\"text\":\"ok\"}\n" + line + "\n");
        var e = Assert.Throws<CorpusFormatException>(() => Read(path));
        Assert.Equal($"{path}:2: {detail}", e.Message);
        Assert.Equal(detail, e.Detail);
    }

    [Fact]
    public void UnreadableGzipIsReportedWithTheFileName()
    {
        var notGzip = Write("c4-train.json.gz", "{\"text\":\"plain, not gzip\"}\n");
        var e = Assert.Throws<CorpusFormatException>(() => Read(notGzip));
        Assert.Equal(notGzip, e.Path);
        Assert.Null(e.Line);
        Assert.StartsWith($"{notGzip}: not a readable gzip file", e.Message, StringComparison.Ordinal);
        Assert.IsType<InvalidDataException>(e.InnerException);
        Assert.Throws<CorpusFormatException>(() => TextCorpus.DetectFormat(Write("wiki_00.gz", "not gzip either")));

        // Damage inside the compressed data: found after the lines before it were read.
        var text = string.Concat(Enumerable.Range(0, 5000).Select(i => $"Line {i} of a long plain text file, {i * 7919 % 10007}.\n"));
        var path = Write("damaged.txt.gz", text, gzip: true);
        var bytes = File.ReadAllBytes(path);
        for (int i = bytes.Length / 2; i < bytes.Length / 2 + 16; i++) bytes[i] ^= 0x5A;
        File.WriteAllBytes(path, bytes);
        e = Assert.Throws<CorpusFormatException>(() => Read(path));
        Assert.Equal(path, e.Path);
        Assert.True(e.Line > 1, e.Message);
        Assert.Contains("gzip data is corrupt", e.Message, StringComparison.Ordinal);
        Assert.IsType<InvalidDataException>(e.InnerException);
    }

    [Fact]
    public void TruncatedGzipIsAnErrorNotASilentlyShorterCorpus()
    {
        var text = string.Concat(Enumerable.Range(0, 20000).Select(i => $"Line {i} of a long plain text file, {i * 7919 % 10007}.\n"));
        var path = Write("cut.txt.gz", text, gzip: true);
        Assert.Equal(20000, Read(path).Sum(d => d.Paragraphs.Count)); // the intact file reads whole
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<CorpusFormatException>(() => Read(path));
        Assert.Equal(path, e.Path);
        Assert.True(e.Message.Contains("truncated", StringComparison.Ordinal) || e.Message.Contains("corrupt", StringComparison.Ordinal), e.Message);
    }

    [Theory]
    [InlineData("<doc id=\"1\" title=\"A\">\nA\ntext\n", 1, "the <doc> opened here has no </doc> before the end of the file")]
    [InlineData("<doc id=\"1\" title=\"A\">\ntext\n</doc>\nstray text\n", 4, "text outside a <doc> ... </doc> block")]
    [InlineData("<doc id=\"1\" title=\"A\">\ntext\n<doc id=\"2\" title=\"B\">\n</doc>\n", 3, "a new <doc> starts but the one opened at line 1 has no </doc>")]
    [InlineData("<doc id=\"1\" title=\"A\">\n</doc>\n</doc>\n", 3, "</doc> without an open <doc>")]
    [InlineData("<doc id=\"1\" title=\"A\"\ntext\n</doc>\n", 1, "malformed <doc ...> header: it does not end with '>'")]
    public void MalformedWikiExtractorFileIsReportedWithFileAndLine(string content, int line, string detail)
    {
        var path = Write("wiki_07", content);
        var e = Assert.Throws<CorpusFormatException>(() => Read(path));
        Assert.Equal($"{path}:{line}: {detail}", e.Message);
    }

    [Fact]
    public void CancellationStopsTheEnumeration()
    {
        var corpus = new TextCorpus(Write("a.txt", "one\n\ntwo\n"));
        using var cts = new CancellationTokenSource();
        using var docs = corpus.ReadDocuments(cts.Token).GetEnumerator();
        Assert.True(docs.MoveNext());
        cts.Cancel();
        Assert.Throws<OperationCanceledException>(() => docs.MoveNext());
    }
}
