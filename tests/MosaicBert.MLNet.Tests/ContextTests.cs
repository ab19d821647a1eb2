using MosaicBert.ML;

namespace MosaicBert.MLNet.Tests;

public sealed class ContextTests
{
    [Fact]
    public void DefaultsAndCatalogsShareTheContext()
    {
        var ctx = new MLContext(seed: 1);
        Assert.Null(ctx.GpuDeviceId);
        Assert.True(ctx.FallbackToCpu);
        Assert.Same(ctx, ctx.MulticlassClassification.Trainers.Context);
        Assert.Same(ctx, ctx.Regression.Trainers.Context);
        Assert.Same(ctx, ctx.BinaryClassification.Trainers.Context);
        Assert.Same(ctx, ctx.Transforms.Conversion.Context);
        Assert.Same(ctx, ctx.Transforms.Text.Context);
        Assert.Same(ctx, ctx.Data.Context);
        Assert.Same(ctx, ctx.Model.Context);
    }

    [Fact]
    public void SeedsAreRepeatable()
    {
        Assert.Equal(new MLContext(seed: 3).NextSeed(), new MLContext(seed: 3).NextSeed());
        Assert.NotEqual(new MLContext(seed: 3).NextSeed(), new MLContext(seed: 4).NextSeed());
    }

    [Fact]
    public void ProgressReachesTheProgressSinkAndTheLog()
    {
        var ctx = new MLContext(seed: 1);
        var log = new List<LoggingEventArgs>();
        ctx.Log += (_, e) => log.Add(e);
        var reports = new List<TrainingProgress>();
        var sink = new SynchronousProgress(reports.Add);
        var p = new TrainingProgress(epoch: 1, maxEpochs: 3, step: 100, totalSteps: 400, loss: 0.5, learningRate: 2e-5,
            examplesPerSecond: 640, elapsed: TimeSpan.FromSeconds(60), new Dictionary<string, double> { ["accuracy"] = 0.875 });

        ctx.ReportProgress("TextClassification", p, sink);

        Assert.Same(p, Assert.Single(reports));
        Assert.Equal(TimeSpan.FromSeconds(180), p.EstimatedRemaining);
        var m = Assert.Single(log);
        Assert.Equal(("TextClassification", ChannelMessageKind.Info), (m.Source, m.Kind));
        Assert.Equal("epoch 1/3, step 100/400, loss 0.5000, lr 2.00E-005, 640.0 examples/s, elapsed 00:01:00, remaining 00:03:00, accuracy 0.8750", m.RawMessage);
        Assert.Equal("[Source=TextClassification, Kind=Info] " + m.RawMessage, m.Message);
    }

    // Progress<T> posts to the thread pool; tests want the report before asserting.
    private sealed class SynchronousProgress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
