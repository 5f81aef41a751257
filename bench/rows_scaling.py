"""Benchmark (issue #26, item 4): lexical training time and peak memory against the row count.
PriceRunner's titles (10 categories) and perturbed copies of them — each copy drops one word at
random, swaps two neighbouring words and appends a random model-number-like token — at about
30 k, 300 k and 1 M rows, each trained by `prodcat train --model-type lexical` (defaults, 80/10/10
split grouped by cluster) and by the TF-IDF + LinearSVC baseline's fit on the same rows.

    python3 bench/rows_scaling.py [--sizes 30000,300000,1000000] [--skip-baseline]
                                  [--memory-budget-mib none,2048]

Prints a table: rows, prodcat's memory budget (`--memory-budget-mib`; each size is trained once per
budget given, `none` for every row), the rows it trained on, wall s and peak RSS, s per 1,000 rows,
baseline fit s and peak RSS.
Needs ../shared/data (skips with a message otherwise), a built prodcat and the benchmark venv.
"""
import argparse
import csv
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from pricerunner_train import bench_python, missing, prodcat_binary  # noqa: E402
from taxonomy import BASELINE, last_metrics, timed  # noqa: E402

DATA = ROOT.parent / "shared/data/pricerunner/pricerunner.csv"


def perturbed(title: str, rng: random.Random) -> str:
    words = title.split()
    if len(words) > 2:
        del words[rng.randrange(len(words))]
    if len(words) > 2:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    words.append(f"{rng.choice('abcdefghkmnprstx')}{rng.randrange(10, 9999)}")
    return " ".join(words)


def write_rows(path: Path, rows: list, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["title", "category", "cluster"])
        for i in range(n):
            title, category, cluster = rows[i % len(rows)]
            copy = i // len(rows)
            # Copies of a product stay in its cluster: the grouped split keeps them together.
            w.writerow([title if copy == 0 else perturbed(title, rng), category, cluster])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="30000,300000,1000000")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--memory-budget-mib", default="none",
                    help="comma-separated training memory budgets, MiB (`none`: every row)")
    ap.add_argument("--work", type=Path, default=ROOT / ".prodcat/bench/rows-scaling")
    args = ap.parse_args()
    if missing(DATA):
        return
    prodcat = prodcat_binary()
    py = None if args.skip_baseline else bench_python("scikit-learn", "pandas")
    with DATA.open(newline="") as f:
        rows = [(r["Product Title"], r["Category Label"], r["Cluster ID"]) for r in csv.DictReader(f) if r["Product Title"].strip()]
    args.work.mkdir(parents=True, exist_ok=True)
    table = []
    for n in (int(s) for s in args.sizes.split(",")):
        path = args.work / f"rows-{n}.csv"
        write_rows(path, rows, n, seed=n)
        for budget in args.memory_budget_mib.split(","):
            registry = args.work / f"registry-{n}-{budget}"
            flags = [] if budget == "none" else ["--memory-budget-mib", budget]
            seconds, rss, out = timed([prodcat, "train", "--model-type", "lexical", "--data", path, "--text-column",
                                       "title", "--label-column", "category", "--group-column", "cluster", "--out",
                                       registry, "--name", "lexical", "--no-progress"] + flags)
            f1, _ = last_metrics(out)
            card = json.loads((registry / "lexical/current/card.json").read_text())
            row = {"rows": n, "budget": budget, "trained": card["data"]["rows"], "s": seconds,
                   "fit_s": card["model"]["train_seconds"], "rss": rss, "f1": f1, "base_s": None, "base_rss": None}
            table.append(row)
            print(row, flush=True)
        if py:
            # The baseline on prodcat's own split of the same file: its train rows, its test rows.
            split = args.work / f"split-{n}.csv"
            timed([prodcat, "split", "--data", path, "--text-column", "title", "--label-column", "category",
                   "--group-column", "cluster", "--out", split])
            parts = {name: args.work / f"{name}-{n}.csv" for name in ("train", "test")}
            with split.open(newline="") as f, parts["train"].open("w", newline="") as tr, parts["test"].open("w", newline="") as te:
                out = {"train": csv.writer(tr), "test": csv.writer(te)}
                for w in out.values():
                    w.writerow(["text", "label"])
                for r in csv.DictReader(f):
                    if r["split"] in out:
                        out[r["split"]].writerow([r["text"], r["label"]])
            code = BASELINE.format(bench=str(ROOT / "bench"), text="text", label="label",
                                   train=str(parts["train"]), test=str(parts["test"]), c=1.0)
            _, base_rss, base_out = timed([py, "-c", code])
            base = json.loads(base_out.strip().splitlines()[-1])
            for row in table:
                if row["rows"] == n:
                    row.update(base_s=base["train_seconds"], base_rss=base_rss, base_f1=base["macro_f1"])
    print("\n| rows | memory budget MiB | rows trained on | prodcat train s (end to end) | prodcat fit s (featurize + "
          "solves, the card's) | s per 1,000 rows | peak RSS MiB | test macro-F1 | baseline fit s | baseline peak RSS MiB "
          "| baseline macro-F1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        base = (f"{r['base_s']:.1f} | {r['base_rss']:,.0f} | {r['base_f1']:.4f}" if r["base_s"] is not None else "- | - | -")
        print(f"| {r['rows']:,} | {r['budget']} | {r['trained']:,} | {r['s']:.1f} | {r['fit_s']:.1f} | {1000 * r['s'] / r['trained']:.2f} | {r['rss']:,.0f} | {r['f1']:.4f} | {base} |")


if __name__ == "__main__":
    main()
