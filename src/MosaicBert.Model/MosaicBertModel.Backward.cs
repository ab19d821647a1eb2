using MosaicBert.Tensors;

namespace MosaicBert.Model;

public sealed partial class MosaicBertModel
{
    private Tensor? _gradients;
    private GradientBuffers? _gws;

    /// <summary>Gradients of all parameters, laid out like <see cref="Parameters"/>; accumulated by
    /// <see cref="ForwardBackward"/> until <see cref="ZeroGradients"/>.</summary>
    public Tensor Gradients => _gradients ??= Backend.Allocate((int)Layout.Count);

    /// <summary>
    /// Bytes of activation memory kept for the backward pass and of gradient scratch, at the current capacity (the
    /// largest batch seen); parameters, gradients and optimizer state are not included.
    /// </summary>
    public long ActivationBytes => (_ws?.Bytes ?? 0) + (_gws?.Bytes ?? 0);

    /// <summary>The gradient of one parameter.</summary>
    public Tensor Gradient(string name) => Layout.View(Gradients, name);

    /// <summary>Sets every gradient to zero (start of an optimizer step).</summary>
    public void ZeroGradients() => Backend.Fill(Gradients, 0);

    /// <summary>
    /// Forward pass, loss and backward pass of one (micro)batch. Gradients are added to <see cref="Gradients"/>, scaled
    /// by <paramref name="lossScale"/> (e.g. 1/accumulation steps), so micro-batches accumulate.
    /// </summary>
    /// <param name="batch">The (micro)batch.</param>
    /// <param name="objective">What the loss is.</param>
    /// <param name="dropout">Dropout seeds; none (inference behaviour) when null.</param>
    /// <param name="lossScale">Factor on the gradients (not on the returned loss).</param>
    /// <param name="gradientsFinal">Told, during the backward pass, of each range of <see cref="Gradients"/> that this
    /// pass will not write again (see <see cref="GradientsFinal"/>); e.g. to start averaging it across ranks.</param>
    /// <returns>The unscaled mean loss of the batch.</returns>
    public float ForwardBackward(EncoderBatch batch, TrainingObjective objective, DropoutSettings? dropout = null, float lossScale = 1,
        GradientsFinal? gradientsFinal = null)
    {
        // The per-row losses are read back only now, so the whole backward pass is queued without waiting for the GPU.
        var losses = QueueForwardBackwardCore(batch, objective, dropout, lossScale, gradientsFinal);
        var host = new float[losses.Length];
        Backend.Download(losses, host);
        return (float)host.Average(x => (double)x);
    }

    /// <summary>
    /// <see cref="ForwardBackward"/> without waiting for the backend: the mean loss is reduced on the device and read
    /// only when asked for (it stays readable after later steps), so the optimizer step and the next batch can be queued
    /// behind this one. The mean is summed in double on the device, so it may differ from ForwardBackward's in the last
    /// bits; gradients are the same.
    /// </summary>
    public DeferredScalar QueueForwardBackward(EncoderBatch batch, TrainingObjective objective, DropoutSettings? dropout = null, float lossScale = 1,
        GradientsFinal? gradientsFinal = null) =>
        Backend.Mean(QueueForwardBackwardCore(batch, objective, dropout, lossScale, gradientsFinal));

    /// <returns>The per-row losses, on the backend.</returns>
    private Tensor QueueForwardBackwardCore(EncoderBatch batch, TrainingObjective objective, DropoutSettings? dropout, float lossScale,
        GradientsFinal? final)
    {
        ArgumentNullException.ThrowIfNull(batch);
        ArgumentNullException.ThrowIfNull(objective);
        Encode(batch, dropout);
        var ws = _ws!;
        var g = Grads(ws);
        int n = batch.TokenCount, d = Config.HiddenSize;
        var dHidden = g.DHidden.Rows(0, n);
        Backend.Fill(dHidden, 0);
        var losses = objective switch
        {
            TrainingObjective.MaskedLM => MaskedLMBackward(batch, dHidden, lossScale, final),
            TrainingObjective.Classification c => ClassifierBackward(batch, c.Labels, null, dHidden, lossScale, final),
            TrainingObjective.Regression r => ClassifierBackward(batch, null, r.Targets, dHidden, lossScale, final),
            _ => throw new ArgumentException($"Unknown objective {objective}."),
        };
        EncoderBackward(dHidden, g, n, d, final);
        return losses;
    }

    private GradientBuffers Grads(Workspace ws)
    {
        if (_gws is null || _gws.Capacity < ws.CapacityTokens)
        {
            _gws?.Dispose();
            _gws = new GradientBuffers(Backend, Config, ActivationType, ws.CapacityTokens);
        }
        return _gws;
    }

    /// <returns>The per-row losses (on the backend; read after the backward pass).</returns>
    private Tensor MaskedLMBackward(EncoderBatch batch, Tensor dHidden, float lossScale, GradientsFinal? final)
    {
        int k = batch.MaskedTokens.Length;
        if (k == 0) throw new ArgumentException("The batch has no masked token (no MLM label other than −100).");
        var logits = MaskedLMLogits(batch.MaskedTokens);
        var head = _ws!.Head(Backend, k, Config);
        var hg = _gws!.Head(Backend, k, Config, ActivationType);
        Backend.Upload(batch.MaskedLabels, hg.Labels);
        // Mean over the k masked tokens: dlogits = (softmax − onehot)·lossScale/k.
        Backend.CrossEntropy(logits, hg.Labels, hg.Losses, hg.DLogits, lossScale / k);

        // logits = t·Ewᵀ + b_dec (decoder tied to the word embeddings)
        var wordEmb = Weight("bert.embeddings.word_embeddings.weight");
        Backend.SumRowsInto(hg.DLogits, Gradient("cls.predictions.decoder.bias"));
        Backend.MatMul(hg.DLogits, true, head.Transform, false, Gradient("bert.embeddings.word_embeddings.weight"), 1, 1);
        Backend.MatMul(hg.DLogits, false, wordEmb, false, hg.DTransform);
        // t = LN(GELU(pre)), pre = sel·Wtᵀ + bt
        Backend.LayerNormBackward(hg.DTransform, head.TransformAct, head.Mean, head.Rstd, Weight("cls.predictions.transform.LayerNorm.weight"),
            hg.DAct, Gradient("cls.predictions.transform.LayerNorm.weight"), Gradient("cls.predictions.transform.LayerNorm.bias"));
        Backend.GeluBackward(head.TransformPre, hg.DAct, hg.DPre);
        LinearBackward(hg.DPre, head.Selected, "cls.predictions.transform.dense", hg.DSelected, accumulate: false);
        if (final is not null) HeadsFinal(final);
        Backend.ScatterAddRows(hg.DSelected, head.Rows, dHidden);
        return hg.Losses;
    }

    /// <returns>The per-sequence losses (on the backend; read after the backward pass).</returns>
    private Tensor ClassifierBackward(EncoderBatch batch, int[]? labels, float[]? targets, Tensor dHidden, float lossScale, GradientsFinal? final)
    {
        var logits = ClassifierLogits();
        var cls = _ws!.Classifier;
        int b = batch.BatchSize;
        var cg = _gws!.Classifier(Backend, Config, ActivationType, b);
        if (labels is not null)
        {
            if (labels.Length != b) throw new ArgumentException($"{labels.Length} labels for {b} sequences.");
            if (Config.NumLabels < 2) throw new InvalidOperationException("Classification needs num_labels ≥ 2; use Regression for one output.");
            Backend.Upload(labels, cg.Labels);
            Backend.CrossEntropy(logits, cg.Labels, cg.Losses, cg.DLogits, lossScale / b);
        }
        else
        {
            if (targets!.Length != b) throw new ArgumentException($"{targets.Length} targets for {b} sequences.");
            if (Config.NumLabels != 1) throw new InvalidOperationException($"Regression needs num_labels = 1, not {Config.NumLabels}.");
            Backend.Upload(targets, cg.Targets);
            Backend.SquaredError(logits, cg.Targets, cg.Losses, cg.DLogits, lossScale / b);
        }
        float p = _dropout is null ? 0 : Config.ClassifierDropout ?? Config.HiddenDropoutProb;
        bool dropped = p > 0;
        // logits = drop(pooled)·Wcᵀ + bc
        LinearBackward(cg.DLogits, dropped ? cls.PooledDropped : cls.Pooled, "classifier", cg.DPooled, accumulate: false);
        if (dropped) Backend.DropoutBackward(cg.DPooled, cg.DPooled, p, _dropout!.Value.SiteSeed(2 * Config.NumHiddenLayers + 1), 0);
        // pooled = tanh(cls·Wpᵀ + bp)
        Backend.TanhBackward(cls.Pooled, cg.DPooled, cg.DPre);
        LinearBackward(cg.DPre, cls.Cls, "bert.pooler.dense", cg.DCls, accumulate: false);
        if (final is not null) HeadsFinal(final);
        Backend.ScatterAddRows(cg.DCls, cls.FirstTokens, dHidden);
        return cg.Losses;
    }

    /// <summary>dX = dY·W (written or added), dW += dYᵀ·X, db += Σ_rows dY.</summary>
    private void LinearBackward(Tensor dy, Tensor x, string prefix, Tensor? dx, bool accumulate)
    {
        var w = Weight(prefix + ".weight");
        Backend.MatMul(dy, true, x, false, Gradient(prefix + ".weight"), 1, 1);
        if (Layout.Contains(prefix + ".bias")) Backend.SumRowsInto(dy, Gradient(prefix + ".bias"));
        if (dx is not null) Backend.MatMul(dy, false, w, false, dx, 1, accumulate ? 1 : 0);
    }

    /// <summary>Backward through the layers and the embeddings, from dL/d(final hidden) in <paramref name="dHidden"/>.</summary>
    private void EncoderBackward(Tensor dHidden, GradientBuffers g, int n, int d, GradientsFinal? final)
    {
        var ws = _ws!;
        var c = Config;
        bool classic = c.Architecture == EncoderArchitecture.Bert;
        bool dropped = _dropout is not null && c.HiddenDropoutProb > 0;
        float p = c.HiddenDropoutProb;
        float scale = 1f / MathF.Sqrt(c.HeadSize);
        var dSum = g.DSum.Rows(0, n);
        var dX1 = g.DX1.Rows(0, n);
        var dAct = g.DAct.Rows(0, n);
        var dUp = g.DUp.Rows(0, n);
        var dCtx = g.DContext.Rows(0, n);
        var dQkv = g.DQkv.Rows(0, n);
        // Under bf16 the residual gradients are added by the GEMMs that produce dx (beta = 1 onto the residual branch's
        // gradient, one rounding instead of two, and no separate add pass); fp32 keeps its separate adds, bit for bit.
        bool fuseResidual = Precision == ComputePrecision.BFloat16;

        for (int l = c.NumHiddenLayers - 1; l >= 0; l--)
        {
            var a = ws.Layers[l];
            string pfx = $"bert.encoder.layer.{l}.";
            string ln2 = classic ? pfx + "output.LayerNorm" : pfx + "mlp.layernorm";
            // out = LN2(sum2), sum2 = down' + x1 (down' is the dropped-out MLP output for classic BERT)
            Backend.LayerNormBackward(dHidden, a.Sum2, a.Mean2, a.Rstd2, Weight(ln2 + ".weight"), dSum, Gradient(ln2 + ".weight"), Gradient(ln2 + ".bias"));
            if (classic)
            {
                // down = act·W2ᵀ + b2 (dropout after it), act = GELU(up), up = x1·W1ᵀ + b1
                var dDown = dSum;
                if (dropped)
                {
                    dDown = g.DTemp.Rows(0, n);
                    Backend.DropoutBackward(dSum, dDown, p, _dropout!.Value.SiteSeed(2 + 2 * l), 0);
                }
                LinearBackward(dDown, a.Activation, pfx + "output.dense", dAct, accumulate: false);
                Backend.GeluBackward(a.Up, dAct, dUp);
                LinearBackward(dUp, a.X1, pfx + "intermediate.dense", fuseResidual ? dSum : dX1, accumulate: fuseResidual);
            }
            else
            {
                // down = act'·Woᵀ + bo with act' = dropout(GeGLU(up)), up = x1·Wgᵀ (no bias)
                LinearBackward(dSum, a.Activation, pfx + "mlp.wo", dAct, accumulate: false);
                Backend.GatedGeluDropoutBackward(a.Up, dAct, dUp, dropped ? p : 0, dropped ? _dropout!.Value.SiteSeed(2 + 2 * l) : 0, 0, dropped ? a.KeepBits : null);
                LinearBackward(dUp, a.X1, pfx + "mlp.gated_layers", fuseResidual ? dSum : dX1, accumulate: fuseResidual);
            }
            var dx1 = fuseResidual ? dSum : dX1;
            if (!fuseResidual) Backend.AddScaled(dSum, 1, dX1); // residual into x1
            // x1 = LN1(sum1), sum1 = ao' + x, ao' = dropout(ctx·Woᵀ + bo)
            Backend.LayerNormBackward(dx1, a.Sum1, a.Mean1, a.Rstd1, Weight(pfx + "attention.output.LayerNorm.weight"), dSum,
                Gradient(pfx + "attention.output.LayerNorm.weight"), Gradient(pfx + "attention.output.LayerNorm.bias"));
            var dAo = dSum;
            if (dropped)
            {
                dAo = g.DTemp.Rows(0, n);
                Backend.DropoutBackward(dSum, dAo, p, _dropout!.Value.SiteSeed(1 + 2 * l), 0);
            }
            LinearBackward(dAo, a.Context, pfx + "attention.output.dense", dCtx, accumulate: false);
            Backend.AttentionBackward(a.Qkv, ws.CuSeqlens, ws.Positions, _slopes, scale, a.Context, a.LogSumExp, dCtx, dQkv);
            // qkv = x·Wqkvᵀ + b; dx = dQkv·Wqkv + dSum1 (residual)
            if (fuseResidual)
            {
                LinearBackward(dQkv, ws.Hidden[l], pfx + "attention.self.Wqkv", dSum, accumulate: true);
                (dHidden, dSum) = (dSum, dHidden);   // dSum now holds d(layer input); the other buffer is free scratch
            }
            else
            {
                LinearBackward(dQkv, ws.Hidden[l], pfx + "attention.self.Wqkv", dHidden, accumulate: false);
                Backend.AddScaled(dSum, 1, dHidden);
            }
            if (final is not null) Final(final, BackwardSpans.Layers[l]);
        }
        // hidden0 = dropout(LN(embSum)); embSum = word[ids] + type[types] (+ position[pos])
        if (dropped) Backend.DropoutBackward(dHidden, dHidden, p, _dropout!.Value.SiteSeed(0), 0);
        Backend.LayerNormBackward(dHidden, ws.EmbeddingSum, ws.EmbeddingMean, ws.EmbeddingRstd, Weight("bert.embeddings.LayerNorm.weight"),
            dSum, Gradient("bert.embeddings.LayerNorm.weight"), Gradient("bert.embeddings.LayerNorm.bias"));
        Backend.EmbeddingBackward(ws.Ids, ws.Types, classic ? ws.Positions : null, dSum,
            Gradient("bert.embeddings.word_embeddings.weight"), Gradient("bert.embeddings.token_type_embeddings.weight"),
            classic ? Gradient("bert.embeddings.position_embeddings.weight") : null);
        // Last: the tied decoder (MLM head) and the lookup both write the word-embedding gradient.
        if (final is not null) Final(final, BackwardSpans.Embeddings);
    }

    /// <summary>Gradient scratch: per-token buffers reused by every layer, and head buffers.</summary>
    private sealed class GradientBuffers : IDisposable
    {
        private readonly List<Tensor> _owned = [];
        private HeadGradients? _head;
        private ClassifierGradients? _classifier;

        // act: the activation-gradient type (bf16 under mixed precision).
        public GradientBuffers(Backend backend, MosaicBertConfig c, DType act, int tokens)
        {
            Capacity = tokens;
            int d = c.HiddenSize, up = c.Architecture == EncoderArchitecture.MosaicBert ? 2 * c.IntermediateSize : c.IntermediateSize;
            DHidden = Own(backend.Allocate(act, tokens, d));
            DSum = Own(backend.Allocate(act, tokens, d));
            DX1 = Own(backend.Allocate(act, tokens, d));
            DTemp = Own(backend.Allocate(act, tokens, d));
            DAct = Own(backend.Allocate(act, tokens, c.IntermediateSize));
            DUp = Own(backend.Allocate(act, tokens, up));
            DContext = Own(backend.Allocate(act, tokens, d));
            DQkv = Own(backend.Allocate(act, tokens, 3 * d));
        }

        private Tensor Own(Tensor t)
        {
            _owned.Add(t);
            return t;
        }

        public int Capacity { get; }
        public long Bytes => _owned.Sum(t => t.Bytes) + (_head?.Bytes ?? 0) + (_classifier?.Bytes ?? 0);
        public Tensor DHidden { get; }
        public Tensor DSum { get; }
        public Tensor DX1 { get; }
        public Tensor DTemp { get; }
        public Tensor DAct { get; }
        public Tensor DUp { get; }
        public Tensor DContext { get; }
        public Tensor DQkv { get; }

        public HeadGradients Head(Backend backend, int k, MosaicBertConfig c, DType act) =>
            RowBufferSet.Ensure(ref _head, k, cap => new HeadGradients(backend, c, act, cap)).Bind(k);

        public ClassifierGradients Classifier(Backend backend, MosaicBertConfig c, DType act, int b) =>
            RowBufferSet.Ensure(ref _classifier, b, cap => new ClassifierGradients(backend, c, act, cap)).Bind(b);

        public void Dispose()
        {
            foreach (var t in _owned) t.Dispose();
            _head?.Dispose();
            _classifier?.Dispose();
        }
    }

    private sealed class HeadGradients(Backend backend, MosaicBertConfig c, DType act, int capacity) : RowBufferSet(capacity,
    [
        backend.Allocate(DType.Int32, capacity), backend.Allocate(capacity), backend.Allocate(act, capacity, c.VocabSize),
        backend.Allocate(act, capacity, c.HiddenSize), backend.Allocate(act, capacity, c.HiddenSize), backend.Allocate(act, capacity, c.HiddenSize),
        backend.Allocate(act, capacity, c.HiddenSize),
    ])
    {
        public Tensor Labels => View(0);
        public Tensor Losses => View(1);
        public Tensor DLogits => View(2);
        public Tensor DTransform => View(3);
        public Tensor DAct => View(4);
        public Tensor DPre => View(5);
        public Tensor DSelected => View(6);

        public HeadGradients Bind(int k)
        {
            BindRows(k);
            return this;
        }
    }

    private sealed class ClassifierGradients(Backend backend, MosaicBertConfig c, DType act, int capacity) : RowBufferSet(capacity,
    [
        backend.Allocate(DType.Int32, capacity), backend.Allocate(capacity), backend.Allocate(capacity), backend.Allocate(act, capacity, c.NumLabels),
        backend.Allocate(act, capacity, c.HiddenSize), backend.Allocate(act, capacity, c.HiddenSize), backend.Allocate(act, capacity, c.HiddenSize),
    ])
    {
        public Tensor Labels => View(0);
        public Tensor Targets => View(1);
        public Tensor Losses => View(2);
        public Tensor DLogits => View(3);
        public Tensor DPooled => View(4);
        public Tensor DPre => View(5);
        public Tensor DCls => View(6);

        public ClassifierGradients Bind(int b)
        {
            BindRows(b);
            return this;
        }
    }
}
