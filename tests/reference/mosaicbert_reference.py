#!/usr/bin/env python3
"""Readable PyTorch reference of MosaicBERT and classic (Hugging Face) BERT, written from
shared/docs/mosaicbert-spec.md, plus Composer's DecoupledAdamW and LinearWithWarmup schedule.

It exists to produce the numbers the C# implementation is tested against (make_model_reference.py) and to pin
those numbers to the spec (``--selftest``). It is deliberately functional: a model is a ``Config`` plus an ordered
dict ``P`` of tensors keyed by the Hugging Face state-dict names, so the code reads like the spec and autograd gives
every gradient.

Conventions
  * Linear weights are ``[out, in]``; ``F.linear(x, W, b) = x @ W.T + b``.
  * Everything runs in the *padded* formulation (spec §1.4 / §1.16): every token-wise op runs on ``[B, S, ...]``
    including pad rows; attention masks pad *keys* with an additive bias. Results at real positions equal the
    original unpadded code. Per-token outputs (hidden states, logits, recorded activations) are returned with
    zeros at pad positions.
  * ``classic=False``: MosaicBERT (no position embeddings, fused ``Wqkv``, symmetric ALiBi, GeGLU MLP,
    decoder bias ``cls.predictions.decoder.bias``).
    ``classic=True``: HF ``BertForMaskedLM`` / ``BertForSequenceClassification`` (absolute positions, separate
    query/key/value, GELU MLP ``intermediate.dense`` / ``output.dense``, ``cls.predictions.bias``).
  * Dropout follows spec §1.14 and only acts when ``training=True`` (the fixtures use eval mode).

Works on torch 1.13 (Debian bookworm) and torch 2.x; uses no torch>=2-only API.

Usage:
  python3 mosaicbert_reference.py --selftest      # asserts spec §6.1, §6.2, §6.4, §6.5, §6.6 + optimizer checks
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

Params = Dict[str, torch.Tensor]

PAD_KEY_BIAS = -10000.0          # MosaicBERT: additive bias on padded keys (spec §1.5), not -inf
MLM_TRANSFORM_LN_EPS = 1e-12     # MosaicBERT hard-codes the MLM transform LayerNorm eps (spec §1.11)


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Config:
    vocab_size: int = 30528
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    type_vocab_size: int = 2
    max_position_embeddings: int = 512      # classic BERT only (MosaicBERT: unused)
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.0
    classifier_dropout: Optional[float] = None
    pad_token_id: int = 0
    alibi_starting_size: int = 512          # MosaicBERT only; has no effect on results
    classic: bool = False                   # True: classic HF BERT

    @property
    def head_dim(self) -> int:
        assert self.hidden_size % self.num_attention_heads == 0
        return self.hidden_size // self.num_attention_heads

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


MOSAIC_BASE = Config()
HF_BERT_BASE = Config(vocab_size=30522, attention_probs_dropout_prob=0.1, classic=True)
MOSAIC_LARGE_ASSUMED = Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)


# ----------------------------------------------------------------------------------------------------------------
# State-dict layout (names and shapes) -- the single source of truth for init, counting and saving
# ----------------------------------------------------------------------------------------------------------------

def layer_param_shapes(cfg: Config, i: int) -> "OrderedDict[str, Tuple[int, ...]]":
    d, I = cfg.hidden_size, cfg.intermediate_size
    p = f"bert.encoder.layer.{i}."
    s: "OrderedDict[str, Tuple[int, ...]]" = OrderedDict()
    if cfg.classic:
        for n in ("query", "key", "value"):
            s[p + f"attention.self.{n}.weight"] = (d, d)
            s[p + f"attention.self.{n}.bias"] = (d,)
        s[p + "attention.output.dense.weight"] = (d, d)
        s[p + "attention.output.dense.bias"] = (d,)
        s[p + "attention.output.LayerNorm.weight"] = (d,)
        s[p + "attention.output.LayerNorm.bias"] = (d,)
        s[p + "intermediate.dense.weight"] = (I, d)
        s[p + "intermediate.dense.bias"] = (I,)
        s[p + "output.dense.weight"] = (d, I)
        s[p + "output.dense.bias"] = (d,)
        s[p + "output.LayerNorm.weight"] = (d,)
        s[p + "output.LayerNorm.bias"] = (d,)
    else:
        s[p + "attention.self.Wqkv.weight"] = (3 * d, d)
        s[p + "attention.self.Wqkv.bias"] = (3 * d,)
        s[p + "attention.output.dense.weight"] = (d, d)
        s[p + "attention.output.dense.bias"] = (d,)
        s[p + "attention.output.LayerNorm.weight"] = (d,)
        s[p + "attention.output.LayerNorm.bias"] = (d,)
        s[p + "mlp.gated_layers.weight"] = (2 * I, d)          # no bias
        s[p + "mlp.wo.weight"] = (d, I)
        s[p + "mlp.wo.bias"] = (d,)
        s[p + "mlp.layernorm.weight"] = (d,)
        s[p + "mlp.layernorm.bias"] = (d,)
    return s


def param_shapes(cfg: Config, head: str = "mlm", num_labels: int = 2) -> "OrderedDict[str, Tuple[int, ...]]":
    """Unique parameter tensors in HF state-dict order. head: 'mlm' (BertForMaskedLM), 'cls'
    (BertForSequenceClassification with ``num_labels``), 'model' (BertModel with pooler), 'encoder' (BertModel
    without pooler). Tied duplicates (the MLM decoder weight, and for classic BERT the decoder bias) are not listed;
    see ``tied_aliases``."""
    d, V = cfg.hidden_size, cfg.vocab_size
    s: "OrderedDict[str, Tuple[int, ...]]" = OrderedDict()
    s["bert.embeddings.word_embeddings.weight"] = (V, d)
    if cfg.classic:
        s["bert.embeddings.position_embeddings.weight"] = (cfg.max_position_embeddings, d)
    s["bert.embeddings.token_type_embeddings.weight"] = (cfg.type_vocab_size, d)
    s["bert.embeddings.LayerNorm.weight"] = (d,)
    s["bert.embeddings.LayerNorm.bias"] = (d,)
    for i in range(cfg.num_hidden_layers):
        s.update(layer_param_shapes(cfg, i))
    if head in ("model", "cls"):
        s["bert.pooler.dense.weight"] = (d, d)
        s["bert.pooler.dense.bias"] = (d,)
    if head == "cls":
        s["classifier.weight"] = (num_labels, d)
        s["classifier.bias"] = (num_labels,)
    elif head == "mlm":
        if cfg.classic:
            s["cls.predictions.bias"] = (V,)
        s["cls.predictions.transform.dense.weight"] = (d, d)
        s["cls.predictions.transform.dense.bias"] = (d,)
        s["cls.predictions.transform.LayerNorm.weight"] = (d,)
        s["cls.predictions.transform.LayerNorm.bias"] = (d,)
        if not cfg.classic:
            s["cls.predictions.decoder.bias"] = (V,)
    elif head not in ("model", "encoder"):
        raise ValueError(head)
    return s


def tied_aliases(cfg: Config, head: str = "mlm") -> "OrderedDict[str, str]":
    """Extra state-dict keys that are the *same tensor* as another key: alias -> owner."""
    a: "OrderedDict[str, str]" = OrderedDict()
    if head == "mlm":
        a["cls.predictions.decoder.weight"] = "bert.embeddings.word_embeddings.weight"
        if cfg.classic:  # HF: self.decoder.bias = self.bias
            a["cls.predictions.decoder.bias"] = "cls.predictions.bias"
    return a


def full_state_dict_order(cfg: Config, head: str = "mlm", num_labels: int = 2) -> List[str]:
    """All keys of ``model.state_dict()`` (tied aliases included) in the order the original modules produce."""
    names = list(param_shapes(cfg, head, num_labels))
    if head == "mlm":
        if cfg.classic:   # cls.predictions: bias, transform.*, decoder.weight, decoder.bias
            names.append("cls.predictions.decoder.weight")
            names.append("cls.predictions.decoder.bias")
        else:             # cls.predictions: transform.*, decoder.weight, decoder.bias
            names.insert(names.index("cls.predictions.decoder.bias"), "cls.predictions.decoder.weight")
    return names


def count_params(cfg: Config, head: str = "mlm", num_labels: int = 2) -> int:
    return sum(math.prod(s) for s in param_shapes(cfg, head, num_labels).values())


def is_layernorm_weight(name: str) -> bool:
    return name.endswith(("LayerNorm.weight", "layernorm.weight"))


def is_bias(name: str) -> bool:
    return name.endswith("bias")


def init_params(cfg: Config, head: str = "mlm", num_labels: int = 2, *, seed: int = 0, weight_std: float = 0.2,
                bias_std: float = 0.1, ln_std: float = 0.1, dtype=torch.float64) -> Params:
    """Seeded random parameters, larger than the real N(0, 0.02) init so that the numerics get exercised:
    matrices/embeddings ~ N(0, weight_std), biases ~ N(0, bias_std), LayerNorm weight ~ 1 + N(0, ln_std),
    LayerNorm bias ~ N(0, ln_std). Values are drawn in float64 and rounded to float32 *before* being returned in
    ``dtype``, so float32 and float64 runs use exactly the same parameter values."""
    g = torch.Generator().manual_seed(seed)
    P: Params = OrderedDict()
    for name, shape in param_shapes(cfg, head, num_labels).items():
        z = torch.randn(shape, generator=g, dtype=torch.float64)
        if is_layernorm_weight(name):
            t = 1.0 + ln_std * z
        elif name.endswith("LayerNorm.bias") or name.endswith("layernorm.bias"):
            t = ln_std * z
        elif is_bias(name):
            t = bias_std * z
        else:
            t = weight_std * z
        P[name] = t.to(torch.float32).to(dtype)
    return P


# ----------------------------------------------------------------------------------------------------------------
# ALiBi (spec §1.5)
# ----------------------------------------------------------------------------------------------------------------

def alibi_slopes(n_heads: int) -> List[float]:
    """ALiBi slopes, head order. Power of two: 2^(-8k/H), k = 1..H. Otherwise the slopes of the nearest lower power
    of two P, followed by the slopes for 2P heads at even indices 0, 2, 4, ..., the first H-P of them."""
    def power_of_two(n: int) -> List[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))   # = 2^(-8/n)
        return [start * start ** i for i in range(n)]
    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    p = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(p) + alibi_slopes(2 * p)[0::2][: n_heads - p]


def alibi_tensor(n_heads: int, seq_len: int, dtype=torch.float64) -> torch.Tensor:
    """[1, H, S, S] with alibi[0, h, i, j] = -m_h * |j - i| (symmetric, bidirectional)."""
    pos = torch.arange(seq_len)
    dist = (pos[None, :] - pos[:, None]).abs().to(dtype)          # [S, S]
    slopes = torch.tensor(alibi_slopes(n_heads), dtype=dtype)     # [H]
    return (-slopes[:, None, None] * dist[None]).unsqueeze(0)


def mosaic_attention_bias(attention_mask: torch.Tensor, n_heads: int, dtype) -> torch.Tensor:
    """[B, H, S, S]: ALiBi plus -10000 on padded keys (pad query rows are garbage and get discarded)."""
    S = attention_mask.shape[1]
    pad_bias = (1.0 - attention_mask.to(dtype))[:, None, None, :] * PAD_KEY_BIAS    # [B, 1, 1, S]
    return pad_bias + alibi_tensor(n_heads, S, dtype)


def unpad_indices(attention_mask: torch.Tensor):
    """Spec §1.4 bookkeeping (only used by the selftest; the reference runs padded)."""
    seqlens = attention_mask.sum(dim=1, dtype=torch.int32)
    indices = torch.nonzero(attention_mask.flatten(), as_tuple=False).flatten()
    cu_seqlens = F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    return seqlens, indices, cu_seqlens


# ----------------------------------------------------------------------------------------------------------------
# Forward pass
# ----------------------------------------------------------------------------------------------------------------

class Recorder:
    """Collects named intermediate tensors (live graph tensors, so gradients w.r.t. them can be taken)."""

    def __init__(self):
        self.acts: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self.token_axis: Dict[str, str] = {}   # name -> 'bs' ([B,S,...]), 'bhss' ([B,H,S,S]), 'none'

    def __call__(self, name: str, t: torch.Tensor, kind: str = "bs") -> torch.Tensor:
        self.acts[name] = t
        self.token_axis[name] = kind
        return t


def _rec(rec: Optional[Recorder], name: str, t: torch.Tensor, kind: str = "bs") -> torch.Tensor:
    return rec(name, t, kind) if rec is not None else t


def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x)   # exact erf form (torch default, approximate='none')


def embeddings(cfg: Config, P: Params, input_ids, token_type_ids, training: bool, rec=None) -> torch.Tensor:
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    pfx = "bert.embeddings."
    words = F.embedding(input_ids, P[pfx + "word_embeddings.weight"], padding_idx=cfg.pad_token_id)
    e = words + F.embedding(token_type_ids, P[pfx + "token_type_embeddings.weight"])
    if cfg.classic:   # HF: (inputs_embeds + token_type_embeddings) + position_embeddings, absolute positions 0..S-1
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        e = e + F.embedding(pos, P[pfx + "position_embeddings.weight"])[None]
    _rec(rec, "act.emb_sum", e)
    e = layer_norm(e, P[pfx + "LayerNorm.weight"], P[pfx + "LayerNorm.bias"], cfg.layer_norm_eps)
    e = F.dropout(e, cfg.hidden_dropout_prob, training)
    return _rec(rec, "act.emb", e)


def _attention(cfg: Config, q, k, v, bias, training: bool, rec, tag: str) -> torch.Tensor:
    """q, k, v: [B, S, d] with heads concatenated in head order. bias broadcastable to [B, H, S, S]."""
    B, S, d = q.shape
    H, Dh = cfg.num_attention_heads, cfg.head_dim
    qh = q.reshape(B, S, H, Dh).permute(0, 2, 1, 3)      # [B, H, S, Dh]
    kh = k.reshape(B, S, H, Dh).permute(0, 2, 3, 1)      # [B, H, Dh, S]
    vh = v.reshape(B, S, H, Dh).permute(0, 2, 1, 3)      # [B, H, S, Dh]
    scores = torch.matmul(qh, kh) / math.sqrt(Dh) + bias  # scale first, then bias (spec §1.6.3)
    probs = _rec(rec, tag + "attn_probs", torch.softmax(scores, dim=-1), "bhss")
    if cfg.attention_probs_dropout_prob > 0:
        probs = F.dropout(probs, cfg.attention_probs_dropout_prob, training)
    ctx = torch.matmul(probs, vh).permute(0, 2, 1, 3).reshape(B, S, d)
    return _rec(rec, tag + "attn_ctx", ctx)


def mosaic_layer(cfg: Config, P: Params, i: int, x, bias, training: bool, rec=None) -> torch.Tensor:
    p, tag = f"bert.encoder.layer.{i}.", f"act.layer{i}."
    d, I, drop = cfg.hidden_size, cfg.intermediate_size, cfg.hidden_dropout_prob
    # self-attention with fused Wqkv: channels [0,d) = Q, [d,2d) = K, [2d,3d) = V; head h = h*Dh .. h*Dh+Dh-1
    qkv = _rec(rec, tag + "qkv", F.linear(x, P[p + "attention.self.Wqkv.weight"], P[p + "attention.self.Wqkv.bias"]))
    ctx = _attention(cfg, qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:], bias, training, rec, tag)
    # attention output block, post-LN
    a = _rec(rec, tag + "attn_out", F.linear(ctx, P[p + "attention.output.dense.weight"],
                                              P[p + "attention.output.dense.bias"]))
    a = F.dropout(a, drop, training)
    a = _rec(rec, tag + "attn_preln", a + x)
    x1 = _rec(rec, tag + "attn_ln", layer_norm(a, P[p + "attention.output.LayerNorm.weight"],
                                               P[p + "attention.output.LayerNorm.bias"], cfg.layer_norm_eps))
    # GeGLU MLP: first half through exact GELU, second half is the linear gate partner; no bias on gated_layers
    g = _rec(rec, tag + "mlp_gated", F.linear(x1, P[p + "mlp.gated_layers.weight"]))
    h = _rec(rec, tag + "mlp_glu", gelu(g[..., :I]) * g[..., I:])
    h = F.dropout(h, drop, training)                        # dropout between gating and wo; none after wo
    y = _rec(rec, tag + "mlp_out", F.linear(h, P[p + "mlp.wo.weight"], P[p + "mlp.wo.bias"]))
    y = _rec(rec, tag + "mlp_preln", y + x1)
    out = layer_norm(y, P[p + "mlp.layernorm.weight"], P[p + "mlp.layernorm.bias"], cfg.layer_norm_eps)
    return _rec(rec, tag + "out", out)


def classic_layer(cfg: Config, P: Params, i: int, x, bias, training: bool, rec=None) -> torch.Tensor:
    p, tag = f"bert.encoder.layer.{i}.", f"act.layer{i}."
    drop = cfg.hidden_dropout_prob
    q = _rec(rec, tag + "q", F.linear(x, P[p + "attention.self.query.weight"], P[p + "attention.self.query.bias"]))
    k = _rec(rec, tag + "k", F.linear(x, P[p + "attention.self.key.weight"], P[p + "attention.self.key.bias"]))
    v = _rec(rec, tag + "v", F.linear(x, P[p + "attention.self.value.weight"], P[p + "attention.self.value.bias"]))
    ctx = _attention(cfg, q, k, v, bias, training, rec, tag)
    a = _rec(rec, tag + "attn_out", F.linear(ctx, P[p + "attention.output.dense.weight"],
                                              P[p + "attention.output.dense.bias"]))
    a = F.dropout(a, drop, training)
    a = _rec(rec, tag + "attn_preln", a + x)
    x1 = _rec(rec, tag + "attn_ln", layer_norm(a, P[p + "attention.output.LayerNorm.weight"],
                                               P[p + "attention.output.LayerNorm.bias"], cfg.layer_norm_eps))
    u = _rec(rec, tag + "ffn_inter", F.linear(x1, P[p + "intermediate.dense.weight"], P[p + "intermediate.dense.bias"]))
    u = _rec(rec, tag + "ffn_act", gelu(u))
    y = _rec(rec, tag + "ffn_out", F.linear(u, P[p + "output.dense.weight"], P[p + "output.dense.bias"]))
    y = F.dropout(y, drop, training)                        # HF BERT: dropout after the FFN output dense
    y = _rec(rec, tag + "ffn_preln", y + x1)
    out = layer_norm(y, P[p + "output.LayerNorm.weight"], P[p + "output.LayerNorm.bias"], cfg.layer_norm_eps)
    return _rec(rec, tag + "out", out)


def encoder(cfg: Config, P: Params, input_ids, attention_mask=None, token_type_ids=None, *, training=False,
            rec: Optional[Recorder] = None) -> torch.Tensor:
    """BertModel without pooler. Returns last_hidden_state [B, S, d] with zeros at pad positions."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    dtype = P["bert.embeddings.word_embeddings.weight"].dtype
    x = embeddings(cfg, P, input_ids, token_type_ids, training, rec)
    if cfg.classic:   # HF extended attention mask: (1 - mask) * finfo.min on keys (same softmax as -10000 / -inf)
        bias = (1.0 - attention_mask.to(dtype))[:, None, None, :] * torch.finfo(dtype).min
        layer = classic_layer
    else:
        bias = _rec(rec, "act.attn_bias", mosaic_attention_bias(attention_mask, cfg.num_attention_heads, dtype), "none")
        layer = mosaic_layer
    for i in range(cfg.num_hidden_layers):
        x = layer(cfg, P, i, x, bias, training, rec)
    return _rec(rec, "act.hidden", x * attention_mask[..., None].to(dtype))


def mlm_head(cfg: Config, P: Params, h: torch.Tensor, rec=None) -> torch.Tensor:
    """cls.predictions: LN(GELU(dense(h))) @ E^T + bias, decoder weight tied to the word embeddings."""
    t = _rec(rec, "act.mlm_dense", F.linear(h, P["cls.predictions.transform.dense.weight"],
                                            P["cls.predictions.transform.dense.bias"]))
    eps = cfg.layer_norm_eps if cfg.classic else MLM_TRANSFORM_LN_EPS
    t = _rec(rec, "act.mlm_transform", layer_norm(gelu(t), P["cls.predictions.transform.LayerNorm.weight"],
                                                  P["cls.predictions.transform.LayerNorm.bias"], eps))
    dec_bias = P["cls.predictions.bias"] if cfg.classic else P["cls.predictions.decoder.bias"]
    return F.linear(t, P["bert.embeddings.word_embeddings.weight"], dec_bias)


def mlm_label_mask(cfg: Config, labels: torch.Tensor) -> torch.Tensor:
    # MosaicBERT selects labels > 0 (token id 0 can never be a target); HF uses ignore_index -100.
    return labels != -100 if cfg.classic else labels > 0


def mlm_forward(cfg: Config, P: Params, input_ids, attention_mask=None, token_type_ids=None, labels=None, *,
                training=False, rec: Optional[Recorder] = None) -> dict:
    """BertForMaskedLM. logits: [B, S, V] with zeros at pad rows (the head is applied to every position; the
    original computes only the masked rows when labels are given -- same values there). loss: mean cross-entropy
    over the selected (masked) positions."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    h = encoder(cfg, P, input_ids, attention_mask, token_type_ids, training=training, rec=rec)
    logits = mlm_head(cfg, P, h, rec) * attention_mask[..., None].to(h.dtype)
    out = {"hidden": h, "logits": logits}
    if labels is not None:
        sel = mlm_label_mask(cfg, labels)
        out["logits_masked"] = logits[sel]                      # row-major order of masked positions
        out["loss"] = F.cross_entropy(out["logits_masked"], labels[sel])
    return out


def seqcls_forward(cfg: Config, P: Params, input_ids, attention_mask=None, token_type_ids=None, labels=None, *,
                   num_labels: int, training=False, rec: Optional[Recorder] = None) -> dict:
    """BertForSequenceClassification: tanh pooler on position 0, dropout, classifier; MSE for num_labels == 1,
    cross-entropy for integer labels, BCE-with-logits otherwise (HF problem_type inference)."""
    h = encoder(cfg, P, input_ids, attention_mask, token_type_ids, training=training, rec=rec)
    pooled = torch.tanh(F.linear(h[:, 0], P["bert.pooler.dense.weight"], P["bert.pooler.dense.bias"]))
    p_drop = cfg.classifier_dropout if cfg.classifier_dropout is not None else cfg.hidden_dropout_prob
    logits = F.linear(F.dropout(pooled, p_drop, training), P["classifier.weight"], P["classifier.bias"])
    out = {"hidden": h, "pooled": pooled, "logits": logits}
    if labels is not None:
        if num_labels == 1:
            out["loss"] = F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        elif labels.dtype in (torch.int64, torch.int32):
            out["loss"] = F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
        else:
            out["loss"] = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Optimizer and schedule (spec §3, Composer)
# ----------------------------------------------------------------------------------------------------------------

class DecoupledAdamW:
    """Composer's DecoupledAdamW on a list of tensors. Per step, for every parameter:
        step += 1
        theta *= 1 - (lr_t / lr_0) * weight_decay            # decay first, scaled by the schedule, NOT by lr
        m = beta1*m + (1-beta1)*g ;  v = beta2*v + (1-beta2)*g^2
        denom = sqrt(v) / sqrt(1 - beta2^step) + eps
        theta -= (lr_t / (1 - beta1^step)) * m / denom
    lr_0 is the lr given at construction (Composer's group['initial_lr']). The same torch ops as Composer are used,
    so results match it bit for bit on the same torch build."""

    def __init__(self, params: List[torch.Tensor], lr: float, betas=(0.9, 0.98), eps: float = 1e-6,
                 weight_decay: float = 1e-5):
        self.params = params
        self.initial_lr = self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.step_count = 0
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads: List[torch.Tensor]) -> None:
        self.step_count += 1
        lr, b1, b2, step = self.lr, self.beta1, self.beta2, self.step_count
        bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
        for p, g, m, v in zip(self.params, grads, self.exp_avg, self.exp_avg_sq):
            if self.weight_decay != 0:
                decay_factor = (lr / self.initial_lr) if self.initial_lr else 1.0
                p.mul_(1 - decay_factor * self.weight_decay)
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(bc2)).add_(self.eps)
            p.addcdiv_(m, denom, value=-(lr / bc1))


def linear_with_warmup(t: float, t_warmup: float, t_max: float, alpha_i: float = 1.0, alpha_f: float = 0.0) -> float:
    """Composer LinearWithWarmupScheduler multiplier at time t (samples seen; scale_warmup=False):
    warmup: alpha_i * t / t_warmup for t < t_warmup; then alpha_i + frac * (alpha_f - alpha_i) with
    frac = min(1, (t - t_warmup) / (t_max - t_warmup))."""
    if t < t_warmup:
        return alpha_i * min(1.0, t / t_warmup)
    frac = min(1.0, (t - t_warmup) / (t_max - t_warmup)) if t_max > t_warmup else 0.0
    return alpha_i + frac * (alpha_f - alpha_i)


def pretrain_lr(batch_index: int, lr0=5e-4, batch_size=4096, t_warmup=17_203_200, t_max=286_720_000, alpha_f=0.02):
    """Learning rate at the start of batch b (b from 0) for the MosaicBERT-Base pretraining recipe (spec §3)."""
    return lr0 * linear_with_warmup(batch_index * batch_size, t_warmup, t_max, 1.0, alpha_f)


# ----------------------------------------------------------------------------------------------------------------
# Self-test against the spec's golden numbers
# ----------------------------------------------------------------------------------------------------------------

def golden_tiny() -> Tuple[Config, Params]:
    """Spec §6.6 tiny model with deterministic weights 0.1*sin(0.5*i + k) (+1 for LayerNorm weights)."""
    cfg = Config(vocab_size=32, hidden_size=12, num_hidden_layers=2, num_attention_heads=3, intermediate_size=8,
                 type_vocab_size=2, layer_norm_eps=1e-12, attention_probs_dropout_prob=0.0)
    P: Params = OrderedDict()
    for k, (name, shape) in enumerate(param_shapes(cfg, "mlm").items()):
        i = torch.arange(math.prod(shape), dtype=torch.float64)
        t = 0.1 * torch.sin(0.5 * i + k)
        if is_layernorm_weight(name):
            t = t + 1.0
        P[name] = t.reshape(shape)
    return cfg, P


class _Checker:
    def __init__(self):
        self.failures: List[str] = []
        self.count = 0

    def close(self, what: str, got, want, atol: float = 0.0, rtol: float = 0.0):
        got_t = torch.as_tensor(got, dtype=torch.float64).flatten()
        want_t = torch.as_tensor(want, dtype=torch.float64).flatten()
        self.count += 1
        if got_t.shape != want_t.shape:
            self.failures.append(f"{what}: shape {tuple(got_t.shape)} != {tuple(want_t.shape)}")
            return
        err = (got_t - want_t).abs()
        bad = err > atol + rtol * want_t.abs()
        if bool(bad.any()):
            self.failures.append(f"{what}: max |diff| {err.max().item():.3e}; got {got_t.tolist()} want {want_t.tolist()}")

    def equal(self, what: str, got, want):
        self.count += 1
        if got != want:
            self.failures.append(f"{what}: got {got!r} want {want!r}")


def selftest(verbose: bool = True) -> bool:
    c = _Checker()

    # §6.1 slopes and bias samples
    s12 = [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625,
           0.7071067812, 0.3535533906, 0.1767766953, 0.08838834765]
    c.close("slopes H=12", alibi_slopes(12), s12, atol=1e-10)
    c.close("slopes H=16", alibi_slopes(16), [2.0 ** (-k / 2) for k in range(1, 17)], atol=1e-15)
    c.close("slopes H=8", alibi_slopes(8), [2.0 ** -k for k in range(1, 9)], atol=0)
    c.close("slopes H=6", alibi_slopes(6), [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125], atol=0)
    c.close("slopes H=3", alibi_slopes(3), [0.0625, 0.00390625, 0.25], atol=0)
    al = alibi_tensor(12, 8)
    c.close("alibi h0 q0 k0..4", al[0, 0, 0, :5], [0, -0.5, -1.0, -1.5, -2.0], atol=0)
    c.close("alibi h8 q3 k0..6", al[0, 8, 3, :7], [-2.1213203436, -1.4142135624, -0.7071067812, 0,
                                                   -0.7071067812, -1.4142135624, -2.1213203436], atol=1e-10)
    b = mosaic_attention_bias(torch.tensor([[1, 1, 0]]), 12, torch.float64)
    c.close("pad key bias", b[0, 0, 0], [0.0, -0.5, -10001.0], atol=0)

    # §6.5 unpadding bookkeeping
    seqlens, idx, cu = unpad_indices(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))
    c.equal("unpad seqlens", seqlens.tolist(), [5, 3])
    c.equal("unpad indices", idx.tolist(), list(range(8)))
    c.equal("unpad cu_seqlens", cu.tolist(), [0, 5, 8])
    _, idx, cu = unpad_indices(torch.tensor([[1, 1, 0], [1, 0, 0]]))
    c.equal("unpad indices (holes)", idx.tolist(), [0, 1, 3])
    c.equal("unpad cu_seqlens (holes)", cu.tolist(), [0, 2, 3])

    # §6.2 parameter counts (shapes only; base models are never run)
    m = MOSAIC_BASE
    per_layer = sum(math.prod(s) for s in layer_param_shapes(m, 0).values())
    emb = sum(math.prod(s) for n, s in param_shapes(m, "encoder").items() if n.startswith("bert.embeddings."))
    c.equal("MosaicBERT-Base per layer", per_layer, 9_444_096)
    c.equal("MosaicBERT-Base encoder", per_layer * m.num_hidden_layers, 113_329_152)
    c.equal("MosaicBERT-Base embeddings", emb, 23_448_576)
    c.equal("MosaicBERT-Base BertForMaskedLM", count_params(m, "mlm"), 137_400_384)
    c.equal("MosaicBERT-Base BertModel+pooler", count_params(m, "model"), 137_368_320)
    c.equal("MosaicBERT-Base seq-cls 1/2/3", [count_params(m, "cls", n) for n in (1, 2, 3)],
            [137_369_089, 137_369_858, 137_370_627])
    c.equal("HF BERT-base per layer", sum(math.prod(s) for s in layer_param_shapes(HF_BERT_BASE, 0).values()), 7_087_872)
    c.equal("HF BERT-base BertModel+pooler", count_params(HF_BERT_BASE, "model"), 109_482_240)
    c.equal("HF BERT-base BertForMaskedLM", count_params(HF_BERT_BASE, "mlm"), 109_514_298)
    c.equal("MosaicBERT-Large (assumed) MLM", count_params(MOSAIC_LARGE_ASSUMED, "mlm"), 435_221_312)
    c.equal("MosaicBERT-Base state-dict entries", len(full_state_dict_order(m, "mlm")), 142)

    # §6.4 schedule spot values (given to 7 significant digits)
    for bi, want in [(0, 0.0), (1, 1.190476e-7), (2100, 2.5e-4), (4200, 5.0e-4), (10000, 4.568085e-4),
                     (37100, 2.55e-4), (69999, 1.000745e-5), (70000, 1.0e-5)]:
        c.close(f"lr at batch {bi}", pretrain_lr(bi), want, atol=1e-18, rtol=1e-6)

    # §6.6 golden tiny forward pass, float64, tolerance 1e-12
    cfg, P = golden_tiny()
    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 5, 3, 0, 0]])
    tt = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        out = mlm_forward(cfg, P, ids, mask, tt)
        h, logits = out["hidden"], out["logits"]
        tol = 1e-12
        c.close("golden hidden[0,0,0:4]", h[0, 0, :4],
                [0.241827193010092, 1.1833925857278491, 1.4092680213919568, 1.6226770233134853], atol=tol)
        c.close("golden hidden[1,2,0:4]", h[1, 2, :4],
                [-0.3096759644025423, 0.755748861527325, 1.3456400165810267, 1.657755084654453], atol=tol)
        c.close("golden logits[0,1,0:4]", logits[0, 1, :4],
                [0.6254351433368311, 0.7157387932793816, 0.7621276161132611, 0.7544794999448018], atol=tol)
        c.close("golden logits[1,0,0:4]", logits[1, 0, :4],
                [0.6550049515426235, 0.5920479491910629, 0.4950292614588551, 0.36525053652839634], atol=tol)
        real = mask.bool()
        c.equal("golden argmax", logits[real].argmax(-1).tolist(), [20, 2, 17, 18, 21, 21, 22, 21])
        c.close("golden sum of real logits", logits[real].sum(), 1.645785399013728, atol=tol)
        c.equal("golden pad hidden is zero", bool((h[1, 3:] == 0).all()), True)
        alone = mlm_forward(cfg, P, ids[1:, :3], mask[1:, :3], tt[1:, :3])["logits"]
        # spec: difference 0.0; here a different S changes BLAS blocking, so allow rounding-level differences
        c.close("golden row 1 alone == in batch", alone[0], logits[1, :3], atol=tol)

    # Classic BERT: padded batch equals each sequence alone; position embeddings matter
    ccfg = Config(vocab_size=32, hidden_size=12, num_hidden_layers=2, num_attention_heads=3, intermediate_size=20,
                  max_position_embeddings=8, classic=True)
    cP = init_params(ccfg, "mlm", seed=1)
    with torch.no_grad():
        lb = mlm_forward(ccfg, cP, ids, mask, tt)["logits"]
        la = mlm_forward(ccfg, cP, ids[1:, :3], mask[1:, :3], tt[1:, :3])["logits"]
        c.close("classic row 1 alone == in batch", la[0], lb[1, :3], atol=1e-13)

    # MLM loss equals the mean CE over masked rows computed by hand; label selection rule
    labels = torch.full_like(ids, -100)
    labels[0, 1], labels[0, 3], labels[1, 2] = 5, 30, 1
    out = mlm_forward(cfg, P, ids, mask, tt, labels)
    lg = out["logits"]
    manual = -(torch.log_softmax(lg[0, 1], -1)[5] + torch.log_softmax(lg[0, 3], -1)[30]
               + torch.log_softmax(lg[1, 2], -1)[1]) / 3
    c.close("MLM loss = mean CE over masked rows", out["loss"], manual, atol=1e-14)

    # DecoupledAdamW: at constant lr it equals torch.optim.AdamW with weight_decay = wd / lr; wd = 0 -> Adam.
    g = torch.Generator().manual_seed(3)
    for wd in (0.0, 0.01):
        lr = 0.05
        x0 = torch.randn(7, 5, generator=g, dtype=torch.float64)
        grads = [torch.randn(7, 5, generator=g, dtype=torch.float64) for _ in range(4)]
        mine = x0.clone()
        opt = DecoupledAdamW([mine], lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=wd)
        ref = x0.clone().requires_grad_(True)
        topt = torch.optim.AdamW([ref], lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=wd / lr)
        for gr in grads:
            opt.step([gr])
            ref.grad = gr.clone()
            topt.step()
        c.close(f"DecoupledAdamW == torch AdamW(wd/lr) wd={wd}", mine, ref.detach(), atol=1e-13)
    # decay is scaled by lr_t/lr_0, not lr: one step with zero gradient and m=v=0 only decays
    x = torch.ones(3, dtype=torch.float64)
    opt = DecoupledAdamW([x], lr=1e-3, weight_decay=0.1)
    opt.lr = 0.5e-3
    opt.step([torch.zeros(3, dtype=torch.float64)])
    c.close("decoupled decay factor", x, [1 - 0.5 * 0.1] * 3, atol=1e-15)

    if verbose:
        for f in c.failures:
            print("FAIL", f)
        print(f"selftest: {c.count - len(c.failures)} passed, {len(c.failures)} failed (torch {torch.__version__})")
    return not c.failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--selftest", action="store_true", help="check the spec's golden numbers and exit")
    ap.add_argument("--counts", action="store_true", help="print parameter counts of the base configs")
    a = ap.parse_args(argv)
    if a.counts:
        for name, cfg in [("MosaicBERT-Base", MOSAIC_BASE), ("HF BERT-base", HF_BERT_BASE),
                          ("MosaicBERT-Large (assumed)", MOSAIC_LARGE_ASSUMED)]:
            print(f"{name}: mlm {count_params(cfg, 'mlm'):,}  model+pooler {count_params(cfg, 'model'):,}")
    if a.selftest or not a.counts:
        return 0 if selftest() else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
