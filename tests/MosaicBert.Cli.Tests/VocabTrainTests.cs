using System.IO.Compression;
using System.Text;
using MosaicBert.Tokenizers;

namespace MosaicBert.Cli.Tests;

public sealed class VocabTrainTests : CliTestBase
{
    private static string SmallCorpus()
    {
        var words = new[] { "token", "tokenizer", "tokenization", "vocabulary", "training", "train", "trained", "words",
            "word", "pieces", "piece", "the", "a", "of", "and", "Hello", "world", "Ünïcödé", "café", "naïve" };
        var sb = new StringBuilder();
        for (int i = 0; i < 400; i++)
        {
            sb.AppendJoin(' ', Enumerable.Range(0, 12).Select(k => words[(i * 7 + k * k) % words.Length])).Append(".\n");
            if (i % 10 == 9) sb.Append('\n');
        }
        return sb.ToString();
    }

    [Fact]
    public void Train_WritesAVocabularyOfAMultipleOf64ThatTheTokenizerLoads()
    {
        var corpus = WriteFile("corpus.txt", SmallCorpus());
        var output = Path.Combine(TempDir, "vocab.txt");

        var r = Run(["vocab", "train", "--corpus", corpus, "--size", "100", "--output", output, "--threads", "2"]);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Matches($@"^wrote {System.Text.RegularExpressions.Regex.Escape(output)}: 128 tokens, trained on \d+\.\d MB in \d+\.\d s \(\d+\.\d MB/s\)\n$", r.Stdout);
        Assert.Equal("", r.Stderr);
        var lines = File.ReadAllLines(output);
        Assert.Equal(128, lines.Length);
        Assert.Equal(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], lines[..5]);
        var tokenizer = BertTokenizer.Create(output);
        Assert.Equal(128, tokenizer.Vocabulary.Count);
        Assert.DoesNotContain(tokenizer.UnknownTokenId, tokenizer.Encode("tokenizer training").InputIds);
        Assert.Equal(["corpus.txt", "vocab.txt"], Directory.GetFiles(TempDir).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void Train_ThenTokenize_EndToEnd()
    {
        var dir = Directory.CreateDirectory(Path.Combine(TempDir, "corpus")).FullName;
        File.WriteAllText(Path.Combine(dir, "a.txt"), SmallCorpus());
        using (var gz = new GZipStream(File.Create(Path.Combine(dir, "b.jsonl.gz")), CompressionLevel.Fastest))
            gz.Write(Encoding.UTF8.GetBytes("{\"text\": \"tokenizer words\\nsecond paragraph\"}\n"));
        var vocab = Path.Combine(TempDir, "vocab.txt");

        var train = Run(["vocab", "train", "--corpus", dir, "--size", "150", "--output", vocab, "--lowercase", "false"]);
        var input = WriteFile("in.jsonl", "{\"a\": \"Hello tokenizer\"}\n");
        var tokenize = Run(["tokenize", "--vocab", vocab, "--input", input, "--lowercase", "false"]);

        Assert.True(train.ExitCode == 0, train.ToString());
        Assert.Equal(192, File.ReadAllLines(vocab).Length);
        Assert.Contains("Ü", File.ReadAllLines(vocab)); // cased, accents kept
        Assert.True(tokenize.ExitCode == 0, tokenize.ToString());
        Assert.StartsWith("{\"ids\":[2,", tokenize.Stdout);
    }

    [Fact]
    public void Train_MissingCorpus()
    {
        var missing = Path.Combine(TempDir, "nope");

        var r = Run(["vocab", "train", "--corpus", missing, "--size", "100", "--output", Path.Combine(TempDir, "v.txt")]);

        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"error: {missing}: corpus file or directory not found\n", r.Stderr);
    }

    [Fact]
    public void Train_MalformedCorpus_NamesFileAndLine_AndWritesNothing()
    {
        var corpus = WriteFile("c.jsonl", "{\"text\": \"fine\"}\n{\"txt\": \"oops\"}\n");
        var output = WriteFile("v.txt", "keep\n");

        var r = Run(["vocab", "train", "--corpus", corpus, "--size", "100", "--output", output]);

        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith($"error: {corpus}:2: ", r.Stderr);
        Assert.Equal("keep\n", File.ReadAllText(output));
        Assert.Equal(["c.jsonl", "v.txt"], Directory.GetFiles(TempDir).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void Train_EmptyCorpus()
    {
        var corpus = WriteFile("c.txt", "\n\n");

        var r = Run(["vocab", "train", "--corpus", corpus, "--size", "100", "--output", Path.Combine(TempDir, "v.txt")]);

        Assert.Equal(1, r.ExitCode);
        Assert.Contains("empty", r.Stderr);
        Assert.False(File.Exists(Path.Combine(TempDir, "v.txt")));
    }

    [Fact]
    public void Train_OutputDirectoryMissing_FailsBeforeTraining()
    {
        var corpus = WriteFile("c.txt", "hello\n");
        var output = Path.Combine(TempDir, "no", "v.txt");

        var r = Run(["vocab", "train", "--corpus", corpus, "--size", "100", "--output", output]);

        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith($"error: {output}: the directory ", r.Stderr);
    }

    [Theory]
    [InlineData("--size", "5", "error: --size must be at least 6, not 5")]
    [InlineData("--size", "x", "error: --size: 'x' is not a whole number")]
    [InlineData("--min-frequency", "0", "error: --min-frequency must be at least 1, not 0")]
    [InlineData("--threads", "0", "error: --threads must be at least 1, not 0")]
    [InlineData("--lowercase", "maybe", "error: Unrecognized command or argument 'maybe'.")]
    public void Train_BadOption_IsAUsageError(string option, string value, string message)
    {
        string[] args = ["vocab", "train", "--corpus", "c.txt", "--size", "100", "--output", "v.txt"];
        int at = Array.IndexOf(args, option);
        args = at >= 0 ? [.. args[..(at + 1)], value, .. args[(at + 2)..]] : [.. args, option, value];

        var r = Run(args);

        Assert.Equal(2, r.ExitCode);
        Assert.Equal($"{message}\nRun 'mosaicbert vocab train --help' for usage.\n", r.Stderr);
    }

    [Fact]
    public void Train_SizeIsRequired()
    {
        var r = Run(["vocab", "train", "--corpus", "c.txt", "--output", "v.txt"]);

        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--size", r.Stderr);
    }

    [Fact]
    public void Train_EmptyCorpusDirectoryIsAnInputError()
    {
        var dir = Directory.CreateDirectory(Path.Combine(TempDir, "empty")).FullName;
        var r = Run(["vocab", "train", "--corpus", dir, "--size", "100", "--output", Path.Combine(TempDir, "v.txt")]);
        Assert.Equal(1, r.ExitCode);
        Assert.StartsWith("error: ", r.Stderr);
        Assert.Contains(dir, r.Stderr);
        Assert.False(File.Exists(Path.Combine(TempDir, "v.txt")));
    }

    [Fact]
    public void Train_LoneSurrogateInJsonCorpusNamesFileAndLine()
    {
        var corpus = WriteFile("c.jsonl", "{\"text\": \"fine\"}\n{\"text\": \"bad \\ud800 here\"}\n");
        var r = Run(["vocab", "train", "--corpus", corpus, "--size", "100", "--output", Path.Combine(TempDir, "v.txt")]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains($"{corpus}:2:", r.Stderr);
        Assert.Contains("not valid Unicode", r.Stderr);
    }
}
