using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MosaicBert.Distributed;

namespace MosaicBert.Pretraining;

/// <summary>
/// The pretraining program on Microsoft.Extensions.Hosting: options from appsettings.json, environment variables
/// (prefix <c>MOSAICBERT_</c>) and the command line, validated at start (unknown keys are errors), and the training
/// loop in a <see cref="BackgroundService"/>. Ctrl+C / SIGTERM finish the step, write a checkpoint and exit 0.
/// </summary>
public static class PretrainingHost
{
    /// <summary>
    /// Builds the host. Command-line options may be written as <c>--MaxSteps 100</c> (short form, mapped into the
    /// "Pretraining" section) or <c>--Pretraining:MaxSteps 100</c>; arrays as <c>--Corpus:0 a --Corpus:1 b</c> or
    /// repeated <c>--Corpus a --Corpus b</c>.
    /// </summary>
    public static IHost Build(string[] args, Action<IServiceCollection>? configure = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = [], ContentRootPath = Directory.GetCurrentDirectory() });
        builder.Configuration.AddEnvironmentVariables("MOSAICBERT_");
        // Data parallel: rank 0 alone logs; the other ranks report warnings and errors only.
        if (System.Environment.GetEnvironmentVariable("RANK") is { Length: > 0 } rank && rank.Trim() != "0")
            builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Configuration.AddInMemoryCollection(ShortForms(args));
        builder.Services.AddOptions<PretrainingOptions>()
            .Bind(builder.Configuration.GetSection(PretrainingOptions.Section), b => b.ErrorOnUnknownConfiguration = true)
            .ValidateOnStart();
        builder.Services.AddSingleton<IValidateOptions<PretrainingOptions>, PretrainingOptionsValidator>();
        builder.Services.AddSingleton<IPretrainingDataFactory, CorpusDataFactory>();
        builder.Services.AddSingleton<PretrainingService>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<PretrainingService>());
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = TimeSpan.FromMinutes(10)); // let the step and checkpoint finish
        configure?.Invoke(builder.Services);
        return builder.Build();
    }

    /// <summary>Maps <c>--Key value</c> pairs to configuration keys under the Pretraining section.</summary>
    internal static Dictionary<string, string?> ShortForms(string[] args)
    {
        var values = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        var arrayIndex = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        for (int i = 0; i < args.Length; i++)
        {
            var arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal))
                throw new ArgumentException($"Expected an option such as --MaxSteps, got '{arg}'.");
            string key = arg[2..], value;
            int eq = key.IndexOf('=');
            if (eq >= 0)
            {
                value = key[(eq + 1)..];
                key = key[..eq];
            }
            else
            {
                if (i + 1 >= args.Length) throw new ArgumentException($"Option --{key} needs a value.");
                value = args[++i];
            }
            if (!key.Contains(':')) key = PretrainingOptions.Section + ":" + key;
            if (key.Equals(PretrainingOptions.Section + ":Corpus", StringComparison.OrdinalIgnoreCase))
            {
                int n = arrayIndex.TryGetValue(key, out var c) ? c : 0;
                arrayIndex[key] = n + 1;
                key += ":" + n;
            }
            values[key] = value;
        }
        return values;
    }

    /// <summary>Runs the host; returns the exit code (0 on success or after a requested stop, 1 on bad options or
    /// input, with the reasons logged).</summary>
    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken = default)
    {
        IHost host;
        try
        {
            // ---- data parallel: `--gpus N` starts N ranks of this same command (see Launcher) ----
            if (Launcher.TryTakeGpus(args, out int gpus, out var rankArgs))
            {
                var (program, prefix) = Launcher.CurrentProgram();
                // The program's own arguments before the host's (e.g. the "pretrain" verb), then the host's without --gpus.
                var own = System.Environment.GetCommandLineArgs().Skip(1).ToList();
                int at = own.Count - args.Length;
                if (at < 0 || !own.Skip(at).SequenceEqual(args)) at = 0;
                string[] childArgs = [.. prefix, .. own.Take(at), .. rankArgs];
                return await Task.Run(() => Launcher.Run(gpus, program, childArgs, Console.Out, Console.Error, null, cancellationToken), CancellationToken.None);
            }
            // ---- end data parallel ----
            host = Build(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
        using (host)
        {
            // RunAsync disposes the host's services when it returns: take the service (for its exit code) first.
            var service = host.Services.GetRequiredService<PretrainingService>();
            try
            {
                await host.RunAsync(cancellationToken);
            }
            catch (OptionsValidationException e)
            {
                foreach (var failure in e.Failures) Console.Error.WriteLine($"error: {failure}");
                return 1;
            }
            catch (InvalidOperationException e) when (e.Message.Contains("configuration", StringComparison.OrdinalIgnoreCase))
            {
                Console.Error.WriteLine($"error: {e.Message}");
                return 1;
            }
            return service.ExitCode;
        }
    }
}

/// <summary>Runs <see cref="PretrainingRunner"/> and stops the application when training ends.</summary>
public sealed class PretrainingService(IOptions<PretrainingOptions> options, ILogger<PretrainingService> logger,
    IHostApplicationLifetime lifetime, IPretrainingDataFactory dataFactory) : BackgroundService
{
    /// <summary>0 when training finished or stopped on request; 1 when it failed (the error is logged).</summary>
    public int ExitCode { get; private set; }

    /// <inheritdoc/>
    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.Run(() =>
    {
        ProcessGroup? group = null;
        string rank = "";
        try
        {
            var o = options.Value;
            // ---- data parallel: RANK, WORLD_SIZE, … (torchrun's variables) make this process one rank of a job ----
            var distributed = DistributedEnvironment.FromEnvironment();
            rank = distributed.WorldSize > 1 ? $"rank {distributed.Rank}: " : "";
            ILogger log = distributed.IsRoot ? logger : Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
            // ---- end data parallel ----
            log.LogInformation("Pretraining {Preset} on {Corpus}, output {Output}", o.Preset, string.Join(", ", o.Corpus), o.OutputDir);
            var (model, train, eval) = dataFactory.Create(o, log);
            // The factory made the backend for this model: free the model's tensors first, then the backend (a GPU's
            // memory pool, stream and kernels).
            using var backend = model.Backend;
            using (model)
            {
                // A rank whose training thread stays stuck after a failure (in a device wait) exits on its own.
                group = ProcessGroup.Create(distributed, model.Backend,
                    new ControlChannelOptions { ExitProcessAfterFailure = TimeSpan.FromSeconds(15) }, stoppingToken);
                if (distributed.WorldSize > 1) log.LogInformation("Data parallel: {World} ranks ({Kind})", distributed.WorldSize, group.Kind);
                new PretrainingRunner(o, logger, group).Run(model, train, eval, new ConsoleProgress(logger, o.LogInterval), stoppingToken);
                group.Shutdown();
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            group?.ReportFailure(e.Message);
            logger.LogError("{Rank}{Message}", rank, e.Message);
            ExitCode = 1;
        }
        finally
        {
            group?.Dispose();
            lifetime.StopApplication();
        }
    }, CancellationToken.None);
}

/// <summary>Creates the model and the data of a run from its options (the tokenizer, token cache and masking).</summary>
public interface IPretrainingDataFactory
{
    /// <summary>Model (fresh initialisation) on a backend made for it, training batch source and evaluation batches.
    /// The host disposes the model, then its backend, when the run ends.</summary>
    (MosaicBert.Model.MosaicBertModel Model, IMlmBatchSource Train, IReadOnlyList<MlmBatch> Eval) Create(PretrainingOptions options, ILogger logger);
}
