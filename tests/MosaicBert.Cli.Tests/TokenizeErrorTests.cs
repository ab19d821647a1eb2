namespace MosaicBert.Cli.Tests;

public sealed class TokenizeErrorTests : CliTestBase
{
    private const string Good = "{\"a\": \"hello world\"}\n";

    private CliResult Tokenize(string inputContent, params string[] extra)
    {
        var input = WriteFile("in.jsonl", inputContent);
        return Run(["tokenize", "--vocab", BertVocab, "--input", input, .. extra]);
    }

    private string InputPath => Path.Combine(TempDir, "in.jsonl");

    [Fact]
    public void InvalidJson_NamesFileAndLine()
    {
        var r = Tokenize(Good + Good + "{\"a\": \"hello\"\n");

        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith($"error: {InputPath}:3: invalid JSON: ", r.Stderr);
        Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.Equal(2, r.StdoutLines.Length);
    }

    [Theory]
    [InlineData("{\"a\": \"x\"} {\"a\": \"y\"}")]
    [InlineData("{\"a\": 'x'}")]
    [InlineData("{\"a\": \"\\q\"}")]
    [InlineData("{\"a\": \"x\",}")]
    public void InvalidJson_Variants(string line)
    {
        var r = Tokenize(line + "\n");

        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith($"error: {InputPath}:1: invalid JSON: ", r.Stderr);
    }

    [Fact]
    public void MissingField_NamesFileAndLine()
    {
        var r = Tokenize(Good + "{\"b\": \"hello\"}\n");

        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"error: {InputPath}:2: field \"a\" is missing or not a string\n", r.Stderr);
    }

    [Theory]
    [InlineData("{\"a\": 5}", "field \"a\" is missing or not a string (found a number)")]
    [InlineData("{\"a\": null}", "field \"a\" is missing or not a string (found null)")]
    [InlineData("{\"a\": \"x\", \"b\": 1}", "field \"b\" is not a string or null (found a number)")]
    [InlineData("{\"a\": \"x\", \"a\": \"y\"}", "field \"a\" appears twice")]
    [InlineData("[\"hello\"]", "expected a JSON object such as {\"a\": \"text\"}, found an array")]
    [InlineData("\"hello\"", "expected a JSON object such as {\"a\": \"text\"}, found a string")]
    public void WrongShape_NamesFileLineAndProblem(string line, string message)
    {
        var r = Tokenize(line + "\n");

        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"error: {InputPath}:1: {message}\n", r.Stderr);
    }

    [Fact]
    public void LoneSurrogateEscape_NamesFileLineAndUtf16Index()
    {
        // System.Text.Json itself refuses "\ud800" when asked for a string; the CLI reports it like any bad text.
        var r = Tokenize(Good + Good + "{\"a\": \"abcd\\ud800\"}\n");

        Assert.Equal(1, r.ExitCode);
        Assert.Equal(
            $"error: {InputPath}:3: field \"a\" holds a lone surrogate U+D800 at UTF-16 index 4; the text is not valid Unicode\n",
            r.Stderr);
    }

    [Theory]
    [InlineData("{\"a\": \"x\", \"b\": \"\\udc00y\"}", "field \"b\" holds a lone surrogate U+DC00 at UTF-16 index 0")]
    [InlineData("{\"a\": \"\\ud83d\"}", "field \"a\" holds a lone surrogate U+D83D at UTF-16 index 0")]
    [InlineData("{\"a\": \"\\ude00\\ud83d\"}", "field \"a\" holds a lone surrogate U+DE00 at UTF-16 index 0")]
    public void LoneSurrogateEscape_Variants(string line, string message)
    {
        var r = Tokenize(line + "\n");

        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith($"error: {InputPath}:1: {message};", r.Stderr);
    }

    [Fact]
    public void InvalidUtf8_NamesFileLineAndByte()
    {
        var input = WriteBytes("in.jsonl", [.. "{\"a\": \"ab"u8, 0xFF, .. "\"}\n"u8]);

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input]);

        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"error: {input}:1: not valid UTF-8 (byte 9 of the line)\n", r.Stderr);
    }

    [Theory]
    [InlineData("\n")]
    [InlineData("   \n")]
    [InlineData("\r\n")]
    public void BlankLine_IsAnError(string blank)
    {
        var r = Tokenize(Good + blank + Good);

        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith($"error: {InputPath}:2: blank line; every line must hold a JSON object", r.Stderr);
    }

    [Fact]
    public void MissingInputFile()
    {
        var missing = Path.Combine(TempDir, "nope.jsonl");

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", missing]);

        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"error: {missing}: input file not found\n", r.Stderr);
    }

    [Fact]
    public void MissingVocab()
    {
        var input = WriteFile("in.jsonl", Good);
        var missing = Path.Combine(TempDir, "vocab.txt");

        var r = Run(["tokenize", "--vocab", missing, "--input", input]);

        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"error: {missing}: vocabulary file not found\n", r.Stderr);
    }

    [Fact]
    public void VocabWithDuplicateLine_NamesFileAndLine()
    {
        var vocab = WriteFile("vocab.txt", "[PAD]\n[UNK]\nx\n[CLS]\n[SEP]\n[MASK]\nhello\nx\n");
        var input = WriteFile("in.jsonl", Good);

        var r = Run(["tokenize", "--vocab", vocab, "--input", input]);

        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"error: {vocab}:8: token 'x' repeats line 3; a vocabulary holds each token once\n", r.Stderr);
    }

    [Fact]
    public void VocabWithEmptyLine_NamesFileAndLine()
    {
        var vocab = WriteFile("vocab.txt", "[PAD]\n[UNK]\n\n[CLS]\n[SEP]\n[MASK]\n");
        var input = WriteFile("in.jsonl", Good);

        var r = Run(["tokenize", "--vocab", vocab, "--input", input]);

        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith($"error: {vocab}:3: empty line", r.Stderr);
    }

    [Fact]
    public void VocabWithoutMask_NamesFileAndToken()
    {
        var vocab = WriteFile("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n");
        var input = WriteFile("in.jsonl", Good);

        var r = Run(["tokenize", "--vocab", vocab, "--input", input]);

        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"error: {vocab}: required special token [MASK] is not in the vocabulary\n", r.Stderr);
    }

    [Fact]
    public void SmallVocab_Works()
    {
        var vocab = WriteFile("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nwor\n##ld\n");
        var input = WriteFile("in.jsonl", "{\"a\": \"Hello world!\"}\n");

        var r = Run(["tokenize", "--vocab", vocab, "--input", input]);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("""{"ids":[2,5,6,7,1,3],"type_ids":[0,0,0,0,0,0],"offsets":[[0,0],[0,5],[6,9],[9,11],[11,12],[0,0]]}""" + "\n", r.Stdout);
    }

    [Theory]
    [InlineData("2", "error: --max-length must be at least 3, not 2")]
    [InlineData("0", "error: --max-length must be at least 3, not 0")]
    [InlineData("-5", "error: --max-length must be at least 3, not -5")]
    [InlineData("abc", "error: --max-length: 'abc' is not a whole number")]
    [InlineData("99999999999", "error: --max-length: '99999999999' is not a whole number")]
    public void BadMaxLength_IsAUsageError(string value, string message)
    {
        var input = WriteFile("in.jsonl", Good);

        var r = Run(["tokenize", "--vocab", "unused.txt", "--input", input, "--max-length", value]);

        Assert.Equal(2, r.ExitCode);
        Assert.Equal($"{message}\nRun 'mosaicbert tokenize --help' for usage.\n", r.Stderr);
        Assert.Empty(r.StdoutBytes);
    }

    [Fact]
    public void MissingRequiredOption_IsAUsageError()
    {
        var r = Run(["tokenize", "--input", "x.jsonl"]);

        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("error: Option '--vocab' is required.", r.Stderr);
    }

    [Fact]
    public void UnknownVerb_IsAUsageError()
    {
        var r = Run(["tokenise"]);

        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("error: ", r.Stderr);
    }

    [Fact]
    public void NoVerb_IsAUsageError()
    {
        var r = Run([]);

        Assert.Equal(2, r.ExitCode);
        Assert.Contains("Run 'mosaicbert --help' for usage.", r.Stderr);
    }

    [Fact]
    public void OutputInMissingDirectory_NamesThePath()
    {
        var input = WriteFile("in.jsonl", Good);
        var output = Path.Combine(TempDir, "no", "out.jsonl");

        var r = Run(["tokenize", "--vocab", BertVocab, "--input", input, "--output", output]);

        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith($"error: {output}: the directory ", r.Stderr);
    }
}
