using MosaicBert.ML.Data;

namespace MosaicBert.ML;

/// <summary>
/// The entry point: catalogs of operations, the random seed, logging and device settings (as Microsoft.ML.MLContext).
/// </summary>
/// <example>
/// <code>
/// var ctx = new MLContext(seed: 1);
/// ctx.Log += (_, e) => { if (e.Kind >= ChannelMessageKind.Info) Console.WriteLine(e.Message); };
/// IDataView data = ctx.Data.LoadFromTextFile&lt;MrpcRow&gt;("glue/MRPC/train.tsv", hasHeader: true);
/// </code>
/// </example>
public sealed class MLContext
{
    private readonly Random _random;
    private readonly Lock _randomLock = new();

    /// <summary>Creates a context.</summary>
    /// <param name="seed">Seed of the context's random numbers: operations given no seed of their own (shuffles,
    /// splits, trainers) draw one from it, so a fixed seed makes a whole program repeatable. Null: not repeatable.</param>
    public MLContext(int? seed = null)
    {
        _random = seed is int s ? new Random(s) : new Random();
        Data = new DataOperationsCatalog(this);
        Transforms = new TransformsCatalog(this);
        Model = new ModelOperationsCatalog(this);
        BinaryClassification = new BinaryClassificationCatalog(this);
        MulticlassClassification = new MulticlassClassificationCatalog(this);
        Regression = new RegressionCatalog(this);
        Pretraining = new PretrainingCatalog(this);
    }

    /// <summary>Loading, splitting, shuffling and enumerating data.</summary>
    public DataOperationsCatalog Data { get; }

    /// <summary>Transforms (<see cref="TransformsCatalog.Conversion"/>, <see cref="TransformsCatalog.Text"/>, and featurizers added by extension methods).</summary>
    public TransformsCatalog Transforms { get; }

    /// <summary>Prediction engines over fitted models.</summary>
    public ModelOperationsCatalog Model { get; }

    /// <summary>Binary classification trainers and evaluation.</summary>
    public BinaryClassificationCatalog BinaryClassification { get; }

    /// <summary>Multiclass classification trainers and evaluation.</summary>
    public MulticlassClassificationCatalog MulticlassClassification { get; }

    /// <summary>Regression trainers and evaluation.</summary>
    public RegressionCatalog Regression { get; }

    /// <summary>Pretraining of encoders on unlabelled text (masked language modelling).</summary>
    public PretrainingCatalog Pretraining { get; }

    /// <summary>The GPU to use (CUDA ordinal), or null for the CPU. Unlike ML.NET, the ordinal is honoured. Default null.</summary>
    public int? GpuDeviceId { get; set; }

    /// <summary>When a GPU is requested but unusable: true falls back to the CPU (with a warning in <see cref="Log"/>),
    /// false makes training fail. Default true.</summary>
    public bool FallbackToCpu { get; set; } = true;

    /// <summary>Folder for downloaded or cached files. Default the system temporary folder.</summary>
    public string TempFilePath { get; set; } = Path.GetTempPath();

    /// <summary>
    /// Messages from every component: loaders, transforms, trainers (per-epoch progress) and evaluators. Raised on the
    /// thread doing the work; keep handlers quick.
    /// </summary>
    public event EventHandler<LoggingEventArgs>? Log;

    /// <summary>Raises <see cref="Log"/>: how components (including ones in other assemblies) report.</summary>
    public void WriteLog(ChannelMessageKind kind, string source, string message) =>
        Log?.Invoke(this, new LoggingEventArgs(message, kind, source));

    /// <summary>
    /// Reports training progress both ways users consume it: to <paramref name="progress"/> (structured, e.g. a
    /// <see cref="Progress{T}"/> that updates a UI) and as one <see cref="ChannelMessageKind.Info"/> line in
    /// <see cref="Log"/> (for those who only listen to the log, as ML.NET users do).
    /// </summary>
    public void ReportProgress(string source, TrainingProgress value, IProgress<TrainingProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(value);
        progress?.Report(value);
        WriteLog(ChannelMessageKind.Info, source, value.ToString());
    }

    /// <summary>A seed drawn from the context's random numbers, for an operation given none.</summary>
    internal int NextSeed()
    {
        lock (_randomLock) return _random.Next();
    }
}

/// <summary>The severity of a log message (as Microsoft.ML.Runtime.ChannelMessageKind).</summary>
public enum ChannelMessageKind
{
    /// <summary>Detail for debugging.</summary>
    Trace,

    /// <summary>Normal progress.</summary>
    Info,

    /// <summary>Something the user should look at.</summary>
    Warning,

    /// <summary>A failure.</summary>
    Error,
}

/// <summary>One message of <see cref="MLContext.Log"/> (as Microsoft.ML.LoggingEventArgs).</summary>
public sealed class LoggingEventArgs : EventArgs
{
    /// <summary>Creates an Info message from an unnamed source.</summary>
    public LoggingEventArgs(string message) : this(message, ChannelMessageKind.Info, "unknown") { }

    /// <summary>Creates a message.</summary>
    public LoggingEventArgs(string message, ChannelMessageKind kind, string source)
    {
        RawMessage = message;
        Kind = kind;
        Source = source;
    }

    /// <summary>The component that wrote the message (e.g. "TextLoader", or a trainer's name).</summary>
    public string Source { get; }

    /// <summary>The severity.</summary>
    public ChannelMessageKind Kind { get; }

    /// <summary>The message as written.</summary>
    public string RawMessage { get; }

    /// <summary>The message with its source and kind, as ML.NET formats it: <c>[Source=..., Kind=...] message</c>.</summary>
    public string Message => $"[Source={Source}, Kind={Kind}] {RawMessage}";
}

/// <summary>
/// Where a training run stands: what trainers pass to <see cref="MLContext.ReportProgress"/> and to an
/// <see cref="IProgress{T}"/> given in their options (ML.NET only has log text for this).
/// </summary>
public sealed class TrainingProgress
{
    /// <summary>Creates a progress report.</summary>
    public TrainingProgress(int epoch, int maxEpochs, long step, long totalSteps, double loss, double learningRate,
        double examplesPerSecond, TimeSpan elapsed, IReadOnlyDictionary<string, double>? validationMetrics = null)
    {
        Epoch = epoch;
        MaxEpochs = maxEpochs;
        Step = step;
        TotalSteps = totalSteps;
        Loss = loss;
        LearningRate = learningRate;
        ExamplesPerSecond = examplesPerSecond;
        Elapsed = elapsed;
        ValidationMetrics = validationMetrics ?? new Dictionary<string, double>();
    }

    /// <summary>The current epoch, 1-based.</summary>
    public int Epoch { get; }

    /// <summary>The number of epochs planned.</summary>
    public int MaxEpochs { get; }

    /// <summary>Optimizer steps done.</summary>
    public long Step { get; }

    /// <summary>Optimizer steps planned.</summary>
    public long TotalSteps { get; }

    /// <summary>The training loss (recent average).</summary>
    public double Loss { get; }

    /// <summary>The current learning rate.</summary>
    public double LearningRate { get; }

    /// <summary>Training throughput.</summary>
    public double ExamplesPerSecond { get; }

    /// <summary>Time since training started.</summary>
    public TimeSpan Elapsed { get; }

    /// <summary>Remaining time at the average pace so far, or null before the first step.</summary>
    public TimeSpan? EstimatedRemaining =>
        Step > 0 && TotalSteps >= Step ? Elapsed * ((double)(TotalSteps - Step) / Step) : null;

    /// <summary>Metrics on the validation set, by name (empty when not evaluated at this point).</summary>
    public IReadOnlyDictionary<string, double> ValidationMetrics { get; }

    /// <summary>One line: epoch, step, loss, learning rate, throughput, times and validation metrics.</summary>
    public override string ToString()
    {
        var text = FormattableString.Invariant(
            $"epoch {Epoch}/{MaxEpochs}, step {Step}/{TotalSteps}, loss {Loss:F4}, lr {LearningRate:E2}, {ExamplesPerSecond:F1} examples/s, elapsed {Clock(Elapsed)}");
        if (EstimatedRemaining is TimeSpan r) text += $", remaining {Clock(r)}";
        foreach (var (name, value) in ValidationMetrics) text += FormattableString.Invariant($", {name} {value:F4}");
        return text;
    }

    // Hours keep counting past a day (training runs do), unlike the "hh" format.
    private static string Clock(TimeSpan t) => FormattableString.Invariant($"{(int)t.TotalHours:00}:{t.Minutes:00}:{t.Seconds:00}");
}
