"""PyTorch's fused attention on the bf16 attention benchmark's batches, for comparison in the same device call.

B = 256 sequences padded to 128, 12 heads of 64, bf16: F.scaled_dot_product_attention with an additive bias
[B, 12, 128, 128] = ALiBi (-slope_h * |i - j|) plus -inf on padded keys (ragged lengths uniform in 16..128). A bias
rules out the flash backend, so PyTorch picks another; the profiler's kernel names say which one ran. Prints one JSON
line per batch: forward and backward milliseconds and TFLOP/s counted like ours (4 * d * sum(len^2) forward, 2.5x that
backward), i.e. on the real tokens, not the padding.

Usage: python3 tests/reference/bench_attention_torch.py
"""
import json
import math

import torch
import torch.nn.functional as F

BATCH, HEADS, SEQ, HEAD_DIM, ITERATIONS = 256, 12, 128, 64, 20


def alibi_slopes(heads):
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])


def backend_of(fn):
    """Names the SDPA backend from the CUDA kernels that one call launched."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = " ".join(e.key for e in prof.key_averages()).lower()
    for marker, backend in (("flash", "flash"), ("cutlass", "efficient"), ("mem_eff", "efficient"), ("fmha", "efficient"),
                            ("cudnn", "cudnn"), ("softmax", "math")):
        if marker in names:
            return backend
    return "unknown: " + names[:200]


def time_ms(fn):
    for _ in range(3):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(ITERATIONS):
        fn()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / ITERATIONS


def main():
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(5)
    for kind in ("full", "ragged"):
        lengths = [SEQ] * BATCH if kind == "full" else torch.randint(16, SEQ + 1, (BATCH,), generator=gen).tolist()
        q, k, v = (torch.randn(BATCH, HEADS, SEQ, HEAD_DIM, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        idx = torch.arange(SEQ, device=dev)
        bias = -alibi_slopes(HEADS).to(dev)[:, None, None] * (idx[None, :, None] - idx[None, None, :]).abs()
        keep = idx[None, :] < torch.tensor(lengths, device=dev)[:, None]                         # [B, S] real keys
        bias = bias[None].expand(BATCH, -1, -1, -1).masked_fill(~keep[:, None, None, :], -math.inf)
        bias = bias.to(torch.bfloat16).contiguous()
        grad = torch.randn(BATCH, HEADS, SEQ, HEAD_DIM, device=dev, dtype=torch.bfloat16)

        def forward():
            with torch.no_grad():
                return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1 / math.sqrt(HEAD_DIM))

        def forward_backward():
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1 / math.sqrt(HEAD_DIM))
            torch.autograd.grad(out, (q, k, v), grad)

        backend = backend_of(forward)
        fwd = time_ms(forward)
        both = time_ms(forward_backward)
        flops = 4.0 * HEADS * HEAD_DIM * sum(l * l for l in lengths)
        print(json.dumps({
            "bench": "attention_torch_sdpa", "torch": torch.__version__, "device": torch.cuda.get_device_name(),
            "lengths": kind, "batch": BATCH, "tokens": sum(lengths), "heads": HEADS, "head_dim": HEAD_DIM,
            "backend": backend, "padded_to": SEQ,
            "fwd_ms": round(fwd, 4), "bwd_ms": round(both - fwd, 4),
            "fwd_tflops": round(flops / fwd / 1e9, 1), "bwd_tflops": round(2.5 * flops / (both - fwd) / 1e9, 1),
            "bert_base_12_layers_fwd_bwd_ms": round(12 * both, 3),
        }), flush=True)


if __name__ == "__main__":
    main()
