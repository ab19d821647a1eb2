// GLUE RTE: dotnet run --project examples/MosaicBert.Examples.Glue.Rte -c Release -- --help
using MosaicBert.Examples.Glue;
using MosaicBert.ML.Glue;

return GlueTaskApp.Main(GlueTask.Rte, args);
