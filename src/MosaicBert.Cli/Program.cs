using System.Runtime.InteropServices;

namespace MosaicBert.Cli;

/// <summary>Entry point of <c>mosaicbert</c>; everything else is in <see cref="CliApp"/>.</summary>
public static class Program
{
    /// <summary>Runs the command line on the process's standard streams.</summary>
    public static int Main(string[] args)
    {
        using var cancel = new CancellationTokenSource();
        // The first Ctrl+C (or SIGTERM) asks the running verb to stop cleanly (no half-written output); a second one
        // terminates the process as usual.
        void OnSignal(PosixSignalContext context)
        {
            if (cancel.IsCancellationRequested) return;
            context.Cancel = true;
            cancel.Cancel();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var stdin = Console.OpenStandardInput();
        using var stdout = Console.OpenStandardOutput();
        return CliApp.Run(args, stdin, stdout, Console.Error, cancel.Token);
    }
}
