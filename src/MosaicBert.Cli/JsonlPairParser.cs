using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace MosaicBert.Cli;

/// <summary>
/// Parses one input line of <c>mosaicbert tokenize</c>: a JSON object with a string field <c>"a"</c> and an optional
/// string (or null) field <c>"b"</c>. Other fields are ignored. Failures come back as a message without location;
/// the caller prefixes file and line.
/// </summary>
internal static class JsonlPairParser
{
    private static readonly JsonReaderOptions s_options = new() { CommentHandling = JsonCommentHandling.Disallow, MaxDepth = 64 };

    /// <summary>Parses a line (UTF-8, without its line break).</summary>
    /// <returns>Null on success, else what is wrong.</returns>
    public static string? TryParse(ReadOnlySpan<byte> line, out string a, out string? b)
    {
        a = "";
        b = null;
        if (line.Trim(" \t\r\n\f\v"u8).IsEmpty)
            return "blank line; every line must hold a JSON object such as {\"a\": \"text\"} (output lines match input lines one to one)";
        if (!Utf8.IsValid(line))
            return $"not valid UTF-8 (byte {InvalidUtf8Offset(line)} of the line)";

        bool haveA = false, haveB = false;
        string? aValue = null;
        try
        {
            var reader = new Utf8JsonReader(line, s_options);
            reader.Read();
            if (reader.TokenType != JsonTokenType.StartObject)
                return $"expected a JSON object such as {{\"a\": \"text\"}}, found {Describe(reader.TokenType)}";
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                bool isA = reader.ValueTextEquals("a"u8);
                bool isB = !isA && reader.ValueTextEquals("b"u8);
                reader.Read();
                if (isA)
                {
                    if (haveA) return "field \"a\" appears twice";
                    haveA = true;
                    if (reader.TokenType != JsonTokenType.String)
                        return $"field \"a\" is missing or not a string (found {Describe(reader.TokenType)})";
                    aValue = Unescape(ref reader);
                }
                else if (isB)
                {
                    if (haveB) return "field \"b\" appears twice";
                    haveB = true;
                    if (reader.TokenType == JsonTokenType.String) b = Unescape(ref reader);
                    else if (reader.TokenType != JsonTokenType.Null)
                        return $"field \"b\" is not a string or null (found {Describe(reader.TokenType)})";
                }
                else
                {
                    reader.Skip();
                }
            }
            // The object is closed; anything after it but whitespace makes Read throw.
            if (reader.Read())
                return $"invalid JSON: unexpected {Describe(reader.TokenType)} after the object";
        }
        catch (JsonException e)
        {
            return $"invalid JSON: {StripPosition(e.Message)} (byte {e.BytePositionInLine ?? 0} of the line)";
        }
        if (!haveA || aValue is null)
            return "field \"a\" is missing or not a string";
        a = aValue;
        if (LoneSurrogate(a) is string sa) return $"field \"a\" {sa}";
        if (b is not null && LoneSurrogate(b) is string sb) return $"field \"b\" {sb}";
        return null;
    }

    /// <summary>Describes the first lone surrogate of <paramref name="text"/>, or returns null when there is none.</summary>
    internal static string? LoneSurrogate(string text)
    {
        int i = text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF');
        while (i >= 0 && i < text.Length)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                i += 2;
                int next = text.AsSpan(i).IndexOfAnyInRange('\uD800', '\uDFFF');
                i = next < 0 ? -1 : i + next;
                continue;
            }
            return $"holds a lone surrogate U+{(int)c:X4} at UTF-16 index {i}; the text is not valid Unicode";
        }
        return null;
    }

    /// <summary>
    /// The string value at the reader, with JSON escapes decoded. Unlike <see cref="Utf8JsonReader.GetString"/>, a
    /// "\uD800" escape that is not half of a pair is kept as a lone surrogate (so it can be reported with its
    /// index) instead of throwing.
    /// </summary>
    private static string Unescape(ref Utf8JsonReader reader)
    {
        var raw = reader.ValueSpan; // one span: the reader reads a single line held in memory
        if (!reader.ValueIsEscaped) return Encoding.UTF8.GetString(raw);
        var sb = new StringBuilder(raw.Length);
        while (!raw.IsEmpty)
        {
            int bs = raw.IndexOf((byte)'\\');
            if (bs < 0)
            {
                sb.Append(Encoding.UTF8.GetString(raw));
                break;
            }
            if (bs > 0) sb.Append(Encoding.UTF8.GetString(raw[..bs]));
            // The reader has validated the escape: one of " \ / b f n r t, or u and four hex digits.
            byte e = raw[bs + 1];
            if (e == (byte)'u')
            {
                sb.Append((char)Convert.ToUInt16(Encoding.ASCII.GetString(raw.Slice(bs + 2, 4)), 16));
                raw = raw[(bs + 6)..];
                continue;
            }
            sb.Append(e switch
            {
                (byte)'b' => '\b',
                (byte)'f' => '\f',
                (byte)'n' => '\n',
                (byte)'r' => '\r',
                (byte)'t' => '\t',
                _ => (char)e, // " \ /
            });
            raw = raw[(bs + 2)..];
        }
        return sb.ToString();
    }

    private static int InvalidUtf8Offset(ReadOnlySpan<byte> bytes)
    {
        int i = 0;
        while (i < bytes.Length)
        {
            var status = System.Text.Rune.DecodeFromUtf8(bytes[i..], out _, out int consumed);
            if (status != System.Buffers.OperationStatus.Done) return i;
            i += consumed;
        }
        return i;
    }

    /// <summary>Drops System.Text.Json's " LineNumber: 0 | BytePositionInLine: 7." tail (the caller gives the position).</summary>
    private static string StripPosition(string message)
    {
        int i = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        return (i >= 0 ? message[..i] : message).TrimEnd();
    }

    private static string Describe(JsonTokenType type) => type switch
    {
        JsonTokenType.StartObject => "an object",
        JsonTokenType.StartArray => "an array",
        JsonTokenType.String => "a string",
        JsonTokenType.Number => "a number",
        JsonTokenType.True or JsonTokenType.False => "a boolean",
        JsonTokenType.Null => "null",
        _ => type.ToString(),
    };
}
