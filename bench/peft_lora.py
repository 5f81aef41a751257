"""Training speed of the Python reference: PEFT LoRA (r=16, alpha=32, dropout 0.05 on the attention
query/key/value/output projections) on all-MiniLM-L6-v2 with mean pooling and a linear head,
AdamW, batch 32, dynamic padding (max length 48), 2 threads — prodcat's recipe, in PyTorch.

    python bench/peft_lora.py SPLIT.csv BASE_DIR [--rows 2000]   # prints one JSON line
"""
import argparse
import json
import time

import pandas as pd
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModel, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("split")
    ap.add_argument("base")
    ap.add_argument("--rows", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(42)
    df = pd.read_csv(args.split, keep_default_na=False)
    train = df[df.split == "train"].sample(n=args.rows, random_state=42)
    labels = sorted(df.label.unique())
    y = torch.tensor([labels.index(l) for l in train.label])
    tok = AutoTokenizer.from_pretrained(args.base)
    encoder = AutoModel.from_pretrained(args.base)
    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["query", "key", "value", "attention.output.dense"])
    encoder = get_peft_model(encoder, config)
    head = torch.nn.Linear(encoder.config.hidden_size, len(labels))
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    texts = list(train.text)
    start = time.perf_counter()
    for s in range(0, len(texts), 32):
        batch = tok(texts[s:s + 32], padding=True, truncation=True, max_length=48, return_tensors="pt")
        out = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        loss = torch.nn.functional.cross_entropy(head(pooled), y[s:s + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    secs = time.perf_counter() - start
    print(json.dumps({"model": "peft-lora", "rows": len(texts), "samples_per_second": len(texts) / secs}))


if __name__ == "__main__":
    main()
