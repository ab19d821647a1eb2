using System.IO.Compression;
using System.Text;
using System.Text.Json;

namespace MosaicBert.Tokenizers.Tests;

/// <summary>
/// Exact parity with Hugging Face tokenizers 0.23 (BertWordPieceTokenizer, lowercase, clean_text,
/// handle_chinese_chars) on bert-base-uncased's vocabulary. The fixture comes from
/// tests/reference/make_tokenizer_reference.py; every id, type id and offset must be equal (tolerance: none).
/// </summary>
public sealed class HuggingFaceParityTests
{
    private static readonly Lazy<BertTokenizer> s_tokenizer = new(() => BertTokenizer.Create(SharedData.BertVocab));
    private static readonly Lazy<List<JsonElement>> s_records = new(LoadRecords);
    private static readonly Dictionary<string, string[]> s_lineCache = [];

    private static List<JsonElement> LoadRecords()
    {
        using var gz = new GZipStream(File.OpenRead(SharedData.Fixture("tokenizer-parity.jsonl.gz")), CompressionMode.Decompress);
        using var reader = new StreamReader(gz, Encoding.UTF8);
        var list = new List<JsonElement>();
        while (reader.ReadLine() is { } line)
            list.Add(JsonDocument.Parse(line).RootElement.Clone());
        return list;
    }

    /// <summary>Lines split on '\n' only (a BOM dropped), as the reference script reads them.</summary>
    private static string[] Lines(string path)
    {
        lock (s_lineCache)
        {
            if (s_lineCache.TryGetValue(path, out var cached)) return cached;
            Stream s = File.OpenRead(path);
            if (path.EndsWith(".gz", StringComparison.Ordinal)) s = new GZipStream(s, CompressionMode.Decompress);
            using var ms = new MemoryStream();
            using (s) s.CopyTo(ms);
            var text = new UTF8Encoding(false, true).GetString(ms.ToArray()).TrimStart('\uFEFF');
            return s_lineCache[path] = text.Split('\n');
        }
    }

    private static (string A, string? B) Inputs(string src)
    {
        var parts = src.Split(':');
        switch (parts[0])
        {
            case "edge":
                var e = JsonDocument.Parse(Lines(SharedData.Fixture("edge_cases.jsonl"))[int.Parse(parts[1])]).RootElement;
                return (e.GetProperty("a").GetString()!, e.TryGetProperty("b", out var b) ? b.GetString() : null);
            case "sst2":
                return (Lines(SharedData.Get("glue/SST-2/dev.tsv"))[1 + int.Parse(parts[1])].Split('\t')[0], null);
            case "mrpc":
                var row = Lines(SharedData.Get("glue/MRPC/dev.tsv"))[1 + int.Parse(parts[1])].Split('\t');
                return (row[3], row[4]);
            case "wiki":
                return (Lines(SharedData.Get($"corpus/enwiki-2015-wikiextractor/AA/{parts[1]}"))[int.Parse(parts[2])], null);
            default:
                throw new InvalidDataException($"unknown source {src}");
        }
    }

    private static TruncationStrategy Strategy(string s) => s switch
    {
        "longest_first" => TruncationStrategy.LongestFirst,
        "only_first" => TruncationStrategy.OnlyFirst,
        "only_second" => TruncationStrategy.OnlySecond,
        _ => throw new InvalidDataException(s),
    };

    [Theory]
    [InlineData("edge", 256)]
    [InlineData("sst2", 872)]
    [InlineData("mrpc", 2040)]
    [InlineData("wiki", 4000)]
    public void MatchesHuggingFace(string source, int expectedRecords)
    {
        var tokenizer = s_tokenizer.Value;
        var records = s_records.Value.Where(r => r.GetProperty("src").GetString()!.StartsWith(source + ":", StringComparison.Ordinal)).ToList();
        Assert.Equal(expectedRecords, records.Count);
        var failures = new List<string>();
        foreach (var r in records)
        {
            string src = r.GetProperty("src").GetString()!;
            int maxLen = r.GetProperty("maxlen").GetInt32();
            var strategy = Strategy(r.GetProperty("strat").GetString()!);
            var (a, b) = Inputs(src);
            string what = $"{src} maxlen={maxLen} {strategy}";
            BertEncoding enc;
            try
            {
                enc = tokenizer.Encode(a, b, maxLen == 0 ? null : maxLen, strategy);
            }
            catch (ArgumentException e)
            {
                if (!r.TryGetProperty("err", out _)) failures.Add($"{what}: we threw '{e.Message}', HF did not");
                continue;
            }
            if (r.TryGetProperty("err", out var err))
            {
                failures.Add($"{what}: HF refused ('{err.GetString()}'), we did not");
                continue;
            }
            var ids = r.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            int n0 = r.GetProperty("n0").GetInt32();
            var off = r.GetProperty("off").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            var types = ids.Select((_, i) => i < n0 ? 0 : 1).ToArray();
            var ourOff = enc.Offsets.SelectMany(o => new[] { o.Start, o.End }).ToArray();
            if (!ids.SequenceEqual(enc.InputIds))
                failures.Add($"{what}: ids differ\n  HF : {string.Join(',', ids)}\n  ours: {string.Join(',', enc.InputIds)}");
            else if (!types.SequenceEqual(enc.TokenTypeIds))
                failures.Add($"{what}: type ids differ: ours {string.Join(',', enc.TokenTypeIds)}, HF has {n0} zeros");
            else if (!off.SequenceEqual(ourOff))
                failures.Add($"{what}: offsets differ\n  HF : {string.Join(',', off)}\n  ours: {string.Join(',', ourOff)}");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {records.Count} encodings differ from Hugging Face:\n" +
            string.Join("\n", failures.Take(15)));
    }
}

/// <summary>
/// Hugging Face's longest_first pair truncation for every n1, n2 in 0..23 and max_length 3..19
/// (tests/reference/probe_truncation.py); the kept lengths must be equal.
/// </summary>
public sealed class TruncationGridTests
{
    [Fact]
    public void LongestFirstMatchesHuggingFaceOnTheWholeGrid()
    {
        using var gz = new GZipStream(File.OpenRead(SharedData.Fixture("truncation-grid.json.gz")), CompressionMode.Decompress);
        var grid = JsonDocument.Parse(gz).RootElement.GetProperty("grid");
        int checkedRows = 0;
        var failures = new List<string>();
        foreach (var row in grid.EnumerateArray())
        {
            var r = row.EnumerateArray().Select(x => x.GetInt32()).ToArray();
            int budget = r[2] - 3;
            var (k1, k2, _) = BertTokenizer.Truncate(r[0], r[1], hasPair: true, budget, TruncationStrategy.LongestFirst, r[2]);
            if ((k1, k2) != (r[3], r[4])) failures.Add($"n1={r[0]} n2={r[1]} max={r[2]}: HF keeps {r[3]}/{r[4]}, we keep {k1}/{k2}");
            checkedRows++;
        }
        Assert.Equal(9792, checkedRows);
        Assert.True(failures.Count == 0, string.Join("\n", failures.Take(20)));
    }
}
