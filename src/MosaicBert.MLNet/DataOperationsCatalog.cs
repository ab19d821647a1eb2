using MosaicBert.ML.Data;
using MosaicBert.ML.Glue;

namespace MosaicBert.ML;

/// <summary>
/// Base of every catalog. <see cref="Context"/> is public, unlike ML.NET's internal environment, so that extension
/// methods in other assemblies (trainers, featurizers) can log, draw seeds and read the GPU settings.
/// </summary>
public abstract class CatalogBase
{
    private protected CatalogBase(MLContext context) => Context = context;

    /// <summary>The context the catalog belongs to.</summary>
    public MLContext Context { get; }
}

/// <summary>Loading, splitting, shuffling and enumerating data (as Microsoft.ML.DataOperationsCatalog).</summary>
public sealed class DataOperationsCatalog : CatalogBase
{
    internal DataOperationsCatalog(MLContext context) : base(context) { }

    /// <summary>A train/test split (as ML.NET's DataOperationsCatalog.TrainTestData).</summary>
    public sealed class TrainTestData
    {
        internal TrainTestData(IDataView trainSet, IDataView testSet)
        {
            TrainSet = trainSet;
            TestSet = testSet;
        }

        /// <summary>The rows to train on.</summary>
        public IDataView TrainSet { get; }

        /// <summary>The rows to test on.</summary>
        public IDataView TestSet { get; }
    }

    /// <summary>Loads a delimited text file with the columns that <typeparamref name="TInput"/>'s
    /// <see cref="LoadColumnAttribute"/>s declare. See <see cref="TextLoader"/> for the rules and errors.</summary>
    /// <param name="path">The file.</param>
    /// <param name="separatorChar">The field separator. Default tab.</param>
    /// <param name="hasHeader">Whether the first line is a header to skip.</param>
    /// <param name="allowQuoting">Whether fields may be quoted with <c>"</c>. Keep false for GLUE.</param>
    /// <param name="trimWhitespace">Remove trailing whitespace from lines.</param>
    /// <exception cref="DataFormatException">A row is malformed (the message names the file, line and column).</exception>
    public IDataView LoadFromTextFile<TInput>(string path, char separatorChar = '\t', bool hasHeader = false,
        bool allowQuoting = false, bool trimWhitespace = false) =>
        CreateTextLoader<TInput>(separatorChar, hasHeader, allowQuoting, trimWhitespace).Load(path);

    /// <summary>Loads a delimited text file with the given options.</summary>
    public IDataView LoadFromTextFile<TInput>(string path, TextLoader.Options options) =>
        CreateTextLoader<TInput>(options).Load(path);

    /// <summary>A loader for <typeparamref name="TInput"/>'s columns (its row class is checked now).</summary>
    public TextLoader CreateTextLoader<TInput>(char separatorChar = '\t', bool hasHeader = false,
        bool allowQuoting = false, bool trimWhitespace = false) =>
        CreateTextLoader<TInput>(new TextLoader.Options
        {
            Separators = [separatorChar],
            HasHeader = hasHeader,
            AllowQuoting = allowQuoting,
            TrimWhitespace = trimWhitespace,
        });

    /// <summary>A loader for <typeparamref name="TInput"/>'s columns with the given options.</summary>
    public TextLoader CreateTextLoader<TInput>(TextLoader.Options options) => new(Context, typeof(TInput), options);

    /// <summary>
    /// Loads a GLUE task's train or dev file (see <see cref="GlueReader"/>) as columns <c>Sentence1</c>,
    /// <c>Sentence2</c> (sentence-pair tasks only) and <c>Label</c>: the label text for classification tasks (map it
    /// with <c>MapValueToKey(keyOrdinality: ByValue)</c> to get <see cref="GlueTaskInfo.LabelValues"/>' order), a
    /// float for STS-B.
    /// </summary>
    public IDataView LoadGlue(GlueTask task, string path, bool skipMalformedRows = false)
    {
        var dataset = GlueReader.Read(task, path, skipMalformedRows);
        var info = dataset.TaskInfo;
        var examples = dataset.Examples;
        var builder = new ArrayDataViewBuilder();
        builder.AddColumn("Sentence1", TextDataViewType.Instance, examples.Select(e => e.Sentence1).ToArray());
        if (info.IsSentencePair) builder.AddColumn("Sentence2", TextDataViewType.Instance, examples.Select(e => e.Sentence2!).ToArray());
        if (info.IsRegression) builder.AddColumn("Label", NumberDataViewType.Single, examples.Select(e => e.RegressionLabel).ToArray());
        else builder.AddColumn("Label", TextDataViewType.Instance, examples.Select(e => e.Label).ToArray());
        if (dataset.SkippedLines.Count > 0)
            Context.WriteLog(ChannelMessageKind.Warning, nameof(GlueReader), $"{path}: skipped {dataset.SkippedLines.Count} malformed rows (lines {string.Join(", ", dataset.SkippedLines.Take(10))}{(dataset.SkippedLines.Count > 10 ? ", ..." : "")}).");
        Context.WriteLog(ChannelMessageKind.Info, nameof(GlueReader), $"Loaded {examples.Count} {info.Name} rows from {path}.");
        return builder.GetDataView();
    }

    /// <summary>A view of <paramref name="data"/>'s objects, one row each, with a column per public read-write field or
    /// property (<see cref="ColumnNameAttribute"/>, <see cref="NoColumnAttribute"/>, <see cref="VectorTypeAttribute"/>
    /// and <see cref="KeyTypeAttribute"/> apply). Unlike ML.NET the objects are read now, and arrays copied.</summary>
    public IDataView LoadFromEnumerable<TRow>(IEnumerable<TRow> data) where TRow : class
    {
        ArgumentNullException.ThrowIfNull(data);
        return RowBinding.For(typeof(TRow)).ToDataView(data);
    }

    /// <summary>The rows of <paramref name="data"/> as <typeparamref name="TRow"/> objects, matched by column name.</summary>
    /// <param name="data">The view.</param>
    /// <param name="reuseRowObject">Return the same object for every row, overwritten each time (faster; copy what you keep).</param>
    /// <param name="ignoreMissingColumns">Leave members without a matching column unset instead of failing.</param>
    /// <exception cref="InvalidOperationException">A member has no column, or a column of another type (thrown at the call).</exception>
    public IEnumerable<TRow> CreateEnumerable<TRow>(IDataView data, bool reuseRowObject, bool ignoreMissingColumns = false)
        where TRow : class, new()
    {
        ArgumentNullException.ThrowIfNull(data);
        return RowBinding.For(typeof(TRow)).ReadRows<TRow>(data, reuseRowObject, ignoreMissingColumns);
    }

    /// <summary>
    /// Splits rows at random into a train and a test set; both keep the original row order (as in ML.NET, which
    /// does not shuffle). Unlike ML.NET's per-row coin flips, the test set has exactly round(testFraction × rows)
    /// rows (without a sampling key), and the same seed gives the same split.
    /// </summary>
    /// <param name="data">The data.</param>
    /// <param name="testFraction">The fraction of rows for the test set, in [0, 1].</param>
    /// <param name="samplingKeyColumnName">If set, rows with equal values in this column land in the same set (e.g. to
    /// keep paraphrases of one sentence together); the test fraction is then met as closely as whole groups allow.</param>
    /// <param name="seed">The seed; null draws one from the context.</param>
    public TrainTestData TrainTestSplit(IDataView data, double testFraction = 0.1, string? samplingKeyColumnName = null, int? seed = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (!(testFraction >= 0 && testFraction <= 1)) throw new ArgumentOutOfRangeException(nameof(testFraction), testFraction, "Must be in [0, 1].");
        var rows = ColumnarDataView.RowCountOf(data);
        var random = new Random(seed ?? Context.NextSeed());
        var target = (int)Math.Round(testFraction * rows, MidpointRounding.AwayFromZero);

        var isTest = new bool[rows];
        if (samplingKeyColumnName is null)
        {
            var order = Enumerable.Range(0, rows).ToArray();
            random.Shuffle(order);
            foreach (var r in order.AsSpan(0, target)) isTest[r] = true;
        }
        else
        {
            // Rows with equal keys form a group; whole groups go to the test set, in random order, until it is full.
            var column = data.Schema[samplingKeyColumnName];
            var values = ColumnarDataView.DataOf(data, column.Index).Values;
            var ops = ColumnOps.For(column.Type.RawType);
            List<int>[] groups = [.. Enumerable.Range(0, rows).GroupBy(r => KeyOf(ops.GetBoxed(values, r))).Select(g => g.ToList())];
            random.Shuffle(groups);
            var testCount = 0;
            foreach (var g in groups)
            {
                if (testCount >= target) break;
                foreach (var r in g) isTest[r] = true;
                testCount += g.Count;
            }
        }
        var train = Enumerable.Range(0, rows).Where(r => !isTest[r]).ToArray();
        var test = Enumerable.Range(0, rows).Where(r => isTest[r]).ToArray();
        return new TrainTestData(ColumnarDataView.SelectRows(data, train), ColumnarDataView.SelectRows(data, test));

        // Vectors are compared by content.
        static object KeyOf(object? value) => value is Array a ? string.Join("\u0001", a.Cast<object>()) : value ?? "";
    }

    /// <summary>The rows in a random order (a full permutation; ML.NET shuffles within a pool). Same seed, same order.</summary>
    /// <param name="input">The data.</param>
    /// <param name="seed">The seed; null draws one from the context.</param>
    public IDataView ShuffleRows(IDataView input, int? seed = null)
    {
        ArgumentNullException.ThrowIfNull(input);
        var order = Enumerable.Range(0, ColumnarDataView.RowCountOf(input)).ToArray();
        new Random(seed ?? Context.NextSeed()).Shuffle(order);
        return ColumnarDataView.SelectRows(input, order);
    }

    /// <summary>The first <paramref name="count"/> rows (all when there are fewer).</summary>
    public IDataView TakeRows(IDataView input, long count)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var n = (int)Math.Min(count, ColumnarDataView.RowCountOf(input));
        return ColumnarDataView.SelectRows(input, [.. Enumerable.Range(0, n)]);
    }

    /// <summary>The rows after the first <paramref name="count"/> (none when there are fewer).</summary>
    public IDataView SkipRows(IDataView input, long count)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var rows = ColumnarDataView.RowCountOf(input);
        var skip = (int)Math.Min(count, rows);
        return ColumnarDataView.SelectRows(input, [.. Enumerable.Range(skip, rows - skip)]);
    }

    /// <summary>
    /// Computes now the lazily computed columns named in <paramref name="columnsToPrefetch"/> (all columns if none are
    /// named), so that their cost is paid here, once, rather than at the first read (e.g. before timing a loop).
    /// </summary>
    public IDataView Cache(IDataView input, params string[] columnsToPrefetch)
    {
        ArgumentNullException.ThrowIfNull(input);
        var names = columnsToPrefetch is { Length: > 0 } ? columnsToPrefetch : [.. input.Schema.Select(c => c.Name)];
        var columns = input.Schema.Select(c => ColumnarDataView.DataOf(input, c.Index)).ToArray();
        foreach (var name in names) _ = columns[input.Schema[name].Index].Values;
        return new ColumnarDataView(input.Schema, ColumnarDataView.RowCountOf(input), columns);
    }
}
