// GLUE WNLI: dotnet run --project examples/MosaicBert.Examples.Glue.Wnli -c Release -- --help
using MosaicBert.Examples.Glue;
using MosaicBert.ML.Glue;

return GlueTaskApp.Main(GlueTask.Wnli, args);
