#!/usr/bin/env python3
"""Regenerates the checkpoint fixtures in this folder with real PyTorch (run from anywhere).

Made with Debian's python3-torch 1.13 (`apt-get install -y python3-torch`); any torch >= 1.6 writes the same zip
layout. Outputs (all tiny, committed):

  tensors.pt          torch.save of an OrderedDict covering every dtype and layout case the reader handles:
                      float32/float64/float16/bfloat16/int64/int32/int16/int8/uint8/bool, a transposed
                      (non-contiguous) view, a row view (storage_offset), a strided column view, tied weights
                      (two names, one storage), a 0-d scalar, an empty tensor, an nn.Parameter.
  tiny_mlm.pt         model.state_dict() of a tiny module with a decoder tied to the embeddings (like MosaicBERT's
                      cls.predictions.decoder.weight / bert.embeddings.word_embeddings.weight); the OrderedDict
                      carries `_metadata` (pickled with BUILD), as real state dicts do.
  composer_plain.pt   a Composer-style checkpoint {"state": {"model": {"model.<name>": tensor}, ...}} holding only
                      plain containers.
  composer_full.pt    the same plus RNG state with a numpy array (numpy globals: refused unless
                      AllowUnknownGlobals).
  legacy.pt           the pre-1.6 (non-zip) format, which must be rejected with a clear message.
  tensors.safetensors contiguous copies of tensors.pt's tensors written by an independent, hand-rolled safetensors
                      writer below (struct + json, as the reference implementation lays it out).
  expected.json       {file: {name: {"dtype", "shape", "values" (row-major, as numbers; bool as 0/1)}}}.
"""
import json
import os
import struct
from collections import OrderedDict

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))

ST_DTYPE = {
    torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def values(t):
    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        return [float(x) for x in t.double().reshape(-1).tolist()]
    return [int(x) for x in t.long().reshape(-1).tolist()]


def describe(sd):
    return {k: {"dtype": ST_DTYPE[v.dtype], "shape": list(v.shape), "values": values(v)} for k, v in sd.items()}


def save_safetensors(path, tensors, metadata):
    """Minimal independent safetensors writer: header sorted like the reference (by dtype size desc, then name)."""
    items = sorted(tensors.items(), key=lambda kv: (-kv[1].element_size(), kv[0]))
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in items:
        data = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": ST_DTYPE[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def main():
    torch.manual_seed(0)
    expected = {}

    base = torch.tensor([[0.5, -1.25, 2.0, 3.75], [4.5, -5.0, 6.125, 7.0], [8.0, 9.5, -10.0, 11.25]], dtype=torch.float32)
    tied = torch.tensor([[0.1, 0.2], [0.3, 0.4], [-0.5, 0.6]], dtype=torch.float32)
    sd = OrderedDict()
    sd["f32"] = base
    sd["f64"] = torch.tensor([1.0 / 3.0, -2.5e-300, 1e300], dtype=torch.float64)
    sd["f16"] = torch.tensor([[1.0, -0.333251953125], [65504.0, 6.103515625e-05]], dtype=torch.float16)
    sd["bf16"] = torch.tensor([1.0, -3.140625, 1.0e38], dtype=torch.bfloat16)
    sd["i64"] = torch.tensor([0, -5, 2 ** 40, -(2 ** 62)], dtype=torch.int64)
    sd["i32"] = torch.tensor([[7, -8], [2 ** 31 - 1, -(2 ** 31)]], dtype=torch.int32)
    sd["i16"] = torch.tensor([-32768, 32767, 1], dtype=torch.int16)
    sd["i8"] = torch.tensor([-128, 127, 0], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 255, 17], dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True], dtype=torch.bool)
    sd["transposed"] = base.t()                 # [4, 3], strides (1, 4): non-contiguous
    sd["row_view"] = base[1]                     # storage_offset 4, contiguous
    sd["column_view"] = base[:, 2]               # storage_offset 2, stride (4,)
    sd["embed.weight"] = tied                    # tied weights: one storage, two names
    sd["decoder.weight"] = tied
    sd["scalar"] = torch.tensor(3.5)             # 0-d
    sd["empty"] = torch.zeros(0, 3)              # no elements
    sd["param"] = torch.nn.Parameter(torch.tensor([1.5, -2.5]))  # pickled via _rebuild_parameter
    torch.save(sd, os.path.join(HERE, "tensors.pt"))
    expected["tensors.pt"] = describe(sd)

    save_safetensors(os.path.join(HERE, "tensors.safetensors"),
                     OrderedDict((k, v.detach()) for k, v in sd.items() if k != "param"),
                     {"format": "pt", "source": "make_fixtures.py"})
    expected["tensors.safetensors"] = {k: v for k, v in expected["tensors.pt"].items() if k != "param"}

    class TinyMlm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = torch.nn.Embedding(5, 4)
            self.norm = torch.nn.LayerNorm(4)
            self.decoder = torch.nn.Linear(4, 5)
            self.decoder.weight = self.embeddings.weight

    model = TinyMlm()
    msd = model.state_dict()
    assert msd["decoder.weight"].data_ptr() == msd["embeddings.weight"].data_ptr()
    torch.save(msd, os.path.join(HERE, "tiny_mlm.pt"))
    expected["tiny_mlm.pt"] = describe(msd)

    composer_model = OrderedDict(("model." + k, v) for k, v in msd.items())
    plain = {"state": {"model": composer_model, "timestamp": {"epoch": 1, "batch": 7}, "integrations": {}},
             "rng": [{"python": [3, [1, 2, 3], None]}]}
    torch.save(plain, os.path.join(HERE, "composer_plain.pt"))
    full = {"state": {"model": composer_model, "optimizers": {}},
            "rng": [{"numpy": np.arange(4, dtype=np.uint32), "torch": torch.tensor([1, 2], dtype=torch.uint8)}]}
    torch.save(full, os.path.join(HERE, "composer_full.pt"))
    expected["composer.pt"] = describe(msd)

    torch.save(OrderedDict(w=torch.ones(2)), os.path.join(HERE, "legacy.pt"), _use_new_zipfile_serialization=False)

    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print("torch", torch.__version__, "->", HERE)


if __name__ == "__main__":
    main()
