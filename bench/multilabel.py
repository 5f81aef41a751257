"""Benchmark (issue #26): several labels per product. PriceRunner bundles
(`bench/multilabel_data.py`: a third of the titles joined in pairs from two categories, labels
`A|B`; clusters dealt whole into train and test) through `prodcat train --model-type lexical
--label-separator '|'`, against scikit-learn's one-vs-rest TF-IDF + LinearSVC on the same rows in
the same run (a row's labels: every class with a positive margin, the best one when none is — the
rule prodcat applies to its thresholds).

    python3 bench/multilabel.py [--work DIR] [--copies 10]

Prints a table: test micro-F1, macro-F1, subset accuracy, Hamming loss, training wall time, peak
RSS, relabel titles/s. Targets: micro-F1 >= 0.95, subset accuracy >= 0.85. Needs ../shared/data
(skips with a message otherwise), a built prodcat and the benchmark venv (.deps/bench-venv:
scikit-learn, pandas, pyarrow; installed on first use).
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from taxonomy import prepare, run, timed  # noqa: E402

BASELINE = """
import json, resource, time
import pandas as pd
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import LinearSVC
from sklearn.metrics import f1_score, accuracy_score, hamming_loss
read = lambda p: pd.read_csv(p, keep_default_na=False, dtype=str)
train, test = read({train!r}), read({test!r})
started = time.perf_counter()
word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
x = hstack([word.fit_transform(train.title), char.fit_transform(train.title)]).tocsr()
binarizer = MultiLabelBinarizer()
y = binarizer.fit_transform(train.labels.str.split("|"))
clf = OneVsRestClassifier(LinearSVC(C={c})).fit(x, y)
train_seconds = time.perf_counter() - started
started = time.perf_counter()
margins = clf.decision_function(hstack([word.transform(test.title), char.transform(test.title)]).tocsr())
pred = (margins > 0).astype(int)
none = pred.sum(axis=1) == 0
pred[none, margins[none].argmax(axis=1)] = 1
seconds = time.perf_counter() - started
truth = binarizer.transform(test.labels.str.split("|"))
print(json.dumps({{
    "micro_f1": f1_score(truth, pred, average="micro"), "macro_f1": f1_score(truth, pred, average="macro"),
    "subset_accuracy": accuracy_score(truth, pred), "hamming_loss": hamming_loss(truth, pred),
    "train_s": train_seconds, "relabel": len(test) / seconds,
    "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}}))
"""


def multilabel_line(stdout: str) -> dict:
    line = [l for l in stdout.splitlines() if l.startswith("multilabel: ")][-1]
    return {k: float(v) for k, v in (p.split("=") for p in line.split()[1:])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=ROOT / ".prodcat/bench/multilabel")
    ap.add_argument("--copies", type=int, default=10, help="copies of the test titles relabeled")
    args = ap.parse_args()
    prepared = prepare(args.work, "multilabel_data.py")
    if prepared is None:
        return
    prodcat, py, data, counts = prepared
    work = args.work
    train_csv, test_csv = data / "train.csv", data / "test.csv"
    rows = []

    seconds, rss, out = timed([py, "-c", BASELINE.format(train=str(train_csv), test=str(test_csv), c=1.0)])
    base = json.loads(out.strip().splitlines()[-1])
    base.update(model="TF-IDF + one-vs-rest LinearSVC (C=1)", rss_mib=rss,
                note=f"fit alone; whole process {seconds:.0f} s")
    rows.append(base)

    registry = work / "registry"
    seconds, rss, out = timed([prodcat, "train", "--model-type", "lexical", "--data", train_csv, "--text-column",
                               "title", "--label-column", "labels", "--label-separator", "|", "--group-column",
                               "group", "--test-data", test_csv, "--out", registry, "--name", "bundles",
                               "--no-progress"])
    model = registry / "bundles/current"
    card = json.loads((model / "card.json").read_text())
    thresholds = card["label_thresholds"]
    parquet = work / "relabel.parquet"
    subprocess.run([py, "-c", (
        "import pandas as pd, sys; t = pd.read_csv(sys.argv[1], keep_default_na=False, dtype=str)[['title']]; "
        f"pd.concat([t] * {args.copies}, ignore_index=True).to_parquet(sys.argv[2])"), test_csv, parquet], check=True)
    _, stdout = run([prodcat, "relabel", "--model", model, "--input", parquet, "--output", work / "relabeled",
                     "--text-columns", "title", "--no-progress"])
    relabel = float(next(l.split()[-1] for l in stdout.splitlines() if l.strip().startswith("rows/s")))
    rows.append({"model": "prodcat lexical, multi-label (defaults)", **multilabel_line(out), "train_s": seconds,
                 "rss_mib": rss, "relabel": relabel,
                 "note": f"whole command; thresholds {min(thresholds):.2f}–{max(thresholds):.2f}"})

    print(f"\nMulti-label PriceRunner bundles ({counts['train_rows']:,} train / {counts['test_rows']:,} test rows, "
          f"{counts['test_bundles']:,} test bundles), {prodcat.name} build, {os.cpu_count()} CPUs\n")
    print(f"| {'model':<40} | micro-F1 | macro-F1 | subset acc. | Hamming loss | train s | peak RSS MiB "
          "| relabel titles/s | note |")
    print(f"|{'-' * 42}|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']:<40} | {r['micro_f1']:.4f} | {r['macro_f1']:.4f} | {r['subset_accuracy']:.4f} | "
              f"{r['hamming_loss']:.4f} | {r['train_s']:.1f} | {r['rss_mib']:,.0f} | {r['relabel']:,.0f} | "
              f"{r['note']} |")
    print("\ntargets: micro-F1 >= 0.95, subset accuracy >= 0.85")


if __name__ == "__main__":
    main()
