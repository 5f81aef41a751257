"""Benchmark: LoRA fine-tuning of all-MiniLM-L6-v2 on PriceRunner, side by side with two baselines
on the same cluster-grouped split: a head trained on the frozen encoder, and TF-IDF + linear SVM.

    python3 bench/pricerunner_train.py [--epochs 3] [--max-rows N] [--skip-frozen]

Prints a table: test macro-F1, accuracy, training samples/s, wall time, trainable parameters and
peak RSS of each run. Needs ../shared/data/pricerunner (skips with a message otherwise), the
provisioned base model, a built prodcat (debug or release) and, for the TF-IDF baseline,
scikit-learn (installed into .deps/bench-venv on first use).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared/data/pricerunner/pricerunner.csv"
BASE = ROOT / ".deps/models/all-MiniLM-L6-v2"
OUT = ROOT / ".prodcat/bench/pricerunner"
VENV = ROOT / ".deps/bench-venv"
COLUMNS = ["--text-column", "Product Title", "--label-column", "Category Label", "--group-column", "Cluster ID"]


def missing(path: Path) -> bool:
    """Whether a shared data file is absent (then says the benchmark is skipped)."""
    if path.exists():
        return False
    print(f"skipped: {path} not found (the shared data sets live in ../shared/data on prepared machines)")
    return True


def prodcat_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for profile in ("release", "debug"):
        if (target / profile / "prodcat").exists():
            return target / profile / "prodcat"
    sys.exit("build prodcat first: cargo build --release")


def run(cmd: list, env=None) -> tuple:
    """Runs a command; returns (seconds, peak RSS in MiB, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"failed ({status}): {' '.join(map(str, cmd))}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, out


def bench_python(*packages: str) -> Path:
    """The benchmark venv with `packages` importable (installed on first use)."""
    py = VENV / "bin/python"
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    modules = {"scikit-learn": "sklearn"}
    missing = [p for p in packages if subprocess.call([py, "-c", f"import {modules.get(p, p)}"], stderr=subprocess.DEVNULL) != 0]
    if missing:
        subprocess.check_call([py, "-m", "pip", "install", "-q", *missing])
    return py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--frozen-epochs", type=int, default=8)
    ap.add_argument("--max-rows", type=int)
    ap.add_argument("--lr", default="1e-3")
    ap.add_argument("--skip-frozen", action="store_true")
    ap.add_argument("--extra", default="", help="extra flags for the LoRA run")
    ap.add_argument("--peft", action="store_true", help="also time PEFT LoRA training in PyTorch (installs torch once)")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} not found (PriceRunner lives in ../shared/data on prepared machines)")
        return
    if not (BASE / "model.safetensors").exists():
        sys.exit("run `bash scripts/provision.sh` first")
    prodcat = prodcat_binary()
    OUT.mkdir(parents=True, exist_ok=True)
    limit = ["--max-rows", str(args.max_rows)] if args.max_rows else []
    rows = []

    split_csv = OUT / "split.csv"
    run([prodcat, "split", "--data", DATA, *COLUMNS, *limit, "--out", split_csv])

    secs, rss, _ = run([prodcat, "train", "--data", DATA, *COLUMNS, *limit, "--base", BASE, "--out", OUT / "registry",
                        "--name", "lora", "--epochs", args.epochs, "--lr", args.lr, "--no-progress", *args.extra.split()])
    rows.append(("MiniLM-L6 + LoRA (prodcat)", json.load(open(OUT / "registry/lora/current/card.json")), secs, rss))
    if not args.skip_frozen:
        secs, rss, _ = run([prodcat, "train", "--data", DATA, *COLUMNS, *limit, "--base", BASE, "--out", OUT / "registry",
                            "--name", "frozen", "--head-only", "--epochs", args.frozen_epochs, "--lr", "5e-3", "--no-progress"])
        rows.append(("MiniLM-L6 frozen + head (prodcat)", json.load(open(OUT / "registry/frozen/current/card.json")), secs, rss))

    py = bench_python("scikit-learn", "pandas")
    secs, rss, out = run([py, ROOT / "bench/tfidf_svm.py", split_csv])
    svm = json.loads(out.strip().splitlines()[-1])
    peft = None
    if args.peft:
        py = bench_python("pandas", "torch", "transformers", "peft")
        peft_secs, peft_rss, out = run([py, ROOT / "bench/peft_lora.py", split_csv, BASE])
        peft = (json.loads(out.strip().splitlines()[-1]), peft_rss)

    print(f"\nPriceRunner, cluster-grouped stratified split (seed 42); test rows: {svm['test_rows']}\n")
    header = f"{'model':<36} {'macro_f1':>9} {'accuracy':>9} {'train samples/s':>16} {'wall s':>8} {'trainable params':>22} {'peak RSS MiB':>13}"
    print(header)
    print("-" * len(header))
    for name, card, secs, rss in rows:
        t, m, tr = card["training"], card["test_metrics"], card["transformer"]
        params = f"{tr['trainable_parameters']:,} ({tr['trainable_percent']:.2f}%)"
        print(f"{name:<36} {m['macro_f1']:>9.4f} {m['accuracy']:>9.4f} {t['samples_per_second']:>16.1f} {secs:>8.0f} {params:>22} {rss:>13.0f}")
    print(f"{'TF-IDF word1-2+char2-5 + LinearSVC':<36} {svm['macro_f1']:>9.4f} {svm['accuracy']:>9.4f} {'-':>16} {svm['train_seconds']:>8.1f} {'-':>22} {rss:>13.0f}")
    if peft:
        p, p_rss = peft
        print(f"{'PEFT LoRA, PyTorch (speed only)':<36} {'-':>9} {'-':>9} {p['samples_per_second']:>16.1f} {'-':>8} {'-':>22} {p_rss:>13.0f}")


if __name__ == "__main__":
    main()
