using MosaicBert.ML;
using MosaicBert.ML.Data;

namespace MosaicBert.MLNet.Tests;

public sealed class DataOperationsTests
{
    public sealed class Item
    {
        public int Id { get; set; }

        public string Text { get; set; } = "";

        public string Group { get; set; } = "";

        [VectorType(2)] public float[] Embedding { get; set; } = [0, 0];

        [KeyType(3)] public uint Class { get; set; }
    }

    private static Item[] Items(int n) =>
        [.. Enumerable.Range(0, n).Select(i => new Item { Id = i, Text = $"t{i}", Group = $"g{i / 3}", Embedding = [i, -i], Class = (uint)(i % 3 + 1) })];

    [Fact]
    public void EnumerableRoundTripKeepsTypesAndValues()
    {
        var ctx = new MLContext(seed: 1);
        var items = Items(5);

        var data = ctx.Data.LoadFromEnumerable(items);

        Assert.Equal("Id: Int32, Text: String, Group: String, Embedding: Vector<Single, 2>, Class: Key<UInt32, 0-2>", data.Schema.ToString());
        items[0].Embedding[0] = 99; // the view copied the arrays
        var back = ctx.Data.CreateEnumerable<Item>(data, reuseRowObject: false).ToList();
        Assert.Equal([0, 1, 2, 3, 4], back.Select(r => r.Id));
        Assert.Equal([0f, 0f], back[0].Embedding);
        Assert.Equal([1f, -1f], back[1].Embedding);
        Assert.Equal([1u, 2u, 3u, 1u, 2u], back.Select(r => r.Class));
    }

    [Fact]
    public void ReuseRowObjectReturnsOneObject()
    {
        var ctx = new MLContext(seed: 1);
        var rows = ctx.Data.CreateEnumerable<Item>(ctx.Data.LoadFromEnumerable(Items(3)), reuseRowObject: true);
        var seen = new HashSet<Item>(ReferenceEqualityComparer.Instance);
        var ids = new List<int>();
        foreach (var r in rows)
        {
            seen.Add(r);
            ids.Add(r.Id);
        }
        Assert.Single(seen);
        Assert.Equal([0, 1, 2], ids);
    }

    public sealed class Narrow
    {
        public string Text { get; set; } = "";

        public string Missing { get; set; } = "default";
    }

    [Fact]
    public void CreateEnumerableChecksColumnsAtTheCall()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(Items(2));

        var e = Assert.Throws<InvalidOperationException>(() => ctx.Data.CreateEnumerable<Narrow>(data, reuseRowObject: false));
        Assert.StartsWith("Narrow.Missing maps to column 'Missing', which the data does not have", e.Message);

        var rows = ctx.Data.CreateEnumerable<Narrow>(data, reuseRowObject: false, ignoreMissingColumns: true).ToList();
        Assert.Equal(["t0", "t1"], rows.Select(r => r.Text));
        Assert.All(rows, r => Assert.Equal("default", r.Missing));
    }

    public sealed class ClassAsText
    {
        [ColumnName("Class")] public string Value { get; set; } = "";
    }

    [Fact]
    public void ReadingAKeyAsTextPointsToMapKeyToValue()
    {
        var ctx = new MLContext(seed: 1);
        var e = Assert.Throws<InvalidOperationException>(() => ctx.Data.CreateEnumerable<ClassAsText>(ctx.Data.LoadFromEnumerable(Items(1)), false));
        Assert.Equal("Column 'Class' is Key<UInt32, 0-2> (a key column: map it back with MapKeyToValue, or read it as uint), but ClassAsText.Value is String.", e.Message);
    }

    [Fact]
    public void TrainTestSplitIsExactDisjointOrderedAndDeterministic()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(Items(100));

        var a = ctx.Data.TrainTestSplit(data, testFraction: 0.2, seed: 7);
        var b = ctx.Data.TrainTestSplit(data, testFraction: 0.2, seed: 7);
        var c = ctx.Data.TrainTestSplit(data, testFraction: 0.2, seed: 8);

        var train = a.TrainSet.GetColumn<int>("Id").ToArray();
        var test = a.TestSet.GetColumn<int>("Id").ToArray();
        Assert.Equal(20, test.Length);
        Assert.Equal(80, train.Length);
        Assert.Empty(train.Intersect(test));
        Assert.Equal(Enumerable.Range(0, 100), train.Concat(test).Order());
        Assert.Equal(train.Order(), train); // original order is kept
        Assert.Equal(test, b.TestSet.GetColumn<int>("Id"));
        Assert.NotEqual(test, c.TestSet.GetColumn<int>("Id"));
        // Other columns follow their rows.
        Assert.Equal(test.Select(i => $"t{i}"), a.TestSet.GetColumn<string>("Text"));
    }

    [Fact]
    public void SamplingKeyKeepsGroupsTogether()
    {
        var ctx = new MLContext(seed: 1);
        var split = ctx.Data.TrainTestSplit(ctx.Data.LoadFromEnumerable(Items(30)), testFraction: 0.3, samplingKeyColumnName: "Group", seed: 3);

        var trainGroups = split.TrainSet.GetColumn<string>("Group").ToHashSet();
        var testGroups = split.TestSet.GetColumn<string>("Group").ToHashSet();
        Assert.Empty(trainGroups.Intersect(testGroups));
        Assert.Equal(9, split.TestSet.GetRowCount()); // 10 groups of 3: 0.3 × 30 = 9 = three whole groups
    }

    [Fact]
    public void SeedlessOperationsFollowTheContextSeed()
    {
        static int[] Run()
        {
            var ctx = new MLContext(seed: 42);
            var data = ctx.Data.LoadFromEnumerable(Items(20));
            ctx.Data.ShuffleRows(data); // draws a seed from the context...
            return [.. ctx.Data.TrainTestSplit(data, 0.25).TestSet.GetColumn<int>("Id")]; // ...and so does this
        }
        Assert.Equal(Run(), Run());
    }

    [Fact]
    public void ShuffleIsASeededPermutation()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(Items(50));

        var a = ctx.Data.ShuffleRows(data, seed: 5).GetColumn<int>("Id").ToArray();
        var b = ctx.Data.ShuffleRows(data, seed: 5).GetColumn<int>("Id").ToArray();
        var c = ctx.Data.ShuffleRows(data, seed: 6).GetColumn<int>("Id").ToArray();

        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.NotEqual(Enumerable.Range(0, 50), a);
        Assert.Equal(Enumerable.Range(0, 50), a.Order());
    }

    [Fact]
    public void TakeAndSkipRows()
    {
        var ctx = new MLContext(seed: 1);
        var data = ctx.Data.LoadFromEnumerable(Items(10));

        Assert.Equal([0, 1, 2], ctx.Data.TakeRows(data, 3).GetColumn<int>("Id"));
        Assert.Equal([7, 8, 9], ctx.Data.SkipRows(data, 7).GetColumn<int>("Id"));
        Assert.Equal(10, ctx.Data.TakeRows(data, 100).GetRowCount());
        Assert.Equal(0, ctx.Data.SkipRows(data, 100).GetRowCount());
    }

    [Fact]
    public void LazyColumnsAreComputedOnceAndCacheForcesThem()
    {
        var ctx = new MLContext(seed: 1);
        var source = ctx.Data.LoadFromEnumerable(Items(4));
        var calls = 0;
        var builder = new ArrayDataViewBuilder(source);
        builder.AddColumn("Double", NumberDataViewType.Int32, () =>
        {
            calls++;
            return source.GetColumn<int>("Id").Select(i => i * 2).ToArray();
        });
        var view = builder.GetDataView();
        Assert.Equal(0, calls);

        var cached = ctx.Data.Cache(view, "Double");
        Assert.Equal(1, calls);
        Assert.Equal([0, 2, 4, 6], cached.GetColumn<int>("Double"));
        Assert.Equal([0, 2, 4, 6], view.GetColumn<int>("Double"));
        Assert.Equal([0, 2, 4, 6], ctx.Data.ShuffleRows(view, seed: 1).GetColumn<int>("Double").Order()); // derived views reuse it
        Assert.Equal(1, calls);
    }

    [Fact]
    public void BuilderRejectsValuesThatDoNotFitTheType()
    {
        var builder = new ArrayDataViewBuilder();
        builder.AddColumn("A", NumberDataViewType.Int32, new[] { 1, 2 });
        Assert.Throws<ArgumentException>(() => builder.AddColumn("B", NumberDataViewType.Int32, new[] { 1 }));
        Assert.Throws<ArgumentException>(() => builder.AddColumn("C", new KeyDataViewType(typeof(uint), 2), new uint[] { 1, 3 }));
        Assert.Throws<ArgumentException>(() => builder.AddColumn("D", new VectorDataViewType(NumberDataViewType.Single, 2), new[] { new float[2], new float[3] }));
        Assert.Throws<ArgumentException>(() => builder.AddColumn("E", TextDataViewType.Instance, new[] { 1, 2 }));
    }

    [Fact]
    public void PreviewShowsRowsAndColumns()
    {
        var ctx = new MLContext(seed: 1);
        var preview = ctx.Data.LoadFromEnumerable(Items(5)).Preview(maxRows: 2);

        Assert.Equal(2, preview.RowView.Length);
        Assert.Equal("Id: 1, Text: t1, Group: g0, Embedding: [1, -1], Class: 2", preview.RowView[1].ToString());
        Assert.Equal(["t0", "t1"], preview.ColumnView[1].Values);
    }
}
