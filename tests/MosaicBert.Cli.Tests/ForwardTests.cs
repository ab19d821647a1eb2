using MosaicBert.Checkpoints;

namespace MosaicBert.Cli.Tests;

/// <summary>
/// <c>mosaicbert forward</c> on the reference checkpoints of tests/MosaicBert.Model.Tests/Fixtures (made by
/// tests/reference/make_model_reference.py with PyTorch): outputs within 1e-4 absolute of PyTorch's fp32 outputs.
/// </summary>
public sealed class ForwardTests : CliTestBase
{
    private static string Fixture(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MosaicBert.MLNet.sln")))
                return Path.Combine(dir.FullName, "tests", "MosaicBert.Model.Tests", "Fixtures", name);
        throw new InvalidOperationException("repository root not found");
    }

    private string WriteInput(string checkpoint, Action<SafeTensorsWriter, SafeTensorsFile>? edit = null)
    {
        using var expected = SafeTensorsFile.Open(Path.Combine(Fixture(checkpoint), "expected_output.safetensors"));
        var shape = expected.GetInfo("input.input_ids").Shape.ToArray();
        var writer = new SafeTensorsWriter();
        if (edit is null)
        {
            foreach (var name in new[] { "input_ids", "attention_mask", "token_type_ids" })
                writer.Add(name, expected.ReadInt64("input." + name), shape);
        }
        else
        {
            edit(writer, expected);
        }
        var path = Path.Combine(TempDir, "in.safetensors");
        writer.Save(path);
        return path;
    }

    [Theory]
    [InlineData("tiny-mosaic-mlm")]
    [InlineData("tiny-bert-mlm")]
    [InlineData("tiny-bert-cls")]
    [InlineData("tiny-mosaic-cls")]
    public void MatchesPyTorch(string checkpoint)
    {
        var input = WriteInput(checkpoint);
        var output = Path.Combine(TempDir, "out.safetensors");
        var r = Run(["forward", "--model", Fixture(checkpoint), "--input", input, "--output", output, "--threads", "2"]);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.StartsWith("wrote ", r.Stderr);
        using var expected = SafeTensorsFile.Open(Path.Combine(Fixture(checkpoint), "expected_output.safetensors"));
        using var actual = SafeTensorsFile.Open(output);
        foreach (var name in new[] { "last_hidden_state", "logits" })
        {
            Assert.Equal(expected.GetInfo(name).Shape, actual.GetInfo(name).Shape);
            var e = expected.ReadFloat32(name);
            var a = actual.ReadFloat32(name);
            for (int i = 0; i < e.Length; i++)
                Assert.True(Math.Abs(e[i] - a[i]) <= 1e-4, $"{name}[{i}]: PyTorch {e[i]}, ours {a[i]}");
        }
    }

    [Fact]
    public void BadInputsNameTheFileAndTensor()
    {
        string model = Fixture("tiny-mosaic-mlm");
        var output = Path.Combine(TempDir, "out.safetensors");

        var noIds = WriteInput("tiny-mosaic-mlm", (w, e) => w.Add("attention_mask", e.ReadInt64("input.attention_mask"), [3, 8]));
        var r = Run(["forward", "--model", model, "--input", noIds, "--output", output]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("input_ids", r.Stderr);
        Assert.Contains(noIds, r.Stderr);

        var floats = WriteInput("tiny-mosaic-mlm", (w, e) => w.Add("input_ids", new float[24], [3, 8]));
        r = Run(["forward", "--model", model, "--input", floats, "--output", output]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("'input_ids' must be int64", r.Stderr);

        var badMask = WriteInput("tiny-mosaic-mlm", (w, e) =>
        {
            w.Add("input_ids", e.ReadInt64("input.input_ids"), [3, 8]);
            w.Add("attention_mask", new long[12], [3, 4]);
        });
        r = Run(["forward", "--model", model, "--input", badMask, "--output", output]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("'attention_mask' has shape [3, 4] but input_ids has [3, 8]", r.Stderr);

        var badId = WriteInput("tiny-mosaic-mlm", (w, e) =>
        {
            var ids = e.ReadInt64("input.input_ids");
            ids[5] = 1_000_000;
            w.Add("input_ids", ids, [3, 8]);
        });
        r = Run(["forward", "--model", model, "--input", badId, "--output", output]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("Token id 1000000 is outside the vocabulary", r.Stderr);

        r = Run(["forward", "--model", Path.Combine(TempDir, "nope"), "--input", badId, "--output", output]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("model directory not found", r.Stderr);
        Assert.False(File.Exists(output));
    }
}
