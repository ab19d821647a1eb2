#!/usr/bin/env python3
"""Hugging Face `tokenizers` throughput on the WikiExtractor sample, for comparison with
`MosaicBert.Benchmarks tokenizer` in the same run on the same machine.

The corpus is every body line (not <doc> tags, not title lines) of the first --files files, encoded one paragraph
per sequence with [CLS]/[SEP] and no truncation, through encode_batch (Rust; Python overhead is one call per batch).
Thread count is fixed through RAYON_NUM_THREADS, which must be set before tokenizers starts its pool, so run this
script once per thread count. Prints one JSON line.
"""
import argparse
import gzip
import json
import os
import sys
import time


def paragraphs(wiki_dir, files):
    out = []
    for name in sorted(n for n in os.listdir(wiki_dir) if n.startswith("wiki_"))[:files]:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(os.path.join(wiki_dir, name), "rb") as f:
            lines = f.read().decode("utf-8").split("\n")
        for i, line in enumerate(lines):
            if line == "" or line.startswith("<doc ") or line.startswith("</doc>"):
                continue
            if i > 0 and lines[i - 1].startswith("<doc "):
                continue
            out.append(line)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--wiki", required=True)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    threads = os.environ.get("RAYON_NUM_THREADS", "all")

    import tokenizers
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(args.vocab, lowercase=True)
    texts = paragraphs(args.wiki, args.files)
    chars = sum(len(t) for t in texts)
    utf8_bytes = sum(len(t.encode("utf-8")) for t in texts)
    tok.encode_batch(texts[:1000])  # warm-up
    best = float("inf")
    tokens = 0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        encs = tok.encode_batch(texts)
        dt = time.perf_counter() - t0
        best = min(best, dt)
        tokens = sum(len(e.ids) for e in encs)
    print(json.dumps({"impl": "hf-tokenizers", "version": tokenizers.__version__, "threads": threads,
                      "paragraphs": len(texts), "chars": chars, "utf8_bytes": utf8_bytes, "tokens": tokens,
                      "seconds": round(best, 4), "tokens_per_s": round(tokens / best),
                      "mb_per_s": round(utf8_bytes / best / 1e6, 2)}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
