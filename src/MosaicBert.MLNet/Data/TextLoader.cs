namespace MosaicBert.ML.Data;

/// <summary>
/// Loads delimited text files (TSV, CSV) into views whose columns come from a row class's <see cref="LoadColumnAttribute"/>s
/// (as Microsoft.ML.Data.TextLoader, made with <c>MLContext.Data.CreateTextLoader&lt;TInput&gt;</c>).
/// </summary>
/// <remarks>
/// <para>
/// Unlike ML.NET, which pads short rows with defaults and drops extra fields silently, every row must have as many
/// fields as the header (or, without a header, as the first row); a row with fewer, or with more unless
/// <see cref="Options.IgnoreExtraColumns"/> is set, is an error naming the file, line and both counts. A field that
/// does not parse as its column's type is an error naming the file, line and column. Empty float fields read as
/// NaN (missing); empty integer or boolean fields are errors. Lines starting with <c>//</c> are data, not comments.
/// </para>
/// <para>Files are read when <see cref="Load"/> is called (ML.NET reads lazily), so errors surface there.</para>
/// </remarks>
public sealed class TextLoader
{
    private readonly MLContext? _context;
    private readonly RowBinding _binding;
    private readonly Options _options;
    private readonly DataViewSchema _outputSchema;

    internal TextLoader(MLContext? context, Type rowType, Options options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _context = context;
        _options = options;
        _binding = RowBinding.For(rowType);
        if (_binding.Members.Count == 0) throw new InvalidOperationException($"{rowType.Name} has no public read-write fields or properties to load.");
        foreach (var m in _binding.Members)
        {
            if (m.LoadColumns is null)
                throw new InvalidOperationException($"{m.Describe} has no [LoadColumn] attribute; add one, or mark it [NoColumn] to leave it out.");
            if (m.ColumnType.GetItemType() is KeyDataViewType)
                throw new InvalidOperationException($"{m.Describe} is a key; load the values as text or numbers and use MapValueToKey.");
        }
        var schema = new DataViewSchema.Builder();
        foreach (var m in _binding.Members) schema.AddColumn(m.ColumnName, m.ColumnType);
        _outputSchema = schema.ToSchema();
    }

    /// <summary>Settings of a <see cref="TextLoader"/> (names and defaults as in ML.NET's TextLoader.Options).</summary>
    public sealed class Options
    {
        /// <summary>The field separators. Default tab.</summary>
        public char[] Separators { get; set; } = ['\t'];

        /// <summary>Whether the first (non-empty) line is a header to skip. Default false.</summary>
        public bool HasHeader { get; set; }

        /// <summary>Whether fields may be quoted with <c>"</c> (to hold separators; <c>""</c> is a quote). Default false,
        /// which GLUE needs: its sentences contain unbalanced quotes.</summary>
        public bool AllowQuoting { get; set; }

        /// <summary>Remove trailing whitespace from lines (with a tab separator this also drops empty trailing
        /// fields). Default false.</summary>
        public bool TrimWhitespace { get; set; }

        /// <summary>Accept rows with more fields than the header (or first row) and ignore the extra trailing ones.
        /// Default false: an extra field usually means a separator inside a value, which shifts later columns.
        /// (Not in ML.NET, which always ignores them.)</summary>
        public bool IgnoreExtraColumns { get; set; }
    }

    /// <summary>The schema of the views this loader makes.</summary>
    public DataViewSchema GetOutputSchema() => _outputSchema;

    /// <summary>Reads the file at <paramref name="path"/>.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="DataFormatException">A row is malformed (the message names the file, line and column).</exception>
    public IDataView Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Data file '{path}' not found.", path);
        var members = _binding.Members;
        var columns = members.Select(m => FieldColumn.Create(m)).ToArray();
        var required = members.Max(m => m.LoadColumns!.Max()) + 1;
        var widest = members.First(m => m.LoadColumns!.Max() == required - 1);

        using var reader = new DelimitedTextReader(path, _options.Separators, _options.AllowQuoting, _options.TrimWhitespace);
        var fields = new List<string>();
        int? expected = null;
        var expectedLine = 0;
        var rows = 0;
        var hasRecord = reader.ReadRecord(fields);
        if (_options.HasHeader && hasRecord)
        {
            SetExpected();
            hasRecord = reader.ReadRecord(fields);
        }
        for (; hasRecord; hasRecord = reader.ReadRecord(fields))
        {
            if (expected is null) SetExpected();
            if (fields.Count < expected || (fields.Count > expected && !_options.IgnoreExtraColumns))
            {
                var hint = fields.Count > expected ? "; a value may contain a separator (set IgnoreExtraColumns to ignore extra trailing fields)" : "";
                throw reader.Error($"expected {expected} columns (as on line {expectedLine}), found {fields.Count}{hint}");
            }
            foreach (var c in columns) c.Parse(fields, reader);
            rows++;
        }

        var builder = new ArrayDataViewBuilder();
        for (var i = 0; i < members.Count; i++) builder.AddArray(members[i].ColumnName, members[i].ColumnType, columns[i].ToArray());
        _context?.WriteLog(ChannelMessageKind.Info, nameof(TextLoader), $"Loaded {rows} rows from {path}.");
        return builder.GetDataView();

        void SetExpected()
        {
            expected = fields.Count;
            expectedLine = reader.LineNumber;
            if (expected < required)
                throw reader.Error($"{widest.Describe} loads column {required - 1}, but this line has {expected} columns");
        }
    }

    /// <summary>Parses one member's fields of every row into a growing array.</summary>
    private abstract class FieldColumn
    {
        public static FieldColumn Create(RowBinding.Member m) =>
            (FieldColumn)Activator.CreateInstance(typeof(FieldColumn<>).MakeGenericType(m.ColumnType.GetItemType().RawType), m)!;

        public abstract void Parse(List<string> fields, DelimitedTextReader reader);

        public abstract Array ToArray();
    }

    private sealed class FieldColumn<T>(RowBinding.Member member) : FieldColumn
    {
        private readonly int[] _sources = [.. member.LoadColumns!];
        private readonly bool _isVector = member.ColumnType is VectorDataViewType;
        private readonly List<T> _scalars = [];
        private readonly List<T[]> _vectors = [];

        public override void Parse(List<string> fields, DelimitedTextReader reader)
        {
            if (!_isVector)
            {
                _scalars.Add(ParseOne(fields, _sources[0], reader));
                return;
            }
            var vector = new T[_sources.Length];
            for (var i = 0; i < vector.Length; i++) vector[i] = ParseOne(fields, _sources[i], reader);
            _vectors.Add(vector);
        }

        private T ParseOne(List<string> fields, int index, DelimitedTextReader reader)
        {
            var text = fields[index];
            if (ScalarValue<T>.TryParse(text, out var value)) return value;
            var shown = text.Length > 40 ? text[..40] + "..." : text;
            throw reader.Error($"column {index} ('{member.ColumnName}'): cannot parse \"{shown}\" as {member.ColumnType.GetItemType()}", index);
        }

        public override Array ToArray() => _isVector ? _vectors.ToArray() : _scalars.ToArray();
    }
}
