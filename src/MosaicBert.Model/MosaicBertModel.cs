using MosaicBert.Tensors;

namespace MosaicBert.Model;

/// <summary>
/// MosaicBERT (or classic BERT) on a <see cref="Backend"/>: one copy of the orchestration for every backend, as in
/// llm.c's forward function. Parameters live in one block (<see cref="ParameterLayout"/>); activations live in a
/// workspace sized for the largest batch seen, so steady-state steps allocate no tensors.
/// </summary>
/// <remarks>
/// Unpadded execution: after the embedding lookup every token-wise operation (linears, LayerNorms, the MLP) runs on
/// the N real tokens only; attention runs per sequence on the same packed rows (see <see cref="Backend.Attention"/>).
/// Results at real positions equal the padded formulation of the spec (§1.4, §1.16).
/// </remarks>
public sealed partial class MosaicBertModel : IDisposable
{
    private readonly Tensor _slopes;
    private readonly Tensor _master;
    private readonly Tensor? _compute;
    private bool _computeStale = true;
    private Workspace? _ws;
    private DropoutSettings? _dropout;

    /// <summary>Creates a model with zero parameters; call <see cref="InitializeWeights"/> or load a checkpoint.</summary>
    /// <param name="config">Architecture and sizes.</param>
    /// <param name="heads">Heads on top of the encoder.</param>
    /// <param name="backend">Where it runs.</param>
    /// <param name="precision">Float32 (default), or BFloat16 mixed precision on a backend with bf16 tensors (CUDA).</param>
    public MosaicBertModel(MosaicBertConfig config, ModelHeads heads, Backend backend, ComputePrecision precision = ComputePrecision.Float32)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Layout = new ParameterLayout(config, heads);
        Config = config;
        Backend = backend;
        Precision = precision;
        _master = backend.Allocate((int)Layout.Count);
        _compute = precision == ComputePrecision.BFloat16 ? backend.Allocate(DType.BFloat16, (int)Layout.Count) : null;
        _slopes = backend.Allocate(config.NumAttentionHeads);
        var slopes = config.Architecture == EncoderArchitecture.MosaicBert
            ? Alibi.Slopes(config.NumAttentionHeads).Select(s => (float)s).ToArray()
            : new float[config.NumAttentionHeads];
        backend.Upload(slopes, _slopes);
    }

    /// <summary>Configuration.</summary>
    public MosaicBertConfig Config { get; }
    /// <summary>Parameter layout.</summary>
    public ParameterLayout Layout { get; }
    /// <summary>Where the model runs.</summary>
    public Backend Backend { get; }
    /// <summary>Compute precision.</summary>
    public ComputePrecision Precision { get; }

    /// <summary>
    /// All parameters, one fp32 block of <see cref="ParameterLayout.Count"/> floats (the master copy). Callers may write
    /// it: under BFloat16 precision, taking it marks the bf16 compute copy for refreshing before the next forward pass.
    /// </summary>
    public Tensor Parameters
    {
        get
        {
            _computeStale = true;
            return _master;
        }
    }

    /// <summary>A parameter (fp32 master) by state-dict name; may be written, like <see cref="Parameters"/>.</summary>
    public Tensor Parameter(string name)
    {
        _computeStale = true;
        return Layout.View(_master, name);
    }

    /// <summary>The tensor type of activations (fp32, or bf16 under mixed precision).</summary>
    private DType ActivationType => Precision.ActivationType();

    /// <summary>The parameter the forward and backward passes read: the bf16 compute copy, or the fp32 master.</summary>
    private Tensor Weight(string name) => Layout.View(_compute ?? _master, name);

    /// <summary>The fp32 master of a parameter, for the few places that read it in fp32 (biases of fp32 logits).</summary>
    private Tensor Master(string name) => Layout.View(_master, name);

    /// <summary>The bf16 compute copy (null under Float32), for the optimizer's fused update.</summary>
    internal Tensor? ComputeParameters => _compute;
    /// <summary>The fp32 master block, without marking the compute copy stale (the optimizer refreshes it itself).</summary>
    internal Tensor MasterParameters => _master;

    /// <summary>Called after the optimizer has written both the master and the compute copy.</summary>
    internal void ComputeParametersRefreshed() => _computeStale = false;

    /// <summary>Rounds the master into the compute copy when something may have written the master since.</summary>
    private void RefreshComputeParameters()
    {
        if (_compute is null || !_computeStale) return;
        Backend.Convert(_master, _compute);
        _computeStale = false;
    }

    /// <summary>
    /// From-scratch initialisation (spec §1.13): Linear and embedding weights ~ Normal(0, initializer_range), biases
    /// 0, LayerNorm weights 1. Row 0 of the word embeddings stays random, as in the reference (the tied decoder is
    /// initialised after the embedding and overwrites its zeroed padding row).
    /// </summary>
    public void InitializeWeights(int seed)
    {
        var host = new float[Layout.Count];
        var rng = new Random(seed);
        foreach (var p in Layout.Parameters)
        {
            var span = host.AsSpan((int)p.Offset, (int)p.Length);
            if (p.IsLayerNormWeight) span.Fill(1);
            else if (p.IsBias) span.Clear();
            else
                for (int i = 0; i < span.Length; i++)
                    span[i] = (float)(Config.InitializerRange * Normal(rng));
        }
        Backend.Upload(host, Parameters);

        static double Normal(Random r) // Box–Muller
        {
            double u1 = 1.0 - r.NextDouble(), u2 = r.NextDouble();
            return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
        }
    }

    /// <summary>Sets one parameter from host values (PyTorch layout, e.g. [out, in] for weights).</summary>
    public void SetParameter(string name, ReadOnlySpan<float> values)
    {
        var p = Layout[name];
        if (values.Length != p.Length)
            throw new ArgumentException($"Parameter {name} has shape [{string.Join(", ", p.Shape)}] ({p.Length} values), not {values.Length} values.");
        Backend.Upload(values, Parameter(name));
    }

    /// <summary>Reads one parameter to the host.</summary>
    public float[] GetParameter(string name)
    {
        var p = Layout[name];
        var values = new float[p.Length];
        Backend.Download(Master(name), values);
        return values;
    }

    /// <summary>
    /// Runs the embeddings and the encoder on a batch. Returns the final hidden states of the N real tokens, a view
    /// that stays valid until the next forward pass.
    /// </summary>
    /// <param name="batch">The batch.</param>
    /// <param name="dropout">Training-mode dropout (hidden_dropout_prob after the embeddings, after the attention
    /// output projection, and in the MLP as spec §1.14 places it); null for inference. Attention-probability dropout
    /// is not applied (MosaicBERT trains with 0; the fused attention kernel has none).</param>
    public Tensor Encode(EncoderBatch batch, DropoutSettings? dropout = null)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var ws = PrepareWorkspace(batch);
        RefreshComputeParameters();
        _dropout = dropout;
        float p = dropout is null ? 0 : Config.HiddenDropoutProb;
        int n = batch.TokenCount;
        var c = Config;
        bool classic = c.Architecture == EncoderArchitecture.Bert;

        Backend.EmbeddingSum(ws.Ids, ws.Types, classic ? ws.Positions : null,
            Weight("bert.embeddings.word_embeddings.weight"), Weight("bert.embeddings.token_type_embeddings.weight"),
            classic ? Weight("bert.embeddings.position_embeddings.weight") : null, ws.EmbeddingSum);
        Backend.LayerNorm(ws.EmbeddingSum, null, Weight("bert.embeddings.LayerNorm.weight"), Weight("bert.embeddings.LayerNorm.bias"),
            c.LayerNormEps, ws.EmbeddingSum, ws.Hidden[0], ws.EmbeddingMean, ws.EmbeddingRstd);
        if (p > 0) Backend.Dropout(ws.Hidden[0], ws.Hidden[0], null, p, dropout!.Value.SiteSeed(0), 0);

        float scale = 1f / MathF.Sqrt(c.HeadSize);
        float drop = p;
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var a = ws.Layers[l];
            string pfx = $"bert.encoder.layer.{l}.";
            var x = ws.Hidden[l];
            Backend.Linear(x, Weight(pfx + "attention.self.Wqkv.weight"), Weight(pfx + "attention.self.Wqkv.bias"), a.Qkv);
            Backend.Attention(a.Qkv, ws.CuSeqlens, ws.Positions, _slopes, scale, a.Context, a.LogSumExp);
            Backend.Linear(a.Context, Weight(pfx + "attention.output.dense.weight"), Weight(pfx + "attention.output.dense.bias"), a.AttentionOutput);
            Backend.DropoutResidualLayerNorm(a.AttentionOutput, drop, drop > 0 ? dropout!.Value.SiteSeed(1 + 2 * l) : 0, 0, x,
                Weight(pfx + "attention.output.LayerNorm.weight"), Weight(pfx + "attention.output.LayerNorm.bias"),
                c.LayerNormEps, a.Sum1, a.X1, a.Mean1, a.Rstd1);
            if (classic)
            {
                Backend.Linear(a.X1, Weight(pfx + "intermediate.dense.weight"), Weight(pfx + "intermediate.dense.bias"), a.Up);
                Backend.Gelu(a.Up, a.Activation);
                Backend.Linear(a.Activation, Weight(pfx + "output.dense.weight"), Weight(pfx + "output.dense.bias"), a.Down);
                if (drop > 0) Backend.Dropout(a.Down, a.Down, null, drop, dropout!.Value.SiteSeed(2 + 2 * l), 0);
                Backend.LayerNorm(a.Down, a.X1, Weight(pfx + "output.LayerNorm.weight"), Weight(pfx + "output.LayerNorm.bias"),
                    c.LayerNormEps, a.Sum2, ws.Hidden[l + 1], a.Mean2, a.Rstd2);
            }
            else
            {
                Backend.Linear(a.X1, Weight(pfx + "mlp.gated_layers.weight"), null, a.Up);
                Backend.GatedGeluDropout(a.Up, a.Activation, drop, drop > 0 ? dropout!.Value.SiteSeed(2 + 2 * l) : 0, 0, drop > 0 ? a.KeepBits : null);
                Backend.Linear(a.Activation, Weight(pfx + "mlp.wo.weight"), Weight(pfx + "mlp.wo.bias"), a.Down);
                Backend.LayerNorm(a.Down, a.X1, Weight(pfx + "mlp.layernorm.weight"), Weight(pfx + "mlp.layernorm.bias"),
                    c.LayerNormEps, a.Sum2, ws.Hidden[l + 1], a.Mean2, a.Rstd2);
            }
        }
        return ws.Hidden[c.NumHiddenLayers].Rows(0, n);
    }

    /// <summary>
    /// MLM logits for chosen token rows of the last forward pass: <c>LN(GELU(h·Wtᵀ + bt))·Ewᵀ + b_dec</c>.
    /// </summary>
    /// <param name="rows">Token indices in 0..N (e.g. <see cref="EncoderBatch.MaskedTokens"/>), or null for all tokens.</param>
    /// <returns>[rows, V] logits, a view valid until the next call.</returns>
    public Tensor MaskedLMLogits(int[]? rows = null)
    {
        RequireHead(ModelHeads.MaskedLM);
        var ws = _ws ?? throw new InvalidOperationException("Run Encode first.");
        var c = Config;
        var hidden = ws.Hidden[c.NumHiddenLayers].Rows(0, ws.TokenCount);
        int k = rows?.Length ?? ws.TokenCount;
        var head = ws.Head(Backend, k, c);
        var selected = hidden;
        if (rows is not null)
        {
            Backend.Upload(rows, head.Rows);
            selected = head.Selected;
            Backend.GatherRows(hidden, head.Rows, selected);
        }
        Backend.Linear(selected, Weight("cls.predictions.transform.dense.weight"), Weight("cls.predictions.transform.dense.bias"), head.TransformPre);
        Backend.Gelu(head.TransformPre, head.TransformAct);
        Backend.LayerNorm(head.TransformAct, null, Weight("cls.predictions.transform.LayerNorm.weight"), Weight("cls.predictions.transform.LayerNorm.bias"),
            c.LayerNormEps, head.TransformAct, head.Transform, head.Mean, head.Rstd);
        // fp32 logits (and an fp32 bias) from bf16 operands under mixed precision.
        Backend.Linear(head.Transform, Weight("bert.embeddings.word_embeddings.weight"), Master("cls.predictions.decoder.bias"), head.Logits);
        return head.Logits;
    }

    /// <summary>Sequence-classification logits [B, num_labels] of the last forward pass: pooler (tanh) + classifier.</summary>
    public Tensor ClassifierLogits()
    {
        RequireHead(ModelHeads.SequenceClassification);
        var ws = _ws ?? throw new InvalidOperationException("Run Encode first.");
        var c = Config;
        var cls = ws.Classifier;
        Backend.GatherRows(ws.Hidden[c.NumHiddenLayers], cls.FirstTokens, cls.Cls);
        Backend.Linear(cls.Cls, Weight("bert.pooler.dense.weight"), Weight("bert.pooler.dense.bias"), cls.PooledPre);
        Backend.Tanh(cls.PooledPre, cls.Pooled);
        var pooled = cls.Pooled;
        float p = _dropout is null ? 0 : c.ClassifierDropout ?? c.HiddenDropoutProb;
        if (p > 0)
        {
            Backend.Dropout(cls.Pooled, cls.PooledDropped, null, p, _dropout!.Value.SiteSeed(2 * c.NumHiddenLayers + 1), 0);
            pooled = cls.PooledDropped;
        }
        Backend.Linear(pooled, Weight("classifier.weight"), Master("classifier.bias"), cls.Logits);
        return cls.Logits;
    }

    /// <summary>
    /// Final hidden states in the padded layout [B, S, d], zeros at padding (Hugging Face's last_hidden_state).
    /// </summary>
    public float[] LastHiddenStatePadded(EncoderBatch batch)
    {
        var ws = _ws ?? throw new InvalidOperationException("Run Encode first.");
        int d = Config.HiddenSize;
        var packed = new float[batch.TokenCount * d];
        Backend.Download(ws.Hidden[Config.NumHiddenLayers].Rows(0, batch.TokenCount), packed);
        var padded = new float[batch.BatchSize * batch.SequenceLength * d];
        for (int t = 0; t < batch.TokenCount; t++)
            packed.AsSpan(t * d, d).CopyTo(padded.AsSpan(batch.Indices[t] * d, d));
        return padded;
    }

    /// <summary>
    /// The activations of the last forward pass by the reference script's names (act.emb, act.layer0.qkv, ...),
    /// packed [N, ...] rows. For parity tests.
    /// </summary>
    internal IReadOnlyDictionary<string, Tensor> ActivationsByReferenceName()
    {
        var ws = _ws ?? throw new InvalidOperationException("Run Encode first.");
        bool classic = Config.Architecture == EncoderArchitecture.Bert;
        var acts = new Dictionary<string, Tensor>
        {
            ["act.emb_sum"] = ws.EmbeddingSum,
            ["act.emb"] = ws.Hidden[0],
        };
        for (int l = 0; l < Config.NumHiddenLayers; l++)
        {
            var a = ws.Layers[l];
            string t = $"act.layer{l}.";
            acts[t + "qkv"] = a.Qkv;
            acts[t + "attn_ctx"] = a.Context;
            acts[t + "attn_out"] = a.AttentionOutput;
            acts[t + "attn_preln"] = a.Sum1;
            acts[t + "attn_ln"] = a.X1;
            acts[t + (classic ? "ffn_inter" : "mlp_gated")] = a.Up;
            acts[t + (classic ? "ffn_act" : "mlp_glu")] = a.Activation;
            acts[t + (classic ? "ffn_out" : "mlp_out")] = a.Down;
            acts[t + (classic ? "ffn_preln" : "mlp_preln")] = a.Sum2;
            acts[t + "out"] = ws.Hidden[l + 1];
        }
        return acts;
    }

    private void RequireHead(ModelHeads head)
    {
        if (!Layout.Heads.HasFlag(head)) throw new InvalidOperationException($"The model was built without the {head} head.");
    }

    private Workspace PrepareWorkspace(EncoderBatch batch)
    {
        int n = batch.TokenCount, b = batch.BatchSize;
        if (_ws is null || _ws.CapacityTokens < n || _ws.CapacitySequences < b)
        {
            _ws?.Dispose();
            _ws = new Workspace(Backend, Config, ActivationType, Math.Max(n, _ws?.CapacityTokens ?? 0), Math.Max(b, _ws?.CapacitySequences ?? 0));
        }
        _ws.Bind(Backend, batch, Config);
        return _ws;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _ws?.Dispose();
        _slopes.Dispose();
        _compute?.Dispose();
        _master.Dispose();
    }
}
