using System.Globalization;
using MosaicBert.Devices;
using MosaicBert.ML.Glue;

namespace MosaicBert.Examples.Glue;

/// <summary>The command-line options of the GLUE example apps (and of the runner, which adds --tasks).</summary>
public sealed class GlueExampleOptions
{
    /// <summary>The GLUE folder (holding CoLA/, SST-2/, ...); null: $GLUE_DIR, else ../shared/datasets/glue found upward.</summary>
    public string? DataDirectory { get; set; }

    /// <summary>A checkpoint directory or model zip to fine-tune; null trains <see cref="Preset"/> from scratch.</summary>
    public string? ModelPath { get; set; }

    /// <summary>The preset trained from scratch when there is no <see cref="ModelPath"/> (default mini).</summary>
    public string? Preset { get; set; }

    /// <summary>vocab.txt; null: the model's, else shared/datasets/vocab/bert-base-uncased-vocab.txt next to the GLUE folder.</summary>
    public string? VocabPath { get; set; }

    public int? Epochs { get; set; }

    public int? MaxSteps { get; set; }

    public int? BatchSize { get; set; }

    public double? LearningRate { get; set; }

    public int MaxLength { get; set; } = 128;

    /// <summary>Train on this many training rows (a seeded random subset); null for all.</summary>
    public int? Limit { get; set; }

    /// <summary>Evaluate on the first this many dev rows; null for all.</summary>
    public int? EvalLimit { get; set; }

    /// <summary>Validate every this many steps as well as after each epoch.</summary>
    public int? EvalEvery { get; set; }

    public int? Threads { get; set; }

    /// <summary>cpu (default), cuda or cuda:N.</summary>
    public string Device { get; set; } = "cpu";

    /// <summary>Run on the CPU (with a warning) when the GPU asked for cannot be used.</summary>
    public bool AllowCpuFallback { get; set; }

    /// <summary>fp32 (default), or bf16 where the build has it.</summary>
    public string Precision { get; set; } = "fp32";

    public int Seed { get; set; } = 19; // the recipe's default seed

    /// <summary>The model zip to write; null: runs/glue/TASK/model.zip.</summary>
    public string? OutputPath { get; set; }

    /// <summary>Runner only: the tasks to run (default all whose data is present).</summary>
    public List<GlueTask> Tasks { get; } = [];

    public static string Usage(string program, bool runner) => $$"""
        usage: {{program}} [options]
          --data-dir DIR       GLUE folder holding CoLA/, SST-2/, ... (default: $GLUE_DIR, else ../shared/datasets/glue)
          --model PATH         checkpoint directory (config.json, model.safetensors, vocab.txt), model zip or hf://org/name[@rev] to fine-tune
          --preset NAME        train from scratch instead: tiny, mini (default), small, medium, base, large
          --vocab FILE         vocab.txt (default: the model's, else ../shared/datasets/vocab/bert-base-uncased-vocab.txt)
          --epochs N           passes over the training rows (default: the recipe's for --model, 2 from scratch)
          --max-steps N        stop after N optimizer steps (CI smoke runs: e.g. 5)
          --batch-size N       rows per step (default: the recipe's for --model, 32 from scratch)
          --lr X               peak learning rate (default: the recipe's for --model, 5e-4 from scratch)
          --max-length N       tokens per row, longest-first truncation (default 128; the recipe uses 256)
          --limit N            train on N random training rows
          --eval-limit N       evaluate on the first N dev rows
          --eval-every N       also validate every N steps (the best parameters on dev are kept)
          --threads N          CPU threads (default: all cores)
          --device D           cpu (default), cuda (GPU 0) or cuda:N
          --allow-cpu-fallback run on the CPU, with a warning, when the GPU asked for cannot be used
          --precision P        fp32 (default); bf16 where the build has it
          --seed N             seed (default 19)
          --output FILE        model zip to write (default runs/glue/TASK/model.zip){{(runner ? "\n  --tasks LIST         comma-separated tasks, e.g. cola,sst2,stsb (default: all whose data is present)" : "")}}
        """;

    /// <exception cref="ArgumentException">An unknown option or a bad value (the message says which).</exception>
    public static GlueExampleOptions Parse(IReadOnlyList<string> args, bool runner)
    {
        var o = new GlueExampleOptions();
        for (var i = 0; i < args.Count; i++)
        {
            var name = args[i];
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{name} needs a value.");
            int Int() => int.TryParse(Value(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v > 0 ? v : throw new ArgumentException($"{name} needs a positive integer.");
            switch (name)
            {
                case "--data-dir": o.DataDirectory = Value(); break;
                case "--model": o.ModelPath = Value(); break;
                case "--preset": o.Preset = Value(); break;
                case "--vocab": o.VocabPath = Value(); break;
                case "--epochs": o.Epochs = Int(); break;
                case "--max-steps": o.MaxSteps = Int(); break;
                case "--batch-size": o.BatchSize = Int(); break;
                case "--max-length": o.MaxLength = Int(); break;
                case "--limit": o.Limit = Int(); break;
                case "--eval-limit": o.EvalLimit = Int(); break;
                case "--eval-every": o.EvalEvery = Int(); break;
                case "--threads": o.Threads = Int(); break;
                case "--device":
                    o.Device = Value();
                    if (!DeviceSpec.TryParse(o.Device, out _, out var deviceError, "--device")) throw new ArgumentException(deviceError);
                    break;
                case "--allow-cpu-fallback": o.AllowCpuFallback = true; break;
                case "--precision":
                    o.Precision = Value();
                    if (!ComputePrecisions.TryParse(o.Precision, out _, out var precisionError, "--precision")) throw new ArgumentException(precisionError);
                    break;
                case "--seed": o.Seed = Int(); break;
                case "--output": o.OutputPath = Value(); break;
                case "--lr":
                    o.LearningRate = double.TryParse(Value(), NumberStyles.Float, CultureInfo.InvariantCulture, out var lr) && lr > 0
                        ? lr : throw new ArgumentException("--lr needs a positive number.");
                    break;
                case "--tasks" when runner:
                    foreach (var t in Value().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                        o.Tasks.Add(ParseTask(t));
                    break;
                default: throw new ArgumentException($"Unknown option '{name}'.");
            }
        }
        if (o.ModelPath is not null && o.Preset is not null) throw new ArgumentException("Give --model or --preset, not both.");
        return o;
    }

    /// <summary>A task by its GLUE name or enum name, any case, with or without the dash (sst2, SST-2, sts-b, mnli).</summary>
    public static GlueTask ParseTask(string name)
    {
        var key = name.Replace("-", "", StringComparison.Ordinal);
        foreach (var task in Enum.GetValues<GlueTask>())
        {
            if (task != GlueTask.MnliMismatched && task.ToString().Equals(key, StringComparison.OrdinalIgnoreCase)) return task;
        }
        throw new ArgumentException($"Unknown GLUE task '{name}'; use cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte or wnli.");
    }
}
