// Runs the GLUE tasks whose data is present, one after the other in this process, with the same options, and prints
// the table as markdown and JSON:  dotnet run --project examples/MosaicBert.Examples.Glue.Runner -c Release -- --help
using System.Globalization;
using System.Text;
using System.Text.Json;
using MosaicBert.Examples.Glue;
using MosaicBert.ML.Glue;

const string Program = "MosaicBert.Examples.Glue.Runner";
if (args.Contains("--help") || args.Contains("-h"))
{
    Console.WriteLine(GlueExampleOptions.Usage(Program, runner: true));
    return 0;
}
GlueExampleOptions options;
try
{
    options = GlueExampleOptions.Parse(args, runner: true);
    if (options.OutputPath is not null) throw new ArgumentException("--output names one zip; the runner writes runs/glue/TASK/model.zip per task.");
}
catch (ArgumentException e)
{
    Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine(GlueExampleOptions.Usage(Program, runner: true));
    return 1;
}

GlueTask[] all = [GlueTask.Cola, GlueTask.Sst2, GlueTask.Mrpc, GlueTask.StsB, GlueTask.Qqp, GlueTask.Mnli, GlueTask.Qnli, GlueTask.Rte, GlueTask.Wnli];
var results = new List<GlueRunResult>();
var skipped = new List<(string Task, string Reason)>();
var failed = new List<(string Task, string Error)>();
foreach (var task in options.Tasks.Count > 0 ? [.. options.Tasks] : all)
{
    var name = GlueTaskInfo.Get(task).DirectoryName; // "MNLI" for both of its dev sets
    if (!GlueTaskApp.HasData(task, options, out var why))
    {
        Console.WriteLine($"skip {why}");
        skipped.Add((name, why ?? ""));
        continue;
    }
    try
    {
        results.Add(GlueTaskApp.Run(task, options, Console.Out));
    }
    catch (Exception e) when (e is not OutOfMemoryException)
    {
        // One task failing (bad data, a diverged run) should not lose the others' results.
        Console.Error.WriteLine($"{name} failed: {e}");
        failed.Add((name, e.Message));
    }
}

// The task score is the mean of its metrics (MNLI: of matched and mismatched), ×100; the average leaves WNLI out, as
// GLUE and the MosaicBERT recipe do, and counts only the tasks that ran.
static double TaskScore(GlueRunResult r) => 100 * r.Results.Average(x => x.Score);
var counted = results.Where(r => r.Task != GlueTask.Wnli).ToList();
double? average = counted.Count > 0 ? counted.Average(TaskScore) : null;

var md = new StringBuilder();
md.AppendLine("| Task | Metrics | Score | Train rows | Dev rows | Steps | Train time |");
md.AppendLine("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
foreach (var r in results)
{
    foreach (var x in r.Results)
    {
        var metrics = string.Join(", ", x.Metrics.Select(m => FormattableString.Invariant($"{m.Key} {100 * m.Value:F2}")));
        md.AppendLine(FormattableString.Invariant(
            $"| {GlueTaskInfo.Get(x.Task).Name} | {metrics} | {100 * x.Score:F2} | {r.TrainRows} | {r.DevRows} | {r.Steps} | {r.TrainTime.TotalSeconds:F0} s |"));
    }
}
foreach (var (task, reason) in skipped) md.AppendLine($"| {task} | not run: data not present | | | | | |");
foreach (var (task, error) in failed) md.AppendLine($"| {task} | failed: {error.ReplaceLineEndings(" ")} | | | | | |");
md.AppendLine();
md.AppendLine(average is double a
    ? FormattableString.Invariant($"GLUE average over {counted.Count} task(s) that ran (WNLI excluded): **{a:F2}**")
    : "No task counted in the GLUE average ran.");
Console.WriteLine();
Console.Write(md);

var json = new
{
    settings = new
    {
        model = options.ModelPath,
        preset = options.ModelPath is null ? options.Preset ?? GlueTaskApp.DefaultPreset : null,
        epochs = options.Epochs, maxSteps = options.MaxSteps, batchSize = options.BatchSize, learningRate = options.LearningRate,
        maxLength = options.MaxLength, limit = options.Limit, evalLimit = options.EvalLimit, seed = options.Seed,
    },
    tasks = results.Select(r => new
    {
        task = GlueTaskInfo.Get(r.Task).DirectoryName,
        score = TaskScore(r),
        results = r.Results.Select(x => new
        {
            name = GlueTaskInfo.Get(x.Task).Name,
            metrics = x.Metrics.ToDictionary(m => m.Key.ToString(), m => m.Value),
            score = x.Score,
        }),
        trainRows = r.TrainRows, devRows = r.DevRows, steps = r.Steps, trainSeconds = r.TrainTime.TotalSeconds, modelZip = r.ModelZip,
    }),
    skipped = skipped.Select(s => new { task = s.Task, reason = s.Reason }),
    failed = failed.Select(f => new { task = f.Task, error = f.Error }),
    average,
};
Console.WriteLine();
Console.WriteLine(JsonSerializer.Serialize(json, new JsonSerializerOptions { WriteIndented = true }));
return failed.Count == 0 ? 0 : 1;
