using MosaicBert.Tokenizers;

namespace MosaicBert.Cli;

/// <summary>File checks and loads that turn the usual failures into one-line <see cref="CliException"/>s.</summary>
internal static class CliFiles
{
    /// <summary>Throws unless <paramref name="path"/> is an existing file.</summary>
    /// <param name="path">The path as the user gave it (used in the message).</param>
    /// <param name="role">What the file is, e.g. "input file".</param>
    public static void RequireFile(string path, string role)
    {
        if (Directory.Exists(path))
            throw new CliException($"{path}: is a directory; the {role} must be a file");
        if (!File.Exists(path))
            throw new CliException($"{path}: {role} not found");
    }

    /// <summary>Opens a file for sequential reading.</summary>
    public static FileStream OpenRead(string path)
    {
        try
        {
            return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"{path}: cannot open: {e.Message}");
        }
    }

    /// <summary>Loads a BERT tokenizer from vocab.txt.</summary>
    /// <exception cref="CliException">The file is missing, unreadable or malformed (the message names file and line).</exception>
    public static BertTokenizer LoadTokenizer(string vocabPath, bool lowercase)
    {
        RequireFile(vocabPath, "vocabulary file");
        try
        {
            return BertTokenizer.Create(vocabPath, new BertOptions { LowerCaseBeforeTokenization = lowercase });
        }
        catch (VocabularyFormatException e)
        {
            throw new CliException(e.Message);
        }
        catch (FileNotFoundException)
        {
            throw new CliException($"{vocabPath}: vocabulary file not found");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"{vocabPath}: cannot read the vocabulary: {e.Message}");
        }
    }
}
