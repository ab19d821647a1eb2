using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;

namespace MosaicBert.Hub;

/// <summary>
/// HTTP GET of one file into a partial file that survives failures: a dropped connection is retried, resuming with a
/// Range request from the bytes already on disk; the partial file is opened exclusively (a second process waits for
/// the first); the caller renames it to its final name only once complete and verified, so a final name never holds
/// a partial file. Redirects are followed by hand so that the bearer token is sent only to the host it was meant for
/// (the hub), never to the storage host it redirects to.
/// </summary>
internal sealed class HttpDownloader : IDisposable
{
    private const int MaxRedirects = 10;
    private readonly HttpClient _http;
    private readonly TimeSpan _timeout;

    public HttpDownloader(TimeSpan timeout)
    {
        _timeout = timeout;
        _http = new HttpClient(new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            ConnectTimeout = timeout,
        })
        {
            Timeout = System.Threading.Timeout.InfiniteTimeSpan,
        };
        _http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("mosaicbert", typeof(HttpDownloader).Assembly.GetName().Version?.ToString(3) ?? "0"));
        _http.DefaultRequestHeaders.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity"));
    }

    /// <summary>
    /// Sends a request and follows redirects: relative ones always (keeping the token: same host), absolute ones only
    /// when <paramref name="followAbsoluteRedirects"/> (dropping the token when the host changes). Returns the last
    /// response (a redirect when it was not followed) and the URL it came from.
    /// </summary>
    public async Task<(HttpResponseMessage Response, Uri Url)> SendAsync(HttpMethod method, Uri url, string? token, long rangeStart,
        bool followAbsoluteRedirects, CancellationToken cancellationToken)
    {
        var authority = url.GetLeftPart(UriPartial.Authority);
        for (var hop = 0; ; hop++)
        {
            using var request = new HttpRequestMessage(method, url);
            if (token is not null && url.GetLeftPart(UriPartial.Authority) == authority)
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            if (rangeStart > 0) request.Headers.Range = new RangeHeaderValue(rangeStart, null);
            using var headersCts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            headersCts.CancelAfter(_timeout);
            HttpResponseMessage response;
            try
            {
                response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, headersCts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException($"{method} {url}: no response within {_timeout.TotalSeconds:0} s.", e);
            }
            var status = (int)response.StatusCode;
            if (status is < 300 or >= 400 || response.Headers.Location is not { } location) return (response, url);
            var relative = !location.IsAbsoluteUri;
            if (!relative && !followAbsoluteRedirects) return (response, url);
            if (hop == MaxRedirects)
            {
                response.Dispose();
                throw new HubDownloadException($"{method} {url}: more than {MaxRedirects} redirects.", url.ToString());
            }
            response.Dispose();
            url = relative ? new Uri(url, location) : location;
        }
    }

    /// <summary>
    /// Downloads <paramref name="url"/> (following redirects) into <paramref name="partialPath"/>, resuming from its
    /// current length. Returns when the file is complete (its length is <paramref name="expectedSize"/> or the
    /// server's), or returns early when <paramref name="finalPath"/> appears while waiting for another process.
    /// </summary>
    /// <remarks>A non-success response becomes <paramref name="describeError"/>'s exception (retried only for 5xx/429).</remarks>
    public async Task DownloadAsync(Uri url, string? token, string partialPath, string finalPath, long? expectedSize, string displayName,
        IProgress<DownloadProgress>? progress, int maxAttempts, Func<HttpResponseMessage, Uri, Exception> describeError, CancellationToken cancellationToken)
    {
        Exception? last = null, fatal = null;
        long kept = 0;
        for (var attempt = 1; attempt <= maxAttempts; attempt++)
        {
            await using var file = await OpenExclusiveAsync(partialPath, finalPath, cancellationToken).ConfigureAwait(false);
            if (file is null) return; // another process finished it
            var have = file.Length;
            if (expectedSize is long e)
            {
                if (have > e) { file.SetLength(0); have = 0; }
                if (have == e && e > 0) return;
            }
            try
            {
                var (response, source) = await SendAsync(HttpMethod.Get, url, token, have, followAbsoluteRedirects: true, cancellationToken).ConfigureAwait(false);
                using (response)
                {
                    if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable && have > 0)
                    {
                        // The bytes on disk do not fit the file (it changed): start over.
                        file.SetLength(0);
                        throw new TransientDownloadException($"{source}: the server refused to resume at byte {have}; restarting.");
                    }
                    if (!response.IsSuccessStatusCode)
                    {
                        var error = describeError(response, source);
                        if ((int)response.StatusCode is >= 500 or 429) throw new TransientDownloadException(error.Message, error);
                        fatal = error;
                        throw error;
                    }
                    if (response.StatusCode == HttpStatusCode.PartialContent)
                    {
                        if (response.Content.Headers.ContentRange?.From != have)
                        {
                            file.SetLength(0);
                            throw new TransientDownloadException($"{source}: the server resumed at the wrong byte ({response.Content.Headers.ContentRange}); restarting.");
                        }
                    }
                    else
                    {
                        file.SetLength(0);
                        have = 0;
                    }
                    var total = expectedSize ?? (response.Content.Headers.ContentLength is long length ? have + length : null);
                    file.Position = have;
                    await CopyAsync(response, file, have, total, displayName, progress, cancellationToken).ConfigureAwait(false);
                    await file.FlushAsync(cancellationToken).ConfigureAwait(false);
                    kept = file.Length;
                    if (total is long t && file.Length != t)
                    {
                        if (file.Length > t)
                        {
                            file.SetLength(0);
                            throw new HubDownloadException($"{source} sent {kept} bytes but the file has {t}; the partial download was discarded.", source.ToString());
                        }
                        throw new TransientDownloadException($"{source}: the connection closed after {kept} of {t} bytes.");
                    }
                    return;
                }
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested && !ReferenceEquals(ex, fatal) && IsTransient(ex))
            {
                last = ex;
                kept = file.Length;
            }
            if (attempt < maxAttempts)
                await Task.Delay(TimeSpan.FromMilliseconds(200 * (1 << Math.Min(attempt - 1, 5))), cancellationToken).ConfigureAwait(false);
        }
        throw new HubDownloadException(
            $"Downloading {url} failed {maxAttempts} time(s) (last: {last?.Message}); the {kept} bytes received are kept in {partialPath} and the next attempt resumes from there.",
            url.ToString(), innerException: last);
    }

    private static bool IsTransient(Exception e) =>
        e is TransientDownloadException or HttpRequestException or TimeoutException || (e is IOException && e is not HubDownloadException) ||
        e is OperationCanceledException; // a stalled read (the caller's own cancellation is excluded by the filter)

    private async Task CopyAsync(HttpResponseMessage response, FileStream file, long have, long? total, string displayName,
        IProgress<DownloadProgress>? progress, CancellationToken cancellationToken)
    {
        await using var body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        var buffer = new byte[1 << 16];
        var lastReport = Environment.TickCount64;
        progress?.Report(new DownloadProgress(displayName, have, total));
        using var readCts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        while (true)
        {
            readCts.CancelAfter(_timeout); // a stalled connection counts as a dropped one
            var n = await body.ReadAsync(buffer, readCts.Token).ConfigureAwait(false);
            if (n == 0) break;
            await file.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
            have += n;
            if (progress is not null && Environment.TickCount64 - lastReport >= 100)
            {
                lastReport = Environment.TickCount64;
                progress.Report(new DownloadProgress(displayName, have, total));
            }
        }
        progress?.Report(new DownloadProgress(displayName, have, total));
    }

    /// <summary>Opens the partial file exclusively; while another process holds it, waits (returning null if the
    /// final file appears meanwhile).</summary>
    private static async Task<FileStream?> OpenExclusiveAsync(string partialPath, string finalPath, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(partialPath)!);
        while (true)
        {
            if (File.Exists(finalPath)) return null;
            try
            {
                return new FileStream(partialPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1 << 16, useAsync: true);
            }
            catch (IOException) when (File.Exists(partialPath))
            {
                await Task.Delay(500, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>The SHA-256 of a file, lower-case hex.</summary>
    public static string Sha256(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    public void Dispose() => _http.Dispose();

    /// <summary>A failure worth another attempt (dropped connection, 5xx, a refused resume).</summary>
    private sealed class TransientDownloadException(string message, Exception? inner = null) : IOException(message, inner);
}
