using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace MosaicBert.Tokenizers.Unicode;

/// <summary>Per-code-point character classes used by BERT's basic tokenization.</summary>
[Flags]
internal enum CharClass : byte
{
    None = 0,
    /// <summary>Dropped by clean-up (control, format, private-use and unassigned characters, NUL, U+FFFD).</summary>
    Removed = 1,
    /// <summary>Turned into a space by clean-up (\t, \n, \r and Unicode White_Space).</summary>
    CleanSpace = 2,
    /// <summary>CJK ideograph: surrounded by spaces so it becomes a word of its own.</summary>
    Cjk = 4,
    /// <summary>Punctuation (ASCII punctuation or Unicode P*): a word of its own.</summary>
    Punctuation = 8,
    /// <summary>Whitespace for the pre-tokenizer: ends a word and is dropped.</summary>
    Space = 16,
}

/// <summary>
/// The Unicode data BERT tokenization needs, exactly as Hugging Face <c>tokenizers</c> sees it.
/// </summary>
/// <remarks>
/// HF's classes come from Rust's std and from crates pinned to older Unicode versions (for example, emoji added after
/// Unicode 9 count as unassigned and are removed by clean-up). .NET's own tables are newer, so deriving the classes
/// from <see cref="System.Globalization.CharUnicodeInfo"/> would give different ids. Instead the table is captured
/// from HF itself, one code point at a time, by tests/reference/make_tokenizer_reference.py, and embedded here.
/// It also makes the tokenizer independent of ICU (the project runs with invariant globalization).
/// </remarks>
internal sealed class BertUnicodeTable
{
    private const int BmpSize = 0x10000;

    private readonly byte[] _bmpClass = new byte[BmpSize];
    private readonly int[] _astralRangeStart;
    private readonly byte[] _astralRangeClass;
    // Mappings into _pool: entry = (offset << 3) | length, 0 = identity. BMP by array, astral by dictionary.
    private readonly int[] _bmpStrip = new int[BmpSize];
    private readonly int[] _bmpLower = new int[BmpSize];
    private readonly Dictionary<int, int> _astralStrip = [];
    private readonly Dictionary<int, int> _astralLower = [];
    private readonly Dictionary<int, byte> _combiningClass = [];
    private readonly List<int> _pool = [0];

    /// <summary>Where the table came from (HF tokenizers version, Unicode version).</summary>
    public string Description { get; }

    public static BertUnicodeTable Instance { get; } = Load();

    private BertUnicodeTable(byte[] data)
    {
        var r = new Reader(data);
        if (r.Bytes(4).SequenceEqual("BUT1"u8) is false || r.U32() != 1)
            throw new InvalidDataException("embedded bert-unicode.bin: wrong magic or version");
        Description = Encoding.UTF8.GetString(r.Bytes(r.U16()));

        int nRanges = (int)r.U32();
        var starts = new int[nRanges];
        var classes = new byte[nRanges];
        for (int i = 0; i < nRanges; i++)
        {
            starts[i] = (int)r.U32();
            classes[i] = r.U8();
        }
        // Expand the ranges over the BMP; keep the astral part as ranges for binary search.
        for (int i = 0; i < nRanges && starts[i] < BmpSize; i++)
        {
            int end = i + 1 < nRanges ? Math.Min(starts[i + 1], BmpSize) : BmpSize;
            _bmpClass.AsSpan(starts[i], end - starts[i]).Fill(classes[i]);
        }
        int firstAstral = Array.FindLastIndex(starts, s => s <= BmpSize);
        _astralRangeStart = starts[firstAstral..];
        _astralRangeClass = classes[firstAstral..];

        ReadMapping(ref r, _bmpStrip, _astralStrip);
        ReadMapping(ref r, _bmpLower, _astralLower);
        int nCcc = (int)r.U32();
        for (int i = 0; i < nCcc; i++)
            _combiningClass[(int)r.U32()] = r.U8();
        if (!r.AtEnd)
            throw new InvalidDataException("embedded bert-unicode.bin: trailing bytes");
    }

    private void ReadMapping(ref Reader r, int[] bmp, Dictionary<int, int> astral)
    {
        int n = (int)r.U32();
        for (int i = 0; i < n; i++)
        {
            int cp = (int)r.U32();
            int len = r.U8();
            int entry = (_pool.Count << 3) | len;
            for (int k = 0; k < len; k++)
                _pool.Add((int)r.U32());
            if (len == 0)
                entry = 1 << 3; // maps to nothing: a non-zero entry of length 0
            if (cp < BmpSize) bmp[cp] = entry;
            else astral[cp] = entry;
        }
    }

    private static BertUnicodeTable Load()
    {
        using var stream = typeof(BertUnicodeTable).Assembly.GetManifestResourceStream("MosaicBert.Tokenizers.bert-unicode.bin")
            ?? throw new InvalidDataException("embedded resource bert-unicode.bin is missing from MosaicBert.Tokenizers");
        using var z = new ZLibStream(stream, CompressionMode.Decompress);
        using var ms = new MemoryStream();
        z.CopyTo(ms);
        return new BertUnicodeTable(ms.ToArray());
    }

    public CharClass ClassOf(int cp)
    {
        if (cp < BmpSize) return (CharClass)_bmpClass[cp];
        int i = Array.BinarySearch(_astralRangeStart, cp);
        if (i < 0) i = ~i - 1;
        return (CharClass)_astralRangeClass[i];
    }

    /// <summary>Accent stripping of one code point: NFD, then drop non-spacing marks (Mn).</summary>
    /// <returns>False when the code point maps to itself.</returns>
    public bool TryStrip(int cp, out ReadOnlySpan<int> mapped) => TryMap(cp, _bmpStrip, _astralStrip, out mapped);

    /// <summary>Lower-casing of one code point (full mapping: U+0130 gives two code points).</summary>
    public bool TryLower(int cp, out ReadOnlySpan<int> mapped) => TryMap(cp, _bmpLower, _astralLower, out mapped);

    /// <summary>Canonical combining class; only non-zero for code points that survive accent stripping.</summary>
    public int CombiningClass(int cp) => _combiningClass.Count > 0 && _combiningClass.TryGetValue(cp, out byte c) ? c : 0;

    private bool TryMap(int cp, int[] bmp, Dictionary<int, int> astral, out ReadOnlySpan<int> mapped)
    {
        int entry;
        if (cp < BmpSize) entry = bmp[cp];
        else if (!astral.TryGetValue(cp, out entry)) entry = 0;
        if (entry == 0)
        {
            mapped = default;
            return false;
        }
        int len = entry & 7;
        mapped = len == 0 ? default : System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_pool).Slice(entry >> 3, len);
        return true;
    }

    private ref struct Reader(byte[] data)
    {
        private readonly byte[] _data = data;
        private int _pos;
        public readonly bool AtEnd => _pos == _data.Length;
        public ReadOnlySpan<byte> Bytes(int n)
        {
            if (_pos + n > _data.Length) throw new InvalidDataException("embedded bert-unicode.bin is truncated");
            var s = _data.AsSpan(_pos, n);
            _pos += n;
            return s;
        }
        public byte U8() => Bytes(1)[0];
        public ushort U16() => BinaryPrimitives.ReadUInt16LittleEndian(Bytes(2));
        public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4));
    }
}
