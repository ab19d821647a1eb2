using System.Text.Json.Nodes;
using MosaicBert.ML.Data;
using MosaicBert.Model;

namespace MosaicBert.ML.Transforms;

/// <summary>
/// The base of the transformers that run a MosaicBERT model on one or two text columns: the featurizer and the
/// fitted trainers. They own the model and its tokenizer (dispose them), batch rows (<see cref="BatchSize"/> per
/// forward pass), compute their output columns lazily and once (all of them from one pass), and are safe to use from
/// many threads.
/// </summary>
public abstract class MosaicBertTransformer : IPersistableTransformer, IDisposable
{
    private protected MosaicBertTransformer(MosaicBertEncoder encoder, string sentence1ColumnName, string? sentence2ColumnName, int maxSequenceLength, int batchSize)
    {
        Encoder = encoder;
        Sentence1ColumnName = sentence1ColumnName;
        Sentence2ColumnName = sentence2ColumnName;
        MaxSequenceLength = maxSequenceLength;
        BatchSize = batchSize;
    }

    /// <summary>The first (or only) text column read.</summary>
    public string Sentence1ColumnName { get; }

    /// <summary>The second text column read, or null.</summary>
    public string? Sentence2ColumnName { get; }

    /// <summary>The most tokens per row; longer rows are truncated longest-first.</summary>
    public int MaxSequenceLength { get; }

    /// <summary>Rows per forward pass.</summary>
    public int BatchSize { get; }

    /// <summary>The model's configuration.</summary>
    public MosaicBertConfig ModelConfig => Encoder.Model.Config;

    internal MosaicBertEncoder Encoder { get; }

    private protected abstract EncoderOutput Output { get; }

    /// <summary>The name the loader is registered under.</summary>
    private protected abstract string Loader { get; }

    /// <summary>Adds the output columns' types to a schema.</summary>
    private protected abstract void AddOutputSchema(DataViewSchema.Builder builder);

    /// <summary>Adds the output columns, computed from the model's per-row outputs when first read.</summary>
    private protected abstract void AddOutputColumns(ArrayDataViewBuilder builder, Lazy<float[][]> outputs);

    /// <summary>Writes the step's own parameters (the model and common ones are written by the base).</summary>
    private protected abstract void SaveParameters(JsonObject parameters);

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        CheckTextColumns(inputSchema, Sentence1ColumnName, Sentence2ColumnName);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        AddOutputSchema(builder);
        return builder.ToSchema();
    }

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        CheckTextColumns(input.Schema, Sentence1ColumnName, Sentence2ColumnName);
        var s1 = ColumnarDataView.DataOf(input, input.Schema[Sentence1ColumnName].Index);
        var s2 = Sentence2ColumnName is null ? null : ColumnarDataView.DataOf(input, input.Schema[Sentence2ColumnName].Index);
        // One forward pass per batch gives every output column; Lazy runs it once, on the first read of any of them.
        var outputs = new Lazy<float[][]>(() => Encoder.Infer((string[])s1.Values, (string[]?)s2?.Values, MaxSequenceLength, BatchSize, Output));
        var builder = new ArrayDataViewBuilder(input);
        AddOutputColumns(builder, outputs);
        return builder.GetDataView();
    }

    string IPersistableTransformer.LoaderName => Loader;

    void IPersistableTransformer.Save(ModelSaveContext context)
    {
        Encoder.Save(context.Directory);
        var p = context.Parameters;
        p["sentence1ColumnName"] = Sentence1ColumnName;
        p["sentence2ColumnName"] = Sentence2ColumnName;
        p["maxSequenceLength"] = MaxSequenceLength;
        p["batchSize"] = BatchSize;
        SaveParameters(p);
    }

    /// <summary>Releases the model (later use throws <see cref="ObjectDisposedException"/>).</summary>
    public void Dispose() => Encoder.Dispose();

    /// <summary>Fails unless the sentence columns exist and hold text.</summary>
    internal static void CheckTextColumns(DataViewSchema schema, string sentence1, string? sentence2)
    {
        foreach (var name in sentence2 is null ? [sentence1] : new[] { sentence1, sentence2 })
        {
            var column = schema.GetColumnOrNull(name)
                ?? throw new ArgumentOutOfRangeException(nameof(schema), $"Text column '{name}' not found; the columns are: {schema}.");
            if (column.Type is not TextDataViewType)
                throw new ArgumentOutOfRangeException(nameof(schema), $"Column '{name}' must be text (String), but is {column.Type}.");
        }
    }

    /// <summary>The same check on a schema shape (estimators).</summary>
    internal static void CheckTextColumns(SchemaShape shape, string sentence1, string? sentence2)
    {
        foreach (var name in sentence2 is null ? [sentence1] : new[] { sentence1, sentence2 })
        {
            if (!shape.TryFindColumn(name, out var c))
                throw new ArgumentOutOfRangeException(nameof(shape), $"Text column '{name}' not found; the columns are: {shape}.");
            if (c.Kind != SchemaShape.Column.VectorKind.Scalar || c.IsKey || c.ItemType is not TextDataViewType)
                throw new ArgumentOutOfRangeException(nameof(shape), $"Column '{name}' must be text (String), but is {c.GetTypeString()}.");
        }
    }

    /// <summary>The common parameters of a saved step: sentence columns, max length, batch size.</summary>
    private protected static (string Sentence1, string? Sentence2, int MaxLength, int BatchSize) LoadCommon(ModelLoadContext context) =>
        (context.Get<string>("sentence1ColumnName"), context.GetOrDefault<string>("sentence2ColumnName"),
         context.Get<int>("maxSequenceLength"), context.Get<int>("batchSize"));
}

/// <summary>
/// Made by <c>Transforms.MosaicBert(...)</c>: embeds a text (or text pair) column into a float vector of the model's
/// hidden size. Fitting learns nothing; it loads (or initialises) the model.
/// </summary>
public sealed class MosaicBertFeaturizingEstimator : IEstimator<MosaicBertFeaturizingTransformer>
{
    private const string Component = "MosaicBertFeaturizer";
    private readonly MLContext _context;
    private readonly string _output;
    private readonly string _sentence1;
    private readonly string? _sentence2;
    private readonly MosaicBertFeaturizerOptions _options;

    internal MosaicBertFeaturizingEstimator(MLContext context, string outputColumnName, string sentence1ColumnName, string? sentence2ColumnName, MosaicBertFeaturizerOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(outputColumnName);
        ArgumentException.ThrowIfNullOrEmpty(sentence1ColumnName);
        options.Validate(Component);
        _context = context;
        _output = outputColumnName;
        _sentence1 = sentence1ColumnName;
        _sentence2 = sentence2ColumnName;
        _options = options;
    }

    /// <summary>Loads or initialises the model (see <see cref="MosaicBertModelOptions"/>), after checking the columns.</summary>
    public MosaicBertFeaturizingTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        MosaicBertTransformer.CheckTextColumns(input.Schema, _sentence1, _sentence2);
        var encoder = MosaicBertEncoder.Create(_context, _options, ModelHeads.None, 0, _options.Seed ?? _context.NextSeed(), Component);
        return new MosaicBertFeaturizingTransformer(encoder, _output, _sentence1, _sentence2, _options.MaxSequenceLength, _options.BatchSize, _options.Pooling);
    }

    /// <summary>Adds the output column: a float vector (of the model's hidden size).</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        MosaicBertTransformer.CheckTextColumns(inputSchema, _sentence1, _sentence2);
        return new SchemaShape([.. inputSchema, new SchemaShape.Column(_output, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Single, isKey: false)]);
    }
}

/// <summary>Embeds text rows with a MosaicBERT encoder (see <see cref="MosaicBertFeaturizingEstimator"/>).</summary>
public sealed class MosaicBertFeaturizingTransformer : MosaicBertTransformer
{
    internal const string LoaderName = "MosaicBertFeaturizer";

    internal MosaicBertFeaturizingTransformer(MosaicBertEncoder encoder, string outputColumnName, string sentence1, string? sentence2,
        int maxSequenceLength, int batchSize, MosaicBertPooling pooling)
        : base(encoder, sentence1, sentence2, maxSequenceLength, batchSize)
    {
        OutputColumnName = outputColumnName;
        Pooling = pooling;
    }

    /// <summary>The embedding column produced.</summary>
    public string OutputColumnName { get; }

    /// <summary>How token vectors are pooled.</summary>
    public MosaicBertPooling Pooling { get; }

    /// <summary>The length of the embeddings (the model's hidden size).</summary>
    public int EmbeddingSize => ModelConfig.HiddenSize;

    private VectorDataViewType OutputType => new(NumberDataViewType.Single, EmbeddingSize);

    private protected override EncoderOutput Output => Pooling == MosaicBertPooling.Cls ? EncoderOutput.Cls : EncoderOutput.Mean;

    private protected override string Loader => LoaderName;

    private protected override void AddOutputSchema(DataViewSchema.Builder builder) => builder.AddColumn(OutputColumnName, OutputType);

    private protected override void AddOutputColumns(ArrayDataViewBuilder builder, Lazy<float[][]> outputs) =>
        builder.AddColumn(OutputColumnName, OutputType, () => outputs.Value);

    private protected override void SaveParameters(JsonObject parameters)
    {
        parameters["outputColumnName"] = OutputColumnName;
        parameters["pooling"] = Pooling.ToString();
    }

    internal static MosaicBertFeaturizingTransformer Load(ModelLoadContext context)
    {
        var (s1, s2, maxLength, batchSize) = LoadCommon(context);
        return new MosaicBertFeaturizingTransformer(MosaicBertEncoder.Load(context.Directory, context.Context, LoaderName), context.Get<string>("outputColumnName"), s1, s2,
            maxLength, batchSize, Enum.Parse<MosaicBertPooling>(context.Get<string>("pooling")));
    }
}
