#!/usr/bin/env python3
"""Reference data for MosaicBert.Tokenizers, made with Hugging Face `tokenizers` (run on the GPU machine,
which has tokenizers 0.23; nothing here needs a GPU).

Writes two files into --out:

  bert-unicode.bin
      HF's BertNormalizer / BertPreTokenizer behaviour for every Unicode scalar value, captured by asking HF itself
      one code point at a time. The C# tokenizer embeds this table so its ids match HF even where HF's Unicode data
      (Rust's std, the `unicode_categories` and `unicode-normalization-alignments` crates) differs from .NET's.
      Layout (little-endian, the whole file zlib-compressed):
        "BUT1", u32 version=1, u16 n + n bytes UTF-8 description
        u32 nRanges, nRanges x (u32 firstCodePoint, u8 flags)       flags per code point, run-length coded
        u32 nStrip,  nStrip  x (u32 cp, u8 len, len x u32)          NFD then drop Mn (HF strip_accents), when != cp
        u32 nLower,  nLower  x (u32 cp, u8 len, len x u32)          HF lowercase, when != cp
        u32 nCcc,    nCcc    x (u32 cp, u8 ccc)                     canonical combining class of code points that
                                                                    survive accent stripping with ccc != 0
      flags: 1 removed by clean_text, 2 turned into a space by clean_text, 4 CJK (padded with spaces),
             8 punctuation (isolated by the pre-tokenizer), 16 whitespace (splits words, removed).

  tokenizer-parity.jsonl.gz
      One JSON object per encoding: {"src", "maxlen", "strat", "ids", "n0", "off"} or {..., "err"} when HF refused.
      src: "edge:<line>" (tests/reference/edge_cases.jsonl), "sst2:<row>" (SST-2 dev.tsv, row 0 = first data row),
      "mrpc:<row>" (MRPC dev.tsv), "wiki:<file>:<line>" (0-based line of the uncompressed WikiExtractor file).
      ids: with [CLS]/[SEP]; n0: number of leading type-id-0 tokens (the rest are type 1; checked here);
      off: flattened [start, end] pairs in UTF-16 code units of the original text (HF gives code points).
      maxlen 0 = no truncation.

Usage: make_tokenizer_reference.py --vocab VOCAB --glue DIR --wiki DIR --edge FILE --out DIR
"""
import argparse
import gzip
import io
import json
import os
import struct
import sys
import time
import unicodedata
import zlib

import tokenizers
from tokenizers import BertWordPieceTokenizer
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

REMOVED, CLEAN_SPACE, CJK, PUNCT, SPLIT_SPACE = 1, 2, 4, 8, 16


def unicode_table():
    clean = BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    cjk = BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    strip = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    lower = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True)
    pre = BertPreTokenizer()
    flags = bytearray(0x110000)
    strip_map, lower_map, ccc = {}, {}, {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue  # not a scalar value; the C# tokenizer rejects lone surrogates
        ch = chr(cp)
        f = 0
        c = clean.normalize_str(ch)
        if c == "":
            f |= REMOVED
        elif c == " ":
            f |= CLEAN_SPACE
        elif c != ch:
            raise SystemExit(f"clean_text maps U+{cp:04X} to {c!r}: the table format does not allow that")
        if cjk.normalize_str(ch) == " " + ch + " ":
            f |= CJK
        parts = [p for p, _ in pre.pre_tokenize_str("a" + ch + "b")]
        if parts == ["a", "b"]:
            f |= SPLIT_SPACE
        elif parts == ["a", ch, "b"]:
            f |= PUNCT
        elif parts != ["a" + ch + "b"]:
            raise SystemExit(f"pre-tokenizer splits U+{cp:04X} as {parts!r}: unexpected")
        flags[cp] = f
        s = strip.normalize_str(ch)
        if s != ch:
            strip_map[cp] = [ord(x) for x in s]
            for x in s:
                if unicodedata.combining(x):
                    ccc[ord(x)] = unicodedata.combining(x)
        lo = lower.normalize_str(ch)
        if lo != ch:
            lower_map[cp] = [ord(x) for x in lo]
    # A code point that survives stripping unchanged can still be a non-starter (e.g. a spacing mark with ccc != 0);
    # canonical reordering then matters between survivors.
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF or cp in strip_map:
            continue
        k = unicodedata.combining(chr(cp))
        if k:
            ccc[cp] = k
    out = io.BytesIO()
    desc = (f"tokenizers {tokenizers.__version__}; python unicodedata {unicodedata.unidata_version}").encode()
    out.write(b"BUT1" + struct.pack("<IH", 1, len(desc)) + desc)
    ranges = []
    for cp in range(0x110000):
        if cp == 0 or flags[cp] != flags[cp - 1]:
            ranges.append((cp, flags[cp]))
    out.write(struct.pack("<I", len(ranges)))
    for cp, f in ranges:
        out.write(struct.pack("<IB", cp, f))
    for m in (strip_map, lower_map):
        out.write(struct.pack("<I", len(m)))
        for cp in sorted(m):
            seq = m[cp]
            out.write(struct.pack("<IB", cp, len(seq)) + struct.pack(f"<{len(seq)}I", *seq))
    out.write(struct.pack("<I", len(ccc)))
    for cp in sorted(ccc):
        out.write(struct.pack("<IB", cp, ccc[cp]))
    stats = dict(ranges=len(ranges), strip=len(strip_map), lower=len(lower_map), ccc=len(ccc),
                 removed=sum(1 for x in flags if x & REMOVED), punct=sum(1 for x in flags if x & PUNCT))
    return zlib.compress(out.getvalue(), 9), stats


def read_lines(path):
    """Lines split on '\\n' only, as the C# test reads them."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8").split("\n")


def tsv_rows(path):
    lines = read_lines(path)[1:]  # header
    return [l.split("\t") for l in lines if l != ""]


def wiki_paragraphs(wiki_dir, files, every, per_file):
    """(name, line, text): body paragraphs (not <doc> tags, not the title line after <doc>)."""
    out = []
    for name in files:
        lines = read_lines(os.path.join(wiki_dir, name))
        k = 0
        taken = 0
        for i, line in enumerate(lines):
            if line == "" or line.startswith("<doc ") or line.startswith("</doc>"):
                continue
            if i > 0 and lines[i - 1].startswith("<doc "):
                continue
            if k % every == 0:
                out.append((name, i, line))
                taken += 1
                if taken == per_file:
                    break
            k += 1
    return out


def utf16_offsets(text, offsets):
    pos = [0] * (len(text) + 1)
    for i, ch in enumerate(text):
        pos[i + 1] = pos[i] + (2 if ord(ch) > 0xFFFF else 1)
    flat = []
    for s, e in offsets:
        flat += [pos[s], pos[e]]
    return flat


def encode(tok, src, a, b, maxlen, strat):
    if maxlen:
        tok.enable_truncation(maxlen, strategy=strat)
    else:
        tok.no_truncation()
    rec = {"src": src, "maxlen": maxlen, "strat": strat}
    try:
        enc = tok.encode(a, b) if b is not None else tok.encode(a)
    except Exception as e:  # HF refuses some truncations (sequence too short, no second sequence)
        rec["err"] = str(e)
        return rec
    n0 = enc.type_ids.index(1) if 1 in enc.type_ids else len(enc.type_ids)
    assert enc.type_ids == [0] * n0 + [1] * (len(enc.type_ids) - n0), src
    rec["ids"] = enc.ids
    rec["n0"] = n0
    # Offsets are into a or b; the C# side knows which from the type id and the [SEP] positions.
    rec["off"] = utf16_offsets(a, enc.offsets[:n0]) + (utf16_offsets(b, enc.offsets[n0:]) if b is not None else [])
    return rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--glue", required=True)
    ap.add_argument("--wiki", required=True)
    ap.add_argument("--edge", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    t = time.time()
    table, stats = unicode_table()
    with open(os.path.join(args.out, "bert-unicode.bin"), "wb") as f:
        f.write(table)
    print(json.dumps({"unicode_table_bytes": len(table), "seconds": round(time.time() - t, 1), **stats}), flush=True)

    tok = BertWordPieceTokenizer(args.vocab, lowercase=True, clean_text=True, handle_chinese_chars=True,
                                 strip_accents=None)
    recs = []
    edge = [json.loads(l) for l in read_lines(args.edge) if l]
    for i, e in enumerate(edge):
        for maxlen, strat in [(0, "longest_first"), (16, "longest_first"), (16, "only_first"), (16, "only_second")]:
            recs.append(encode(tok, f"edge:{i}", e["a"], e.get("b"), maxlen, strat))
    for i, row in enumerate(tsv_rows(os.path.join(args.glue, "SST-2", "dev.tsv"))):
        recs.append(encode(tok, f"sst2:{i}", row[0], None, 0, "longest_first"))
    for i, row in enumerate(tsv_rows(os.path.join(args.glue, "MRPC", "dev.tsv"))):
        for maxlen, strat in [(0, "longest_first"), (128, "longest_first"), (40, "longest_first"),
                              (40, "only_first"), (40, "only_second")]:
            recs.append(encode(tok, f"mrpc:{i}", row[3], row[4], maxlen, strat))
    files = sorted(n for n in os.listdir(args.wiki) if n.startswith("wiki_"))[:10]
    for name, line, text in wiki_paragraphs(args.wiki, files, every=3, per_file=200):
        for maxlen in (0, 128):
            recs.append(encode(tok, f"wiki:{name}:{line}", text, None, maxlen, "longest_first"))
    path = os.path.join(args.out, "tokenizer-parity.jsonl.gz")
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as f:
        for r in recs:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    print(json.dumps({"records": len(recs), "errors": sum(1 for r in recs if "err" in r),
                      "tokens": sum(len(r.get("ids", [])) for r in recs), "fixture_bytes": os.path.getsize(path),
                      "tokenizers": tokenizers.__version__}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
