using System.Text.RegularExpressions;

namespace MosaicBert.Hub;

/// <summary>
/// A model repository, or a file in one, written as Hugging Face's <c>HfFileSystem</c> writes them:
/// <c>hf://org/name</c>, <c>hf://org/name@revision</c>, <c>hf://org/name@revision/path/in/repo</c>. A revision with
/// a slash (<c>refs/pr/1</c>) is written URL-encoded (<c>refs%2Fpr%2F1</c>).
/// </summary>
/// <param name="RepoId">"org/name" (or a legacy one-part name such as "bert-base-uncased" for a model).</param>
/// <param name="Revision">A branch, tag or commit hash; "main" when not given.</param>
/// <param name="FileName">The file in the repository, for file references; null for a model reference.</param>
public sealed partial record HubReference(string RepoId, string Revision, string? FileName)
{
    /// <summary>The prefix that marks a hub reference in a path option.</summary>
    public const string Scheme = "hf://";

    /// <summary>The revision used when none is given.</summary>
    public const string DefaultRevision = "main";

    /// <summary>Whether <paramref name="path"/> starts with <c>hf://</c>.</summary>
    public static bool IsHubPath(string? path) => path is not null && path.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase);

    /// <summary>Parses <c>hf://org/name[@revision]</c> (a whole model repository).</summary>
    /// <exception cref="FormatException">Not of that form; the message quotes the text.</exception>
    public static HubReference ParseModel(string path)
    {
        var (segments, text) = Split(path);
        if (segments.Length is < 1 or > 2)
            throw new FormatException($"'{text}' is not a model reference: expected hf://org/name or hf://org/name@revision.");
        var (repo, revision) = SplitRevision(string.Join('/', segments), text);
        return new HubReference(ValidateRepoId(repo, text), revision, null);
    }

    /// <summary>Parses <c>hf://org/name[@revision]/path/in/repo</c> (one file; the repository id must have two parts).</summary>
    /// <exception cref="FormatException">Not of that form; the message quotes the text.</exception>
    public static HubReference ParseFile(string path)
    {
        var (segments, text) = Split(path);
        if (segments.Length < 3)
            throw new FormatException($"'{text}' is not a file reference: expected hf://org/name[@revision]/file (e.g. hf://google-bert/bert-base-uncased/vocab.txt).");
        var (repo, revision) = SplitRevision(segments[0] + "/" + segments[1], text);
        return new HubReference(ValidateRepoId(repo, text), revision, ValidateFileName(string.Join('/', segments[2..]), text));
    }

    /// <summary>Checks a repository id ("org/name" or "name"): letters, digits, '-', '_', '.'; no "--" or "..".</summary>
    /// <exception cref="FormatException">Invalid id.</exception>
    public static string ValidateRepoId(string repoId, string? context = null)
    {
        if (!RepoIdPattern().IsMatch(repoId) || repoId.Contains("--", StringComparison.Ordinal) || repoId.Contains("..", StringComparison.Ordinal) ||
            repoId.Split('/').Any(p => p.Length > 96 || p.EndsWith('.') || p.EndsWith('-')))
            throw new FormatException($"'{repoId}'{(context is null ? "" : $" (in '{context}')")} is not a valid repository id: expected 'org/name' with letters, digits, '-', '_' and '.'.");
        return repoId;
    }

    internal static string ValidateFileName(string fileName, string? context = null)
    {
        var parts = fileName.Split('/');
        if (fileName.Length == 0 || parts.Any(p => p.Length == 0 || p is "." or ".." || p.Contains('\\') || p.Contains('\0')))
            throw new FormatException($"'{fileName}'{(context is null ? "" : $" (in '{context}')")} is not a valid file path in a repository.");
        return fileName;
    }

    internal static bool IsCommitHash(string revision) => CommitPattern().IsMatch(revision);

    /// <inheritdoc/>
    public override string ToString() =>
        Scheme + RepoId + (Revision == DefaultRevision ? "" : "@" + Uri.EscapeDataString(Revision)) + (FileName is null ? "" : "/" + FileName);

    private static (string[] Segments, string Text) Split(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!IsHubPath(path)) throw new FormatException($"'{path}' does not start with {Scheme}.");
        var rest = path[Scheme.Length..].TrimEnd('/');
        if (rest.StartsWith("datasets/", StringComparison.Ordinal) || rest.StartsWith("spaces/", StringComparison.Ordinal))
            throw new FormatException($"'{path}': only model repositories are supported, not datasets or spaces.");
        return (rest.Split('/'), path);
    }

    private static (string Repo, string Revision) SplitRevision(string repo, string text)
    {
        var at = repo.IndexOf('@', StringComparison.Ordinal);
        if (at < 0) return (repo, DefaultRevision);
        var revision = Uri.UnescapeDataString(repo[(at + 1)..]);
        if (revision.Length == 0) throw new FormatException($"'{text}': empty revision after '@'.");
        return (repo[..at], revision);
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")]
    private static partial Regex RepoIdPattern();

    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex CommitPattern();
}
