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
        private readonly Tensor _ids, _types, _positions, _cuSeqlens, _embSum, _embMean, _embRstd;
        private readonly Tensor[] _hidden;
        private readonly LayerBuffers[] _layers;
        private HeadBuffers? _head;
        private ClassifierBuffers? _classifier;

        // act: the activation type (bf16 under mixed precision); statistics and log-sum-exps stay fp32.
        public Workspace(Backend backend, MosaicBertConfig c, DType act, int tokens, int sequences)
        {
            Act = act;
            CapacityTokens = tokens;
            CapacitySequences = sequences;
            int d = c.HiddenSize;
            _ids = Own(backend.Allocate(DType.Int32, tokens));
            _types = Own(backend.Allocate(DType.Int32, tokens));
            _positions = Own(backend.Allocate(DType.Int32, tokens));
            _cuSeqlens = Own(backend.Allocate(DType.Int32, sequences + 1));
            _embSum = Own(backend.Allocate(act, tokens, d));
            _embMean = Own(backend.Allocate(tokens));
            _embRstd = Own(backend.Allocate(tokens));
            _hidden = new Tensor[c.NumHiddenLayers + 1];
            for (int l = 0; l <= c.NumHiddenLayers; l++) _hidden[l] = Own(backend.Allocate(act, tokens, d));
            int up = c.Architecture == EncoderArchitecture.MosaicBert ? 2 * c.IntermediateSize : c.IntermediateSize;
            _layers = new LayerBuffers[c.NumHiddenLayers];
            for (int l = 0; l < c.NumHiddenLayers; l++)
            {
                _layers[l] = new LayerBuffers(
                    Own(backend.Allocate(act, tokens, 3 * d)), Own(backend.Allocate(act, tokens, d)), Own(backend.Allocate(tokens, c.NumAttentionHeads)),
                    Own(backend.Allocate(act, tokens, d)), Own(backend.Allocate(act, tokens, d)), Own(backend.Allocate(act, tokens, d)),
                    Own(backend.Allocate(tokens)), Own(backend.Allocate(tokens)),
                    Own(backend.Allocate(act, tokens, up)), Own(backend.Allocate(act, tokens, c.IntermediateSize)),
                    Own(backend.Allocate(act, tokens, d)), Own(backend.Allocate(act, tokens, d)), Own(backend.Allocate(tokens)), Own(backend.Allocate(tokens)),
                    Own(backend.Allocate(DType.Int32, checked((int)(((long)tokens * c.IntermediateSize + 31) / 32)))));
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
        public long Bytes => _owned.Sum(t => t.Bytes) + (_head?.Bytes ?? 0) + (_classifier?.Bytes ?? 0);

        public DType Act { get; }
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
            Hidden = [.. _hidden.Select(h => h.Rows(0, n))];
            Layers = [.. _layers.Select(l => l.Rows(n))];
            RowBufferSet.Ensure(ref _classifier, Math.Max(b, CapacitySequences), cap => new ClassifierBuffers(backend, c, Act, cap)).Bind(backend, batch);
        }

        /// <summary>MLM head buffers for k rows (grown on demand, kept).</summary>
        public HeadBuffers Head(Backend backend, int k, MosaicBertConfig c) =>
            RowBufferSet.Ensure(ref _head, k, cap => new HeadBuffers(backend, c, Act, cap)).Bind(k);

        public void Dispose()
        {
            foreach (var t in _owned) t.Dispose();
            _head?.Dispose();
            _classifier?.Dispose();
        }
    }

    /// <summary>Per-layer activations.</summary>
    /// <remarks>No float dropout masks are kept: the backward pass regenerates them from the counter generator
    /// (<see cref="Backend.DropoutBackward"/>), the same values bit for bit, for 4 bytes per element less memory. The
    /// MLP's mask, the largest, may be recorded as one bit per element in KeepBits (⌈N·I/32⌉ words, bit r·I + c) by a
    /// backend that prefers reading it to hashing again (<see cref="Backend.GatedGeluDropout"/>).</remarks>
    private sealed record LayerBuffers(
        Tensor Qkv, Tensor Context, Tensor LogSumExp, Tensor AttentionOutput, Tensor Sum1, Tensor X1, Tensor Mean1, Tensor Rstd1,
        Tensor Up, Tensor Activation, Tensor Down, Tensor Sum2, Tensor Mean2, Tensor Rstd2, Tensor KeepBits)
    {
        public LayerBuffers Rows(int n) => new(Qkv.Rows(0, n), Context.Rows(0, n), LogSumExp.Rows(0, n), AttentionOutput.Rows(0, n),
            Sum1.Rows(0, n), X1.Rows(0, n), Mean1.Rows(0, n), Rstd1.Rows(0, n), Up.Rows(0, n), Activation.Rows(0, n),
            Down.Rows(0, n), Sum2.Rows(0, n), Mean2.Rows(0, n), Rstd2.Rows(0, n), KeepBits);
    }

    /// <summary>
    /// Tensors whose first dimension is a row capacity (masked tokens, sequences), allocated once; each batch binds
    /// views of its first rows. Subclasses give the members names.
    /// </summary>
    private abstract class RowBufferSet : IDisposable
    {
        private readonly Tensor[] _full;
        private readonly Tensor[] _views;

        protected RowBufferSet(int capacity, Tensor[] full)
        {
            Capacity = capacity;
            _full = full;
            _views = (Tensor[])full.Clone();
        }

        public int Capacity { get; }
        public long Bytes => _full.Sum(t => t.Bytes);
        protected Tensor View(int i) => _views[i];

        protected void BindRows(int rows)
        {
            for (int i = 0; i < _full.Length; i++) _views[i] = _full[i].Rows(0, rows);
        }

        public void Dispose()
        {
            foreach (var t in _full) t.Dispose();
        }

        /// <summary>Keeps <paramref name="set"/> when it has room for <paramref name="rows"/>, else replaces it with a larger one.</summary>
        public static T Ensure<T>(ref T? set, int rows, Func<int, T> create) where T : RowBufferSet
        {
            if (set is null || set.Capacity < rows)
            {
                int capacity = Math.Max(rows, set?.Capacity ?? 0);
                set?.Dispose();
                set = create(capacity);
            }
            return set;
        }
    }

    /// <summary>MLM head activations for k selected rows.</summary>
    private sealed class HeadBuffers(Backend backend, MosaicBertConfig c, DType act, int capacity) : RowBufferSet(capacity,
    [
        backend.Allocate(DType.Int32, capacity), backend.Allocate(act, capacity, c.HiddenSize), backend.Allocate(act, capacity, c.HiddenSize),
        backend.Allocate(act, capacity, c.HiddenSize), backend.Allocate(act, capacity, c.HiddenSize), backend.Allocate(capacity),
        backend.Allocate(capacity), backend.Allocate(capacity, c.VocabSize),
    ])
    {
        public Tensor Rows => View(0);
        public Tensor Selected => View(1);
        public Tensor TransformPre => View(2);
        public Tensor TransformAct => View(3);
        public Tensor Transform => View(4);
        public Tensor Mean => View(5);
        public Tensor Rstd => View(6);
        public Tensor Logits => View(7);

        public HeadBuffers Bind(int k)
        {
            BindRows(k);
            return this;
        }
    }

    /// <summary>Pooler and classifier activations for B sequences.</summary>
    private sealed class ClassifierBuffers(Backend backend, MosaicBertConfig c, DType act, int capacity) : RowBufferSet(capacity,
    [
        backend.Allocate(DType.Int32, capacity), backend.Allocate(act, capacity, c.HiddenSize), backend.Allocate(act, capacity, c.HiddenSize),
        backend.Allocate(act, capacity, c.HiddenSize), backend.Allocate(act, capacity, c.HiddenSize), backend.Allocate(capacity, c.NumLabels),
    ])
    {
        public Tensor FirstTokens => View(0);
        public Tensor Cls => View(1);
        public Tensor PooledPre => View(2);
        public Tensor Pooled => View(3);
        public Tensor PooledDropped => View(4);
        public Tensor Logits => View(5);

        public void Bind(Backend backend, EncoderBatch batch)
        {
            BindRows(batch.BatchSize);
            backend.Upload(batch.FirstTokens, FirstTokens);
        }
    }
}
