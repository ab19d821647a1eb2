using System.Buffers;
using MosaicBert.Tokenizers;

namespace MosaicBert.Cli;

/// <summary>
/// <c>mosaicbert tokenize</c>: JSON lines of <c>{"a": "text", "b": "optional pair"}</c> in, one line of
/// <c>{"ids":[...],"type_ids":[...],"offsets":[[start,end],...]}</c> out per input line, in the same order.
/// </summary>
/// <remarks>
/// The input is streamed in chunks of lines; the lines of a chunk are tokenized in parallel (contiguous ranges, one
/// per worker) and written in order. The first bad line stops the run: the output then holds exactly the lines
/// before it (on stdout; an --output file is not written at all).
/// </remarks>
internal static class TokenizeCommand
{
    /// <summary>Default of --max-length.</summary>
    public const int DefaultMaxLength = 128;
    /// <summary>Smallest --max-length: room for [CLS] and two [SEP].</summary>
    public const int MinMaxLength = 3;

    /// <summary>Runs the verb on files ("-" for stdin as input; null output for stdout).</summary>
    /// <returns>The exit code; errors are written to <paramref name="stderr"/>.</returns>
    public static int Run(string vocabPath, string inputPath, string? outputPath, int maxLength, bool lowercase,
        Stream stdin, Stream stdout, TextWriter stderr, int? threads = null, CancellationToken cancellationToken = default)
    {
        try
        {
            if (maxLength < MinMaxLength)
                throw new CliException($"--max-length must be at least {MinMaxLength} (room for [CLS] and two [SEP]), not {maxLength}");
            bool fromStdin = inputPath == "-";
            if (!fromStdin) CliFiles.RequireFile(inputPath, "input file");
            var tokenizer = CliFiles.LoadTokenizer(vocabPath, lowercase);
            using var input = fromStdin ? null : CliFiles.OpenRead(inputPath);
            string inputName = fromStdin ? "<stdin>" : inputPath;
            if (outputPath is null)
                return Run(tokenizer, input ?? stdin, inputName, stdout, stderr, maxLength, threads, cancellationToken);
            using var output = AtomicFile.Create(outputPath);
            int rc = Run(tokenizer, input ?? stdin, inputName, output.Stream, stderr, maxLength, threads, cancellationToken);
            if (rc == ExitCodes.Success) output.Commit();
            return rc;
        }
        catch (CliException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return ExitCodes.InputError;
        }
    }

    /// <summary>Tokenizes <paramref name="input"/> into <paramref name="output"/>.</summary>
    /// <param name="tokenizer">The tokenizer.</param>
    /// <param name="input">JSON lines, UTF-8.</param>
    /// <param name="inputName">Name of the input in messages (<c>NAME:LINE: ...</c>).</param>
    /// <param name="output">Where the output lines go (UTF-8, '\n' after each).</param>
    /// <param name="stderr">Where the error line goes.</param>
    /// <param name="maxLength">Maximum tokens per line, [CLS]/[SEP] included; longer ones are truncated longest-first.</param>
    /// <param name="threads">Worker threads; null for all cores.</param>
    /// <param name="cancellationToken">Stops between chunks with <see cref="ExitCodes.Cancelled"/>.</param>
    /// <returns>The exit code.</returns>
    public static int Run(BertTokenizer tokenizer, Stream input, string inputName, Stream output, TextWriter stderr,
        int maxLength = DefaultMaxLength, int? threads = null, CancellationToken cancellationToken = default)
    {
        if (maxLength < MinMaxLength)
        {
            stderr.WriteLine($"error: --max-length must be at least {MinMaxLength} (room for [CLS] and two [SEP]), not {maxLength}");
            return ExitCodes.InputError;
        }
        int workers = Math.Max(1, threads ?? Environment.ProcessorCount);
        var reader = new LineChunkReader(input, inputName);
        var lines = new List<(int Start, int Length)>();
        var parts = new Part[workers];
        for (int i = 0; i < workers; i++) parts[i] = new Part();
        try
        {
            while (reader.ReadChunk(lines, out long firstLine))
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    stderr.WriteLine("error: cancelled");
                    return ExitCodes.Cancelled;
                }
                var buffer = reader.Buffer;
                long bytes = lines[^1].Start + lines[^1].Length - lines[0].Start;
                // Small chunks are not worth the hand-off to other threads.
                int used = (int)Math.Clamp(Math.Min(lines.Count, bytes / (16 << 10)), 1, workers);
                if (used == 1)
                {
                    parts[0].Process(tokenizer, buffer, lines, 0, lines.Count, maxLength);
                }
                else
                {
                    Parallel.For(0, used, new ParallelOptions { MaxDegreeOfParallelism = used }, p =>
                        parts[p].Process(tokenizer, buffer, lines, (int)((long)lines.Count * p / used),
                            (int)((long)lines.Count * (p + 1) / used), maxLength));
                }
                for (int p = 0; p < used; p++)
                {
                    var part = parts[p];
                    WriteOutput(output, part.Output.WrittenSpan);
                    if (part.ErrorIndex >= 0)
                    {
                        FlushOutput(output);
                        stderr.WriteLine($"error: {inputName}:{firstLine + part.ErrorIndex}: {part.Error}");
                        return ExitCodes.InputError;
                    }
                }
            }
            FlushOutput(output);
            return ExitCodes.Success;
        }
        catch (CliException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return ExitCodes.InputError;
        }
        catch (OutputException e)
        {
            stderr.WriteLine($"error: cannot write the output: {e.InnerException!.Message}");
            return ExitCodes.InputError;
        }
        catch (IOException e)
        {
            stderr.WriteLine($"error: {inputName}: cannot read: {e.Message}");
            return ExitCodes.InputError;
        }
    }

    private static void WriteOutput(Stream output, ReadOnlySpan<byte> bytes)
    {
        try
        {
            if (!bytes.IsEmpty) output.Write(bytes);
        }
        catch (IOException e)
        {
            throw new OutputException(e);
        }
    }

    private static void FlushOutput(Stream output)
    {
        try
        {
            output.Flush();
        }
        catch (IOException e)
        {
            throw new OutputException(e);
        }
    }

    private sealed class OutputException(IOException inner) : Exception(inner.Message, inner);

    /// <summary>One worker's contiguous range of a chunk: its output bytes and its first error.</summary>
    private sealed class Part
    {
        public readonly ArrayBufferWriter<byte> Output = new(1 << 16);
        public int ErrorIndex;
        public string? Error;

        public void Process(BertTokenizer tokenizer, byte[] buffer, List<(int Start, int Length)> lines, int from, int to, int maxLength)
        {
            Output.ResetWrittenCount();
            ErrorIndex = -1;
            Error = null;
            for (int i = from; i < to; i++)
            {
                var (start, length) = lines[i];
                var error = JsonlPairParser.TryParse(buffer.AsSpan(start, length), out var a, out var b);
                if (error is null)
                {
                    try
                    {
                        WriteEncoding(Output, tokenizer.Encode(a, b, maxLength, TruncationStrategy.LongestFirst));
                        continue;
                    }
                    catch (ArgumentException e)
                    {
                        // Not expected after the checks above; reported as a line error all the same.
                        error = e.ParamName is null ? e.Message : e.Message.Replace($" (Parameter '{e.ParamName}')", "", StringComparison.Ordinal);
                    }
                }
                ErrorIndex = i;
                Error = error;
                return;
            }
        }
    }

    /// <summary>Writes <c>{"ids":[...],"type_ids":[...],"offsets":[[s,e],...]}</c> and '\n'.</summary>
    internal static void WriteEncoding(IBufferWriter<byte> w, BertEncoding e)
    {
        Write(w, "{\"ids\":["u8);
        for (int i = 0; i < e.InputIds.Count; i++)
        {
            if (i > 0) Write(w, ","u8);
            WriteInt(w, e.InputIds[i]);
        }
        Write(w, "],\"type_ids\":["u8);
        for (int i = 0; i < e.TokenTypeIds.Count; i++)
        {
            if (i > 0) Write(w, ","u8);
            WriteInt(w, e.TokenTypeIds[i]);
        }
        Write(w, "],\"offsets\":["u8);
        for (int i = 0; i < e.Offsets.Count; i++)
        {
            Write(w, i > 0 ? ",["u8 : "["u8);
            WriteInt(w, e.Offsets[i].Start);
            Write(w, ","u8);
            WriteInt(w, e.Offsets[i].End);
            Write(w, "]"u8);
        }
        Write(w, "]}\n"u8);
    }

    private static void Write(IBufferWriter<byte> w, ReadOnlySpan<byte> bytes) => w.Write(bytes);

    private static void WriteInt(IBufferWriter<byte> w, int value)
    {
        var span = w.GetSpan(11);
        value.TryFormat(span, out int written, default, System.Globalization.CultureInfo.InvariantCulture);
        w.Advance(written);
    }
}
