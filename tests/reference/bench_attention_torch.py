"""PyTorch's fused attention on the bf16 attention benchmark's batches, for comparison in the same device call.

B = 256 sequences padded to 128, 12 heads of 64, bf16: F.scaled_dot_product_attention with an additive bias
[B, 12, 128, 128] = ALiBi (-slope_h * |i - j|) plus -inf on padded keys (ragged lengths uniform in 16..128). A bias
rules out the flash backend; the profiler's kernel names say which backend ran, for the dispatcher's own choice and
for each fused backend forced in turn. Prints one JSON line per batch and backend: forward and backward milliseconds
and TFLOP/s counted like ours (4 * d * sum(len^2) forward, 2.5x that backward), i.e. on the real tokens, not the
padding.

Usage: python3 tests/reference/bench_attention_torch.py
"""
import contextlib
import json
import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BATCH, HEADS, SEQ, HEAD_DIM, ITERATIONS = 256, 12, 128, 64, 20


def alibi_slopes(heads):
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])


def kernels_of(fn):
    """The CUDA kernels one call launches (their names say which SDPA backend ran)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA], acc_events=True) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.key for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA})


def backend_name(kernels):
    # cuDNN's fused kernels are named like "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_...": test it first.
    names = " ".join(kernels).lower()
    for marker, backend in (("cudnn", "cudnn"), ("flash", "flash"), ("cutlass", "efficient"), ("fmha", "efficient"),
                            ("softmax", "math")):
        if marker in names:
            return backend
    return "unknown"


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

        flops = 4.0 * HEADS * HEAD_DIM * sum(l * l for l in lengths)
        # The dispatcher's own choice first, then each fused backend forced (one that refuses the bias is reported so).
        for forced in (None, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION):
            context = sdpa_kernel([forced]) if forced is not None else contextlib.nullcontext()
            row = {"bench": "attention_torch_sdpa", "torch": torch.__version__, "device": torch.cuda.get_device_name(),
                   "lengths": kind, "batch": BATCH, "tokens": sum(lengths), "heads": HEADS, "head_dim": HEAD_DIM, "padded_to": SEQ,
                   "requested": "default" if forced is None else forced.name}
            try:
                with context:
                    kernels = kernels_of(forward_backward)
                    fwd = time_ms(forward)
                    both = time_ms(forward_backward)
            except RuntimeError as e:
                row["error"] = str(e).splitlines()[0][:160]
                print(json.dumps(row), flush=True)
                continue
            row.update({
                "backend": backend_name(kernels), "kernels": [k[:80] for k in kernels if "elementwise" not in k.lower()][:6],
                "fwd_ms": round(fwd, 4), "bwd_ms": round(both - fwd, 4),
                "fwd_tflops": round(flops / fwd / 1e9, 1), "bwd_tflops": round(2.5 * flops / (both - fwd) / 1e9, 1),
                "bert_base_12_layers_fwd_bwd_ms": round(12 * both, 3)})
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
