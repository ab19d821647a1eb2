// GLUE MRPC: dotnet run --project examples/MosaicBert.Examples.Glue.Mrpc -c Release -- --help
using MosaicBert.Examples.Glue;
using MosaicBert.ML.Glue;

return GlueTaskApp.Main(GlueTask.Mrpc, args);
