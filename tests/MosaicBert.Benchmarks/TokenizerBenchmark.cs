using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MosaicBert.Tokenizers;

namespace MosaicBert.Benchmarks;

/// <summary>
/// Tokenizer throughput on the WikiExtractor sample: the same paragraphs as tests/reference/bench_tokenizer_hf.py
/// (every body line of the first N files, one sequence each, [CLS]/[SEP], no truncation). Prints one JSON line per
/// thread count; with --hf, the ratio to Hugging Face's figure at the same thread count from the same run.
/// </summary>
internal static class TokenizerBenchmark
{
    public static int Run(Dictionary<string, string> args)
    {
        string vocab = args["vocab"];
        string wiki = args["wiki"];
        int files = int.Parse(args.GetValueOrDefault("files", "10"));
        int repeats = int.Parse(args.GetValueOrDefault("repeats", "3"));
        var threads = args.GetValueOrDefault("threads", $"1,{Environment.ProcessorCount}").Split(',').Select(int.Parse).Distinct();
        var hf = LoadHf(args.GetValueOrDefault("hf"));

        var tokenizer = BertTokenizer.Create(vocab);
        var texts = Paragraphs(wiki, files);
        long utf8Bytes = texts.Sum(t => (long)Encoding.UTF8.GetByteCount(t));
        foreach (var t in texts.Take(2000)) tokenizer.Encode(t); // warm-up (JIT tiering)

        foreach (int t in threads)
        {
            double best = double.MaxValue;
            long tokens = 0;
            for (int r = 0; r < repeats; r++)
            {
                var sw = Stopwatch.StartNew();
                tokens = t == 1 ? EncodeSerial(tokenizer, texts) : EncodeBatches(tokenizer, texts, t);
                best = Math.Min(best, sw.Elapsed.TotalSeconds);
            }
            var line = new JsonObject
            {
                ["bench"] = "tokenizer",
                ["impl"] = "mosaicbert",
                ["api"] = t == 1 ? "BertTokenizer.Encode(string)" : "BertTokenizer.Encode(IReadOnlyList<string>) (parallel, unpadded, as HF encode_batch)",
                ["threads"] = t,
                ["cores"] = Environment.ProcessorCount,
                ["paragraphs"] = texts.Count,
                ["utf8_bytes"] = utf8Bytes,
                ["tokens"] = tokens,
                ["seconds"] = Math.Round(best, 4),
                ["tokens_per_s"] = Math.Round(tokens / best),
                ["mb_per_s"] = Math.Round(utf8Bytes / best / 1e6, 2),
            };
            if (hf.TryGetValue(t, out var h))
            {
                line["hf_tokens_per_s"] = h.TokensPerSecond;
                line["hf_tokens"] = h.Tokens;
                line["ratio_vs_hf"] = Math.Round(tokens / best / h.TokensPerSecond, 3);
            }
            Console.WriteLine(line.ToJsonString());
        }
        return 0;
    }

    private static long EncodeSerial(BertTokenizer tokenizer, List<string> texts)
    {
        long n = 0;
        foreach (var text in texts) n += tokenizer.Encode(text).Length;
        return n;
    }

    private static long EncodeBatches(BertTokenizer tokenizer, List<string> texts, int threads)
    {
        long n = 0;
        foreach (var e in tokenizer.Encode(texts, maxDegreeOfParallelism: threads)) n += e.Length;
        return n;
    }

    private static Dictionary<int, (double TokensPerSecond, long Tokens)> LoadHf(string? paths)
    {
        var result = new Dictionary<int, (double, long)>();
        if (paths is null) return result;
        foreach (var path in paths.Split(','))
        {
            foreach (var line in File.ReadLines(path).Where(l => l.TrimStart().StartsWith('{')))
            {
                var o = JsonNode.Parse(line)!;
                if (o["impl"]?.GetValue<string>() != "hf-tokenizers") continue;
                result[int.Parse(o["threads"]!.GetValue<string>())] = (o["tokens_per_s"]!.GetValue<double>(), o["tokens"]!.GetValue<long>());
            }
        }
        return result;
    }

    /// <summary>Body paragraphs: not &lt;doc&gt; tags, not the title line after &lt;doc&gt;. Lines split on '\n'.</summary>
    internal static List<string> Paragraphs(string wikiDir, int files)
    {
        var result = new List<string>();
        foreach (var path in Directory.GetFiles(wikiDir, "wiki_*").Order(StringComparer.Ordinal).Take(files))
        {
            using Stream raw = File.OpenRead(path);
            using Stream s = path.EndsWith(".gz", StringComparison.Ordinal) ? new GZipStream(raw, CompressionMode.Decompress) : raw;
            using var reader = new StreamReader(s, new UTF8Encoding(false, true));
            var lines = reader.ReadToEnd().Split('\n');
            for (int i = 0; i < lines.Length; i++)
            {
                var line = lines[i];
                if (line.Length == 0 || line.StartsWith("<doc ", StringComparison.Ordinal) || line.StartsWith("</doc>", StringComparison.Ordinal))
                    continue;
                if (i > 0 && lines[i - 1].StartsWith("<doc ", StringComparison.Ordinal))
                    continue;
                result.Add(line);
            }
        }
        return result;
    }
}
