using System.Text;

namespace MosaicBert.Cli.Tests;

/// <summary>Runs the CLI in-process and gives each test its own temporary directory (deleted afterwards).</summary>
public abstract class CliTestBase : IDisposable
{
    private static readonly UTF8Encoding s_utf8 = new(false);

    protected CliTestBase()
    {
        TempDir = Directory.CreateTempSubdirectory("mosaicbert-cli-tests-").FullName;
    }

    /// <summary>A fresh directory for this test.</summary>
    protected string TempDir { get; }

    public void Dispose()
    {
        try
        {
            Directory.Delete(TempDir, recursive: true);
        }
        catch (IOException)
        {
        }
        GC.SuppressFinalize(this);
    }

    /// <summary>Writes a file (UTF-8, no BOM) in <see cref="TempDir"/> and returns its full path.</summary>
    protected string WriteFile(string name, string content) => WriteBytes(name, s_utf8.GetBytes(content));

    protected string WriteBytes(string name, byte[] content)
    {
        var path = Path.Combine(TempDir, name);
        File.WriteAllBytes(path, content);
        return path;
    }

    /// <summary>Runs <c>mosaicbert ARGS</c> in-process.</summary>
    internal static CliResult Run(string[] args, string? stdin = null) =>
        RunBytes(args, stdin is null ? null : s_utf8.GetBytes(stdin));

    internal static CliResult RunBytes(string[] args, byte[]? stdin)
    {
        using var input = stdin is null ? new ThrowingStream() : (Stream)new MemoryStream(stdin);
        using var output = new MemoryStream();
        var error = new StringWriter { NewLine = "\n" };
        int code = CliApp.Run(args, input, output, error, TestContext.Current.CancellationToken);
        return new CliResult(code, output.ToArray(), error.ToString());
    }

    /// <summary>bert-base-uncased's vocab.txt from ../shared/datasets; skips the test when it is absent.</summary>
    protected static string BertVocab => SharedData.BertVocab;

    /// <summary>Stands for stdin when a test gives none: reading it is a bug (the CLI must read stdin only for "-").</summary>
    private sealed class ThrowingStream : MemoryStream
    {
        public override int Read(byte[] buffer, int offset, int count) => throw new InvalidOperationException("stdin was read");
        public override int Read(Span<byte> buffer) => throw new InvalidOperationException("stdin was read");
    }
}

internal sealed record CliResult(int ExitCode, byte[] StdoutBytes, string Stderr)
{
    public string Stdout => Encoding.UTF8.GetString(StdoutBytes);

    public string[] StdoutLines => Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    public override string ToString() => $"exit {ExitCode}\nstdout: {Stdout}\nstderr: {Stderr}";
}
