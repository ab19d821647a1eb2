namespace MosaicBert.ML;

/// <summary>
/// Self-supervised pretraining of encoders on unlabelled text (no ML.NET counterpart; shaped like its trainer
/// catalogs). Trainers attach as extension methods, e.g. <c>mlContext.Pretraining.MosaicBert(options)</c>.
/// </summary>
public sealed class PretrainingCatalog : CatalogBase
{
    internal PretrainingCatalog(MLContext context) : base(context) { }
}
