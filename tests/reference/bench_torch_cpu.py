#!/usr/bin/env python3
"""PyTorch CPU reference timing for the C# model benchmark (tests/MosaicBert.Benchmarks model-forward): the same
MosaicBERT-base encoder (tests/reference/mosaicbert_reference.py, padded formulation, fp32, eval, no grad) at
B=8, S=128 with the same threads, plus torch's own sgemm rate on the QKV shape. Prints one JSON line.
Run with Debian's torch: /usr/bin/python3 tests/reference/bench_torch_cpu.py --threads 2"""
import argparse
import json
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import mosaicbert_reference as ref  # noqa: E402


def best(f, repeats):
    t = float("inf")
    for _ in range(repeats):
        s = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - s)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = ref.MOSAIC_BASE
    P = ref.init_params(cfg, head="none" if False else "mlm", dtype=torch.float32, weight_std=0.02)
    ids = torch.randint(1000, 30000, (a.batch, a.seq))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ref.encoder(cfg, P, ids, mask)
        t = best(lambda: ref.encoder(cfg, P, ids, mask), a.repeats)
        n, d, i = a.batch * a.seq, cfg.hidden_size, cfg.intermediate_size
        flops = cfg.num_hidden_layers * (2 * n * (3 * d * d + d * d + 2 * d * i + i * d) + 4 * d * a.batch * a.seq * a.seq)
        x = torch.randn(n, d)
        w = torch.randn(3 * d, d)
        x @ w.T
        tg = best(lambda: x @ w.T, 5)
    gemm = 2 * n * 3 * d * d / tg
    print(json.dumps({"bench": "torch-forward", "torch": torch.__version__, "blas": torch.__config__.show().count("OpenBLAS") > 0 and "openblas" or "other",
                      "threads": a.threads, "batch": a.batch, "seq": a.seq, "seconds": round(t, 4), "seq_per_s": round(a.batch / t, 2),
                      "gflops": round(flops / t / 1e9, 1), "torch_sgemm_gflops": round(gemm / 1e9, 1),
                      "fraction_of_torch_sgemm": round(flops / t / gemm, 3)}))


if __name__ == "__main__":
    main()
