// GLUE STS-B: dotnet run --project examples/MosaicBert.Examples.Glue.StsB -c Release -- --help
using MosaicBert.Examples.Glue;
using MosaicBert.ML.Glue;

return GlueTaskApp.Main(GlueTask.StsB, args);
