"""PriceRunner bundles: a multi-label data set (issue #26's multi-label benchmark data).

    python3 bench/multilabel_data.py OUT_DIR [--seed 42] [--test-share 0.25] [--bundled 0.3333]

Clusters (one product sold by several merchants) are dealt whole into train and test (a quarter of
them test by default: cluster-grouped test rows, no product on both sides). Within each side, a
third of the titles are joined in pairs from two different categories into one bundle row
(`title A + title B`, labels `A|B`, group: both clusters); the rest stay single rows with their one
category. Writes OUT_DIR/train.csv and OUT_DIR/test.csv (columns title, labels, group) and prints
one JSON line with the counts. Exits 2 with a message where ../shared/data is absent.
"""
import argparse
import csv
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from taxonomy_data import pricerunner_clusters  # noqa: E402


def bundle(rows: list, share: float, rng: random.Random) -> list:
    """`rows` (title, category, cluster) with `share` of them joined in pairs of two categories."""
    rows = rows[:]
    rng.shuffle(rows)
    chosen, single = rows[: int(len(rows) * share)], rows[int(len(rows) * share):]
    out = [{"title": t, "labels": c, "group": g} for t, c, g in single]
    # Pairs of different categories: walk the chosen rows, pairing each with the next one of
    # another category still waiting.
    waiting = []
    for row in chosen:
        partner = next((w for w in waiting if w[1] != row[1]), None)
        if partner is None:
            waiting.append(row)
            continue
        waiting.remove(partner)
        a, b = (partner, row) if rng.random() < 0.5 else (row, partner)
        out.append({"title": f"{a[0]} + {b[0]}", "labels": f"{a[1]}|{b[1]}", "group": f"{a[2]}+{b[2]}"})
    # Titles left without a partner stay single.
    out += [{"title": t, "labels": c, "group": g} for t, c, g in waiting]
    rng.shuffle(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--test-share", type=float, default=0.25)
    ap.add_argument("--bundled", type=float, default=1 / 3)
    args = ap.parse_args()
    clusters = {cluster: [(r["Product Title"].strip(), r["Category Label"].strip(), cluster) for r in rows]
                for cluster, rows in pricerunner_clusters().items()}
    rng = random.Random(args.seed)
    ids = sorted(clusters, key=int)
    rng.shuffle(ids)
    held = set(ids[: round(len(ids) * args.test_share)])
    sides = {"train": [], "test": []}
    for cluster_id in ids:
        sides["test" if cluster_id in held else "train"].extend(clusters[cluster_id])
    args.out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, rows in sides.items():
        records = bundle(rows, args.bundled, rng)
        with (args.out / f"{name}.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["title", "labels", "group"])
            w.writeheader()
            w.writerows(records)
        counts[f"{name}_rows"] = len(records)
        counts[f"{name}_bundles"] = sum("|" in r["labels"] for r in records)
    counts["labels"] = len({c for rows in sides.values() for _, c, _ in rows})
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
