using System.Globalization;
using Microsoft.Extensions.Logging;

namespace MosaicBert.Pretraining;

/// <summary>
/// Live progress of a run: on a terminal one status line rewritten in place after every step (step, loss, MLM
/// accuracy, tokens/s, learning rate, ETA); when standard error is redirected (logs, CI), the same line as an
/// ILogger message every <c>logInterval</c> steps instead.
/// </summary>
public sealed class ConsoleProgress(ILogger logger, int logInterval, bool? interactive = null) : IProgress<StepReport>
{
    private readonly bool _interactive = interactive ?? !Console.IsErrorRedirected;
    private double? _lastAccuracy;

    /// <summary>The status line for a report.</summary>
    public string Format(StepReport r)
    {
        if (r.MlmAccuracy is double a) _lastAccuracy = a;
        var c = CultureInfo.InvariantCulture;
        string total = r.TotalSteps == long.MaxValue ? "?" : r.TotalSteps.ToString(c);
        string acc = _lastAccuracy is double x ? (x * 100).ToString("F1", c) + "%" : "-";
        string eta = r.Remaining is TimeSpan t ? $"{(int)t.TotalHours}:{t.Minutes:D2}:{t.Seconds:D2}" : "-";
        return string.Create(c, $"step {r.Step}/{total} | loss {r.Loss:F4} | mlm acc {acc} | {r.TokensPerSecond:N0} tok/s | lr {r.LearningRate:G3} | ETA {eta}");
    }

    /// <inheritdoc/>
    public void Report(StepReport value)
    {
        string line = Format(value);
        if (_interactive)
        {
            Console.Error.Write("\r" + line.PadRight(110));
            if (value.EvalLoss is not null || value.Step == value.TotalSteps) Console.Error.WriteLine();
        }
        else if (value.Step % logInterval == 0)
        {
            logger.LogInformation("{Status}", line);
        }
    }
}
