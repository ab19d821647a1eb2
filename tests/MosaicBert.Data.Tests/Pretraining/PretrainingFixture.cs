using System.Text;
using MosaicBert.Tokenizers;

namespace MosaicBert.Data.Tests.Pretraining;

/// <summary>A temporary directory with a tiny vocabulary and helpers to write corpora into it.</summary>
public sealed class PretrainingFixture : IDisposable
{
    public const int Pad = 0, Unk = 1, Cls = 2, Sep = 3, MaskId = 4;

    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("pretraining-data-");

    public PretrainingFixture()
    {
        // Letters and their continuations: any lower-case ASCII word tokenizes, one token per letter after the
        // first whole-word match, so lengths are easy to control.
        string[] words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", ".", ","];
        var tokens = new List<string> { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" };
        tokens.AddRange(words);
        for (char c = 'a'; c <= 'z'; c++) tokens.Add(c.ToString());
        for (char c = 'a'; c <= 'z'; c++) tokens.Add("##" + c);
        VocabPath = Write("vocab.txt", string.Join('\n', tokens) + "\n");
        Tokenizer = BertTokenizer.Create(VocabPath);
    }

    public string Root => _dir.FullName;
    public string VocabPath { get; }
    public BertTokenizer Tokenizer { get; }

    public void Dispose() => _dir.Delete(recursive: true);

    public string Path(string relative) => System.IO.Path.Combine(Root, relative);

    public string Write(string relative, string content)
    {
        var path = Path(relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        File.WriteAllText(path, content, new UTF8Encoding(false));
        return path;
    }

    /// <summary>Plain text: documents separated by blank lines.</summary>
    public string WriteDocuments(string relative, IEnumerable<string> documents) => Write(relative, string.Join("\n\n", documents) + "\n");

    /// <summary>A document of <paramref name="words"/> words drawn from the vocabulary's words (deterministic).</summary>
    public static string Words(int words, int seed)
    {
        string[] pool = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "zebra", "quick"];
        var rng = new Random(seed);
        return string.Join(' ', Enumerable.Range(0, words).Select(_ => pool[rng.Next(pool.Length)]));
    }

    /// <summary>A tokenizer over a vocabulary that differs from <see cref="Tokenizer"/>'s (one extra word).</summary>
    public BertTokenizer OtherTokenizer()
    {
        var lines = File.ReadAllLines(VocabPath).Append("zebra");
        return BertTokenizer.Create(Write("vocab-other.txt", string.Join('\n', lines) + "\n"));
    }

    public static CancellationToken Ct => TestContext.Current.CancellationToken;

    public string[] FilesUnder(string relative) =>
        Directory.Exists(Path(relative)) ? Directory.GetFiles(Path(relative), "*", SearchOption.AllDirectories) : [];
}
