// GLUE SST-2: dotnet run --project examples/MosaicBert.Examples.Glue.Sst2 -c Release -- --help
using MosaicBert.Examples.Glue;
using MosaicBert.ML.Glue;

return GlueTaskApp.Main(GlueTask.Sst2, args);
