using System.Net;

namespace MosaicBert.Hub;

/// <summary>A download failed; the message names the URL (or the cache path) and says what to do.</summary>
public class HubDownloadException : IOException
{
    /// <summary>Creates the exception.</summary>
    public HubDownloadException(string message, string? url = null, HttpStatusCode? statusCode = null, Exception? innerException = null)
        : base(message, innerException)
    {
        Url = url;
        StatusCode = statusCode;
    }

    /// <summary>The URL that failed, if any.</summary>
    public string? Url { get; }

    /// <summary>The HTTP status, when the server answered.</summary>
    public HttpStatusCode? StatusCode { get; }
}

/// <summary>The repository (at that revision) has no such file: HTTP 404, or a 404 remembered in the cache.</summary>
public sealed class HubFileNotFoundException(string message, string url, string fileName)
    : HubDownloadException(message, url, HttpStatusCode.NotFound)
{
    /// <summary>The file asked for.</summary>
    public string FileName { get; } = fileName;
}
