using System.Text;

namespace MosaicBert.ML.Data;

/// <summary>
/// Bad input in a data file: the message is <c>path:line: detail</c>, the detail naming the column when there is
/// one, so that the row can be found and fixed.
/// </summary>
public sealed class DataFormatException : FormatException
{
    /// <summary>Creates the exception.</summary>
    public DataFormatException(string path, int? line, int? column, string detail, Exception? innerException = null)
        : base(line is int l ? $"{path}:{l}: {detail}" : $"{path}: {detail}", innerException)
    {
        Path = path;
        Line = line;
        Column = column;
        Detail = detail;
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>The 1-based line, when the problem is on one line.</summary>
    public int? Line { get; }

    /// <summary>The 0-based column (field index, as in <c>[LoadColumn]</c>), when the problem is in one column.</summary>
    public int? Column { get; }

    /// <summary>What is wrong, without the location.</summary>
    public string Detail { get; }
}

/// <summary>
/// Splits a delimited UTF-8 text file into fields, line by line. A BOM is dropped; \n, \r\n and \r end lines; empty
/// lines are skipped. Without quoting, a quote is an ordinary character (GLUE's files hold unbalanced quotes).
/// With quoting, a field starting with <c>"</c> runs to the next lone <c>"</c>, <c>""</c> standing for one quote;
/// quoted fields do not span lines.
/// </summary>
internal sealed class DelimitedTextReader : IDisposable
{
    private readonly StreamReader _reader;
    private readonly char[] _separators;
    private readonly bool _allowQuoting;
    private readonly bool _trimWhitespace;
    private readonly StringBuilder _quoted = new();

    public DelimitedTextReader(string path, char[] separators, bool allowQuoting, bool trimWhitespace)
    {
        if (separators is not { Length: > 0 }) throw new ArgumentException("At least one separator is needed.", nameof(separators));
        if (allowQuoting && separators.Contains('"')) throw new ArgumentException("The quote character cannot be a separator when quoting is allowed.", nameof(separators));
        Path = path;
        _separators = separators;
        _allowQuoting = allowQuoting;
        _trimWhitespace = trimWhitespace;
        _reader = new StreamReader(path, Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
    }

    public string Path { get; }

    /// <summary>The 1-based number of the line last read.</summary>
    public int LineNumber { get; private set; }

    public void Dispose() => _reader.Dispose();

    public DataFormatException Error(string detail, int? column = null) => new(Path, LineNumber, column, detail);

    /// <summary>Reads the fields of the next non-empty line; false at the end of the file.</summary>
    public bool ReadRecord(List<string> fields)
    {
        string? line;
        do
        {
            line = _reader.ReadLine();
            if (line is null) return false;
            LineNumber++;
            if (_trimWhitespace) line = line.TrimEnd();
        }
        while (line.Length == 0);

        fields.Clear();
        var i = 0;
        while (true)
        {
            if (_allowQuoting && i < line.Length && line[i] == '"')
            {
                i = ReadQuoted(line, i + 1, fields.Count);
                fields.Add(_quoted.ToString());
                if (i == line.Length) return true;
                if (Array.IndexOf(_separators, line[i]) < 0)
                    throw Error($"column {fields.Count - 1}: text follows the closing quote", fields.Count - 1);
            }
            else
            {
                var end = line.IndexOfAny(_separators, i);
                fields.Add(end < 0 ? line[i..] : line[i..end]);
                if (end < 0) return true;
                i = end;
            }
            i++; // past the separator; a separator at the very end gives a last, empty field
        }
    }

    /// <summary>Reads a quoted field's content into <see cref="_quoted"/>; returns the index after the closing quote.</summary>
    private int ReadQuoted(string line, int i, int column)
    {
        _quoted.Clear();
        while (true)
        {
            var q = line.IndexOf('"', i);
            if (q < 0) throw Error($"column {column}: the quoted value is not closed on this line", column);
            _quoted.Append(line, i, q - i);
            if (q + 1 < line.Length && line[q + 1] == '"')
            {
                _quoted.Append('"');
                i = q + 2;
                continue;
            }
            return q + 1;
        }
    }
}
