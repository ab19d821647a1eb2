using MosaicBert.Tensors;

namespace MosaicBert.Model;

/// <summary>Which heads a model carries on top of the encoder.</summary>
[Flags]
public enum ModelHeads
{
    /// <summary>Encoder only (a featurizer).</summary>
    None = 0,
    /// <summary>MLM head (transform + decoder tied to the word embeddings).</summary>
    MaskedLM = 1,
    /// <summary>Pooler + classifier (or regressor when num_labels = 1).</summary>
    SequenceClassification = 2,
}

/// <summary>One named parameter: a view into the contiguous parameter block.</summary>
/// <param name="Name">Hugging Face state-dict name (MosaicBERT names; classic BERT's Q/K/V are stored fused as Wqkv).</param>
/// <param name="Shape">PyTorch shape ([out, in] for Linear weights).</param>
/// <param name="Offset">First element in the block.</param>
public sealed record ParameterInfo(string Name, int[] Shape, long Offset)
{
    /// <summary>Number of elements.</summary>
    public long Length => Shape.Aggregate(1L, (a, b) => a * b);
    /// <summary>True for LayerNorm weights (initialised to 1).</summary>
    public bool IsLayerNormWeight => Name.EndsWith("LayerNorm.weight", StringComparison.Ordinal) || Name.EndsWith("layernorm.weight", StringComparison.Ordinal);
    /// <summary>True for biases and LayerNorm biases (initialised to 0).</summary>
    public bool IsBias => Name.EndsWith(".bias", StringComparison.Ordinal);
}

/// <summary>
/// The layout of all parameters in one contiguous block, in the canonical order of the spec (§6.6): embeddings,
/// then per layer attention and MLP, then the heads. One block lets the optimizer, gradient clipping and checkpoint
/// I/O treat the model as a single vector, and maps directly onto one device allocation.
/// </summary>
public sealed class ParameterLayout
{
    private readonly Dictionary<string, ParameterInfo> _byName = new(StringComparer.Ordinal);
    private readonly List<ParameterInfo> _ordered = [];

    /// <summary>Lays out the parameters of <paramref name="config"/> with the given heads.</summary>
    public ParameterLayout(MosaicBertConfig config, ModelHeads heads)
    {
        config.Validate();
        Config = config;
        Heads = heads;
        int d = config.HiddenSize, i = config.IntermediateSize;
        Add("bert.embeddings.word_embeddings.weight", config.VocabSize, d);
        Add("bert.embeddings.token_type_embeddings.weight", config.TypeVocabSize, d);
        if (config.Architecture == EncoderArchitecture.Bert)
            Add("bert.embeddings.position_embeddings.weight", config.MaxPositionEmbeddings, d);
        Add("bert.embeddings.LayerNorm.weight", d);
        Add("bert.embeddings.LayerNorm.bias", d);
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            string p = $"bert.encoder.layer.{l}.";
            Add(p + "attention.self.Wqkv.weight", 3 * d, d);
            Add(p + "attention.self.Wqkv.bias", 3 * d);
            Add(p + "attention.output.dense.weight", d, d);
            Add(p + "attention.output.dense.bias", d);
            Add(p + "attention.output.LayerNorm.weight", d);
            Add(p + "attention.output.LayerNorm.bias", d);
            if (config.Architecture == EncoderArchitecture.MosaicBert)
            {
                Add(p + "mlp.gated_layers.weight", 2 * i, d);
                Add(p + "mlp.wo.weight", d, i);
                Add(p + "mlp.wo.bias", d);
                Add(p + "mlp.layernorm.weight", d);
                Add(p + "mlp.layernorm.bias", d);
            }
            else
            {
                Add(p + "intermediate.dense.weight", i, d);
                Add(p + "intermediate.dense.bias", i);
                Add(p + "output.dense.weight", d, i);
                Add(p + "output.dense.bias", d);
                Add(p + "output.LayerNorm.weight", d);
                Add(p + "output.LayerNorm.bias", d);
            }
        }
        if (heads.HasFlag(ModelHeads.MaskedLM))
        {
            Add("cls.predictions.transform.dense.weight", d, d);
            Add("cls.predictions.transform.dense.bias", d);
            Add("cls.predictions.transform.LayerNorm.weight", d);
            Add("cls.predictions.transform.LayerNorm.bias", d);
            // The decoder weight is the word-embedding matrix (tied); only its bias is a parameter of its own.
            Add("cls.predictions.decoder.bias", config.VocabSize);
        }
        if (heads.HasFlag(ModelHeads.SequenceClassification))
        {
            Add("bert.pooler.dense.weight", d, d);
            Add("bert.pooler.dense.bias", d);
            Add("classifier.weight", config.NumLabels, d);
            Add("classifier.bias", config.NumLabels);
        }
    }

    /// <summary>The configuration.</summary>
    public MosaicBertConfig Config { get; }
    /// <summary>The heads.</summary>
    public ModelHeads Heads { get; }
    /// <summary>Total number of parameters (the tied decoder weight counted once).</summary>
    public long Count { get; private set; }
    /// <summary>Parameters in canonical order.</summary>
    public IReadOnlyList<ParameterInfo> Parameters => _ordered;

    /// <summary>A parameter by name.</summary>
    public ParameterInfo this[string name] => _byName.TryGetValue(name, out var p) ? p
        : throw new KeyNotFoundException($"The model has no parameter '{name}'.");

    /// <summary>True when the model has a parameter of this name.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    private void Add(string name, params int[] shape)
    {
        var info = new ParameterInfo(name, shape, Count);
        _byName.Add(name, info);
        _ordered.Add(info);
        Count += info.Length;
    }

    /// <summary>A view of one parameter inside a block tensor laid out by this layout.</summary>
    public Tensor View(Tensor block, string name)
    {
        var p = this[name];
        return block.Reshape((int)Count).Rows((int)p.Offset, (int)p.Length).Reshape(p.Shape);
    }
}
