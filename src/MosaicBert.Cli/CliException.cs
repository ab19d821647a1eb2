namespace MosaicBert.Cli;

/// <summary>
/// A problem with the user's input (a file, a line, an option value). <see cref="Exception.Message"/> is the whole
/// diagnostic, already naming the file and line where there is one; the CLI prints it as <c>error: MESSAGE</c> and
/// exits with <see cref="ExitCodes.InputError"/>.
/// </summary>
internal sealed class CliException(string message) : Exception(message);

/// <summary>The process exit codes of <c>mosaicbert</c>.</summary>
internal static class ExitCodes
{
    /// <summary>Success.</summary>
    public const int Success = 0;
    /// <summary>Bad input: a missing or malformed file, a bad line, an unusable option value.</summary>
    public const int InputError = 1;
    /// <summary>Bad command line: unknown verb or option, missing required option, a value that does not parse.</summary>
    public const int UsageError = 2;
    /// <summary>Interrupted (SIGINT/SIGTERM); no output file was written.</summary>
    public const int Cancelled = 130;
}
