using System.Text;

namespace MosaicBert.Tokenizers;

/// <summary>A vocabulary file (or stream) is malformed. <see cref="Exception.Message"/> names the source and line.</summary>
public sealed class VocabularyFormatException : FormatException
{
    /// <summary>Creates the exception.</summary>
    public VocabularyFormatException(string source, int? line, string detail)
        : base(line is int l ? $"{source}:{l}: {detail}" : $"{source}: {detail}")
    {
        Source = source;
        Line = line;
        Detail = detail;
    }

    /// <summary>The file path or stream name.</summary>
    public new string Source { get; }
    /// <summary>1-based line, when the problem is on one line.</summary>
    public int? Line { get; }
    /// <summary>What is wrong, without the location.</summary>
    public string Detail { get; }
}

/// <summary>
/// A WordPiece vocabulary: one token per line of <c>vocab.txt</c>, the 0-based line number is the id.
/// </summary>
/// <remarks>
/// Lines are split on '\n' and trailing whitespace is trimmed (so '\r\n' files work), as Hugging Face does. Unlike
/// Hugging Face, which silently keeps the last of two equal lines, a repeated token is an error: it means the file is
/// corrupt and ids would silently shift.
/// </remarks>
public sealed class WordPieceVocabulary
{
    private readonly string[] _tokens;
    private readonly Dictionary<string, int> _ids;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    // Continuation pieces keyed without their prefix ("##ing" is stored as "ing"), so a lookup needs no concatenation.
    private readonly Dictionary<string, int> _continuations;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _continuationLookup;

    private WordPieceVocabulary(string[] tokens, Dictionary<string, int> ids, string continuingSubwordPrefix)
    {
        _tokens = tokens;
        _ids = ids;
        _lookup = ids.GetAlternateLookup<ReadOnlySpan<char>>();
        _continuations = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (token, id) in ids)
        {
            MaxTokenLength = Math.Max(MaxTokenLength, token.Length);
            if (continuingSubwordPrefix.Length > 0 && token.Length > continuingSubwordPrefix.Length &&
                token.StartsWith(continuingSubwordPrefix, StringComparison.Ordinal))
            {
                var rest = token[continuingSubwordPrefix.Length..];
                _continuations[rest] = id;
                MaxContinuationLength = Math.Max(MaxContinuationLength, rest.Length);
            }
        }
        _continuationLookup = _continuations.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    /// <summary>Number of tokens.</summary>
    public int Count => _tokens.Length;
    /// <summary>Token strings by id.</summary>
    public IReadOnlyList<string> Tokens => _tokens;
    /// <summary>Ids by token string.</summary>
    public IReadOnlyDictionary<string, int> Ids => _ids;
    /// <summary>Longest token, in UTF-16 units.</summary>
    public int MaxTokenLength { get; }
    /// <summary>Longest continuation piece without its prefix, in UTF-16 units.</summary>
    public int MaxContinuationLength { get; }

    /// <summary>Id of a token, or -1.</summary>
    public int IdOf(ReadOnlySpan<char> token) => _lookup.TryGetValue(token, out int id) ? id : -1;

    /// <summary>Id of the continuation piece prefix+<paramref name="piece"/>, or -1.</summary>
    public int ContinuationIdOf(ReadOnlySpan<char> piece) => _continuationLookup.TryGetValue(piece, out int id) ? id : -1;

    /// <summary>Reads a vocabulary file.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="VocabularyFormatException">The file is malformed (message names file and line).</exception>
    public static WordPieceVocabulary Load(string path, string continuingSubwordPrefix = "##")
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Vocabulary file '{path}' does not exist.", path);
        using var stream = File.OpenRead(path);
        return Load(stream, path, continuingSubwordPrefix);
    }

    /// <summary>Reads a vocabulary from a stream; <paramref name="sourceName"/> is used in error messages.</summary>
    public static WordPieceVocabulary Load(Stream stream, string sourceName = "<stream>", string continuingSubwordPrefix = "##")
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var ms = new MemoryStream();
        stream.CopyTo(ms);
        var bytes = ms.GetBuffer().AsSpan(0, (int)ms.Length);
        if (bytes.StartsWith("\uFEFF"u8)) bytes = bytes[3..];
        var strict = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

        var tokens = new List<string>();
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        int line = 0;
        while (bytes.Length > 0)
        {
            line++;
            int nl = bytes.IndexOf((byte)'\n');
            var raw = nl < 0 ? bytes : bytes[..nl];
            bytes = nl < 0 ? [] : bytes[(nl + 1)..];
            string token;
            try
            {
                token = strict.GetString(raw).TrimEnd();
            }
            catch (DecoderFallbackException)
            {
                throw new VocabularyFormatException(sourceName, line, "not valid UTF-8");
            }
            if (token.Length == 0)
                throw new VocabularyFormatException(sourceName, line, "empty line; every line must hold one token");
            if (!ids.TryAdd(token, tokens.Count))
                throw new VocabularyFormatException(sourceName, line,
                    $"token '{token}' repeats line {ids[token] + 1}; a vocabulary holds each token once");
            tokens.Add(token);
        }
        if (tokens.Count == 0)
            throw new VocabularyFormatException(sourceName, null, "the vocabulary is empty");
        return new WordPieceVocabulary([.. tokens], ids, continuingSubwordPrefix);
    }

    /// <summary>Builds a vocabulary from tokens in id order.</summary>
    public static WordPieceVocabulary FromTokens(IEnumerable<string> tokens, string continuingSubwordPrefix = "##")
    {
        var list = tokens.ToArray();
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < list.Length; i++)
        {
            if (string.IsNullOrEmpty(list[i]))
                throw new ArgumentException($"token {i} is empty", nameof(tokens));
            if (!ids.TryAdd(list[i], i))
                throw new ArgumentException($"token '{list[i]}' appears at ids {ids[list[i]]} and {i}", nameof(tokens));
        }
        return new WordPieceVocabulary(list, ids, continuingSubwordPrefix);
    }

    /// <summary>Writes the vocabulary as vocab.txt, atomically (temporary file, then rename).</summary>
    public void Save(string path)
    {
        var full = Path.GetFullPath(path);
        var tmp = full + ".tmp-" + Environment.ProcessId;
        try
        {
            using (var w = new StreamWriter(tmp, false, new UTF8Encoding(false)))
            {
                foreach (var t in _tokens)
                {
                    w.Write(t);
                    w.Write('\n');
                }
            }
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }
}
