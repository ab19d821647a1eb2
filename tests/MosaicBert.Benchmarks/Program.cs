using MosaicBert.Benchmarks;

// Usage: MosaicBert.Benchmarks <benchmark> [--key value ...]; each benchmark prints JSON lines.
//   tokenizer --vocab VOCAB --wiki DIR [--files 10] [--threads 1,16] [--repeats 3] [--hf hf1.jsonl,hf16.jsonl]
//   gemm [--threads 1,2] [--repeats 3] [--shapes qkv,...]
//   model-forward [--preset base] [--batch 8] [--seq 128] [--threads N] [--repeats 3]
//   model-train [--preset mini] [--batch 32] [--seq 128] [--threads N] [--repeats 3]
if (args.Length == 0 || args[0] is "-h" or "--help")
{
    Console.Error.WriteLine("usage: MosaicBert.Benchmarks tokenizer --vocab VOCAB --wiki DIR [--files 10] [--threads 1,16] [--repeats 3] [--hf FILE,...]");
    return 2;
}
var options = new Dictionary<string, string>();
for (int i = 1; i + 1 < args.Length; i += 2)
{
    if (!args[i].StartsWith("--", StringComparison.Ordinal))
    {
        Console.Error.WriteLine($"error: expected --option, got '{args[i]}'");
        return 2;
    }
    options[args[i][2..]] = args[i + 1];
}
return args[0] switch
{
    "tokenizer" => TokenizerBenchmark.Run(options),
    "gemm" => GemmBenchmark.Run(options),
    "model-forward" => ModelBenchmark.Forward(options),
    "model-train" => ModelBenchmark.Train(options),
    _ => Fail($"unknown benchmark '{args[0]}'"),
};

static int Fail(string message)
{
    Console.Error.WriteLine("error: " + message);
    return 2;
}
