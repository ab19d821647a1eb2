using System.Diagnostics;

namespace MosaicBert.Tensors.Cuda.Tests;

/// <summary>
/// The embedded kernels type-checked by clang's CUDA front end, so that a kernel source error is caught on machines
/// without a GPU or NVRTC (CI): the real compiler is NVRTC at run time, which only the GPU machine has. clang parses
/// and instantiates every template the extern "C" kernels use, against the declarations in ClangCheck/prelude.h.
/// Skipped, with the reason, where clang is not installed (`apt-get install clang`; MOSAICBERT_CLANG names another).
/// </summary>
public sealed class KernelSourceClangCheckTests
{
    private static string? FindClang()
    {
        if (Environment.GetEnvironmentVariable("MOSAICBERT_CLANG") is { Length: > 0 } named) return File.Exists(named) ? named : null;
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, "clang");
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    private static string RequireClang()
    {
        string? clang = FindClang();
        if (clang is null) Assert.Skip("needs clang (apt-get install clang) to type-check the kernels without NVRTC");
        return clang!;
    }

    private static (int ExitCode, string Errors) Check(string clang, string dir, string file)
    {
        var start = new ProcessStartInfo(clang)
        {
            WorkingDirectory = dir,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (var a in new[] { "-x", "cuda", "--cuda-device-only", "-nocudainc", "-nocudalib", "--cuda-gpu-arch=sm_80", "-std=c++17",
                     "-fsyntax-only", "-Wno-unknown-cuda-version", "-include", "prelude.h", "-I.", file })
            start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stderr.Result);
    }

    private static string Workspace()
    {
        string dir = Path.Combine(Path.GetTempPath(), "mosaicbert-clang-check-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(AppContext.BaseDirectory, "ClangCheck", "prelude.h"), Path.Combine(dir, "prelude.h"));
        foreach (var (name, text) in KernelSources.Headers) File.WriteAllText(Path.Combine(dir, name), text);
        return dir;
    }

    [Fact]
    public void EveryKernelFileTypeChecks()
    {
        string clang = RequireClang();
        string dir = Workspace();
        try
        {
            foreach (var file in KernelSources.Files)
            {
                File.WriteAllText(Path.Combine(dir, file), KernelSources.Read(file));
                var (code, errors) = Check(clang, dir, file);
                Assert.True(code == 0, $"{file} does not type-check:\n{errors}");
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void AnErrorInAKernelIsReported()
    {
        string clang = RequireClang();
        string dir = Workspace();
        try
        {
            // A misspelt helper inside a template that only an extern "C" kernel instantiates.
            string source = KernelSources.Read("layernorm.cu").Replace("load_v<T, V>(gamma + c, gm);", "load_vv<T, V>(gamma + c, gm);", StringComparison.Ordinal);
            Assert.Contains("load_vv", source);
            File.WriteAllText(Path.Combine(dir, "broken.cu"), source);
            var (code, errors) = Check(clang, dir, "broken.cu");
            Assert.NotEqual(0, code);
            Assert.Contains("load_vv", errors);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
