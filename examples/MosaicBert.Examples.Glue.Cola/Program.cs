// GLUE CoLA: dotnet run --project examples/MosaicBert.Examples.Glue.Cola -c Release -- --help
using MosaicBert.Examples.Glue;
using MosaicBert.ML.Glue;

return GlueTaskApp.Main(GlueTask.Cola, args);
