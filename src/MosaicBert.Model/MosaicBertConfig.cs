using System.Text.Json;
using System.Text.Json.Nodes;

namespace MosaicBert.Model;

/// <summary>Which encoder the configuration describes.</summary>
public enum EncoderArchitecture
{
    /// <summary>MosaicBERT: no position embeddings, ALiBi, fused Wqkv, gated-GELU MLP without dropout after it.</summary>
    MosaicBert,
    /// <summary>Classic BERT: learned absolute positions, GELU MLP with biases, no ALiBi.</summary>
    Bert,
}

/// <summary>
/// Model configuration, with Hugging Face <c>BertConfig</c>'s field names and defaults (MosaicBERT-base values) plus
/// <see cref="AlibiStartingSize"/>. Reads and writes HF <c>config.json</c>.
/// </summary>
public sealed record MosaicBertConfig
{
    /// <summary>MosaicBERT or classic BERT.</summary>
    public EncoderArchitecture Architecture { get; init; } = EncoderArchitecture.MosaicBert;
    /// <summary>Vocabulary rows (30522 rounded up to a multiple of 64 for MosaicBERT).</summary>
    public int VocabSize { get; init; } = 30528;
    /// <summary>d.</summary>
    public int HiddenSize { get; init; } = 768;
    /// <summary>L.</summary>
    public int NumHiddenLayers { get; init; } = 12;
    /// <summary>H; head size is d/H.</summary>
    public int NumAttentionHeads { get; init; } = 12;
    /// <summary>I; MosaicBERT's gated layer produces 2I.</summary>
    public int IntermediateSize { get; init; } = 3072;
    /// <summary>Token type rows.</summary>
    public int TypeVocabSize { get; init; } = 2;
    /// <summary>Position rows (classic BERT only; MosaicBERT has none).</summary>
    public int MaxPositionEmbeddings { get; init; } = 512;
    /// <summary>Initial ALiBi size (MosaicBERT); longer inputs simply use larger distances.</summary>
    public int AlibiStartingSize { get; init; } = 512;
    /// <summary>LayerNorm epsilon.</summary>
    public float LayerNormEps { get; init; } = 1e-12f;
    /// <summary>Dropout on hidden states.</summary>
    public float HiddenDropoutProb { get; init; } = 0.1f;
    /// <summary>Dropout on attention probabilities (0 in MosaicBERT pretraining).</summary>
    public float AttentionProbsDropoutProb { get; init; }
    /// <summary>Dropout before the classifier; null means <see cref="HiddenDropoutProb"/>.</summary>
    public float? ClassifierDropout { get; init; }
    /// <summary>Std of the normal initialisation.</summary>
    public float InitializerRange { get; init; } = 0.02f;
    /// <summary>Padding token id.</summary>
    public int PadTokenId { get; init; }
    /// <summary>Labels of the sequence-classification head (1 = regression).</summary>
    public int NumLabels { get; init; } = 2;
    /// <summary>Activation name; only the exact (erf) GELU is supported.</summary>
    public string HiddenAct { get; init; } = "gelu";

    /// <summary>d / H.</summary>
    public int HeadSize => HiddenSize / NumAttentionHeads;

    /// <summary>Checks every field; the message names the field.</summary>
    public MosaicBertConfig Validate()
    {
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(IntermediateSize, "intermediate_size");
        Positive(TypeVocabSize, "type_vocab_size");
        Positive(NumLabels, "num_labels");
        if (HiddenSize % NumAttentionHeads != 0)
            throw new ArgumentException($"hidden_size {HiddenSize} is not a multiple of num_attention_heads {NumAttentionHeads}.");
        if (Architecture == EncoderArchitecture.Bert) Positive(MaxPositionEmbeddings, "max_position_embeddings");
        if (!(LayerNormEps > 0)) throw new ArgumentException($"layer_norm_eps must be positive, not {LayerNormEps}.");
        Probability(HiddenDropoutProb, "hidden_dropout_prob");
        Probability(AttentionProbsDropoutProb, "attention_probs_dropout_prob");
        if (ClassifierDropout is float c) Probability(c, "classifier_dropout");
        if (HiddenAct is not ("gelu" or "gelu_python"))
            throw new ArgumentException($"hidden_act '{HiddenAct}' is not supported; MosaicBERT and BERT use the exact 'gelu'.");
        if ((uint)PadTokenId >= (uint)VocabSize) throw new ArgumentException($"pad_token_id {PadTokenId} is outside the vocabulary.");
        return this;

        static void Positive(int v, string name)
        {
            if (v <= 0) throw new ArgumentException($"{name} must be positive, not {v}.");
        }
        static void Probability(float p, string name)
        {
            if (!(p >= 0 && p < 1)) throw new ArgumentException($"{name} must be in [0, 1), not {p}.");
        }
    }

    /// <summary>
    /// Named sizes: tiny (tests), mini, small, medium, base (MosaicBERT-base), large (BERT-large dimensions with a
    /// 4096 GLU, as inferred in the spec §1.1). Sizes follow the BERT miniatures (L/d: 2/128, 4/256, 4/512, 8/512).
    /// </summary>
    public static MosaicBertConfig Preset(string name) => name.ToLowerInvariant() switch
    {
        "tiny" => new() { NumHiddenLayers = 2, HiddenSize = 128, NumAttentionHeads = 2, IntermediateSize = 512 },
        "mini" => new() { NumHiddenLayers = 4, HiddenSize = 256, NumAttentionHeads = 4, IntermediateSize = 1024 },
        "small" => new() { NumHiddenLayers = 4, HiddenSize = 512, NumAttentionHeads = 8, IntermediateSize = 2048 },
        "medium" => new() { NumHiddenLayers = 8, HiddenSize = 512, NumAttentionHeads = 8, IntermediateSize = 2048 },
        "base" => new(),
        "large" => new() { NumHiddenLayers = 24, HiddenSize = 1024, NumAttentionHeads = 16, IntermediateSize = 4096 },
        _ => throw new ArgumentException($"Unknown preset '{name}'; use tiny, mini, small, medium, base or large."),
    };

    /// <summary>Reads a Hugging Face config.json. The architecture is MosaicBERT when the file names ALiBi or MosaicBERT
    /// code, classic BERT otherwise, unless <paramref name="architecture"/> says.</summary>
    public static MosaicBertConfig FromJson(string json, string sourceName = "config.json", EncoderArchitecture? architecture = null)
    {
        JsonNode root;
        try
        {
            root = JsonNode.Parse(json) ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            throw new FormatException($"{sourceName}: not valid JSON: {e.Message}", e);
        }
        if (root is not JsonObject o) throw new FormatException($"{sourceName}: the top level must be a JSON object.");
        var d = new MosaicBertConfig();
        bool mosaic = o.ContainsKey("alibi_starting_size") ||
            (o["auto_map"]?.ToJsonString().Contains("bert_layers", StringComparison.Ordinal) ?? false);
        try
        {
            var config = new MosaicBertConfig
            {
                Architecture = architecture ?? (mosaic ? EncoderArchitecture.MosaicBert : EncoderArchitecture.Bert),
                VocabSize = Int(o, "vocab_size", d.VocabSize),
                HiddenSize = Int(o, "hidden_size", d.HiddenSize),
                NumHiddenLayers = Int(o, "num_hidden_layers", d.NumHiddenLayers),
                NumAttentionHeads = Int(o, "num_attention_heads", d.NumAttentionHeads),
                IntermediateSize = Int(o, "intermediate_size", d.IntermediateSize),
                TypeVocabSize = Int(o, "type_vocab_size", d.TypeVocabSize),
                MaxPositionEmbeddings = Int(o, "max_position_embeddings", d.MaxPositionEmbeddings),
                AlibiStartingSize = Int(o, "alibi_starting_size", d.AlibiStartingSize),
                LayerNormEps = Float(o, "layer_norm_eps", d.LayerNormEps),
                HiddenDropoutProb = Float(o, "hidden_dropout_prob", d.HiddenDropoutProb),
                AttentionProbsDropoutProb = Float(o, "attention_probs_dropout_prob", d.AttentionProbsDropoutProb),
                ClassifierDropout = o["classifier_dropout"] is JsonValue cd ? cd.GetValue<float>() : null,
                InitializerRange = Float(o, "initializer_range", d.InitializerRange),
                PadTokenId = Int(o, "pad_token_id", d.PadTokenId),
                NumLabels = o["id2label"] is JsonObject labels ? labels.Count : Int(o, "num_labels", d.NumLabels),
                HiddenAct = o["hidden_act"]?.GetValue<string>() ?? d.HiddenAct,
            };
            return config.Validate();
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new FormatException($"{sourceName}: {e.Message}", e);
        }

        static int Int(JsonObject o, string name, int fallback)
        {
            if (o[name] is not JsonValue v) return fallback;
            return v.TryGetValue(out int i) ? i
                : v.TryGetValue(out double x) && x == Math.Floor(x) && x is >= int.MinValue and <= int.MaxValue ? (int)x
                : throw new FormatException($"field '{name}' must be an integer, not {v.ToJsonString()}.");
        }
        static float Float(JsonObject o, string name, float fallback)
        {
            if (o[name] is not JsonValue v) return fallback;
            return v.TryGetValue(out double x) ? (float)x : throw new FormatException($"field '{name}' must be a number, not {v.ToJsonString()}.");
        }
    }

    /// <summary>Writes a Hugging Face style config.json (sorted keys, 2-space indent).</summary>
    public string ToJson()
    {
        var o = new SortedDictionary<string, object?>(StringComparer.Ordinal)
        {
            ["architectures"] = new[] { "BertForMaskedLM" },
            ["attention_probs_dropout_prob"] = AttentionProbsDropoutProb,
            ["classifier_dropout"] = ClassifierDropout,
            ["hidden_act"] = HiddenAct,
            ["hidden_dropout_prob"] = HiddenDropoutProb,
            ["hidden_size"] = HiddenSize,
            ["initializer_range"] = InitializerRange,
            ["intermediate_size"] = IntermediateSize,
            ["layer_norm_eps"] = LayerNormEps,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["model_type"] = "bert",
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_labels"] = NumLabels,
            ["pad_token_id"] = PadTokenId,
            ["type_vocab_size"] = TypeVocabSize,
            ["vocab_size"] = VocabSize,
        };
        // alibi_starting_size is what marks a MosaicBERT config when it is read back (as in the released one).
        if (Architecture == EncoderArchitecture.MosaicBert) o["alibi_starting_size"] = AlibiStartingSize;
        return JsonSerializer.Serialize(o, new JsonSerializerOptions { WriteIndented = true });
    }
}
