#!/usr/bin/env python3
"""Prints Hugging Face's longest_first pair truncation as a table: n1 n2 max_length -> kept1 kept2.
Used to pin down the rule the C# BertTokenizer must follow (texts of n 'a' words are n tokens)."""
import json
import sys
from tokenizers import BertWordPieceTokenizer

tok = BertWordPieceTokenizer(sys.argv[1], lowercase=True)
rows = []
for m in range(3, 20):
    tok.enable_truncation(m, strategy="longest_first")
    for n1 in range(0, 24):
        for n2 in range(0, 24):
            e = tok.encode(" ".join(["a"] * n1), " ".join(["b"] * n2))
            k1 = e.type_ids.count(0) - 2
            k2 = e.type_ids.count(1) - 1
            rows.append([n1, n2, m, k1, k2])
print(json.dumps({"truncation_grid": rows}))
