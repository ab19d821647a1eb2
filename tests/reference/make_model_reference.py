#!/usr/bin/env python3
"""Model fixtures for the C# MosaicBERT / BERT implementation, made with mosaicbert_reference.py.

Writes into tests/MosaicBert.Model.Tests/Fixtures/ (or --out):

  numerics/<model>.<f64|f32>.safetensors   for model in mosaic-h4, mosaic-h3, bert
      One seeded tiny model (weights ~N(0,0.2), biases ~N(0,0.1), LayerNorm weight 1+N(0,0.1)), one fixed padded
      batch, dropout off. The f64 file is the float64 run, the f32 file the float32 run of *the same* parameter
      values (drawn in float64, rounded to float32 once). Tensors (per-token tensors are zero at pad positions):
        input.input_ids / attention_mask / token_type_ids / mlm_labels / cls2_labels (I64), input.reg_labels
        param.<hf name>                 MLM model (tied decoder weight stored once, as the word embeddings)
        param.bert.pooler.dense.*       pooler shared by both sequence heads
        cls2.param.classifier.*, reg.param.classifier.*   2-label CE head and 1-label MSE head
        act.*                           forward activations of the MLM model (see README.md for the list)
        mlm.logits [B,S,V], mlm.logits_masked [M,V] (row-major order of masked positions), mlm.loss [1]
        grad.<hf name>                  d mlm.loss / d parameter (word embeddings: lookup + tied decoder)
        gact.<act name>                 d mlm.loss / d activation
        cls2.{pooled,logits,loss}, cls2.grad.<name>; reg.{pooled,logits,loss}, reg.grad.<name>
        adamw.lr [10], adamw.loss [11]  10 DecoupledAdamW steps on the MLM loss (loss before each step, then after)
        adamw.param.<name>, adamw.exp_avg.<name>, adamw.exp_avg_sq.<name>   state after 10 steps
        adamw.after2.param.<name>       parameters after the first 2 steps (step 1 has lr 0)
      __metadata__: config, batch, optimizer/schedule hyperparameters, torch/python versions (JSON strings).

  tiny-mosaic-mlm/, tiny-mosaic-cls/, tiny-bert-mlm/, tiny-bert-cls/
      config.json (HF style), pytorch_model.bin (torch.save(state_dict), zip format, tied tensors stored once),
      model.safetensors (tied duplicates dropped, metadata {"format": "pt"}), expected_output.safetensors
      (input.*, last_hidden_state [B,S,H] and logits fp32; computed in float64 from the fp32 weights, then rounded;
      zeros at pad positions; pooler_output for the -cls ones).

  model-fixtures-manifest.json
      files with sizes and sha256, and the measured float32-vs-float64 discrepancy of every tensor family.

Usage: python3 tests/reference/make_model_reference.py [--out DIR]     (needs torch + numpy; ~10 s on a CPU)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mosaicbert_reference as ref  # noqa: E402
from mosaicbert_reference import Config  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "tests", "MosaicBert.Model.Tests", "Fixtures")

# ----------------------------------------------------------------------------------------------------------------
# safetensors (written by hand: the `safetensors` package is not installable here)
# ----------------------------------------------------------------------------------------------------------------

_ST = {torch.float32: ("F32", "<f4"), torch.float64: ("F64", "<f8"), torch.int64: ("I64", "<i8")}
_ST_BACK = {"F32": ("<f4", torch.float32), "F64": ("<f8", torch.float64), "I64": ("<i8", torch.int64)}


def save_safetensors(path: str, tensors: "OrderedDict[str, torch.Tensor]", metadata: dict | None = None) -> None:
    """8-byte little-endian header length, JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str:
    str}} with sorted keys, padded with spaces to a multiple of 8, then the raw little-endian data. Data is laid out
    like the reference implementation does: larger element size first, then by name (keeps every tensor aligned)."""
    items = sorted(tensors.items(), key=lambda kv: (-np.dtype(_ST[kv[1].dtype][1]).itemsize, kv[0]))
    header, blobs, off = {}, [], 0
    for name, t in items:
        code, npdt = _ST[t.dtype]
        data = np.ascontiguousarray(t.detach().cpu().numpy()).astype(npdt, copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in sorted(metadata.items())}
    hb = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def load_safetensors(path: str):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    assert n % 8 == 0 and raw[8:9] == b"{", "header must be 8-byte padded JSON"
    spans = sorted(tuple(info["data_offsets"]) for info in header.values())
    assert [s[0] for s in spans] == [0] + [s[1] for s in spans[:-1]], "data must be contiguous"
    assert base + (spans[-1][1] if spans else 0) == len(raw), "data must end at the end of the file"
    out = OrderedDict()
    for name, info in header.items():
        npdt, tdt = _ST_BACK[info["dtype"]]
        b, e = info["data_offsets"]
        arr = np.frombuffer(raw[base + b: base + e], dtype=npdt).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy()).to(tdt)
    return out, meta


# ----------------------------------------------------------------------------------------------------------------
# The fixed batch
# ----------------------------------------------------------------------------------------------------------------

CLS, SEP, MASK = 2, 3, 4
B, S = 3, 8


def fixed_batch() -> dict:
    """B=3, S=8, lengths 8/6/3; token types with a segment B; MLM labels at 6 positions (80/10/10 style: [MASK],
    a random replacement and an unchanged token among them); -100 elsewhere. No label is 0 (so MosaicBERT's
    `labels > 0` and HF's `labels != -100` select the same rows)."""
    input_ids = torch.tensor([[CLS, 17, MASK, 33, MASK, 41, 9, SEP],
                              [CLS, MASK, 25, MASK, 12, SEP, 0, 0],
                              [CLS, 50, SEP, 0, 0, 0, 0, 0]], dtype=torch.int64)
    attention_mask = torch.tensor([[1] * 8, [1] * 6 + [0] * 2, [1] * 3 + [0] * 5], dtype=torch.int64)
    token_type_ids = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1],
                                   [0, 0, 0, 1, 1, 1, 0, 0],
                                   [0] * 8], dtype=torch.int64)
    labels = torch.full((B, S), -100, dtype=torch.int64)
    labels[0, 2], labels[0, 4], labels[0, 6] = 21, 58, 9      # [MASK], [MASK], unchanged token
    labels[1, 1], labels[1, 3] = 37, 14                       # [MASK], [MASK]
    labels[2, 1] = 61                                         # random replacement (input 50)
    return {
        "input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
        "mlm_labels": labels,
        "cls2_labels": torch.tensor([1, 0, 1], dtype=torch.int64),
        "reg_labels": torch.tensor([0.75, -1.25, 2.5], dtype=torch.float64),   # exact in float32
    }


# ----------------------------------------------------------------------------------------------------------------
# Numerics fixtures
# ----------------------------------------------------------------------------------------------------------------

NUMERIC_MODELS = OrderedDict([
    ("mosaic-h4", (Config(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=24, type_vocab_size=2, layer_norm_eps=1e-12), 1)),
    ("mosaic-h3", (Config(vocab_size=64, hidden_size=18, num_hidden_layers=2, num_attention_heads=3,
                          intermediate_size=24, type_vocab_size=2, layer_norm_eps=1e-12), 2)),
    ("bert", (Config(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=32, type_vocab_size=2, max_position_embeddings=16, layer_norm_eps=1e-12,
                     attention_probs_dropout_prob=0.1, classic=True), 3)),
])

ADAMW = dict(lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-2, steps=10, batch_size=B,
             t_warmup_samples=3 * B, t_max_samples=10 * B, alpha_i=1.0, alpha_f=0.02)


def zero_pads(t: torch.Tensor, kind: str, mask: torch.Tensor, grad: bool = False) -> torch.Tensor:
    m = mask.to(t.dtype)
    if kind == "bs":
        return t * m.reshape(m.shape + (1,) * (t.dim() - 2))
    if kind == "bhss":
        t = t * m[:, None, :, None]
        return t * m[:, None, None, :] if grad else t   # d/dprobs at pad keys depends on pad-row V: drop it
    return t


def scalar(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(1)


def run_numerics(cfg: Config, seed: int, dtype) -> "OrderedDict[str, torch.Tensor]":
    batch = fixed_batch()
    ids, mask, tt, labels = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["mlm_labels"]
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for k, v in batch.items():
        out["input." + k] = v.to(dtype) if v.is_floating_point() else v
    out["input.masked_positions"] = torch.nonzero(ref.mlm_label_mask(cfg, labels).flatten()).flatten()

    # parameters: MLM model + pooler + two classifier heads, all from one seeded stream per model
    P = ref.init_params(cfg, "mlm", seed=seed, dtype=dtype)
    extra = ref.init_params(cfg, "cls", 2, seed=seed + 100, dtype=dtype)
    reg_extra = ref.init_params(cfg, "cls", 1, seed=seed + 200, dtype=dtype)
    pooler = OrderedDict((n, extra[n]) for n in ("bert.pooler.dense.weight", "bert.pooler.dense.bias"))
    heads = {"cls2": OrderedDict((n, extra[n]) for n in ("classifier.weight", "classifier.bias")),
             "reg": OrderedDict((n, reg_extra[n]) for n in ("classifier.weight", "classifier.bias"))}
    for n, t in list(P.items()) + list(pooler.items()):
        out["param." + n] = t
    for h, hp in heads.items():
        for n, t in hp.items():
            out[f"{h}.param.{n}"] = t

    # MLM forward + backward with every activation recorded
    Pg = OrderedDict((n, t.clone().requires_grad_(True)) for n, t in P.items())
    rec = ref.Recorder()
    res = ref.mlm_forward(cfg, Pg, ids, mask, tt, labels, rec=rec)
    act_names = [n for n in rec.acts if rec.token_axis[n] != "none"]
    grads = torch.autograd.grad(res["loss"], list(Pg.values()) + [rec.acts[n] for n in act_names])
    for n, t in rec.acts.items():
        out[n] = zero_pads(t.detach(), rec.token_axis[n], mask)
    out["mlm.logits"] = res["logits"].detach()
    out["mlm.logits_masked"] = res["logits_masked"].detach()
    out["mlm.loss"] = scalar(res["loss"])
    for n, g in zip(Pg, grads[:len(Pg)]):
        out["grad." + n] = g
    for n, g in zip(act_names, grads[len(Pg):]):
        out["g" + n] = zero_pads(g, rec.token_axis[n], mask, grad=True)

    # sequence classification (2 labels, CE) and regression (1 label, MSE)
    for h, nl, lab in (("cls2", 2, batch["cls2_labels"]), ("reg", 1, batch["reg_labels"].to(dtype))):
        Pc = OrderedDict((n, t.clone().requires_grad_(True)) for n, t in P.items() if n.startswith("bert."))
        Pc.update((n, t.clone().requires_grad_(True)) for n, t in pooler.items())
        Pc.update((n, t.clone().requires_grad_(True)) for n, t in heads[h].items())
        r = ref.seqcls_forward(cfg, Pc, ids, mask, tt, lab, num_labels=nl)
        out[f"{h}.pooled"] = r["pooled"].detach()
        out[f"{h}.logits"] = r["logits"].detach()
        out[f"{h}.loss"] = scalar(r["loss"])
        for n, g in zip(Pc, torch.autograd.grad(r["loss"], list(Pc.values()))):
            out[f"{h}.grad.{n}"] = g

    # 10 DecoupledAdamW steps on the MLM loss, LinearWithWarmup schedule evaluated on samples seen
    W = OrderedDict((n, t.clone()) for n, t in P.items())
    opt = ref.DecoupledAdamW(list(W.values()), lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"],
                             weight_decay=ADAMW["weight_decay"])
    lrs, losses = [], []
    for step in range(ADAMW["steps"]):
        Wg = OrderedDict((n, t.clone().requires_grad_(True)) for n, t in W.items())
        loss = ref.mlm_forward(cfg, Wg, ids, mask, tt, labels)["loss"]
        g = torch.autograd.grad(loss, list(Wg.values()))
        opt.lr = ADAMW["lr"] * ref.linear_with_warmup(step * ADAMW["batch_size"], ADAMW["t_warmup_samples"],
                                                      ADAMW["t_max_samples"], ADAMW["alpha_i"], ADAMW["alpha_f"])
        lrs.append(opt.lr)
        losses.append(loss.detach())
        opt.step(list(g))
        if step == 1:
            for n, t in W.items():
                out["adamw.after2.param." + n] = t.clone()
    with torch.no_grad():
        losses.append(ref.mlm_forward(cfg, W, ids, mask, tt, labels)["loss"])
    out["adamw.lr"] = torch.tensor(lrs, dtype=dtype)
    out["adamw.loss"] = torch.stack(losses)
    for i, n in enumerate(W):
        out["adamw.param." + n] = W[n]
        out["adamw.exp_avg." + n] = opt.exp_avg[i]
        out["adamw.exp_avg_sq." + n] = opt.exp_avg_sq[i]
    return OrderedDict((k, v.detach().contiguous()) for k, v in out.items())


def run_adamw_only(dtype) -> "OrderedDict[str, torch.Tensor]":
    """The optimizer in isolation: one [4, 6] tensor, 10 given gradients whose columns have magnitudes
    1, 1e-2, 1e-4, 1e-6 (~eps), 1e-8 (< eps) and 0, the same hyperparameters and schedule as the model runs.
    Everything after step k is stored at index k."""
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(4, 6, generator=g, dtype=torch.float64).to(torch.float32)
    col_scale = torch.tensor([1.0, 1e-2, 1e-4, 1e-6, 1e-8, 0.0], dtype=torch.float64)
    grads = (torch.randn(ADAMW["steps"], 4, 6, generator=g, dtype=torch.float64) * col_scale).to(torch.float32)
    x = x0.to(dtype).clone()
    opt = ref.DecoupledAdamW([x], lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"],
                             weight_decay=ADAMW["weight_decay"])
    lrs, xs, ms, vs = [], [], [], []
    for step in range(ADAMW["steps"]):
        opt.lr = ADAMW["lr"] * ref.linear_with_warmup(step * ADAMW["batch_size"], ADAMW["t_warmup_samples"],
                                                      ADAMW["t_max_samples"], ADAMW["alpha_i"], ADAMW["alpha_f"])
        lrs.append(opt.lr)
        opt.step([grads[step].to(dtype)])
        xs.append(x.clone())
        ms.append(opt.exp_avg[0].clone())
        vs.append(opt.exp_avg_sq[0].clone())
    return OrderedDict([("param0", x0.to(dtype)), ("grads", grads.to(dtype)), ("lr", torch.tensor(lrs, dtype=dtype)),
                        ("param", torch.stack(xs)), ("exp_avg", torch.stack(ms)), ("exp_avg_sq", torch.stack(vs))])


def family(name: str) -> str:
    name = re.sub(r"layer\.\d+\.", "layer.*.", name)
    return re.sub(r"layer\d+\.", "layer*.", name)


def discrepancy(a32: torch.Tensor, b64: torch.Tensor) -> dict:
    a, b = a32.to(torch.float64), b64.to(torch.float64)
    diff = (a - b).abs()
    scale = b.abs().max().item() if b.numel() else 0.0
    max_abs = diff.max().item() if b.numel() else 0.0
    floor = max(scale * 1e-3, 1e-30)
    rel = (diff / b.abs().clamp_min(floor)).max().item() if b.numel() else 0.0
    return {"max_abs": max_abs, "scale": scale, "rel_to_scale": max_abs / scale if scale else 0.0,
            "max_rel_elem": rel}


def metadata_common() -> dict:
    return {"torch_version": torch.__version__, "numpy_version": np.__version__,
            "python_version": platform.python_version(), "generator": "tests/reference/make_model_reference.py"}


def write_numerics(out_dir: str, manifest: dict) -> None:
    os.makedirs(os.path.join(out_dir, "numerics"), exist_ok=True)
    batch = fixed_batch()
    for model, (cfg, seed) in NUMERIC_MODELS.items():
        runs = {}
        for tag, dtype in (("f64", torch.float64), ("f32", torch.float32)):
            runs[tag] = run_numerics(cfg, seed, dtype)
            meta = dict(metadata_common())
            meta.update({
                "model": model, "dtype": "float64" if tag == "f64" else "float32",
                "config": cfg.to_json(),
                "init": json.dumps({"seed": seed, "cls2_seed": seed + 100, "reg_seed": seed + 200,
                                    "weight_std": 0.2, "bias_std": 0.1, "layernorm": "weight 1+N(0,0.1), bias N(0,0.1)",
                                    "drawn": "float64 then rounded to float32 (same values in both runs)"}),
                "batch": json.dumps({k: v.tolist() for k, v in batch.items()}),
                "adamw": json.dumps(ADAMW),
                "conventions": "per-token tensors zero at pad positions; scalars have shape [1]; dropout off; "
                               "MLM loss = mean CE over masked positions; word-embedding grad includes the tied decoder",
            })
            save_safetensors(os.path.join(out_dir, "numerics", f"{model}.{tag}.safetensors"), runs[tag], meta)
        fams = manifest.setdefault("fp32_vs_fp64", {}).setdefault(model, OrderedDict())
        for name, t64 in runs["f64"].items():
            if not t64.is_floating_point() or name.startswith("input."):
                continue
            d = discrepancy(runs["f32"][name], t64)
            f = fams.setdefault(family(name), {"max_abs": 0.0, "scale": 0.0, "rel_to_scale": 0.0, "max_rel_elem": 0.0})
            for k in f:
                f[k] = max(f[k], d[k])
            update_summary(manifest, name, d)
    runs = {}
    for tag, dtype in (("f64", torch.float64), ("f32", torch.float32)):
        runs[tag] = run_adamw_only(dtype)
        meta = dict(metadata_common())
        meta.update({"dtype": "float64" if tag == "f64" else "float32", "adamw": json.dumps(ADAMW),
                     "layout": "param0 [4,6]; grads/param/exp_avg/exp_avg_sq [10,4,6] (index k = step k+1); lr [10]"})
        save_safetensors(os.path.join(out_dir, "numerics", f"adamw-only.{tag}.safetensors"), runs[tag], meta)
    fams = manifest["fp32_vs_fp64"].setdefault("adamw-only", OrderedDict())
    for name in ("lr", "param", "exp_avg", "exp_avg_sq"):
        fams[name] = discrepancy(runs["f32"][name], runs["f64"][name])


# Categories for the tolerance summary: worst max|f32 - f64| / max(max|f64|, floor) over every tensor in them.
# A floor keeps mathematically-zero gradients (the key bias: softmax is invariant to it) from dividing by ~1e-17.
SUMMARY_FLOOR = 1e-2


def category(name: str) -> str:
    if name.startswith("param.") or ".param." in name and not name.startswith("adamw."):
        return "parameters (copied)"
    if name.startswith("act.") or name in ("mlm.logits", "mlm.logits_masked") or name.endswith((".pooled", ".logits")):
        return "forward activations / logits"
    if name.endswith("loss") and not name.startswith("adamw."):
        return "losses"
    if name.startswith("gact."):
        return "activation gradients (gact.*)"
    if name.startswith("grad.") or ".grad." in name:
        return "parameter gradients"
    if name == "adamw.loss":
        return "adamw.loss trajectory"
    if name == "adamw.lr":
        return "adamw.lr"
    if name.startswith(("adamw.param.", "adamw.after2.")):
        return "adamw parameters after 2 / 10 steps"
    return "adamw moments"


def update_summary(manifest: dict, name: str, d: dict) -> None:
    cat = category(name)
    rel = d["max_abs"] / max(d["scale"], SUMMARY_FLOOR) if d["max_abs"] else 0.0
    s = manifest.setdefault("summary", OrderedDict()).setdefault(cat, {"worst_rel_to_scale": 0.0, "worst_abs": 0.0,
                                                                       "worst_tensor": ""})
    if rel > s["worst_rel_to_scale"]:
        s["worst_rel_to_scale"], s["worst_tensor"] = rel, name
    s["worst_abs"] = max(s["worst_abs"], d["max_abs"])


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint fixtures
# ----------------------------------------------------------------------------------------------------------------

CHECKPOINTS = OrderedDict([
    ("tiny-mosaic-mlm", (Config(vocab_size=64, hidden_size=24, num_hidden_layers=2, num_attention_heads=6,
                                intermediate_size=32, type_vocab_size=2, attention_probs_dropout_prob=0.1),
                         "mlm", 0, 11)),
    ("tiny-mosaic-cls", (Config(vocab_size=64, hidden_size=24, num_hidden_layers=2, num_attention_heads=6,
                                intermediate_size=32, type_vocab_size=2, attention_probs_dropout_prob=0.1),
                         "cls", 3, 12)),
    ("tiny-bert-mlm", (Config(vocab_size=64, hidden_size=24, num_hidden_layers=2, num_attention_heads=6,
                              intermediate_size=48, type_vocab_size=2, max_position_embeddings=32,
                              attention_probs_dropout_prob=0.1, classic=True), "mlm", 0, 13)),
    ("tiny-bert-cls", (Config(vocab_size=64, hidden_size=24, num_hidden_layers=2, num_attention_heads=6,
                              intermediate_size=48, type_vocab_size=2, max_position_embeddings=32,
                              attention_probs_dropout_prob=0.1, classic=True), "cls", 2, 14)),
])


def hf_config(name: str, cfg: Config, head: str, num_labels: int) -> dict:
    """config.json as transformers' save_pretrained writes it (sorted keys, indent 2). No `num_labels` field:
    transformers stores id2label/label2id and derives num_labels from them (default 2 when absent)."""
    c = {
        "_name_or_path": name,
        "architectures": ["BertForMaskedLM" if head == "mlm" else "BertForSequenceClassification"],
        "attention_probs_dropout_prob": cfg.attention_probs_dropout_prob,
        "classifier_dropout": None,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.hidden_dropout_prob,
        "hidden_size": cfg.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": cfg.intermediate_size,
        "layer_norm_eps": cfg.layer_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "model_type": "bert",
        "num_attention_heads": cfg.num_attention_heads,
        "num_hidden_layers": cfg.num_hidden_layers,
        "pad_token_id": cfg.pad_token_id,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "transformers_version": "4.26.0",
        "type_vocab_size": cfg.type_vocab_size,
        "use_cache": True,
        "vocab_size": cfg.vocab_size,
    }
    if not cfg.classic:   # MosaicBERT (remote code): spec §2.2
        c["alibi_starting_size"] = cfg.alibi_starting_size
        c["gradient_checkpointing"] = False
        c["auto_map"] = {"AutoConfig": "configuration_bert.BertConfig",
                         "AutoModelForMaskedLM": "bert_layers.BertForMaskedLM"}
        if head == "cls":
            c["auto_map"]["AutoModelForSequenceClassification"] = "bert_layers.BertForSequenceClassification"
    if head == "cls":
        c["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        c["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
        c["problem_type"] = "single_label_classification"
    return c


def module_tree(P: dict, cfg: Config, head: str, num_labels: int) -> torch.nn.Module:
    """Plain nn.Module hierarchy whose state_dict() has exactly the original key order, tied aliases included and
    sharing storage (so torch.save stores the tied tensor once, with the usual OrderedDict `_metadata`)."""
    root = torch.nn.Module()
    params = {n: torch.nn.Parameter(t.detach().to(torch.float32).clone()) for n, t in P.items()}
    aliases = ref.tied_aliases(cfg, head)
    for name in ref.full_state_dict_order(cfg, head, num_labels):
        *path, leaf = name.split(".")
        mod = root
        for part in path:
            if part not in mod._modules:
                mod.add_module(part, torch.nn.Module())
            mod = mod._modules[part]
        mod.register_parameter(leaf, params[aliases.get(name, name)])
    return root


def checkpoint_forward(cfg, head, num_labels, P, batch, dtype):
    Pd = OrderedDict((n, t.to(dtype)) for n, t in P.items())
    ids, mask, tt = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    with torch.no_grad():
        if head == "mlm":
            r = ref.mlm_forward(cfg, Pd, ids, mask, tt)
            return OrderedDict([("last_hidden_state", r["hidden"]), ("logits", r["logits"])])
        r = ref.seqcls_forward(cfg, Pd, ids, mask, tt, num_labels=num_labels)
        return OrderedDict([("last_hidden_state", r["hidden"]), ("logits", r["logits"]),
                            ("pooler_output", r["pooled"])])


def write_checkpoints(out_dir: str, manifest: dict) -> None:
    batch = {k: v for k, v in fixed_batch().items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    for name, (cfg, head, num_labels, seed) in CHECKPOINTS.items():
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        P = ref.init_params(cfg, head, num_labels, seed=seed, dtype=torch.float32)
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write(json.dumps(hf_config(name, cfg, head, num_labels), indent=2, sort_keys=True) + "\n")
        tree = module_tree(P, cfg, head, num_labels)
        sd = tree.state_dict()
        assert list(sd) == ref.full_state_dict_order(cfg, head, num_labels)
        torch.save(sd, os.path.join(d, "pytorch_model.bin"))
        save_safetensors(os.path.join(d, "model.safetensors"), OrderedDict((n, t.float()) for n, t in P.items()),
                         {"format": "pt"})
        exp64 = checkpoint_forward(cfg, head, num_labels, P, batch, torch.float64)
        exp32 = checkpoint_forward(cfg, head, num_labels, P, batch, torch.float32)
        expected = OrderedDict(("input." + k, v) for k, v in batch.items())
        expected.update((k, v.to(torch.float32)) for k, v in exp64.items())
        fp32_err = {k: discrepancy(exp32[k], v) for k, v in exp64.items()}
        meta = dict(metadata_common())
        meta.update({"checkpoint": name, "config": cfg.to_json(), "head": head, "num_labels": str(num_labels),
                     "seed": str(seed),
                     "computed": "float64 forward of the fp32 weights, rounded to float32; zeros at pad positions",
                     "torch_fp32_vs_this": json.dumps(fp32_err)})
        save_safetensors(os.path.join(d, "expected_output.safetensors"), expected, meta)
        manifest.setdefault("checkpoint_fp32_vs_fp64", {})[name] = fp32_err

        # round trips: both weight files reproduce the expected outputs bit for bit
        loaded = torch.load(os.path.join(d, "pytorch_model.bin"), map_location="cpu")
        assert list(loaded) == list(sd)
        for alias, owner in ref.tied_aliases(cfg, head).items():
            assert loaded[alias].data_ptr() == loaded[owner].data_ptr(), alias
        st, st_meta = load_safetensors(os.path.join(d, "model.safetensors"))
        assert set(st) == set(P) and st_meta == {"format": "pt"}
        for src in (OrderedDict((n, loaded[n]) for n in P), st):
            again = checkpoint_forward(cfg, head, num_labels, src, batch, torch.float64)
            for k, v in again.items():
                assert torch.equal(v.to(torch.float32), expected[k]), (name, k)


def write_manifest(out_dir: str, manifest: dict) -> None:
    files = OrderedDict()
    for root, _, names in sorted(os.walk(out_dir)):
        for n in sorted(names):
            p = os.path.join(root, n)
            rel = os.path.relpath(p, out_dir).replace(os.sep, "/")
            if rel == "model-fixtures-manifest.json":
                continue
            with open(p, "rb") as f:
                data = f.read()
            files[rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest["files"] = files
    manifest["generated_with"] = metadata_common()
    with open(os.path.join(out_dir, "model-fixtures-manifest.json"), "w") as f:
        f.write(json.dumps(manifest, indent=1) + "\n")


def print_summary(manifest: dict) -> None:
    print(f"{'model':10} {'family':58} {'scale':>9} {'max_abs':>9} {'rel/scale':>9} {'rel_elem':>9}")
    for model, fams in manifest["fp32_vs_fp64"].items():
        for fam, d in fams.items():
            print(f"{model:10} {fam:58} {d['scale']:9.2e} {d['max_abs']:9.2e} {d['rel_to_scale']:9.2e} "
                  f"{d['max_rel_elem']:9.2e}")
    for cat, d in manifest["summary"].items():
        print(f"summary {cat:40} worst rel {d['worst_rel_to_scale']:9.2e} abs {d['worst_abs']:9.2e} ({d['worst_tensor']})")
    for name, errs in manifest["checkpoint_fp32_vs_fp64"].items():
        for k, d in errs.items():
            print(f"{name:16} {k:18} scale {d['scale']:9.2e} max_abs {d['max_abs']:9.2e} rel/scale {d['rel_to_scale']:9.2e}")
    total = sum(f["bytes"] for f in manifest["files"].values())
    for rel, f in manifest["files"].items():
        print(f"{f['bytes']:9d}  {rel}")
    print(f"{total:9d}  total")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)   # deterministic reduction order on the CPU
    if not ref.selftest(verbose=True):
        print("reference selftest failed; no fixtures written", file=sys.stderr)
        return 1
    os.makedirs(a.out, exist_ok=True)
    manifest: dict = OrderedDict()
    write_numerics(a.out, manifest)
    write_checkpoints(a.out, manifest)
    write_manifest(a.out, manifest)
    print_summary(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
