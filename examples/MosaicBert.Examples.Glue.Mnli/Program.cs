// GLUE MNLI: dotnet run --project examples/MosaicBert.Examples.Glue.Mnli -c Release -- --help
using MosaicBert.Examples.Glue;
using MosaicBert.ML.Glue;

return GlueTaskApp.Main(GlueTask.Mnli, args);
