using System.CommandLine;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using System.Text;

namespace MosaicBert.Cli;

/// <summary>
/// The <c>mosaicbert</c> command line: verbs, options, and the mapping of every failure to one <c>error: ...</c>
/// line on stderr and an exit code (<see cref="ExitCodes"/>). Runs in-process, so tests call <see cref="Run"/>.
/// </summary>
internal static class CliApp
{
    /// <summary>Parses <paramref name="args"/> and runs the verb.</summary>
    /// <param name="args">Command-line arguments.</param>
    /// <param name="stdin">Read only when a verb is given "-" as its input.</param>
    /// <param name="stdout">Output data, help and version text (UTF-8).</param>
    /// <param name="stderr">Errors and summaries.</param>
    /// <param name="cancellationToken">Interrupts a running verb (Ctrl+C); it then exits with <see cref="ExitCodes.Cancelled"/>.</param>
    /// <returns>The exit code.</returns>
    public static int Run(string[] args, Stream stdin, Stream stdout, TextWriter stderr, CancellationToken cancellationToken = default)
    {
        using var stdoutText = new StreamWriter(stdout, new UTF8Encoding(false), 4096, leaveOpen: true) { AutoFlush = true };
        try
        {
            var root = BuildRootCommand(stdin, stdout, stdoutText, stderr, cancellationToken);
            var parseResult = root.Parse(args);
            if (parseResult.Action is ParseErrorAction)
            {
                foreach (var error in parseResult.Errors)
                    stderr.WriteLine($"error: {error.Message}");
                // The root command is named after the executable; say "mosaicbert" whatever hosts the code (tests).
                var path = string.Join(' ', Ancestry(parseResult.CommandResult).Reverse().Skip(1).Select(c => c.Name).Prepend("mosaicbert"));
                stderr.WriteLine($"Run '{path} --help' for usage.");
                return ExitCodes.UsageError;
            }
            return parseResult.Invoke(new InvocationConfiguration
            {
                Output = stdoutText,
                Error = stderr,
                EnableDefaultExceptionHandler = false,
                ProcessTerminationTimeout = null,
            });
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("error: cancelled");
            return ExitCodes.Cancelled;
        }
        catch (Exception e)
        {
            // Every expected failure is reported by the verbs themselves; this is the no-stack-trace safety net.
            stderr.WriteLine($"error: {e.GetType().Name}: {e.Message}");
            return ExitCodes.InputError;
        }
    }

    private static IEnumerable<Command> Ancestry(SymbolResult? result)
    {
        for (; result is not null; result = result.Parent)
            if (result is CommandResult c) yield return c.Command;
    }

    private static RootCommand BuildRootCommand(Stream stdin, Stream stdout, TextWriter stdoutText, TextWriter stderr,
        CancellationToken cancellationToken)
    {
        var root = new RootCommand("MosaicBERT tools: tokenization (Hugging Face parity), vocabulary training, model inference.");
        root.Subcommands.Add(BuildTokenizeCommand(stdin, stdout, stderr, cancellationToken));
        root.Subcommands.Add(BuildForwardCommand(stderr));
        root.Subcommands.Add(BuildPretrainCommand(cancellationToken));
        root.Subcommands.Add(DownloadCommand.Build(stdoutText, stderr, cancellationToken));
        root.Subcommands.Add(BenchCommand.Build(stdoutText, stderr, cancellationToken));
        var vocab = new Command("vocab", "Work with WordPiece vocabularies (vocab.txt).");
        vocab.Subcommands.Add(BuildTrainCommand(stdoutText, stderr, cancellationToken));
        root.Subcommands.Add(vocab);
        return root;
    }

    private static Command BuildTokenizeCommand(Stream stdin, Stream stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        var vocab = new Option<string>("--vocab")
        {
            Description = "vocab.txt: one token per line, the line number (from 0) is the id.",
            Required = true,
        };
        var input = new Option<string>("--input")
        {
            Description = "JSON lines {\"a\": \"text\", \"b\": \"optional second text\"}; '-' reads stdin.",
            Required = true,
        };
        var maxLength = IntOption("--max-length",
            "Maximum tokens per line, [CLS] and [SEP] included; longer inputs are truncated longest-first.",
            TokenizeCommand.DefaultMaxLength, TokenizeCommand.MinMaxLength);
        var output = new Option<string?>("--output")
        {
            Description = "Output file, written atomically (all or nothing); stdout when left out.",
        };
        var lowercase = BoolOption("--lowercase", "Lower-case and strip accents, for uncased vocabularies (default true; --lowercase false for cased ones).", true);
        var threads = NullableIntOption("--threads", "Tokenizing threads (default: all cores).", 1);
        var command = new Command("tokenize", "Tokenize JSON lines into input ids, token type ids and offsets, one JSON line out per line in.")
        {
            vocab, input, maxLength, output, lowercase, threads,
        };
        command.SetAction(parseResult => TokenizeCommand.Run(
            parseResult.GetRequiredValue(vocab), parseResult.GetRequiredValue(input), parseResult.GetValue(output),
            parseResult.GetValue(maxLength), parseResult.GetValue(lowercase), stdin, stdout, stderr,
            parseResult.GetValue(threads), cancellationToken));
        return command;
    }

    private static Command BuildForwardCommand(TextWriter stderr)
    {
        var model = new Option<string>("--model")
        {
            Description = "Checkpoint directory: config.json and model.safetensors or pytorch_model.bin (MosaicBERT or BERT).",
            Required = true,
        };
        var input = new Option<string>("--input")
        {
            Description = "safetensors with int64 input_ids [B,S] and optional attention_mask and token_type_ids [B,S].",
            Required = true,
        };
        var output = new Option<string>("--output")
        {
            Description = "safetensors to write (atomically): last_hidden_state [B,S,H] and logits.",
            Required = true,
        };
        var threads = NullableIntOption("--threads", "CPU threads (default: all cores).", 1);
        var (device, precision, fallback) = DeviceOptions();
        var command = new Command("forward", "Run a model on a batch: last hidden states and logits, as Hugging Face returns them.")
        {
            model, input, output, device, precision, fallback, threads,
        };
        command.SetAction(parseResult => ForwardCommand.Run(parseResult.GetRequiredValue(model), parseResult.GetRequiredValue(input),
            parseResult.GetRequiredValue(output), parseResult.GetValue(device)!, parseResult.GetValue(precision)!, parseResult.GetValue(fallback),
            parseResult.GetValue(threads), stderr));
        return command;
    }

    private static Command BuildPretrainCommand(CancellationToken cancellationToken)
    {
        var command = new Command("pretrain",
            "Pretrain a MosaicBERT encoder (MLM, 30% masking) on a corpus. Options are the host's: --Vocab V --Corpus C " +
            "[--Corpus C2] --OutputDir DIR --MaxSteps N [--Preset tiny] [--GlobalBatchSize 256] [--MicroBatchSize 32] " +
            "[--Device cpu|cuda|cuda:N] [--AllowCpuFallback true] ..., " +
            "or an appsettings.json \"Pretraining\" section. Running it again resumes from the last checkpoint.")
        {
            TreatUnmatchedTokensAsErrors = false,
        };
        command.SetAction(parseResult => MosaicBert.Pretraining.PretrainingHost.RunAsync([.. parseResult.UnmatchedTokens], cancellationToken)
            .GetAwaiter().GetResult());
        return command;
    }

    private static Command BuildTrainCommand(TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        var corpus = new Option<string[]>("--corpus")
        {
            Description = "Corpus files or directories: plain text, JSON lines with a \"text\" field, WikiExtractor <doc> files; .gz too.",
            Required = true,
            AllowMultipleArgumentsPerToken = true,
            Arity = ArgumentArity.OneOrMore,
        };
        var size = IntOption("--size", "Vocabulary size, special tokens included; rounded up to a multiple of 64.", null, 6);
        size.Required = true;
        var output = new Option<string>("--output")
        {
            Description = "vocab.txt to write (atomically).",
            Required = true,
        };
        var lowercase = BoolOption("--lowercase", "Lower-case and strip accents before counting words, for uncased models (default true).", true);
        var minFrequency = IntOption("--min-frequency", "A pair of pieces is merged only when it occurs at least this often.", 2, 1);
        var threads = NullableIntOption("--threads", "Word-counting threads (default: all cores); the result does not depend on it.", 1);
        var command = new Command("train", "Train a WordPiece vocabulary on a corpus.")
        {
            corpus, size, output, lowercase, minFrequency, threads,
        };
        command.SetAction(parseResult => TrainVocabCommand.Run(
            parseResult.GetRequiredValue(corpus), parseResult.GetValue(size), parseResult.GetRequiredValue(output),
            parseResult.GetValue(lowercase), parseResult.GetValue(minFrequency), parseResult.GetValue(threads),
            stdout, stderr, cancellationToken));
        return command;
    }

    /// <summary>
    /// --device, --precision and --allow-cpu-fallback: a malformed device or precision is a usage error (exit 2); a
    /// well-formed one that cannot run here is reported by the verb (exit 1, with the reason).
    /// </summary>
    private static (Option<string> Device, Option<string> Precision, Option<bool> AllowCpuFallback) DeviceOptions()
    {
        var device = new Option<string>("--device")
        {
            Description = "Where to run: cpu, cuda (GPU 0) or cuda:N (default cpu).",
            HelpName = "cpu|cuda|cuda:N",
            DefaultValueFactory = _ => "cpu",
        };
        device.Validators.Add(result =>
        {
            if (!MosaicBert.Devices.DeviceSpec.TryParse(result.GetValueOrDefault<string>(), out _, out string error, "--device"))
                result.AddError(error);
        });
        var precision = new Option<string>("--precision")
        {
            Description = "Arithmetic: fp32 (default) or bf16 (CUDA, when the build has it).",
            HelpName = "fp32|bf16",
            DefaultValueFactory = _ => "fp32",
        };
        precision.Validators.Add(result =>
        {
            if (!MosaicBert.Devices.ComputePrecisions.TryParse(result.GetValueOrDefault<string>(), out _, out string error, "--precision"))
                result.AddError(error);
        });
        var fallback = BoolOption("--allow-cpu-fallback", "When CUDA is asked for but unusable here, run on the CPU (with a warning) instead of failing.", false);
        return (device, precision, fallback);
    }

    /// <summary>An int option whose bad values ("abc", below the minimum) are usage errors with a clear message.</summary>
    private static Option<int> IntOption(string name, string description, int? defaultValue, int min)
    {
        var option = new Option<int>(name)
        {
            Description = $"{description.TrimEnd('.')} (at least {min}).",
            CustomParser = result => ParseInt(result, name, min) ?? 0,
        };
        if (defaultValue is int d) option.DefaultValueFactory = _ => d;
        return option;
    }

    private static Option<int?> NullableIntOption(string name, string description, int min) => new(name)
    {
        Description = description,
        CustomParser = result => ParseInt(result, name, min),
    };

    private static int? ParseInt(ArgumentResult result, string name, int min)
    {
        if (result.Tokens.Count == 0)
        {
            result.AddError($"{name} needs a value");
            return null;
        }
        var text = result.Tokens[^1].Value;
        if (!int.TryParse(text, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out int value))
        {
            result.AddError($"{name}: '{text}' is not a whole number");
            return null;
        }
        if (value < min)
        {
            result.AddError($"{name} must be at least {min}, not {value}");
            return null;
        }
        return value;
    }

    private static Option<bool> BoolOption(string name, string description, bool defaultValue) => new(name)
    {
        Description = description,
        HelpName = "true|false",
        DefaultValueFactory = _ => defaultValue,
        Arity = ArgumentArity.ZeroOrOne,
        CustomParser = result =>
        {
            if (result.Tokens.Count == 0) return true;
            var text = result.Tokens[^1].Value;
            if (bool.TryParse(text, out bool value)) return value;
            result.AddError($"{name}: '{text}' is not true or false");
            return false;
        },
    };
}
