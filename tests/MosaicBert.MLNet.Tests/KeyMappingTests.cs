using MosaicBert.ML;
using MosaicBert.ML.Data;
using MosaicBert.ML.Transforms;

namespace MosaicBert.MLNet.Tests;

public sealed class KeyMappingTests
{
    public sealed class Row
    {
        public string Label { get; set; } = "";

        public float Score { get; set; }
    }

    private static IDataView Data(MLContext ctx, params (string Label, float Score)[] rows) =>
        ctx.Data.LoadFromEnumerable(rows.Select(r => new Row { Label = r.Label, Score = r.Score }));

    private static string[] KeyValues(IDataView data, string column)
    {
        string[] values = [];
        data.Schema[column].GetKeyValues(ref values);
        return values;
    }

    [Fact]
    public void ByOccurrenceNumbersKeysInOrderOfFirstAppearance()
    {
        var ctx = new MLContext(seed: 1);
        var data = Data(ctx, ("neutral", 0), ("entailment", 0), ("neutral", 0), ("contradiction", 0));

        var keyed = ctx.Transforms.Conversion.MapValueToKey("Key", "Label").Fit(data).Transform(data);

        Assert.Equal([1u, 2u, 1u, 3u], keyed.GetColumn<uint>("Key"));
        Assert.Equal(new KeyDataViewType(typeof(uint), 3), keyed.Schema["Key"].Type);
        Assert.Equal(["neutral", "entailment", "contradiction"], KeyValues(keyed, "Key"));
    }

    [Fact]
    public void ByValueSortsTextOrdinallyAndNumbersNumerically()
    {
        var ctx = new MLContext(seed: 1);
        var data = Data(ctx, ("neutral", 10), ("entailment", 9), ("Zebra", 10), ("contradiction", -1.5f));

        var model = ctx.Transforms.Conversion.MapValueToKey(
            [new InputOutputColumnPair("LabelKey", "Label"), new InputOutputColumnPair("ScoreKey", "Score")],
            keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue).Fit(data);
        var keyed = model.Transform(data);

        // Ordinal: uppercase 'Z' (0x5A) sorts before lowercase letters.
        Assert.Equal(["Zebra", "contradiction", "entailment", "neutral"], KeyValues(keyed, "LabelKey"));
        Assert.Equal([4u, 3u, 1u, 2u], keyed.GetColumn<uint>("LabelKey"));
        float[] scores = [];
        keyed.Schema["ScoreKey"].GetKeyValues(ref scores);
        Assert.Equal([-1.5f, 9f, 10f], scores); // numeric, not text, order ("10" < "9" as text)
        Assert.Equal([3u, 2u, 3u, 1u], keyed.GetColumn<uint>("ScoreKey"));
    }

    [Fact]
    public void GlueLabelsMapTheSameWhateverTheRowOrderWithByValue()
    {
        var ctx = new MLContext(seed: 1);
        var a = Data(ctx, ("1", 0), ("0", 0));
        var b = Data(ctx, ("0", 0), ("1", 0));
        var est = ctx.Transforms.Conversion.MapValueToKey("Key", "Label", keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue);

        Assert.Equal(["0", "1"], KeyValues(est.Fit(a).Transform(a), "Key"));
        Assert.Equal(["0", "1"], KeyValues(est.Fit(b).Transform(a), "Key"));
        // ByOccurrence depends on which label comes first: the pitfall the conventions warn about.
        var byOccurrence = ctx.Transforms.Conversion.MapValueToKey("Key", "Label");
        Assert.Equal(["1", "0"], KeyValues(byOccurrence.Fit(a).Transform(a), "Key"));
    }

    [Fact]
    public void MissingAndUnseenValuesMapToZero()
    {
        var ctx = new MLContext(seed: 1);
        var train = Data(ctx, ("a", float.NaN), ("", 1), ("b", 2));
        var test = Data(ctx, ("c", 3), ("a", float.NaN), ("", 2));

        var model = ctx.Transforms.Conversion.MapValueToKey([new("L", "Label"), new("S", "Score")]).Fit(train);
        var keyed = model.Transform(test);

        Assert.Equal(["a", "b"], KeyValues(keyed, "L")); // empty text is missing, not a value
        Assert.Equal([0u, 1u, 0u], keyed.GetColumn<uint>("L"));
        Assert.Equal([0u, 0u, 2u], keyed.GetColumn<uint>("S")); // NaN is missing; 3 was never seen
    }

    [Fact]
    public void MaximumNumberOfKeysCapsTheValues()
    {
        var ctx = new MLContext(seed: 1);
        var data = Data(ctx, ("c", 0), ("a", 0), ("b", 0), ("a", 0));
        var keyed = ctx.Transforms.Conversion.MapValueToKey("Key", "Label", maximumNumberOfKeys: 2,
            keyOrdinality: ValueToKeyMappingEstimator.KeyOrdinality.ByValue).Fit(data).Transform(data);

        Assert.Equal(["a", "c"], KeyValues(keyed, "Key")); // the first two seen, then sorted
        Assert.Equal([2u, 1u, 0u, 1u], keyed.GetColumn<uint>("Key"));
    }

    [Fact]
    public void RoundTripThroughMapKeyToValueRestoresValues()
    {
        var ctx = new MLContext(seed: 1);
        var data = Data(ctx, ("pos", 0.5f), ("neg", 1), ("pos", 2), ("neg", 0.5f));
        var pipeline = ctx.Transforms.Conversion.MapValueToKey([new("Label"), new("Score")])
            .Append(ctx.Transforms.Conversion.MapKeyToValue([new("LabelBack", "Label"), new("ScoreBack", "Score")]));

        var result = pipeline.Fit(data).Transform(data);

        Assert.Equal(TextDataViewType.Instance, result.Schema["LabelBack"].Type);
        Assert.Equal(["pos", "neg", "pos", "neg"], result.GetColumn<string>("LabelBack"));
        Assert.Equal([0.5f, 1f, 2f, 0.5f], result.GetColumn<float>("ScoreBack"));
    }

    [Fact]
    public void KeyValuesAsTextAndKeyData()
    {
        var ctx = new MLContext(seed: 1);
        var keyData = Data(ctx, ("x", 2), ("y", 1));
        var data = Data(ctx, ("y", 1), ("z", 2));

        var keyed = ctx.Transforms.Conversion.MapValueToKey("Key", "Score", addKeyValueAnnotationsAsText: true, keyData: keyData)
            .Fit(data).Transform(data);

        Assert.Equal(["2", "1"], KeyValues(keyed, "Key")); // learned from keyData, in its order, stored as text
        Assert.Equal([2u, 1u], keyed.GetColumn<uint>("Key"));
        var back = ctx.Transforms.Conversion.MapKeyToValue("Back", "Key").Fit(keyed).Transform(keyed);
        Assert.Equal(["1", "2"], back.GetColumn<string>("Back"));
    }

    [Fact]
    public void UnknownKeysMapBackToMissingValues()
    {
        var builder = new ArrayDataViewBuilder();
        var annotations = new DataViewSchema.Annotations.Builder();
        annotations.Add(AnnotationUtils.Kinds.KeyValues, new VectorDataViewType(NumberDataViewType.Single, 2), new[] { 0.25f, 0.75f });
        builder.AddColumn("Key", new KeyDataViewType(typeof(uint), 3), new uint[] { 0, 1, 2, 3 }, annotations.ToAnnotations());
        var data = builder.GetDataView();
        var ctx = new MLContext(seed: 1);

        var values = ctx.Transforms.Conversion.MapKeyToValue("Value", "Key").Fit(data).Transform(data).GetColumn<float>("Value");

        Assert.Equal([float.NaN, 0.25f, 0.75f, float.NaN], values); // key 0, and key 3 beyond the two values
    }

    [Fact]
    public void SchemaErrorsAreArgumentOutOfRange()
    {
        var ctx = new MLContext(seed: 1);
        var data = Data(ctx, ("a", 1));
        var shape = SchemaShape.Create(data.Schema);

        var missing = Assert.Throws<ArgumentOutOfRangeException>(() => ctx.Transforms.Conversion.MapValueToKey("K", "Nope").GetOutputSchema(shape));
        Assert.Contains("Schema mismatch for input column 'Nope': the column is missing", missing.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => ctx.Transforms.Conversion.MapValueToKey("K", "Nope").Fit(data));
        var notKey = Assert.Throws<ArgumentOutOfRangeException>(() => ctx.Transforms.Conversion.MapKeyToValue("V", "Label").Fit(data));
        Assert.Contains("expected a key, got String", notKey.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => ctx.Transforms.Conversion.MapKeyToValue("V", "Label").GetOutputSchema(shape));

        // A fitted mapping refuses data whose column changed type.
        var model = ctx.Transforms.Conversion.MapValueToKey("K", "Score").Fit(data);
        var scoreAsText = new ArrayDataViewBuilder();
        scoreAsText.AddColumn("Score", TextDataViewType.Instance, new[] { "1" });
        var retyped = Assert.Throws<ArgumentOutOfRangeException>(() => model.Transform(scoreAsText.GetDataView()));
        Assert.Contains("the keys were learned from Single, got String", retyped.Message);
    }

    [Fact]
    public void FittingOnOnlyMissingValuesFailsClearly()
    {
        var ctx = new MLContext(seed: 1);
        var e = Assert.Throws<InvalidOperationException>(() => ctx.Transforms.Conversion.MapValueToKey("K", "Label").Fit(Data(ctx, ("", 1))));
        Assert.Equal("MapValueToKey cannot learn keys for column 'Label': the training data has only missing values.", e.Message);
    }
}
