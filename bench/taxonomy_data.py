"""PriceRunner's products as a taxonomy of leaves (issue #26's catalogue-scale benchmark data).

    python3 bench/taxonomy_data.py OUT_DIR [--min-titles 4] [--seed 42]

Leaves are PriceRunner clusters (one product sold by several merchants) with at least
`--min-titles` merchant titles, under their 10 categories; a leaf's label is its path,
`Category > Cluster label`. One stratified quarter of each cluster's titles (at least one) is the
test split. Writes OUT_DIR/train.csv and OUT_DIR/test.csv (columns title, label, category, leaf)
and prints one JSON line with the counts. Exits 2 with a message where ../shared/data is absent.
"""
import argparse
import csv
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared/data/pricerunner/pricerunner.csv"


def pricerunner_clusters() -> dict:
    """PriceRunner's rows with a title, by cluster id; exits 2 with a message where the data is absent."""
    if not DATA.exists():
        print(f"skipped: {DATA} not found (PriceRunner lives in ../shared/data on prepared machines)")
        sys.exit(2)
    clusters = defaultdict(list)
    with DATA.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["Product Title"].strip():
                clusters[row["Cluster ID"]].append(row)
    return clusters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--min-titles", type=int, default=4)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    clusters = pricerunner_clusters()
    rng = random.Random(args.seed)
    train, test = [], []
    for cluster_id in sorted(clusters, key=int):
        rows = clusters[cluster_id]
        if len(rows) < args.min_titles:
            continue
        rows = rows[:]
        rng.shuffle(rows)
        held = max(1, round(len(rows) / 4))
        for i, row in enumerate(rows):
            category, leaf = row["Category Label"].strip(), row["Cluster Label"].strip()
            record = {"title": row["Product Title"].strip(), "label": f"{category} > {leaf}",
                      "category": category, "leaf": leaf}
            (test if i < held else train).append(record)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        with (args.out / f"{name}.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["title", "label", "category", "leaf"])
            w.writeheader()
            w.writerows(rows)
    leaves = {r["label"] for r in train}
    print(json.dumps({"leaves": len(leaves), "categories": len({r["category"] for r in train}),
                      "train_rows": len(train), "test_rows": len(test)}))


if __name__ == "__main__":
    main()
