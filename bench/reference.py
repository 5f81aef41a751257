"""prodcat's forward pass against Hugging Face `transformers` on the same weights and token ids,
per encoder family (#27): the reference implementation is the judge of each architecture.

For every family prodcat loads, `bench_reference` writes a tiny random checkpoint in Hugging Face's
layout (config.json, model.safetensors, tokenizer.json) with the ids of six mixed-length texts,
prodcat's candle logits and the ONNX export of the same model (random head, base weights, the
family's default pooling). This script loads each checkpoint with `transformers`' AutoModel
(eager attention, fp32), pools its last hidden state the same way, applies the same head, runs
the ONNX export in ONNX Runtime, and prints max |logit difference| per family. Target ≤ 1e-4.

    python3 -m venv .deps/reference-venv
    .deps/reference-venv/bin/pip install -r bench/reference-requirements.txt
    .deps/reference-venv/bin/python bench/reference.py [--out DIR]
"""
import argparse
import json
import pathlib
import subprocess
import tempfile

import numpy as np
import onnxruntime as ort
import torch
import transformers
from transformers import AutoModel

TARGET = 1e-4


def pool(hidden, mask, how):
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if how == "cls":
        return hidden[:, 0]
    # last: the last token under the attention mask (right padding), never by pad id
    last = mask.sum(1).clamp(min=1) - 1
    return hidden[torch.arange(hidden.shape[0]), last]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="where the checkpoints go (default: a temporary folder)")
    ap.add_argument("--base", action="append", default=[],
                    help="also a real Hugging Face folder (e.g. .deps/models/all-mpnet-base-v2); repeatable")
    args = ap.parse_args()
    root = pathlib.Path(__file__).resolve().parent.parent
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="prodcat-reference-"))
    subprocess.run(["cargo", "build", "-q", "--example", "bench_reference"], cwd=root, check=True)
    target_dir = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                                           cwd=root, check=True, capture_output=True).stdout)["target_directory"]
    bases = [str(pathlib.Path(b).resolve()) for b in args.base]
    dirs = subprocess.run([f"{target_dir}/debug/examples/bench_reference", str(out), *bases], cwd=root, check=True,
                          capture_output=True, text=True).stdout.split()
    torch.set_grad_enabled(False)
    transformers.logging.set_verbosity_error()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, onnxruntime {ort.__version__}; "
          "\n")
    rows = []
    for d in map(pathlib.Path, dirs):
        rec = json.loads((d / "prodcat.json").read_text())
        model, info = AutoModel.from_pretrained(rec["base"], attn_implementation="eager", dtype=torch.float32,
                                                output_loading_info=True)
        model.eval()
        # Everything the reference computes with comes from the checkpoint (only BERT's pooler,
        # which neither side uses, may be missing).
        missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]
        if missing or info.get("mismatched_keys"):
            raise SystemExit(f"{d.name}: the reference did not load {missing or info['mismatched_keys']}")
        cfg = model.config
        ids = torch.tensor(rec["input_ids"])
        mask = torch.tensor(rec["attention_mask"])
        kwargs = {"input_ids": ids, "attention_mask": mask}
        if cfg.model_type == "bert":
            kwargs["token_type_ids"] = torch.tensor(rec["token_type_ids"])
        hidden = model(**kwargs).last_hidden_state
        pooled = pool(hidden, mask, rec["pooling"])
        w, b = torch.tensor(rec["head_weight"]), torch.tensor(rec["head_bias"])
        reference = (pooled @ w.T + b).numpy()
        candle = np.array(rec["candle_logits"], dtype=np.float32)
        session = ort.InferenceSession(str(d / "prodcat-onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        if "token_type_ids" in {i.name for i in session.get_inputs()}:
            feeds["token_type_ids"] = np.array(rec["token_type_ids"], dtype=np.int64)
        onnx = session.run(["logits"], feeds)[0]
        rows.append((rec["family"], cfg.model_type, type(model).__name__, rec["pooling"], ids.shape[1],
                     float(np.abs(candle - reference).max()), float(np.abs(onnx - reference).max()),
                     float(np.abs(reference).max())))
    print("| family | model_type | reference class | pooling | seq | max abs diff candle | max abs diff ONNX | max abs logit | ≤ 1e-4 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f, mt, cls, p, s, dc, do, mx in rows:
        ok = "yes" if max(dc, do) <= TARGET else "NO"
        print(f"| {f} | {mt} | {cls} | {p} | {s} | {dc:.2e} | {do:.2e} | {mx:.3f} | {ok} |")
    if any(max(r[5], r[6]) > TARGET for r in rows):
        raise SystemExit("some family differs from the reference by more than 1e-4")


if __name__ == "__main__":
    main()
