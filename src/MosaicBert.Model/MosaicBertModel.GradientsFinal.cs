namespace MosaicBert.Model;

/// <summary>
/// Told during a backward pass that the gradient elements [<paramref name="offset"/>, <paramref name="offset"/> +
/// <paramref name="length"/>) of <see cref="MosaicBertModel.Gradients"/> will not be written again by this pass: the work
/// that computes them has been issued to the backend (on a GPU it may still be queued, so a consumer on another stream
/// must order itself after the work queued so far). The ranges come in backward order — the MLM head's own parameters,
/// the pooler and classifier, the encoder layers from the last to the first, the embeddings — and together cover the
/// gradient block exactly once per pass. A head the objective does not use is reported with the used one (its
/// gradients are untouched, so already final).
/// </summary>
public delegate void GradientsFinal(long offset, long length);

public sealed partial class MosaicBertModel
{
    private GradientSpans? _backwardSpans;

    /// <summary>The parameter groups whose gradients become final together, found once from the layout.</summary>
    private GradientSpans BackwardSpans => _backwardSpans ??= new GradientSpans(Layout);

    /// <summary>
    /// The ranges a backward pass reports through <see cref="GradientsFinal"/>, in the order it reports them: the MLM
    /// head's own parameters, the pooler and classifier, the encoder layers from the last to the first, the embeddings
    /// (groups the layout lacks are left out). They tile the parameter block.
    /// </summary>
    public static IReadOnlyList<(long Offset, long Length)> GradientGroupsInBackwardOrder(ParameterLayout layout)
    {
        ArgumentNullException.ThrowIfNull(layout);
        var spans = new GradientSpans(layout);
        return [.. new[] { spans.MaskedLM, spans.Classifier }.OfType<(long, long)>(), .. Enumerable.Reverse(spans.Layers), spans.Embeddings];
    }

    /// <summary>Both heads' ranges (the head of the objective has just finished; the other was not touched).</summary>
    private void HeadsFinal(GradientsFinal final)
    {
        Final(final, BackwardSpans.MaskedLM);
        Final(final, BackwardSpans.Classifier);
    }

    private static void Final(GradientsFinal final, (long Offset, long Length)? span)
    {
        if (span is var (offset, length)) final(offset, length);
    }

    /// <summary>
    /// [offset, length) of each group in the parameter block: the span from the first to the last parameter whose
    /// name has the group's prefix. The layout keeps each group contiguous, which the constructor checks, so every
    /// group is one range and the groups tile the block.
    /// </summary>
    private sealed class GradientSpans
    {
        public GradientSpans(ParameterLayout layout)
        {
            MaskedLM = Span(layout, "cls.");
            Classifier = Span(layout, "bert.pooler.", "classifier.");
            Layers = [.. Enumerable.Range(0, layout.Config.NumHiddenLayers)
                .Select(l => Span(layout, $"bert.encoder.layer.{l}.") ?? throw new InvalidOperationException($"The layout has no parameters of layer {l}."))];
            Embeddings = Span(layout, "bert.embeddings.") ?? throw new InvalidOperationException("The layout has no embedding parameters.");
            long total = (MaskedLM?.Length ?? 0) + (Classifier?.Length ?? 0) + Layers.Sum(s => s.Length) + Embeddings.Length;
            if (total != layout.Count)
                throw new InvalidOperationException($"The backward pass's gradient groups cover {total} of the {layout.Count} parameters; every parameter must belong to one group.");
        }

        public (long Offset, long Length)? MaskedLM { get; }
        public (long Offset, long Length)? Classifier { get; }
        public (long Offset, long Length)[] Layers { get; }
        public (long Offset, long Length) Embeddings { get; }

        private static (long Offset, long Length)? Span(ParameterLayout layout, params string[] prefixes)
        {
            var members = layout.Parameters.Where(p => prefixes.Any(x => p.Name.StartsWith(x, StringComparison.Ordinal))).ToList();
            if (members.Count == 0) return null;
            long start = members.Min(p => p.Offset), end = members.Max(p => p.Offset + p.Length);
            if (members.Sum(p => p.Length) != end - start)
                throw new InvalidOperationException($"The parameters {string.Join(" / ", prefixes)}* are not contiguous in the layout; their gradients cannot be reported as one range.");
            return (start, end - start);
        }
    }
}
