using MosaicBert.Tensors;

namespace MosaicBert.Model;

public sealed partial class MosaicBertModel
{
    /// <summary>
    /// Activations kept for the backward pass, allocated once for a token and sequence capacity; each batch binds
    /// views of its first N rows. Shapes: N tokens, d hidden, H heads, I intermediate (2I for the gated layer).
    /// </summary>
    private sealed class Workspace : IDisposable
    {
        private readonly List<Tensor> _owned = [];
        private readonly Tensor _ids, _types, _positions, _cuSeqlens, _embSum, _embMean, _embRstd, _embMask;
        private readonly Tensor[] _hidden;
        private readonly LayerBuffers[] _layers;
        private HeadBuffers? _head;
        private ClassifierBuffers? _classifier;

        public Workspace(Backend backend, MosaicBertConfig c, int tokens, int sequences)
        {
            CapacityTokens = tokens;
            CapacitySequences = sequences;
            int d = c.HiddenSize;
            _ids = Own(backend.Allocate(DType.Int32, tokens));
            _types = Own(backend.Allocate(DType.Int32, tokens));
            _positions = Own(backend.Allocate(DType.Int32, tokens));
            _cuSeqlens = Own(backend.Allocate(DType.Int32, sequences + 1));
            _embSum = Own(backend.Allocate(tokens, d));
            _embMean = Own(backend.Allocate(tokens));
            _embRstd = Own(backend.Allocate(tokens));
            _embMask = Own(backend.Allocate(tokens, d));
            _hidden = new Tensor[c.NumHiddenLayers + 1];
            for (int l = 0; l <= c.NumHiddenLayers; l++) _hidden[l] = Own(backend.Allocate(tokens, d));
            int up = c.Architecture == EncoderArchitecture.MosaicBert ? 2 * c.IntermediateSize : c.IntermediateSize;
            _layers = new LayerBuffers[c.NumHiddenLayers];
            for (int l = 0; l < c.NumHiddenLayers; l++)
            {
                _layers[l] = new LayerBuffers(
                    Own(backend.Allocate(tokens, 3 * d)), Own(backend.Allocate(tokens, d)), Own(backend.Allocate(tokens, c.NumAttentionHeads)),
                    Own(backend.Allocate(tokens, d)), Own(backend.Allocate(tokens, d)), Own(backend.Allocate(tokens, d)),
                    Own(backend.Allocate(tokens)), Own(backend.Allocate(tokens)),
                    Own(backend.Allocate(tokens, up)), Own(backend.Allocate(tokens, c.IntermediateSize)),
                    Own(backend.Allocate(tokens, d)), Own(backend.Allocate(tokens, d)), Own(backend.Allocate(tokens)), Own(backend.Allocate(tokens)),
                    Own(backend.Allocate(tokens, d)),
                    Own(backend.Allocate(tokens, c.Architecture == EncoderArchitecture.MosaicBert ? c.IntermediateSize : d)));
            }
            Layers = _layers;
            Hidden = _hidden;
        }

        private Tensor Own(Tensor t)
        {
            _owned.Add(t);
            return t;
        }

        /// <summary>Bytes of all tensors the workspace holds.</summary>
        public long Bytes => _owned.Sum(t => t.Length * 4) + (_head?.Bytes ?? 0) + (_classifier?.Bytes ?? 0);

        public int CapacityTokens { get; }
        public int CapacitySequences { get; }
        public int TokenCount { get; private set; }
        public int SequenceCount { get; private set; }

        // Views for the bound batch (first N rows).
        public Tensor Ids { get; private set; } = null!;
        public Tensor Types { get; private set; } = null!;
        public Tensor Positions { get; private set; } = null!;
        public Tensor CuSeqlens { get; private set; } = null!;
        public Tensor EmbeddingSum { get; private set; } = null!;
        public Tensor EmbeddingMean { get; private set; } = null!;
        public Tensor EmbeddingRstd { get; private set; } = null!;
        public Tensor EmbeddingMask { get; private set; } = null!;
        public Tensor[] Hidden { get; private set; }
        public LayerBuffers[] Layers { get; private set; }
        public ClassifierBuffers Classifier => _classifier ?? throw new InvalidOperationException("No batch is bound.");

        public void Bind(Backend backend, EncoderBatch batch, MosaicBertConfig c)
        {
            int n = batch.TokenCount, b = batch.BatchSize;
            TokenCount = n;
            SequenceCount = b;
            Ids = _ids.Rows(0, n);
            Types = _types.Rows(0, n);
            Positions = _positions.Rows(0, n);
            CuSeqlens = _cuSeqlens.Rows(0, b + 1);
            backend.Upload(batch.TokenIds, Ids);
            backend.Upload(batch.TypeIds, Types);
            backend.Upload(batch.Positions, Positions);
            backend.Upload(batch.CuSeqlens, CuSeqlens);
            EmbeddingSum = _embSum.Rows(0, n);
            EmbeddingMean = _embMean.Rows(0, n);
            EmbeddingRstd = _embRstd.Rows(0, n);
            EmbeddingMask = _embMask.Rows(0, n);
            Hidden = [.. _hidden.Select(h => h.Rows(0, n))];
            Layers = [.. _layers.Select(l => l.Rows(n))];
            if (_classifier is null || _classifier.Capacity < b)
            {
                _classifier?.Dispose();
                _classifier = new ClassifierBuffers(backend, c, Math.Max(b, CapacitySequences));
            }
            _classifier.Bind(backend, batch);
        }

        /// <summary>MLM head buffers for k rows (grown on demand, kept).</summary>
        public HeadBuffers Head(Backend backend, int k, MosaicBertConfig c)
        {
            if (_head is null || _head.Capacity < k)
            {
                _head?.Dispose();
                _head = new HeadBuffers(backend, c, Math.Max(k, _head?.Capacity ?? 0));
            }
            return _head.Bind(k);
        }

        public void Dispose()
        {
            foreach (var t in _owned) t.Dispose();
            _head?.Dispose();
            _classifier?.Dispose();
        }
    }

    /// <summary>Per-layer activations.</summary>
    /// <remarks>Mask1: dropout of the attention output; Mask2: dropout in the MLP (after GeGLU for MosaicBERT, after
    /// the output dense for classic BERT).</remarks>
    private sealed record LayerBuffers(
        Tensor Qkv, Tensor Context, Tensor LogSumExp, Tensor AttentionOutput, Tensor Sum1, Tensor X1, Tensor Mean1, Tensor Rstd1,
        Tensor Up, Tensor Activation, Tensor Down, Tensor Sum2, Tensor Mean2, Tensor Rstd2, Tensor Mask1, Tensor Mask2)
    {
        public LayerBuffers Rows(int n) => new(Qkv.Rows(0, n), Context.Rows(0, n), LogSumExp.Rows(0, n), AttentionOutput.Rows(0, n),
            Sum1.Rows(0, n), X1.Rows(0, n), Mean1.Rows(0, n), Rstd1.Rows(0, n), Up.Rows(0, n), Activation.Rows(0, n),
            Down.Rows(0, n), Sum2.Rows(0, n), Mean2.Rows(0, n), Rstd2.Rows(0, n), Mask1.Rows(0, n), Mask2.Rows(0, n));
    }

    /// <summary>MLM head activations for k selected rows.</summary>
    private sealed class HeadBuffers : IDisposable
    {
        private readonly Tensor _rows, _selected, _pre, _act, _transform, _mean, _rstd, _logits;

        public HeadBuffers(Backend backend, MosaicBertConfig c, int capacity)
        {
            Capacity = capacity;
            int d = c.HiddenSize;
            _rows = backend.Allocate(DType.Int32, capacity);
            _selected = backend.Allocate(capacity, d);
            _pre = backend.Allocate(capacity, d);
            _act = backend.Allocate(capacity, d);
            _transform = backend.Allocate(capacity, d);
            _mean = backend.Allocate(capacity);
            _rstd = backend.Allocate(capacity);
            _logits = backend.Allocate(capacity, c.VocabSize);
        }

        public int Capacity { get; }
        public Tensor Rows { get; private set; } = null!;
        public Tensor Selected { get; private set; } = null!;
        public Tensor TransformPre { get; private set; } = null!;
        public Tensor TransformAct { get; private set; } = null!;
        public Tensor Transform { get; private set; } = null!;
        public Tensor Mean { get; private set; } = null!;
        public Tensor Rstd { get; private set; } = null!;
        public Tensor Logits { get; private set; } = null!;

        public long Bytes => new[] { _rows, _selected, _pre, _act, _transform, _mean, _rstd, _logits }.Sum(t => t.Length * 4);

        public HeadBuffers Bind(int k)
        {
            Rows = _rows.Rows(0, k);
            Selected = _selected.Rows(0, k);
            TransformPre = _pre.Rows(0, k);
            TransformAct = _act.Rows(0, k);
            Transform = _transform.Rows(0, k);
            Mean = _mean.Rows(0, k);
            Rstd = _rstd.Rows(0, k);
            Logits = _logits.Rows(0, k);
            return this;
        }

        public void Dispose()
        {
            foreach (var t in new[] { _rows, _selected, _pre, _act, _transform, _mean, _rstd, _logits }) t.Dispose();
        }
    }

    /// <summary>Pooler and classifier activations for B sequences.</summary>
    private sealed class ClassifierBuffers : IDisposable
    {
        private readonly Tensor _first, _cls, _pre, _pooled, _pooledDropped, _mask, _logits;

        public ClassifierBuffers(Backend backend, MosaicBertConfig c, int capacity)
        {
            Capacity = capacity;
            _first = backend.Allocate(DType.Int32, capacity);
            _cls = backend.Allocate(capacity, c.HiddenSize);
            _pre = backend.Allocate(capacity, c.HiddenSize);
            _pooled = backend.Allocate(capacity, c.HiddenSize);
            _pooledDropped = backend.Allocate(capacity, c.HiddenSize);
            _mask = backend.Allocate(capacity, c.HiddenSize);
            _logits = backend.Allocate(capacity, c.NumLabels);
        }

        public int Capacity { get; }
        public Tensor FirstTokens { get; private set; } = null!;
        public Tensor Cls { get; private set; } = null!;
        public Tensor PooledPre { get; private set; } = null!;
        public Tensor Pooled { get; private set; } = null!;
        public Tensor PooledDropped { get; private set; } = null!;
        public Tensor Mask { get; private set; } = null!;
        public Tensor Logits { get; private set; } = null!;

        public long Bytes => new[] { _first, _cls, _pre, _pooled, _pooledDropped, _mask, _logits }.Sum(t => t.Length * 4);

        public void Bind(Backend backend, EncoderBatch batch)
        {
            int b = batch.BatchSize;
            FirstTokens = _first.Rows(0, b);
            backend.Upload(batch.FirstTokens, FirstTokens);
            Cls = _cls.Rows(0, b);
            PooledPre = _pre.Rows(0, b);
            Pooled = _pooled.Rows(0, b);
            PooledDropped = _pooledDropped.Rows(0, b);
            Mask = _mask.Rows(0, b);
            Logits = _logits.Rows(0, b);
        }

        public void Dispose()
        {
            foreach (var t in new[] { _first, _cls, _pre, _pooled, _pooledDropped, _mask, _logits }) t.Dispose();
        }
    }
}
