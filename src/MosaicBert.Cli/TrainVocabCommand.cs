using System.Diagnostics;
using System.Globalization;
using MosaicBert.Data;
using MosaicBert.Tokenizers;
using MosaicBert.Tokenizers.Training;

namespace MosaicBert.Cli;

/// <summary>
/// <c>mosaicbert vocab train</c>: reads a corpus with <see cref="TextCorpus"/>, trains a WordPiece vocabulary with
/// <see cref="WordPieceTrainer"/> and writes vocab.txt atomically.
/// </summary>
internal static class TrainVocabCommand
{
    /// <summary>Runs the verb.</summary>
    /// <param name="corpusPaths">Corpus files and directories.</param>
    /// <param name="size">Wanted vocabulary size, special tokens included (rounded up to a multiple of 64).</param>
    /// <param name="outputPath">vocab.txt to write.</param>
    /// <param name="lowercase">Lower-case and strip accents (uncased).</param>
    /// <param name="minFrequency">Minimum count of a pair for it to be merged.</param>
    /// <param name="threads">Word-counting threads; null for all cores.</param>
    /// <param name="stdout">Gets the one-line summary.</param>
    /// <param name="stderr">Gets the error line.</param>
    /// <param name="cancellationToken">Stops training; nothing is written then.</param>
    /// <returns>The exit code.</returns>
    public static int Run(string[] corpusPaths, int size, string outputPath, bool lowercase, int minFrequency, int? threads,
        TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken = default)
    {
        try
        {
            CheckOutputPath(outputPath);
            var corpus = OpenCorpus(corpusPaths);
            var options = new WordPieceTrainerOptions
            {
                VocabularySize = size,
                MinPairFrequency = minFrequency,
                MaxDegreeOfParallelism = threads ?? -1,
                PreTokenizer = new BertPreTokenizer(removeNonSpacingMarks: lowercase, lowerCase: lowercase),
            };
            WordPieceTrainer trainer;
            try
            {
                trainer = new WordPieceTrainer(options);
            }
            catch (ArgumentException e)
            {
                throw new CliException(WithoutParameter(e));
            }

            var clock = Stopwatch.StartNew();
            WordPieceVocabulary vocabulary;
            try
            {
                vocabulary = trainer.Train(corpus.ReadParagraphs(cancellationToken), progress: null, cancellationToken);
            }
            catch (CorpusFormatException e)
            {
                // file:line: detail (a malformed line, a corrupt .gz).
                throw new CliException(e.Message);
            }
            catch (Exception e) when (e is InvalidDataException or FormatException)
            {
                // A corpus without any text; a decompression failure not tied to a line.
                throw new CliException(e.Message);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new CliException($"reading the corpus: {e.Message}");
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                // E.g. a JSON "text" holding a lone surrogate escape ("\ud800"), which is not valid Unicode.
                throw new CliException($"reading the corpus: {WithoutParameter(e)}");
            }
            double seconds = clock.Elapsed.TotalSeconds;

            try
            {
                vocabulary.Save(outputPath);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new CliException($"{outputPath}: cannot write the vocabulary: {e.Message}");
            }

            double megabytes = corpus.BytesRead / 1e6;
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"wrote {outputPath}: {vocabulary.Count} tokens, trained on {megabytes:F1} MB in {seconds:F1} s ({megabytes / Math.Max(seconds, 1e-3):F1} MB/s)"));
            return ExitCodes.Success;
        }
        catch (CliException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return ExitCodes.InputError;
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("error: cancelled; no vocabulary was written");
            return ExitCodes.Cancelled;
        }
    }

    /// <summary>Fails before training, not after, when the output cannot be written where asked.</summary>
    private static void CheckOutputPath(string path)
    {
        var full = Path.GetFullPath(path);
        if (Directory.Exists(full))
            throw new CliException($"{path}: is a directory; --output must be a file path");
        var dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir))
            throw new CliException($"{path}: the directory '{dir}' does not exist");
    }

    private static TextCorpus OpenCorpus(string[] paths)
    {
        foreach (var p in paths)
            if (!File.Exists(p) && !Directory.Exists(p))
                throw new CliException($"{p}: corpus file or directory not found");
        try
        {
            return new TextCorpus(paths);
        }
        catch (FileNotFoundException e)
        {
            throw new CliException($"{e.FileName}: corpus file or directory not found");
        }
        catch (ArgumentException e)
        {
            throw new CliException(WithoutParameter(e));
        }
        catch (Exception e) when (e is InvalidDataException or CorpusFormatException)
        {
            throw new CliException(e.Message);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"listing the corpus: {e.Message}");
        }
    }

    private static string WithoutParameter(Exception e) =>
        e is ArgumentException { ParamName: { } name } ? e.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal) : e.Message;
}
