using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace MosaicBert.Hub.Tests;

/// <summary>One request the loopback server received.</summary>
public sealed record RecordedRequest(string Method, string Path, string? Authorization, string? Range);

/// <summary>
/// An HTTP server on 127.0.0.1 (HttpListener) for tests: handlers by path prefix, every request recorded. Handlers
/// may abort a response midway to simulate a dropped connection.
/// </summary>
public sealed class LoopbackServer : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly List<(string Prefix, Action<HttpListenerContext> Handler)> _routes = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    public LoopbackServer()
    {
        // HttpListener needs a port up front: take a free one from the OS, then listen on it.
        for (var attempt = 0; ; attempt++)
        {
            var probe = new TcpListener(IPAddress.Loopback, 0);
            probe.Start();
            var port = ((IPEndPoint)probe.LocalEndpoint).Port;
            probe.Stop();
            try
            {
                _listener.Prefixes.Clear();
                _listener.Prefixes.Add($"http://127.0.0.1:{port}/");
                _listener.Start();
                BaseUrl = $"http://127.0.0.1:{port}";
                break;
            }
            catch (HttpListenerException) when (attempt < 10)
            {
            }
        }
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>http://127.0.0.1:PORT (no trailing slash).</summary>
    public string BaseUrl { get; } = "";

    public ConcurrentQueue<RecordedRequest> Requests { get; } = new();

    /// <summary>Routes requests whose path starts with <paramref name="prefix"/> (longest prefix wins; mapping a prefix again replaces its handler).</summary>
    public void Map(string prefix, Action<HttpListenerContext> handler)
    {
        lock (_routes)
        {
            _routes.RemoveAll(r => r.Prefix == prefix);
            _routes.Add((prefix, handler));
        }
    }

    /// <summary>Serves fixed bytes at a path (GET and HEAD; 404 elsewhere).</summary>
    public void MapFile(string path, byte[] content) => Map(path, c =>
    {
        if (c.Request.Url!.AbsolutePath != path) { Send(c, 404, []); return; }
        Send(c, 200, content);
    });

    public static void Send(HttpListenerContext c, int status, byte[] body, string? contentType = "application/octet-stream")
    {
        c.Response.StatusCode = status;
        if (contentType is not null) c.Response.ContentType = contentType;
        c.Response.ContentLength64 = body.Length;
        if (c.Request.HttpMethod != "HEAD" && body.Length > 0) c.Response.OutputStream.Write(body);
        c.Response.Close();
    }

    /// <summary>Sends the first <paramref name="count"/> bytes of a body announced as <paramref name="announced"/>
    /// bytes long, then drops the connection.</summary>
    public static void SendTruncated(HttpListenerContext c, int status, byte[] body, int count, long announced)
    {
        c.Response.StatusCode = status;
        c.Response.ContentLength64 = announced;
        c.Response.OutputStream.Write(body, 0, count);
        c.Response.OutputStream.Flush();
        c.Response.Abort();
    }

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync().ConfigureAwait(false);
            }
            catch (Exception) when (_stop.IsCancellationRequested || !_listener.IsListening)
            {
                return;
            }
            _ = Task.Run(() => Handle(context));
        }
    }

    private void Handle(HttpListenerContext context)
    {
        var path = context.Request.Url!.AbsolutePath;
        Requests.Enqueue(new RecordedRequest(context.Request.HttpMethod, Uri.UnescapeDataString(context.Request.RawUrl ?? path),
            context.Request.Headers["Authorization"], context.Request.Headers["Range"]));
        Action<HttpListenerContext>? handler;
        lock (_routes) handler = _routes.Where(r => path.StartsWith(r.Prefix, StringComparison.Ordinal)).OrderByDescending(r => r.Prefix.Length).Select(r => r.Handler).FirstOrDefault();
        try
        {
            if (handler is null) Send(context, 404, "no route"u8.ToArray(), "text/plain");
            else handler(context);
        }
        catch (Exception e) when (e is HttpListenerException or IOException or ObjectDisposedException or InvalidOperationException)
        {
            // The client went away (or the handler aborted on purpose).
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        _listener.Close();
        try
        {
            _loop.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
        }
    }
}
