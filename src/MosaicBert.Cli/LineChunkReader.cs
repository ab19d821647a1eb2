namespace MosaicBert.Cli;

/// <summary>
/// Reads a stream as chunks of whole lines of bytes, without decoding. Lines end at '\n'; a '\r' before it is
/// dropped, as is a UTF-8 byte order mark at the very start. A last line without '\n' still counts; a final '\n'
/// does not open an empty line after it.
/// </summary>
/// <remarks>
/// A chunk is every complete line the buffer holds after one read, so lines reach the caller as soon as they
/// arrive (an interactive pipe is not held back until a megabyte has gathered). The lines of a chunk stay valid
/// until the next call.
/// </remarks>
internal sealed class LineChunkReader
{
    /// <summary>Longest line accepted; longer ones are an error rather than an attempt to buffer them whole.</summary>
    public const int DefaultMaxLineBytes = 256 << 20;

    private readonly Stream _stream;
    private readonly string _sourceName;
    private readonly int _maxLineBytes;
    private byte[] _buffer;
    private int _length;   // valid bytes in _buffer
    private int _consumed; // bytes at the front of _buffer handed out in the previous chunk
    private bool _eof;
    private bool _atStart = true;
    private long _nextLine = 1;

    public LineChunkReader(Stream stream, string sourceName, int bufferSize = 1 << 20, int maxLineBytes = DefaultMaxLineBytes)
    {
        _stream = stream;
        _sourceName = sourceName;
        _maxLineBytes = maxLineBytes;
        _buffer = new byte[Math.Max(bufferSize, 16)];
    }

    /// <summary>The buffer the current chunk's lines point into.</summary>
    public byte[] Buffer => _buffer;

    /// <summary>
    /// Reads the next chunk: fills <paramref name="lines"/> with (start, length) of each line in <see cref="Buffer"/>
    /// and <paramref name="firstLineNumber"/> with the 1-based number of the first. False at the end of the stream.
    /// </summary>
    /// <exception cref="CliException">A line is longer than the limit.</exception>
    public bool ReadChunk(List<(int Start, int Length)> lines, out long firstLineNumber)
    {
        lines.Clear();
        firstLineNumber = _nextLine;
        if (_consumed > 0)
        {
            System.Buffer.BlockCopy(_buffer, _consumed, _buffer, 0, _length - _consumed);
            _length -= _consumed;
            _consumed = 0;
        }
        int scanned = 0; // bytes already known to hold no '\n'
        while (true)
        {
            if (_atStart && (_length >= 3 || _eof))
            {
                _atStart = false;
                if (_buffer.AsSpan(0, _length).StartsWith("\uFEFF"u8))
                {
                    System.Buffer.BlockCopy(_buffer, 3, _buffer, 0, _length - 3);
                    _length -= 3;
                }
            }
            if (!_atStart)
            {
                int last = _buffer.AsSpan(scanned, _length - scanned).LastIndexOf((byte)'\n');
                if (last >= 0)
                {
                    Split(scanned + last + 1, lines);
                    return true;
                }
                scanned = _length;
                if (_length > _maxLineBytes)
                    throw new CliException($"{_sourceName}:{_nextLine}: the line is longer than {_maxLineBytes >> 20} MiB");
                if (_eof)
                {
                    if (_length == 0) return false;
                    Split(_length, lines);
                    return true;
                }
            }
            if (_length == _buffer.Length)
                Array.Resize(ref _buffer, (int)Math.Min(Array.MaxLength, (long)_buffer.Length * 2));
            int n = _stream.Read(_buffer, _length, _buffer.Length - _length);
            if (n == 0) _eof = true;
            else _length += n;
        }
    }

    private void Split(int end, List<(int Start, int Length)> lines)
    {
        var span = _buffer.AsSpan(0, end);
        int start = 0;
        while (start < end)
        {
            int nl = span[start..].IndexOf((byte)'\n');
            int stop = nl < 0 ? end : start + nl;
            int length = stop - start;
            if (length > 0 && span[stop - 1] == (byte)'\r') length--;
            if (length > _maxLineBytes)
                throw new CliException($"{_sourceName}:{_nextLine + lines.Count}: the line is longer than {_maxLineBytes >> 20} MiB");
            lines.Add((start, length));
            start = nl < 0 ? end : stop + 1;
        }
        _consumed = end;
        _nextLine += lines.Count;
    }
}
