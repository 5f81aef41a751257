"""Python baselines on the same titles (one JSON line per measurement).

1. Hugging Face `pipeline("text-classification")` on the base encoder with a classification head
   of the same size (PyTorch eager, on the CPU or — device `cuda` — the GPU in fp32 and fp16):
   what a Python user would run.
2. Python ONNX Runtime `session.run` on prodcat's exported model.onnx, file-order and
   length-sorted batches (HF tokenizers, padding to the longest in the batch).
"""
import json
import os
import sys
import time

import numpy as np


def percentiles(times):
    times = sorted(times)
    pick = lambda p: times[round((len(times) - 1) * p)] * 1e3
    return pick(0.5), pick(0.99)


def main():
    titles_path, model_dir, base_dir, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    titles = open(titles_path).read().split("\n")
    labels = json.load(open(f"{model_dir}/labels.json"))

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    if device == "cpu":
        torch.set_num_threads(2)  # the two cores prodcat's CPU numbers are measured on
    tok = AutoTokenizer.from_pretrained(base_dir)
    if any(os.path.exists(f"{base_dir}/{w}") for w in ("model.safetensors", "pytorch_model.bin")):
        model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=len(labels))
        weights = ""
    else:
        # Only the configuration travelled (a GPU machine with no copy of the weights): the same
        # architecture with random weights does the same arithmetic, so its throughput is the same.
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained(base_dir, num_labels=len(labels))
        model = AutoModelForSequenceClassification.from_config(config)
        weights = "; random weights of the same configuration (throughput only)"
    dtypes = [torch.float32] + ([torch.float16] if device == "cuda" else [])
    for dtype in dtypes:
        clf = pipeline("text-classification", model=model.to(dtype), tokenizer=tok, device=device)
        clf(titles[:64], batch_size=batch)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        clf(titles, batch_size=batch, truncation=True)
        if device == "cuda":
            torch.cuda.synchronize()
        rate = len(titles) / (time.perf_counter() - start)
        where = "CPU" if device == "cpu" else f"{torch.cuda.get_device_name()}, {str(dtype).split('.')[-1]}"
        print(json.dumps({"name": f"Python HF transformers pipeline (PyTorch, {where})", "titles_per_second": rate, "note": f"{len(titles)} titles, batch {batch}{weights}"}), flush=True)

    import onnxruntime as ort
    from tokenizers import Tokenizer

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            print(f"Python ONNX Runtime {ort.__version__} here has no CUDA provider: not measured", file=sys.stderr)
            return
        providers.insert(0, "CUDAExecutionProvider")
    sess = ort.InferenceSession(f"{model_dir}/model.onnx", so, providers=providers)
    names = {i.name for i in sess.get_inputs()}
    provider = sess.get_providers()[0].replace("ExecutionProvider", "")
    tk = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tk.no_padding()
    enc = [e.ids for e in tk.encode_batch(titles)]

    def run(order, label):
        times = []
        start = time.perf_counter()
        for s in range(0, len(order), batch):
            rows = [enc[i] for i in order[s:s + batch]]
            width = max(len(r) for r in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for j, r in enumerate(rows):
                ids[j, :len(r)] = r
                mask[j, :len(r)] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in names:
                feed["token_type_ids"] = np.zeros_like(ids)
            t = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t)
        rate = len(order) / (time.perf_counter() - start)
        p50, p99 = percentiles(times)
        print(json.dumps({"name": f"Python ONNX Runtime {ort.__version__} session.run ({provider}), {label}", "titles_per_second": rate, "p50_ms": p50, "p99_ms": p99, "note": f"{len(order)} titles"}), flush=True)

    run(list(range(len(enc))), "file-order batches")
    run(sorted(range(len(enc)), key=lambda i: len(enc[i])), "length-sorted batches")


if __name__ == "__main__":
    main()
