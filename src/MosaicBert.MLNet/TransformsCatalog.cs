using MosaicBert.ML.Data;
using MosaicBert.ML.Transforms;

namespace MosaicBert.ML;

/// <summary>
/// Transforms (as Microsoft.ML.TransformsCatalog). Components are extension methods on this catalog or on its
/// sub-catalogs, e.g. <c>Conversion.MapValueToKey</c>; featurizers such as <c>Transforms.MosaicBert(...)</c> attach here.
/// </summary>
public sealed class TransformsCatalog : CatalogBase
{
    internal TransformsCatalog(MLContext context) : base(context)
    {
        Conversion = new ConversionTransforms(context);
        Text = new TextTransforms(context);
    }

    /// <summary>Type and key conversions.</summary>
    public ConversionTransforms Conversion { get; }

    /// <summary>Text transforms (tokenizers and text featurizers attach here as extension methods).</summary>
    public TextTransforms Text { get; }

    /// <summary>Type and key conversions (<see cref="ConversionsExtensionsCatalog"/>).</summary>
    public sealed class ConversionTransforms : CatalogBase
    {
        internal ConversionTransforms(MLContext context) : base(context) { }
    }

    /// <summary>Text transforms, added by extension methods.</summary>
    public sealed class TextTransforms : CatalogBase
    {
        internal TextTransforms(MLContext context) : base(context) { }
    }
}

/// <summary>An output column and the input column it is made from (as Microsoft.ML.InputOutputColumnPair).</summary>
public sealed class InputOutputColumnPair
{
    /// <summary>Creates a pair; a null input means "same name as the output".</summary>
    public InputOutputColumnPair(string outputColumnName, string? inputColumnName = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(outputColumnName);
        OutputColumnName = outputColumnName;
        InputColumnName = inputColumnName ?? outputColumnName;
    }

    /// <summary>The column produced.</summary>
    public string OutputColumnName { get; }

    /// <summary>The column read.</summary>
    public string InputColumnName { get; }
}

/// <summary>The key-mapping transforms of <see cref="TransformsCatalog.Conversion"/> (as ML.NET's ConversionsExtensionsCatalog).</summary>
public static class ConversionsExtensionsCatalog
{
    /// <summary>
    /// Maps values (text, numbers or booleans) to keys: 1-based <see cref="uint"/> indexes into the distinct values
    /// seen when fitting, 0 for missing (NaN, empty text) and unseen values. The values are kept as the output's
    /// <see cref="AnnotationUtils.Kinds.KeyValues"/> annotation, which <see cref="MapKeyToValue(TransformsCatalog.ConversionTransforms, string, string?)"/> reads.
    /// </summary>
    /// <param name="catalog">The conversion catalog.</param>
    /// <param name="outputColumnName">The key column to produce.</param>
    /// <param name="inputColumnName">The column to map; null means <paramref name="outputColumnName"/> (replaced in place).</param>
    /// <param name="maximumNumberOfKeys">At most this many keys; values first seen after the limit map to 0.</param>
    /// <param name="keyOrdinality">Key order: <see cref="ValueToKeyMappingEstimator.KeyOrdinality.ByOccurrence"/>
    /// (first seen first, the default) or <see cref="ValueToKeyMappingEstimator.KeyOrdinality.ByValue"/> (sorted;
    /// ordinal for text). Use ByValue for GLUE labels, so that key order does not depend on row order.</param>
    /// <param name="addKeyValueAnnotationsAsText">Store the key values as text whatever the input type.</param>
    /// <param name="keyData">Data to learn the values from instead of the data passed to Fit (e.g. a fixed label set).</param>
    public static ValueToKeyMappingEstimator MapValueToKey(this TransformsCatalog.ConversionTransforms catalog,
        string outputColumnName, string? inputColumnName = null,
        int maximumNumberOfKeys = ValueToKeyMappingEstimator.Defaults.MaximumNumberOfKeys,
        ValueToKeyMappingEstimator.KeyOrdinality keyOrdinality = ValueToKeyMappingEstimator.Defaults.Ordinality,
        bool addKeyValueAnnotationsAsText = ValueToKeyMappingEstimator.Defaults.AddKeyValueAnnotationsAsText,
        IDataView? keyData = null) =>
        catalog.MapValueToKey([new InputOutputColumnPair(outputColumnName, inputColumnName)], maximumNumberOfKeys,
            keyOrdinality, addKeyValueAnnotationsAsText, keyData);

    /// <summary>Maps several columns to keys, each with its own values (see the single-column overload).</summary>
    public static ValueToKeyMappingEstimator MapValueToKey(this TransformsCatalog.ConversionTransforms catalog,
        InputOutputColumnPair[] columns,
        int maximumNumberOfKeys = ValueToKeyMappingEstimator.Defaults.MaximumNumberOfKeys,
        ValueToKeyMappingEstimator.KeyOrdinality keyOrdinality = ValueToKeyMappingEstimator.Defaults.Ordinality,
        bool addKeyValueAnnotationsAsText = ValueToKeyMappingEstimator.Defaults.AddKeyValueAnnotationsAsText,
        IDataView? keyData = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(columns);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maximumNumberOfKeys);
        return new ValueToKeyMappingEstimator(catalog.Context, columns, maximumNumberOfKeys, keyOrdinality, addKeyValueAnnotationsAsText, keyData);
    }

    /// <summary>Maps keys back to the values in their <see cref="AnnotationUtils.Kinds.KeyValues"/> annotation (key 0 and
    /// keys beyond the values give the missing value: empty text, NaN, or the type's default).</summary>
    /// <param name="catalog">The conversion catalog.</param>
    /// <param name="outputColumnName">The value column to produce.</param>
    /// <param name="inputColumnName">The key column; null means <paramref name="outputColumnName"/> (replaced in place).</param>
    public static KeyToValueMappingEstimator MapKeyToValue(this TransformsCatalog.ConversionTransforms catalog,
        string outputColumnName, string? inputColumnName = null) =>
        catalog.MapKeyToValue([new InputOutputColumnPair(outputColumnName, inputColumnName)]);

    /// <summary>Maps several key columns back to their values.</summary>
    public static KeyToValueMappingEstimator MapKeyToValue(this TransformsCatalog.ConversionTransforms catalog, InputOutputColumnPair[] columns)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(columns);
        return new KeyToValueMappingEstimator(columns);
    }
}
