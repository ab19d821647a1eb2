using System.Text;

namespace MosaicBert.Cli.Tests;

public sealed class TokenizeTests : CliTestBase
{
    private const string HelloWorldLine = """{"ids":[101,7592,2088,102],"type_ids":[0,0,0,0],"offsets":[[0,0],[0,5],[6,11],[0,0]]}""";

    [Fact]
    public void Tokenize_SimpleSentence_WritesExactIdsTypeIdsAndOffsets_ByteForByte()
    {
        var input = WriteFile("in.jsonl", "{\"a\": \"hello world\"}\n");

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input]);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal(Encoding.UTF8.GetBytes(HelloWorldLine + "\n"), r.StdoutBytes);
        Assert.Equal("", r.Stderr);
    }

    [Fact]
    public void Tokenize_PairLongerThanMaxLength_TruncatesLongestFirst()
    {
        // a = 2 tokens, b = 5 tokens; --max-length 8 leaves 5 for both: b, the longer, loses 2 (Hugging Face longest_first).
        var input = WriteFile("in.jsonl", """{"a": "Hello world", "b": "the second text goes here"}""" + "\n");

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input, "--max-length", "8"]);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal(
            """{"ids":[101,7592,2088,102,1996,2117,3793,102],"type_ids":[0,0,0,0,1,1,1,1],"offsets":[[0,0],[0,5],[6,11],[0,0],[0,3],[4,10],[11,15],[0,0]]}""" + "\n",
            r.Stdout);
    }

    [Fact]
    public void Tokenize_PairWithinDefaultMaxLength_OffsetsAreIntoEachSequence()
    {
        var input = WriteFile("in.jsonl", """{"a": "Hello, World!", "b": "the second text goes here"}""" + "\n");

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input]);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal(
            """{"ids":[101,7592,1010,2088,999,102,1996,2117,3793,3632,2182,102],"type_ids":[0,0,0,0,0,0,1,1,1,1,1,1],"offsets":[[0,0],[0,5],[5,6],[7,12],[12,13],[0,0],[0,3],[4,10],[11,15],[16,20],[21,25],[0,0]]}""" + "\n",
            r.Stdout);
    }

    [Fact]
    public void Tokenize_SingleTextLongerThanMaxLength_KeepsFirstTokens()
    {
        var input = WriteFile("in.jsonl", """{"a": "hello world hello world"}""" + "\n");

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input, "--max-length", "3"]);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("""{"ids":[101,7592,102],"type_ids":[0,0,0],"offsets":[[0,0],[0,5],[0,0]]}""" + "\n", r.Stdout);
    }

    [Fact]
    public void Tokenize_HandlesBomCrLfEscapesNullPairExtraFieldsAndNoFinalNewline()
    {
        var text = "\uFEFF" +
            "{\"a\": \"hello world\", \"b\": null, \"label\": [1, {\"x\": 2}]}\r\n" +
            "{\"b\": null, \"a\": \"\\u0068ello\\tworld\"}\r\n" +
            "{\"a\":\"hello world\"}"; // no final line break
        var input = WriteFile("in.jsonl", text);

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input]);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal(string.Concat(Enumerable.Repeat(HelloWorldLine + "\n", 3)), r.Stdout);
    }

    [Fact]
    public void Tokenize_NonBmpText_OffsetsCountUtf16Units()
    {
        // "😀" is two UTF-16 units: the offsets of "hello" after it start at 3.
        var input = WriteFile("in.jsonl", "{\"a\": \"\\ud83d\\ude00 hello\"}\n");

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input]);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("""{"ids":[101,100,7592,102],"type_ids":[0,0,0,0],"offsets":[[0,0],[0,2],[3,8],[0,0]]}""" + "\n", r.Stdout);
    }

    [Fact]
    public void Tokenize_EmptyInput_WritesNothing()
    {
        var input = WriteFile("in.jsonl", "");

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input]);

        Assert.Equal(0, r.ExitCode);
        Assert.Empty(r.StdoutBytes);
    }

    [Fact]
    public void Tokenize_DashReadsStdin()
    {
        var r = Run(["tokenize", "--vocab", BertVocab, "--input", "-"], stdin: "{\"a\":\"hello world\"}\n{\"a\":\"hello world\"}\n");

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal(HelloWorldLine + "\n" + HelloWorldLine + "\n", r.Stdout);
    }

    [Fact]
    public void Tokenize_ManyLines_ParallelOutputKeepsInputOrder()
    {
        var words = new[] { "hello", "world", "the", "second", "text", "goes", "here" };
        var sb = new StringBuilder();
        for (int i = 0; i < 3000; i++)
            sb.Append("{\"a\": \"").AppendJoin(' ', Enumerable.Range(0, 1 + i % 13).Select(k => words[(i + k) % words.Length]))
              .Append("\", \"b\": \"").Append(i).Append("\"}\n");
        var input = WriteFile("in.jsonl", sb.ToString());

        var serial = Run(["tokenize", "--vocab", BertVocab, "--input", input, "--threads", "1"]);
        var parallel = Run(["tokenize", "--vocab", BertVocab, "--input", input, "--threads", "4"]);

        Assert.True(serial.ExitCode == 0, serial.ToString());
        Assert.True(parallel.ExitCode == 0, parallel.ToString());
        Assert.Equal(serial.Stdout, parallel.Stdout);
        var lines = parallel.StdoutLines;
        Assert.Equal(3000, lines.Length);
        Assert.Equal("""{"ids":[101,7592,102,1014,102],"type_ids":[0,0,0,1,1],"offsets":[[0,0],[0,5],[0,0],[0,1],[0,0]]}""", lines[0]);
    }

    [Fact]
    public void Tokenize_Output_WritesTheFileAndNothingOnStdout()
    {
        var input = WriteFile("in.jsonl", "{\"a\": \"hello world\"}\n");
        var output = Path.Combine(TempDir, "out.jsonl");

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input, "--output", output]);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Empty(r.StdoutBytes);
        Assert.Equal(HelloWorldLine + "\n", File.ReadAllText(output));
        Assert.Equal(["in.jsonl", "out.jsonl"], Directory.GetFiles(TempDir).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void Tokenize_Output_ReplacesAnExistingFileOnSuccess()
    {
        var input = WriteFile("in.jsonl", "{\"a\": \"hello world\"}\n");
        var output = WriteFile("out.jsonl", "old content\n");

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input, "--output", output]);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal(HelloWorldLine + "\n", File.ReadAllText(output));
    }

    [Fact]
    public void Tokenize_Output_BadInputLeavesAnExistingFileIntactAndNoTemporaryFile()
    {
        var sb = new StringBuilder();
        for (int i = 0; i < 2000; i++) sb.Append("{\"a\": \"hello world\"}\n");
        sb.Append("{\"a\": 5}\n");
        var input = WriteFile("in.jsonl", sb.ToString());
        var output = WriteFile("out.jsonl", "precious\n");

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input, "--output", output]);

        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"error: {input}:2001: field \"a\" is missing or not a string (found a number)\n", r.Stderr);
        Assert.Equal("precious\n", File.ReadAllText(output));
        Assert.Equal(["in.jsonl", "out.jsonl"], Directory.GetFiles(TempDir).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void Tokenize_Output_BadInputCreatesNoFile()
    {
        var input = WriteFile("in.jsonl", "not json\n");
        var output = Path.Combine(TempDir, "out.jsonl");

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input, "--output", output]);

        Assert.Equal(1, r.ExitCode);
        Assert.False(File.Exists(output));
        Assert.Single(Directory.GetFiles(TempDir));
    }

    [Fact]
    public void Tokenize_ErrorOnStdout_OutputHoldsExactlyTheLinesBeforeTheBadOne()
    {
        var sb = new StringBuilder();
        for (int i = 0; i < 2500; i++) sb.Append("{\"a\": \"hello world\"}\n");
        sb.Append('\n');
        for (int i = 0; i < 10; i++) sb.Append("{\"a\": \"hello world\"}\n");
        var input = WriteFile("in.jsonl", sb.ToString());

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input, "--threads", "4"]);

        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith($"error: {input}:2501: blank line;", r.Stderr);
        Assert.Equal(2500, r.StdoutLines.Length);
    }

    [Fact]
    public void Version_PrintsTheVersion()
    {
        var r = Run(["--version"]);

        Assert.Equal(0, r.ExitCode);
        Assert.Matches(@"^\d+\.\d+\.\d+", r.Stdout);
    }

    [Fact]
    public void Help_ListsTheVerbs()
    {
        var r = Run(["--help"]);

        Assert.Equal(0, r.ExitCode);
        Assert.Contains("tokenize", r.Stdout);
        Assert.Contains("vocab", r.Stdout);
    }
}
