using MosaicBert.ML;
using MosaicBert.ML.Data;
using MosaicBert.ML.Transforms;
using static MosaicBert.MLNet.Tests.MosaicBertTestKit;

namespace MosaicBert.MLNet.Tests;

public sealed class ModelPersistenceTests
{
    public sealed class Row
    {
        public float Grade { get; set; }

        public string Name { get; set; } = "";
    }

    private static IDataView Data(MLContext ctx) =>
        ctx.Data.LoadFromEnumerable(new[] { new Row { Grade = 2.5f, Name = "b" }, new Row { Grade = 0.1f, Name = "a" }, new Row { Grade = 2.5f, Name = "c" } });

    private static ITransformer KeyPipeline(MLContext ctx, IDataView data) =>
        ctx.Transforms.Conversion.MapValueToKey("GradeKey", "Grade", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
            .Append(ctx.Transforms.Conversion.MapValueToKey("NameKey", "Name"), TransformerScope.TrainTest)
            .Append(ctx.Transforms.Conversion.MapKeyToValue("GradeBack", "GradeKey"))
            .Fit(data);

    [Fact]
    public void KeyMappingsAndScopesRoundTrip()
    {
        var ctx = new MLContext(seed: 1);
        var data = Data(ctx);
        var model = KeyPipeline(ctx, data);
        using var stream = new MemoryStream();
        ctx.Model.Save(model, data.Schema, stream);
        stream.Position = 0;

        var loaded = Assert.IsType<TransformerChain<ITransformer>>(ctx.Model.Load(stream, out var schema));
        var before = model.Transform(data);
        var after = loaded.Transform(data);
        Assert.Equal(before.Schema.ToString(), after.Schema.ToString());
        Assert.Equal(before.GetColumn<uint>("GradeKey"), after.GetColumn<uint>("GradeKey"));
        Assert.Equal(before.GetColumn<uint>("NameKey"), after.GetColumn<uint>("NameKey"));
        Assert.Equal(before.GetColumn<float>("GradeBack"), after.GetColumn<float>("GradeBack"));
        float[] values = [];
        after.Schema["GradeKey"].GetKeyValues(ref values);
        Assert.Equal([0.1f, 2.5f], values);
        Assert.Equal(2, loaded.GetModelFor(TransformerScope.Scoring).Count());
        Assert.Equal("Grade: Single, Name: String", schema.ToString());
    }

    [Fact]
    public void AFailedSaveLeavesThePreviousFileIntactAndNoTemporaryFile()
    {
        var ctx = new MLContext(seed: 1);
        var data = Data(ctx);
        var folder = NewFolder();
        var path = Path.Combine(folder, "model.zip");
        ctx.Model.Save(KeyPipeline(ctx, data), data.Schema, path);
        var previous = File.ReadAllBytes(path);

        // A step that fails while writing.
        var failing = new TransformerChain<ITransformer>(KeyPipeline(ctx, data), new FailingTransformer());
        Assert.Throws<IOException>(() => ctx.Model.Save(failing, data.Schema, path));
        Assert.Equal(previous, File.ReadAllBytes(path));
        Assert.Equal([path], Directory.GetFiles(folder));

        // A crash after the new zip is complete, just before it replaces the old one.
        ModelArchive.BeforeCommit = temp =>
        {
            Assert.True(new FileInfo(temp).Length > 0);
            throw new IOException("simulated crash");
        };
        try
        {
            Assert.Throws<IOException>(() => ctx.Model.Save(KeyPipeline(ctx, data), null, path));
        }
        finally
        {
            ModelArchive.BeforeCommit = null;
        }
        Assert.Equal(previous, File.ReadAllBytes(path));
        Assert.Equal([path], Directory.GetFiles(folder));
    }

    [Fact]
    public void ATransformerThatCannotBeSavedIsNamed()
    {
        var ctx = new MLContext(seed: 1);
        var e = Assert.Throws<NotSupportedException>(() => ctx.Model.Save(new TransformerChain<ITransformer>(new NotPersistable()), null, new MemoryStream()));
        Assert.Contains(nameof(NotPersistable), e.Message);
    }

    private sealed class FailingTransformer : IPersistableTransformer
    {
        public string LoaderName => "Failing";

        public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => inputSchema;

        public IDataView Transform(IDataView input) => input;

        public void Save(ModelSaveContext context)
        {
            File.WriteAllText(Path.Combine(context.Directory, "partial.bin"), "half");
            throw new IOException("disk full");
        }
    }

    private sealed class NotPersistable : ITransformer
    {
        public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => inputSchema;

        public IDataView Transform(IDataView input) => input;
    }
}
