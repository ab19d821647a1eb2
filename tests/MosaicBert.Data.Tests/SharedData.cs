namespace MosaicBert.Data.Tests;

/// <summary>Finds ../shared/datasets next to the repository (tests never copy the datasets).</summary>
internal static class SharedData
{
    private static readonly Lazy<string?> s_root = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared", "datasets");
            if (Directory.Exists(candidate)) return candidate;
            if (File.Exists(Path.Combine(dir.FullName, "MosaicBert.MLNet.sln")))
            {
                candidate = Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared", "datasets"));
                return Directory.Exists(candidate) ? candidate : null;
            }
        }
        return null;
    });

    /// <summary>Absolute path of a file under shared/datasets; skips the test when it is absent.</summary>
    public static string Get(string relative)
    {
        var root = s_root.Value;
        if (root is null) Assert.Skip("../shared/datasets is not present next to the repository");
        var path = Path.Combine(root, relative);
        if (!File.Exists(path)) Assert.Skip($"{path} is not present");
        return path;
    }
}
