// GLUE QQP: dotnet run --project examples/MosaicBert.Examples.Glue.Qqp -c Release -- --help
using MosaicBert.Examples.Glue;
using MosaicBert.ML.Glue;

return GlueTaskApp.Main(GlueTask.Qqp, args);
