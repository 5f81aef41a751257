"""Benchmark (issue #26, Measure): the lexical model's memory, size and speed against the class
count. PriceRunner's titles with synthetic labels — each product cluster dealt to one of N classes
by a hash of its id, so every class is a few whole products — at 10, 100, 1,000, 2,000 and 5,000
classes, each trained by `prodcat train --model-type lexical` at one C and one normalisation (the
cost of one solve; the defaults search about six) and then relabeling the training titles.

    python3 bench/classes_scaling.py [--classes 10,100,1000,2000,5000] [--rows 35311]

Prints a table: classes, training wall s and peak RSS, model MB, the graph (dense or sparse),
relabel titles/s and the relabel process's peak RSS (what serving the model holds). Synthetic
labels: the figures are for memory and speed, not quality. Needs ../shared/data (skips with a
message otherwise) and a built prodcat.
"""
import argparse
import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from pricerunner_train import bench_python, missing, prodcat_binary  # noqa: E402
from taxonomy import timed  # noqa: E402

DATA = ROOT.parent / "shared/data/pricerunner/pricerunner.csv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", default="10,100,1000,2000,5000")
    ap.add_argument("--rows", type=int, default=0, help="use the first N rows (0: all)")
    ap.add_argument("--work", type=Path, default=ROOT / ".prodcat/bench/classes")
    args = ap.parse_args()
    if missing(DATA):
        return
    prodcat = prodcat_binary()
    py = bench_python("pandas", "pyarrow")
    subprocess.run(["rm", "-rf", str(args.work)], check=True)
    args.work.mkdir(parents=True)
    with DATA.open(newline="") as f:
        rows = [(r["Product Title"], r["Cluster ID"]) for r in csv.DictReader(f) if r["Product Title"].strip()]
    if args.rows:
        rows = rows[: args.rows]
    titles = args.work / "titles.parquet"
    subprocess.run([py, "-c", (
        "import pandas as pd, sys, csv; "
        "t = [r['Product Title'] for r in csv.DictReader(open(sys.argv[1], newline='')) if r['Product Title'].strip()]; "
        f"pd.DataFrame({{'title': t[:{args.rows or 'len(t)'}]}}).to_parquet(sys.argv[2])"), DATA, titles], check=True)
    table = []
    for n in (int(c) for c in args.classes.split(",")):
        data = args.work / f"classes-{n}.csv"
        with data.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["title", "label", "cluster"])
            for title, cluster in rows:
                k = int(hashlib.sha1(cluster.encode()).hexdigest(), 16) % n
                w.writerow([title, f"class{k:05d}", cluster])
        registry = args.work / "registry"
        name = f"c{n}"
        seconds, rss, _ = timed([prodcat, "train", "--model-type", "lexical", "--data", data, "--text-column", "title",
                                 "--label-column", "label", "--group-column", "cluster", "--out", registry,
                                 "--name", name, "--no-progress", "--c-grid", "1", "--feature-norm", "blocks"])
        model = registry / name / "current"
        card = json.loads((model / "card.json").read_text())
        weights = card["model"].get("weights") or {}
        dense = weights.get("width", 0) >= card["num_labels"]
        out = args.work / f"relabel-{n}"
        _, serve_rss, stdout = timed([prodcat, "relabel", "--model", model, "--input", titles, "--output", out,
                                      "--text-columns", "title", "--no-progress"])
        rate = float(next(l.split()[-1] for l in stdout.splitlines() if l.strip().startswith("rows/s")))
        table.append((card["num_labels"], seconds, rss, (model / "model.onnx").stat().st_size / 1e6,
                      "dense" if dense else f"sparse, width {weights.get('width')}", rate, serve_rss))
        print(f"{n} classes done: {seconds:.0f} s", file=sys.stderr)
    print(f"\nLexical model against the class count: {len(rows):,} PriceRunner titles, synthetic labels, "
          "one C (1) and one normalisation\n")
    print("| classes | train s | train peak RSS MiB | model MB | graph | relabel titles/s | relabel peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for classes, seconds, rss, mb, graph, rate, serve_rss in table:
        print(f"| {classes:,} | {seconds:.1f} | {rss:,.0f} | {mb:.1f} | {graph} | {rate:,.0f} | {serve_rss:,.0f} |")


if __name__ == "__main__":
    main()
