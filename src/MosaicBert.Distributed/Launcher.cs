using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using System.Runtime.InteropServices;

namespace MosaicBert.Distributed;

/// <summary>
/// One host, N GPUs: starts N copies of a program with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR
/// (127.0.0.1) and MASTER_PORT (a free port, or the caller's MASTER_PORT) set as torchrun sets them, forwards their
/// output line by line with a "[rank r] " prefix, and when one exits with a non-zero code gives the others
/// <see cref="LauncherOptions.StopGrace"/> to notice and exit on their own (they do, within seconds, naming the
/// failed rank), then kills what is left and returns that first non-zero code. Cancellation sends SIGTERM to every
/// child (each finishes its step and checkpoints) and waits for them.
/// </summary>
public static partial class Launcher
{
    /// <summary>The option that asks for the launcher.</summary>
    public const string GpusOption = "--gpus";

    /// <summary>
    /// Takes <c>--gpus N</c> (or <c>--gpus=N</c>) out of <paramref name="args"/>. False when it is absent.
    /// </summary>
    /// <exception cref="ArgumentException">N is not an integer ≥ 1, the option is repeated, or this process already is
    /// a rank of a job (WORLD_SIZE is set: a child must not launch again).</exception>
    public static bool TryTakeGpus(IReadOnlyList<string> args, out int gpus, out string[] rest)
    {
        ArgumentNullException.ThrowIfNull(args);
        gpus = 0;
        var kept = new List<string>();
        bool found = false;
        for (int i = 0; i < args.Count; i++)
        {
            string a = args[i];
            string? value = null;
            if (a.Equals(GpusOption, StringComparison.OrdinalIgnoreCase))
            {
                if (i + 1 >= args.Count) throw new ArgumentException($"{GpusOption} needs a value: the number of GPUs (processes) to start.");
                value = args[++i];
            }
            else if (a.StartsWith(GpusOption + "=", StringComparison.OrdinalIgnoreCase)) value = a[(GpusOption.Length + 1)..];
            if (value is null)
            {
                kept.Add(a);
                continue;
            }
            if (found) throw new ArgumentException($"{GpusOption} is given twice.");
            found = true;
            if (!int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out gpus) || gpus < 1)
                throw new ArgumentException($"{GpusOption} must be a whole number of GPUs, at least 1, not '{value}'.");
        }
        rest = [.. kept];
        if (found && Environment.GetEnvironmentVariable("WORLD_SIZE") is { Length: > 0 } world)
            throw new ArgumentException($"{GpusOption} starts the ranks of a job, but this process already is one (WORLD_SIZE={world}); " +
                "with an external launcher (torchrun-style environment), leave --gpus out.");
        return found;
    }

    /// <summary>The command line that starts this program again: (file, arguments before the program's own).</summary>
    public static (string FileName, string[] Prefix) CurrentProgram()
    {
        string process = Environment.ProcessPath ?? throw new InvalidOperationException("The path of this process is unknown.");
        string name = Path.GetFileNameWithoutExtension(process);
        if (name.Equals("dotnet", StringComparison.OrdinalIgnoreCase))
        {
            string entry = Assembly.GetEntryAssembly()?.Location is { Length: > 0 } location ? location
                : throw new InvalidOperationException("The entry assembly of this process is unknown.");
            return (process, [entry]);
        }
        return (process, []);
    }

    /// <summary>A TCP port that is free on the loopback interface now.</summary>
    public static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <summary>
    /// Runs <paramref name="processes"/> ranks of <paramref name="fileName"/> <paramref name="arguments"/> and returns 0
    /// when all succeed, else the first non-zero exit code.
    /// </summary>
    public static int Run(int processes, string fileName, IReadOnlyList<string> arguments, TextWriter output, TextWriter error,
        LauncherOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(processes, 1);
        options ??= new LauncherOptions();
        int port = Environment.GetEnvironmentVariable("MASTER_PORT") is { Length: > 0 } p
            && int.TryParse(p, NumberStyles.Integer, CultureInfo.InvariantCulture, out int fixedPort) ? fixedPort : FreePort();
        var writeLock = new Lock();
        var children = new Process[processes];
        var exited = new bool[processes];
        try
        {
            for (int r = 0; r < processes; r++)
            {
                var psi = new ProcessStartInfo(fileName)
                {
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                    UseShellExecute = false,
                };
                foreach (var a in arguments) psi.ArgumentList.Add(a);
                foreach (var (k, v) in DistributedEnvironment.ForLocalRank(r, processes, "127.0.0.1", port)) psi.Environment[k] = v;
                foreach (var (k, v) in options.Environment) psi.Environment[k] = v;
                var child = new Process { StartInfo = psi };
                string prefix = $"[rank {r}] ";
                child.OutputDataReceived += (_, e) => Forward(output, prefix, e.Data, writeLock);
                child.ErrorDataReceived += (_, e) => Forward(error, prefix, e.Data, writeLock);
                if (!child.Start()) throw new InvalidOperationException($"Could not start rank {r}: {fileName}.");
                children[r] = child;
                child.BeginOutputReadLine();
                child.BeginErrorReadLine();
            }
            int? firstFailure = null;
            var failedAt = Stopwatch.StartNew();
            bool terminated = false;
            while (true)
            {
                for (int r = 0; r < processes; r++)
                {
                    if (exited[r] || !children[r].HasExited) continue;
                    children[r].WaitForExit(); // drains the forwarded output
                    exited[r] = true;
                    int code = children[r].ExitCode;
                    if (code != 0 && firstFailure is null)
                    {
                        firstFailure = code;
                        failedAt.Restart();
                        lock (writeLock) error.WriteLine($"launcher: rank {r} exited with code {code}; stopping the other ranks");
                    }
                }
                if (exited.All(e => e)) return firstFailure ?? 0;
                if (firstFailure is not null && failedAt.Elapsed > options.StopGrace)
                {
                    for (int r = 0; r < processes; r++)
                        if (!exited[r])
                        {
                            lock (writeLock) error.WriteLine($"launcher: rank {r} did not stop within {options.StopGrace.TotalSeconds:F0} s; killing it");
                            Kill(children[r]);
                        }
                }
                if (cancellationToken.IsCancellationRequested && !terminated)
                {
                    terminated = true;
                    for (int r = 0; r < processes; r++) if (!exited[r]) Terminate(children[r]);
                }
                Thread.Sleep(50);
            }
        }
        finally
        {
            foreach (var child in children)
            {
                if (child is null) continue;
                if (!HasExited(child)) Kill(child);
                child.Dispose();
            }
        }
    }

    private static void Forward(TextWriter writer, string prefix, string? line, Lock writeLock)
    {
        if (line is null) return;
        lock (writeLock)
        {
            writer.WriteLine(prefix + line);
            writer.Flush();
        }
    }

    private static bool HasExited(Process p)
    {
        try
        {
            return p.HasExited;
        }
        catch (InvalidOperationException)
        {
            return true;
        }
    }

    private static void Kill(Process p)
    {
        try
        {
            p.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // exited meanwhile
        }
    }

    /// <summary>SIGTERM (a graceful stop: the step finishes and a checkpoint is written); a kill where there are no signals.</summary>
    private static void Terminate(Process p)
    {
        if (OperatingSystem.IsWindows())
        {
            Kill(p);
            return;
        }
        try
        {
            _ = kill(p.Id, 15);
        }
        catch (InvalidOperationException)
        {
            // exited meanwhile
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int signal);
}

/// <summary>How the launcher treats its children.</summary>
public sealed record LauncherOptions
{
    /// <summary>After one rank fails, how long the others get to notice and exit before they are killed.</summary>
    public TimeSpan StopGrace { get; init; } = TimeSpan.FromSeconds(15);
    /// <summary>Extra environment variables for every child.</summary>
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();
}
