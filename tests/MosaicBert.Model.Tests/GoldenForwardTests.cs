using MosaicBert.Model;
using MosaicBert.Tensors.Cpu;

namespace MosaicBert.Model.Tests;

/// <summary>
/// The spec's golden tiny forward pass (§6.6, float64 reference validated against the original code to 4.4e-16).
/// We compute in fp32, so values of magnitude ~1 agree to ~1e-6; the tolerance 2e-5 leaves room for the
/// accumulated rounding of two layers and the erfc approximation (relative error below 1.2e-7).
/// </summary>
public sealed class GoldenForwardTests
{
    private const double Tolerance = 2e-5;

    private static MosaicBertConfig TinyConfig => new()
    {
        VocabSize = 32, HiddenSize = 12, NumAttentionHeads = 3, NumHiddenLayers = 2, IntermediateSize = 8,
        TypeVocabSize = 2, LayerNormEps = 1e-12f,
    };

    /// <summary>Tensor k of the canonical order holds 0.1·sin(0.5·i + k) (+1 for LayerNorm weights).</summary>
    internal static MosaicBertModel GoldenModel(int threads = 2)
    {
        var model = new MosaicBertModel(TinyConfig, ModelHeads.MaskedLM, new CpuBackend(threads));
        int k = 0;
        foreach (var p in model.Layout.Parameters)
        {
            var values = new float[p.Length];
            for (int i = 0; i < values.Length; i++)
                values[i] = (float)(0.1 * Math.Sin(0.5 * i + k) + (p.IsLayerNormWeight ? 1.0 : 0.0));
            model.SetParameter(p.Name, values);
            k++;
        }
        Assert.Equal(31, k);
        return model;
    }

    internal static EncoderBatch GoldenBatch() => new(
        [2, 7, 9, 11, 3, 2, 5, 3, 0, 0], [0, 0, 1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 0, 0], 2, 5);

    [Fact]
    public void HiddenStatesAndLogitsMatchTheSpec()
    {
        using var model = GoldenModel();
        var batch = GoldenBatch();
        model.Encode(batch);
        var hidden = model.LastHiddenStatePadded(batch); // [2, 5, 12]
        Close([0.241827193010092, 1.1833925857278491, 1.4092680213919568, 1.6226770233134853], hidden.AsSpan(0, 4));
        Close([-0.3096759644025423, 0.755748861527325, 1.3456400165810267, 1.657755084654453], hidden.AsSpan((1 * 5 + 2) * 12, 4));
        Assert.All(hidden.AsSpan((1 * 5 + 3) * 12, 24).ToArray(), v => Assert.Equal(0f, v)); // padding rows are zeros

        var logits = Download(model, model.MaskedLMLogits()); // [8 real tokens, 32]
        Close([0.6254351433368311, 0.7157387932793816, 0.7621276161132611, 0.7544794999448018], logits.AsSpan(1 * 32, 4));
        Close([0.6550049515426235, 0.5920479491910629, 0.4950292614588551, 0.36525053652839634], logits.AsSpan(5 * 32, 4));
        var argmax = Enumerable.Range(0, 8).Select(t => Array.IndexOf(logits, logits.AsSpan(t * 32, 32).ToArray().Max(), t * 32) - t * 32);
        Assert.Equal([20, 2, 17, 18, 21, 21, 22, 21], argmax);
        Assert.Equal(1.645785399013728, logits.Sum(v => (double)v), 1e-3); // 256 values summed: absolute error grows
    }

    [Fact]
    public void ASequenceAloneEqualsTheSameSequenceInAPaddedBatch()
    {
        using var model = GoldenModel();
        model.Encode(GoldenBatch());
        var batched = Download(model, model.MaskedLMLogits()).AsSpan(5 * 32, 3 * 32).ToArray();
        model.Encode(new EncoderBatch([2, 5, 3], [0, 0, 0], [1, 1, 1], 1, 3));
        var alone = Download(model, model.MaskedLMLogits());
        // Same math on the same rows; only SIMD remainder handling (which depends on memory alignment) may round
        // differently, so allow a few ulps.
        for (int i = 0; i < alone.Length; i++)
            Assert.True(Math.Abs(batched[i] - alone[i]) <= 1e-6, $"logit {i}: {batched[i]} in the batch, {alone[i]} alone");
    }

    [Fact]
    public void ThreadCountDoesNotChangeResults()
    {
        using var one = GoldenModel(threads: 1);
        using var two = GoldenModel(threads: 2);
        one.Encode(GoldenBatch());
        two.Encode(GoldenBatch());
        Assert.Equal(Download(one, one.MaskedLMLogits()), Download(two, two.MaskedLMLogits()));
    }

    internal static float[] Download(MosaicBertModel model, MosaicBert.Tensors.Tensor t)
    {
        var host = new float[t.Length];
        model.Backend.Download(t, host);
        return host;
    }

    private static void Close(double[] expected, ReadOnlySpan<float> actual)
    {
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= Tolerance, $"element {i}: expected {expected[i]}, got {actual[i]} (tolerance {Tolerance})");
    }
}
