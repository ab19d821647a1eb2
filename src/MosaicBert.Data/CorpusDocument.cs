namespace MosaicBert.Data;

/// <summary>One document of a corpus: an article, a web page, or a blank-line-separated block of a text file.</summary>
public sealed class CorpusDocument
{
    /// <summary>Creates a document.</summary>
    public CorpusDocument(string source, int line, string? id, string? title, IReadOnlyList<string> paragraphs)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(paragraphs);
        Source = source;
        Line = line;
        Id = id;
        Title = title;
        Paragraphs = paragraphs;
    }

    /// <summary>Path of the file the document comes from.</summary>
    public string Source { get; }

    /// <summary>1-based line of the file (after decompression) where the document starts.</summary>
    public int Line { get; }

    /// <summary>The document's id: WikiExtractor's <c>id</c>; a JSON line's <c>id</c>, else its <c>url</c>; null for plain text.</summary>
    public string? Id { get; }

    /// <summary>The title (WikiExtractor's <c>title</c>, a JSON line's <c>title</c>), or null.</summary>
    public string? Title { get; }

    /// <summary>The paragraphs, trimmed, never empty (there is at least one). The title is not one of them.</summary>
    public IReadOnlyList<string> Paragraphs { get; }

    /// <summary>The paragraphs joined with '\n'.</summary>
    public string Text => string.Join('\n', Paragraphs);

    /// <inheritdoc/>
    public override string ToString() => $"{Source}:{Line}{(Title is null ? "" : $" \"{Title}\"")} ({Paragraphs.Count} paragraphs)";
}

/// <summary>
/// A corpus file is malformed, or the corpus holds no text. <see cref="Exception.Message"/> names the file and,
/// where the problem is on one line, the line (of the decompressed text). A gzip error from
/// <see cref="System.IO.Compression.GZipStream"/> is the <see cref="Exception.InnerException"/>.
/// </summary>
public sealed class CorpusFormatException : FormatException
{
    /// <summary>Creates the exception.</summary>
    public CorpusFormatException(string path, int? line, string detail, Exception? innerException = null)
        : base(line is int l ? $"{path}:{l}: {detail}" : $"{path}: {detail}", innerException)
    {
        Path = path;
        Line = line;
        Detail = detail;
    }

    /// <summary>The file (for an empty corpus: the corpus paths, comma-separated).</summary>
    public string Path { get; }

    /// <summary>1-based line, when the problem is on one line.</summary>
    public int? Line { get; }

    /// <summary>What is wrong, without the location.</summary>
    public string Detail { get; }
}

/// <summary>How a corpus file is laid out.</summary>
public enum CorpusFileFormat
{
    /// <summary>One paragraph per non-empty line; blank lines separate documents (BERT's pretraining text format).</summary>
    PlainText,

    /// <summary>One JSON object per line with a string <c>text</c> field (C4); '\n' in the text separates paragraphs.</summary>
    JsonLines,

    /// <summary>WikiExtractor output: <c>&lt;doc id=".." url=".." title=".."&gt;</c>, the title line, paragraphs, <c>&lt;/doc&gt;</c>.</summary>
    WikiExtractor,
}
