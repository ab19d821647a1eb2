using System.IO.Compression;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace MosaicBert.Data;

/// <summary>
/// The documents of a set of corpus files and directories, read lazily, file by file.
/// </summary>
/// <remarks>
/// <para>
/// Formats (see <see cref="CorpusFileFormat"/>): a name ending in <c>.jsonl</c> or <c>.json</c> (each optionally
/// followed by <c>.gz</c>) is JSON Lines; any other file is WikiExtractor output when its first non-empty line starts
/// with <c>&lt;doc </c>, plain text otherwise. A name ending in <c>.gz</c> is gunzipped first. Text is UTF-8 (a BOM is
/// dropped; invalid bytes become U+FFFD).
/// </para>
/// <para>
/// A directory stands for every file below it, recursively, in ordinal order of path; hidden files and directories
/// (names starting with '.') are skipped. Documents without any non-blank paragraph are skipped.
/// </para>
/// <para>
/// .NET's GZipStream reports corrupt gzip data but not a file cut short at a block boundary, so at the end of a
/// .gz file the decompressed byte count (mod 2³²) is checked against the size the gzip trailer records (ISIZE): a
/// truncated file fails with a clear error instead of silently losing its tail. (A file of several concatenated gzip
/// members, which corpora do not use, fails this check too.)
/// </para>
/// </remarks>
public sealed partial class TextCorpus
{
    private readonly string[] _paths;
    private readonly string[] _files;
    private long _bytesRead;

    /// <summary>Describes a corpus made of the given files and directories (the files are listed now, read later).</summary>
    /// <exception cref="ArgumentException">No path, or an empty path, is given.</exception>
    /// <exception cref="FileNotFoundException">A path is neither a file nor a directory.</exception>
    /// <exception cref="CorpusFormatException">The paths hold no file at all.</exception>
    public TextCorpus(params IEnumerable<string> paths)
    {
        ArgumentNullException.ThrowIfNull(paths);
        _paths = [.. paths];
        if (_paths.Length == 0) throw new ArgumentException("No corpus path was given.", nameof(paths));
        var files = new List<string>();
        foreach (var p in _paths)
        {
            if (string.IsNullOrWhiteSpace(p)) throw new ArgumentException("A corpus path is empty.", nameof(paths));
            if (File.Exists(p)) files.Add(p);
            else if (Directory.Exists(p)) files.AddRange(ListDirectory(p));
            else throw new FileNotFoundException($"Corpus path '{p}' is neither a file nor a directory.", p);
        }
        if (files.Count == 0)
            throw new CorpusFormatException(string.Join(", ", _paths), null, "the corpus is empty: it holds no file");
        _files = [.. files];
        TotalBytes = _files.Sum(f => new FileInfo(f).Length);
    }

    /// <summary>The files, in reading order.</summary>
    public IReadOnlyList<string> Files => _files;

    /// <summary>Size of all files on disk (compressed size for <c>.gz</c>): the total that <see cref="BytesRead"/> grows to per pass.</summary>
    public long TotalBytes { get; }

    /// <summary>
    /// Bytes read from disk so far (compressed bytes for <c>.gz</c>), over all enumerations; safe to read from any
    /// thread while another enumerates, e.g. for throughput or <c>BytesRead / TotalBytes</c> progress.
    /// </summary>
    public long BytesRead => Interlocked.Read(ref _bytesRead);

    /// <summary>Reads the documents of every file, in order.</summary>
    /// <exception cref="CorpusFormatException">A file is malformed (the message names the file and line), or the whole
    /// corpus holds no text (thrown at the end of the enumeration).</exception>
    public IEnumerable<CorpusDocument> ReadDocuments(CancellationToken cancellationToken = default)
    {
        long documents = 0;
        foreach (var file in _files)
        {
            foreach (var document in ReadFile(file, cancellationToken))
            {
                documents++;
                yield return document;
            }
        }
        if (documents == 0)
            throw new CorpusFormatException(string.Join(", ", _paths), null, $"the corpus is empty: its {_files.Length} file(s) hold no text");
    }

    /// <summary>Reads the paragraphs of every document, in order: what a vocabulary trainer needs.</summary>
    public IEnumerable<string> ReadParagraphs(CancellationToken cancellationToken = default) =>
        ReadDocuments(cancellationToken).SelectMany(d => d.Paragraphs);

    /// <summary>The format a file is read as (see the class remarks).</summary>
    /// <exception cref="CorpusFormatException">A <c>.gz</c> file is not valid gzip.</exception>
    public static CorpusFileFormat DetectFormat(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (FormatFromName(path) is { } byName) return byName;
        using var lines = LineReader.Open(path, null);
        return Sniff(lines);
    }

    private IEnumerable<CorpusDocument> ReadFile(string path, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        using var lines = LineReader.Open(path, n => Interlocked.Add(ref _bytesRead, n));
        var format = FormatFromName(path) ?? Sniff(lines);
        var documents = format switch
        {
            CorpusFileFormat.JsonLines => ReadJsonLines(lines, path),
            CorpusFileFormat.WikiExtractor => ReadWikiExtractor(lines, path),
            _ => ReadPlainText(lines, path),
        };
        foreach (var d in documents)
        {
            ct.ThrowIfCancellationRequested();
            yield return d;
        }
    }

    private static CorpusFileFormat? FormatFromName(string path)
    {
        var name = Path.GetFileName(path);
        if (name.EndsWith(".gz", StringComparison.OrdinalIgnoreCase)) name = name[..^3];
        return name.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".json", StringComparison.OrdinalIgnoreCase)
            ? CorpusFileFormat.JsonLines
            : null;
    }

    /// <summary>Decides by the first non-blank line, then puts that line back.</summary>
    private static CorpusFileFormat Sniff(LineReader lines)
    {
        while (lines.ReadLine() is { } line)
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            lines.PushBack(line);
            return line.TrimStart().StartsWith("<doc ", StringComparison.Ordinal) ? CorpusFileFormat.WikiExtractor : CorpusFileFormat.PlainText;
        }
        return CorpusFileFormat.PlainText;
    }

    private static IEnumerable<CorpusDocument> ReadPlainText(LineReader lines, string path)
    {
        List<string>? paragraphs = null;
        int start = 0;
        while (lines.ReadLine() is { } line)
        {
            var text = line.Trim();
            if (text.Length == 0)
            {
                if (paragraphs is not null) yield return new CorpusDocument(path, start, null, null, paragraphs);
                paragraphs = null;
                continue;
            }
            if (paragraphs is null)
            {
                paragraphs = [];
                start = lines.Line;
            }
            paragraphs.Add(text);
        }
        if (paragraphs is not null) yield return new CorpusDocument(path, start, null, null, paragraphs);
    }

    private static IEnumerable<CorpusDocument> ReadJsonLines(LineReader lines, string path)
    {
        while (lines.ReadLine() is { } line)
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            var document = ParseJsonLine(line, path, lines.Line);
            if (document is not null) yield return document;
        }
    }

    private static CorpusDocument? ParseJsonLine(string line, string path, int lineNumber)
    {
        JsonDocument json;
        try
        {
            json = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            throw new CorpusFormatException(path, lineNumber, $"invalid JSON: {e.Message}", e);
        }
        using (json)
        {
            var root = json.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new CorpusFormatException(path, lineNumber, $"a JSON line must be an object with a string \"text\" field, not {Kind(root)}");
            if (!root.TryGetProperty("text", out var text))
                throw new CorpusFormatException(path, lineNumber, "the JSON object has no \"text\" field");
            if (text.ValueKind != JsonValueKind.String)
                throw new CorpusFormatException(path, lineNumber, $"the \"text\" field is {Kind(text)}, not a string");
            string value;
            try
            {
                value = text.GetString()!;
            }
            catch (InvalidOperationException e)
            {
                // System.Text.Json refuses escapes that decode to a lone surrogate ("\ud800").
                throw new CorpusFormatException(path, lineNumber, $"the \"text\" field is not valid Unicode: {e.Message}", e);
            }
            var paragraphs = SplitParagraphs(value);
            if (paragraphs.Count == 0) return null;
            var id = Scalar(root, "id") ?? Scalar(root, "url");
            return new CorpusDocument(path, lineNumber, id, Scalar(root, "title"), paragraphs);
        }

        static string Kind(JsonElement e) => e.ValueKind switch
        {
            JsonValueKind.Object => "an object",
            JsonValueKind.Array => "an array",
            JsonValueKind.Number => "a number",
            JsonValueKind.True or JsonValueKind.False => "a boolean",
            JsonValueKind.Null => "null",
            _ => "a string",
        };

        static string? Scalar(JsonElement o, string name) =>
            !o.TryGetProperty(name, out var v) ? null
            : v.ValueKind == JsonValueKind.String ? v.GetString()
            : v.ValueKind == JsonValueKind.Number ? v.GetRawText()
            : null;
    }

    private static List<string> SplitParagraphs(string text)
    {
        var paragraphs = new List<string>();
        foreach (var range in text.AsSpan().Split('\n'))
        {
            var p = text.AsSpan(range).Trim();
            if (p.Length > 0) paragraphs.Add(p.Length == text.Length ? text : p.ToString());
        }
        return paragraphs;
    }

    private static IEnumerable<CorpusDocument> ReadWikiExtractor(LineReader lines, string path)
    {
        List<string>? paragraphs = null; // non-null while a <doc> is open
        string? id = null, title = null;
        int start = 0;
        bool titleLinePending = false;
        while (lines.ReadLine() is { } line)
        {
            var text = line.Trim();
            if (text.StartsWith("<doc ", StringComparison.Ordinal) || text == "<doc>")
            {
                if (paragraphs is not null)
                    throw new CorpusFormatException(path, lines.Line, $"a new <doc> starts but the one opened at line {start} has no </doc>");
                if (!text.EndsWith('>'))
                    throw new CorpusFormatException(path, lines.Line, "malformed <doc ...> header: it does not end with '>'");
                (id, title) = ParseHeader(text);
                paragraphs = [];
                start = lines.Line;
                titleLinePending = true;
            }
            else if (text == "</doc>")
            {
                if (paragraphs is null)
                    throw new CorpusFormatException(path, lines.Line, "</doc> without an open <doc>");
                if (paragraphs.Count > 0) yield return new CorpusDocument(path, start, id, title, paragraphs);
                paragraphs = null;
            }
            else if (text.Length > 0)
            {
                if (paragraphs is null)
                    throw new CorpusFormatException(path, lines.Line, "text outside a <doc> ... </doc> block");
                // WikiExtractor repeats the title as the first line; it is metadata, not a paragraph.
                bool isTitleLine = titleLinePending && text == title;
                titleLinePending = false;
                if (!isTitleLine) paragraphs.Add(text);
            }
        }
        if (paragraphs is not null)
            throw new CorpusFormatException(path, start, "the <doc> opened here has no </doc> before the end of the file");
    }

    /// <summary>Reads id and title. WikiExtractor does not escape quotes in titles, so a title that is the last
    /// attribute runs up to the closing <c>"&gt;</c>.</summary>
    private static (string? Id, string? Title) ParseHeader(string header)
    {
        string? id = null, title = null;
        foreach (Match m in HeaderAttribute().Matches(header))
        {
            if (m.Groups[1].Value == "id") id = m.Groups[2].Value;
            else if (m.Groups[1].Value == "title") title = m.Groups[2].Value;
        }
        int t = header.IndexOf(" title=\"", StringComparison.Ordinal);
        if (t >= 0 && header.EndsWith("\">", StringComparison.Ordinal)) title = header[(t + 8)..^2];
        return (id, title);
    }

    [GeneratedRegex("""\s(\w+)="([^"]*)"(?=[\s>])""")]
    private static partial Regex HeaderAttribute();

    private static IEnumerable<string> ListDirectory(string directory)
    {
        var options = new EnumerationOptions
        {
            RecurseSubdirectories = true,
            AttributesToSkip = FileAttributes.Hidden | FileAttributes.System,
            IgnoreInaccessible = false,
        };
        var files = Directory.GetFiles(directory, "*", options);
        Array.Sort(files, StringComparer.Ordinal);
        return files;
    }

    /// <summary>Lines of a (possibly gzipped) UTF-8 file, numbered, with one line of push-back.</summary>
    private sealed class LineReader : IDisposable
    {
        private readonly string _path;
        private readonly StreamReader _reader;
        private readonly bool _gzip;
        private string? _pushedBack;

        private readonly uint? _trailerSize;
        private long _decompressedBytes;

        private LineReader(string path, StreamReader reader, bool gzip, uint? trailerSize)
        {
            _path = path;
            _reader = reader;
            _gzip = gzip;
            _trailerSize = trailerSize;
        }

        /// <summary>1-based number of the line last returned.</summary>
        public int Line { get; private set; }

        public static LineReader Open(string path, Action<int>? onBytesRead)
        {
            Stream stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
            try
            {
                if (onBytesRead is not null) stream = new CountingStream(stream, onBytesRead);
                bool gzip = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase);
                if (gzip)
                {
                    uint? trailer = GzipTrailerSize(path);
                    LineReader? self = null;
                    stream = new CountingStream(new GZipStream(stream, CompressionMode.Decompress), n => self!._decompressedBytes += n);
                    var r = new StreamReader(stream, new UTF8Encoding(false), detectEncodingFromByteOrderMarks: true, 1 << 16);
                    return self = new LineReader(path, r, gzip, trailer);
                }
                var reader = new StreamReader(stream, new UTF8Encoding(false), detectEncodingFromByteOrderMarks: true, 1 << 16);
                return new LineReader(path, reader, gzip, null);
            }
            catch
            {
                stream.Dispose();
                throw;
            }
        }

        public string? ReadLine()
        {
            if (_pushedBack is { } line)
            {
                _pushedBack = null;
                Line++;
                return line;
            }
            string? next;
            try
            {
                next = _reader.ReadLine();
            }
            catch (InvalidDataException e) when (_gzip)
            {
                throw Line == 0
                    ? new CorpusFormatException(_path, null, $"not a readable gzip file: {e.Message}", e)
                    : new CorpusFormatException(_path, Line + 1, $"the gzip data is corrupt here: {e.Message}", e);
            }
            if (next is not null) Line++;
            else if (_trailerSize is uint expected && (uint)_decompressedBytes != expected)
                throw new CorpusFormatException(_path, null,
                    $"the gzip file is truncated or corrupt: it decompressed to {_decompressedBytes} bytes but its trailer records {expected} (mod 2^32)");
            return next;
        }

        /// <summary>ISIZE, the last 4 bytes of a gzip file (uncompressed size mod 2³²); null when the file is too short
        /// to hold a header and trailer (GZipStream then reports it).</summary>
        private static uint? GzipTrailerSize(string path)
        {
            using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            if (f.Length < 18) return null;
            Span<byte> tail = stackalloc byte[4];
            f.Seek(-4, SeekOrigin.End);
            f.ReadExactly(tail);
            return System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(tail);
        }

        public void PushBack(string line)
        {
            _pushedBack = line;
            Line--;
        }

        public void Dispose() => _reader.Dispose();
    }

    /// <summary>Reports every read's byte count (the on-disk bytes, below any decompression).</summary>
    private sealed class CountingStream(Stream inner, Action<int> onBytesRead) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            int n = inner.Read(buffer);
            if (n > 0) onBytesRead(n);
            return n;
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            int n = await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
            if (n > 0) onBytesRead(n);
            return n;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
    }
}
