"""PyTorch reference for `mosaicbert bench pretrain`: Hugging Face BertForMaskedLM with the bert-base-uncased
configuration (built locally, nothing downloaded), bf16 autocast, AdamW, gradient clipping at 1.0, batch 256 of
sequence 128 with 30% of the tokens masked, optionally under torch.compile. Prints one JSON line with seq_per_s.

    python3 bench_torch_gpu.py [--batch 256] [--seq 128] [--steps 30] [--warmup 5] [--compile] [--lengths full|ragged]

With --lengths ragged the batch is padded to --seq (HF BERT has no unpadding) and attention_mask marks the real
tokens, so seq_per_s counts the same sequences as ours.
"""
import argparse
import json
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--lengths", choices=["full", "ragged"], default="full")
    ap.add_argument("--sdpa", action="store_true", help="attn_implementation='sdpa' (default: HF's default)")
    args = ap.parse_args()

    try:
        from transformers import BertConfig, BertForMaskedLM
    except ImportError as e:  # report instead of failing the whole device call
        print(json.dumps({"bench": "torch_pretrain", "error": f"transformers not importable: {e}"}))
        return

    torch.manual_seed(0)
    dev = torch.device("cuda")
    cfg = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)
    kwargs = {"attn_implementation": "sdpa"} if args.sdpa else {}
    model = BertForMaskedLM(cfg, **kwargs).to(dev)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-5, fused=True)
    step_fn = model
    if args.compile:
        step_fn = torch.compile(model)

    g = torch.Generator(device="cpu").manual_seed(1)
    batches = []
    for _ in range(4):
        ids = torch.randint(1000, cfg.vocab_size, (args.batch, args.seq), generator=g)
        if args.lengths == "full":
            lengths = torch.full((args.batch,), args.seq)
        else:
            lengths = torch.randint(16, args.seq + 1, (args.batch,), generator=g)
        mask = (torch.arange(args.seq)[None, :] < lengths[:, None]).long()
        masked = (torch.rand(args.batch, args.seq, generator=g) < 0.3) & (mask == 1)
        labels = torch.where(masked, ids, torch.full_like(ids, -100))
        ids = torch.where(masked, torch.full_like(ids, 103), ids)
        batches.append((ids.to(dev), mask.to(dev), labels.to(dev), int(lengths.sum())))

    def step(i):
        ids, mask, labels, _ = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = step_fn(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return out.loss

    for i in range(args.warmup):
        step(i)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    tokens = 0
    for i in range(args.steps):
        step(args.warmup + i)
        tokens += batches[(args.warmup + i) % len(batches)][3]
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(json.dumps({
        "bench": "torch_pretrain", "model": "hf BertForMaskedLM bert-base", "compile": args.compile, "sdpa": args.sdpa,
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch, "seq": args.seq,
        "lengths": args.lengths, "steps": args.steps, "seq_per_s": round(args.steps * args.batch / dt, 1),
        "tokens_per_s": round(tokens / dt), "ms_per_step": round(dt * 1000 / args.steps, 2),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }))


if __name__ == "__main__":
    main()
