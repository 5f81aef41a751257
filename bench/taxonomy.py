"""Benchmark (issue #26): catalogue-scale label sets. PriceRunner's products as 2,115 leaves
(`bench/taxonomy_data.py`: clusters with at least 4 merchant titles, a stratified quarter of each
cluster's titles as the test split) against the TF-IDF + LinearSVC baseline on the same rows, in
one run; the 10-category model on the same rows for relabel speed; and flat data sets trained with
the sparse defaults and with every weight kept (prune 0, no cap: the dense model of before).

    python3 bench/taxonomy.py [--work DIR] [--copies 20]

Prints a table: test macro-F1, accuracy, training wall time, peak RSS, model size, relabel (median of three interleaved runs)
titles/s. Needs ../shared/data (skips with a message otherwise), a built prodcat, and the
benchmark venv (.deps/bench-venv: scikit-learn, pandas, pyarrow; installed on first use).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared/data"
sys.path.insert(0, str(ROOT / "bench"))
from pricerunner_train import bench_python, prodcat_binary  # noqa: E402

BASELINE = """
import json, resource, sys, time
sys.path.insert(0, {bench!r})
import pandas as pd
from tfidf_svm import fit_and_score
read = lambda p: pd.read_csv(p, keep_default_na=False, dtype=str).rename(columns={{{text!r}: "text", {label!r}: "label"}})
from sklearn.metrics import accuracy_score, f1_score
test = read({test!r})
r = fit_and_score(read({train!r}), test, c={c})
r.pop("per_class_auc")
# The leaf predictions' categories (paths `Category > Product`), and hierarchical F1 over
# {{category, leaf}} sets.
pred = r.pop("predictions")
top = lambda labels: [l.split(" > ")[0] for l in labels]
r["level1_macro_f1"] = f1_score(top(test.label), top(pred), average="macro")
r["level1_accuracy"] = accuracy_score(top(test.label), top(pred))
common = sum((t == p) + (t.split(" > ")[0] == p.split(" > ")[0]) for t, p in zip(test.label, pred))
r["hierarchical_f1"] = common / (2 * len(pred))
r["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(r))
"""


def run(cmd: list) -> tuple:
    """Runs a command; returns (seconds, stdout). Exits on failure."""
    started = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started, proc.stdout


def timed(cmd: list) -> tuple:
    """(seconds, peak RSS MiB, stdout) of a command, measured by /usr/bin/time."""
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "PEAK_RSS_KB=%M"] + [str(c) for c in cmd],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr[-3000:]}")
    rss = next(int(l.split("=")[1]) for l in proc.stderr.splitlines() if l.startswith("PEAK_RSS_KB="))
    return seconds, rss / 1024, proc.stdout


def last_metrics(stdout: str) -> tuple:
    line = [l for l in stdout.splitlines() if l.startswith("macro_f1=")][-1]
    f1, acc = (float(p.split("=")[1]) for p in line.split())
    return f1, acc


def level_metrics(stdout: str) -> dict:
    """The `level 1: macro_f1=… accuracy=…` and `hierarchical: f1=…` lines of a taxonomy model."""
    out = {}
    for l in stdout.splitlines():
        if l.startswith("level 1: "):
            out["level1_macro_f1"], out["level1_accuracy"] = (float(p.split("=")[1]) for p in l.split()[2:])
        elif l.startswith("hierarchical: f1="):
            out["hierarchical_f1"] = float(l.split("=")[1])
    return out


def train(prodcat, work, name, data, text, label, extra, test=None) -> dict:
    registry = work / "registry"
    cmd = [prodcat, "train", "--model-type", "lexical", "--data", data, "--text-column", text,
           "--label-column", label, "--out", registry, "--name", name, "--no-progress"] + extra
    if test:
        cmd += ["--test-data", test]
    seconds, rss, out = timed(cmd)
    f1, acc = last_metrics(out)
    model = registry / name / "current"
    card = json.loads((model / "card.json").read_text())
    return {"model": name, "macro_f1": f1, "accuracy": acc, "train_s": seconds, "rss_mib": rss, **level_metrics(out),
            "size_mb": (model / "model.onnx").stat().st_size / 1e6, "path": model,
            "weights": (card.get("model") or {}).get("weights")}


def relabel(prodcat, work, model, parquet) -> float:
    out = work / f"relabel-{model.parent.name}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    _, stdout = run([prodcat, "relabel", "--model", model, "--input", parquet, "--output", out,
                     "--text-columns", "title", "--no-progress"])
    return float(next(l.split()[-1] for l in stdout.splitlines() if l.strip().startswith("rows/s")))


def prepare(work: Path, data_script: str):
    """A fresh `work` folder with the data `bench/<data_script>` writes into `work/data`: the prodcat
    binary, the benchmark venv's Python, that folder and the script's counts (its JSON line, also
    printed). None where the shared data is absent (said so)."""
    if not (SHARED / "pricerunner/pricerunner.csv").exists():
        print(f"skipped: {SHARED} not found (the shared data sets live there on prepared machines)")
        return None
    prodcat = prodcat_binary()
    py = bench_python("scikit-learn", "pandas", "pyarrow")
    subprocess.run(["rm", "-rf", str(work)], check=True)
    data = work / "data"
    line = run([sys.executable, ROOT / "bench" / data_script, data])[1].strip()
    print(line)
    return prodcat, py, data, json.loads(line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=ROOT / ".prodcat/bench/taxonomy")
    ap.add_argument("--copies", type=int, default=20, help="copies of the test titles relabeled")
    ap.add_argument("--skip-flat", action="store_true")
    args = ap.parse_args()
    prepared = prepare(args.work, "taxonomy_data.py")
    if prepared is None:
        return
    prodcat, py, data, _ = prepared
    work = args.work
    train_csv, test_csv = data / "train.csv", data / "test.csv"
    rows = []

    # The baseline first, alone on the machine (scikit-learn fits on one core).
    code = BASELINE.format(bench=str(ROOT / "bench"), text="title", label="label",
                           train=str(train_csv), test=str(test_csv), c=1.0)
    seconds, rss, out = timed([py, "-c", code])
    base = json.loads(out.strip().splitlines()[-1])
    rows.append({"model": "TF-IDF + LinearSVC (C=1), 2,115 leaves", "macro_f1": base["macro_f1"],
                 "accuracy": base["accuracy"], "train_s": base["train_seconds"], "rss_mib": rss,
                 **{k: base[k] for k in ("level1_macro_f1", "level1_accuracy", "hierarchical_f1")},
                 "size_mb": None, "relabel": base["titles_per_second"], "note": f"whole process {seconds:.0f} s"})

    leaves = train(prodcat, work, "leaves", train_csv, "title", "label", ["--refit"], test_csv)
    category = train(prodcat, work, "categories", train_csv, "title", "category", ["--refit"], test_csv)

    # Relabel speed: the test titles repeated, through each model.
    parquet = work / "relabel.parquet"
    subprocess.run([py, "-c", (
        "import pandas as pd, sys; t = pd.read_csv(sys.argv[1], keep_default_na=False, dtype=str)[['title']]; "
        f"pd.concat([t] * {args.copies}, ignore_index=True).to_parquet(sys.argv[2])"), test_csv, parquet], check=True)
    # Three runs of each, interleaved (this machine's rates move by a fifth between runs): the median.
    rates = {id(m): [] for m in (leaves, category)}
    for _ in range(3):
        for m in (leaves, category):
            rates[id(m)].append(relabel(prodcat, work, m["path"], parquet))
    for m in (leaves, category):
        m["relabel"] = sorted(rates[id(m)])[1]
    w = leaves["weights"] or {}
    leaves["note"] = (f"{w.get('features', 0):,} features, {w.get('nonzeros', 0):,} weights, width {w.get('width')}; "
                      f"relabel {leaves['relabel'] / category['relabel']:.2f}× the 10-category model's")
    leaves["model"], category["model"] = "prodcat lexical --refit, 2,115 leaves", "prodcat lexical --refit, 10 categories"
    rows += [leaves, category]

    if not args.skip_flat:
        # Flat data: the sparse defaults against every weight kept (the dense model of before).
        flat = [("PriceRunner 10 categories", SHARED / "pricerunner/pricerunner.csv", "Product Title", "Category Label",
                 ["--group-column", "Cluster ID"]),
                ("Amazon 2023, 24 categories", SHARED / "amazon_reviews_2023/items.csv", "title", "file_category", [])]
        for name, path, text, label, extra in flat:
            for setting, flags in (("sparse defaults", []),
                                   ("all weights", ["--prune-below", "0", "--max-classes-per-feature", "0"])):
                key = f"{name.split()[0].lower()}-{'dense' if flags else 'sparse'}"
                r = train(prodcat, work, key, path, text, label, extra + flags)
                r["model"], r["note"] = f"{name}: {setting}", ""
                rows.append(r)

    print(f"\nCatalogue scale, {prodcat.name} build, {os.cpu_count()} CPUs\n")
    print(f"| {'model':<44} | macro-F1 | accuracy | category macro-F1 / accuracy | hierarchical F1 | train s "
          "| peak RSS MiB | model MB | relabel titles/s | note |")
    print(f"|{'-' * 46}|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        size = f"{r['size_mb']:.1f}" if r.get("size_mb") else "-"
        rel = f"{r['relabel']:,.0f}" if r.get("relabel") else "-"
        top = f"{r['level1_macro_f1']:.4f} / {r['level1_accuracy']:.4f}" if "level1_macro_f1" in r else "-"
        hier = f"{r['hierarchical_f1']:.4f}" if "hierarchical_f1" in r else "-"
        print(f"| {r['model']:<44} | {r['macro_f1']:.4f} | {r['accuracy']:.4f} | {top} | {hier} | {r['train_s']:.1f} | "
              f"{r['rss_mib']:,.0f} | {size} | {rel} | {r.get('note', '')} |")


if __name__ == "__main__":
    main()
