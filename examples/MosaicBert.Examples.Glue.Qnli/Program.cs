// GLUE QNLI: dotnet run --project examples/MosaicBert.Examples.Glue.Qnli -c Release -- --help
using MosaicBert.Examples.Glue;
using MosaicBert.ML.Glue;

return GlueTaskApp.Main(GlueTask.Qnli, args);
