using Xunit;

namespace MosaicBert.TestUtilities;

/// <summary>
/// Finds ../shared/datasets next to the repository (the directory holding MosaicBert.MLNet.sln). Tests read the
/// datasets there and never copy them; a test whose data is absent is skipped, saying what is missing.
/// </summary>
public static class SharedData
{
    private static readonly Lazy<string?> s_root = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "MosaicBert.MLNet.sln")))
            {
                var candidate = Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared", "datasets"));
                return Directory.Exists(candidate) ? candidate : null;
            }
        }
        return null;
    });

    /// <summary>Absolute path of a file under shared/datasets; skips the calling test when it is absent.</summary>
    public static string Get(string relative)
    {
        var root = s_root.Value;
        if (root is null) Assert.Skip("../shared/datasets is not present next to the repository (the directory holding MosaicBert.MLNet.sln)");
        var path = Path.Combine(root, relative);
        if (!File.Exists(path)) Assert.Skip($"{path} is not present");
        return path;
    }

    /// <summary>bert-base-uncased's vocab.txt.</summary>
    public static string BertVocab => Get("vocab/bert-base-uncased-vocab.txt");

    /// <summary>A file copied next to the test assembly under Fixtures/.</summary>
    public static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name);
}
