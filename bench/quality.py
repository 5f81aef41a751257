"""Quality benchmark: prodcat's model families against a TF-IDF + LinearSVC baseline trained on the
same rows, on every data set in ../shared/data, in one run.

    python3 bench/quality.py [--prodcat target/debug/prodcat] [--work /tmp/prodcat-quality]
                             [--seeds 42,43,44,45,46] [--split 0.7,0.1,0.2] [--transformer] [--auto]
                             [--auto-folds K] [--mpnet] [--epochs N] [--sets amazon-2023,4-class]

For each data set: `prodcat split` writes the train/validation/test assignment `prodcat train`
uses (PriceRunner grouped by cluster; the others stratified; 70/10/20 by default, so the test set
is the issue's 20% and 80% of the rows are for training); the baseline (TF-IDF + LinearSVC at C=1
and C=3) trains on the train + validation rows; each prodcat family trains on the same file with
the same seed and fractions and is evaluated by `prodcat eval` on the test rows. `lexical` chooses
on validation and refits on train + validation, the same rows as the baseline (`--hold-out-test`:
its own test split is the bench's, so it must not learn from it); `lexical-no-refit` trains on the
train rows only (70%); `lexical --folds 5 --hold-out-test` trains on train + validation (files
under 10,000 rows choose by 5 folds anyway unless told otherwise). `lexical-every-row` is
`prodcat train --model-type lexical` with no flags given only the baseline's rows (train +
validation, with their groups) as its file: it splits them 80/10/10 itself, chooses, measures and
then learns from all of them — what a user gets from the same file the baseline fits;
`lexical-every-row-held` the same with `--hold-out-test` (the default before: its 10% test split
left out of the published model). Every seed is a different split; the table gives the mean over seeds (± the
standard deviation of macro-F1: small test sets are noisy) of macro-F1, accuracy, worst one-vs-rest
ROC AUC over classes with at least 10 test rows, training seconds and titles/s, and quality.json
every run. Skips a data set whose file is absent. Never run in CI.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from tfidf_svm import fit_and_score  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
SETS = [
    ("pricerunner", DATA / "pricerunner/pricerunner.csv", "Product Title", "Category Label", "Cluster ID"),
    ("amazon-2023", DATA / "amazon_reviews_2023/items.csv", "title", "file_category", None),
    ("4-class", DATA / "ecommerce_4class_sample/ecommerceDataset_test_mini.csv", "text", "label", None),
]
MIN_SUPPORT = 10


def run(cmd: list) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{done.stderr[-3000:]}")
    return done.stdout


def worst_auc(per_class: dict) -> float:
    aucs = [auc for auc, support in per_class.values() if support >= MIN_SUPPORT and auc is not None]
    return min(aucs) if aucs else float("nan")


def prodcat_family(args, name, path, text, label, group, family, extra, test_csv, work, seed) -> dict:
    out = work / f"registry-{name}"
    if family.startswith("lexical-every-row"):
        # The baseline's rows as the file, split by prodcat itself.
        path, text, label, group = work / "pool.csv", "text", "label", "group" if group else None
        cmd = [args.prodcat, "train", "--data", path, "--text-column", text, "--label-column", label,
               "--out", out, "--name", family, "--no-progress", "--seed", seed] + extra
    else:
        cmd = [args.prodcat, "train", "--data", path, "--text-column", text, "--label-column", label,
               "--out", out, "--name", family, "--no-progress", "--seed", seed, "--split", args.split] + extra
    if group:
        cmd += ["--group-column", group]
    if family.startswith("auto"):
        cmd += ["--report", work / f"{family}-report"]
    started = time.perf_counter()
    run(cmd)
    train_seconds = time.perf_counter() - started
    report = work / f"eval-{name}-{family}"
    run([args.prodcat, "eval", "--model", out / family, "--data", test_csv, "--text-column", "text",
         "--label-column", "label", "--report", report])
    metrics = json.loads((report / "metrics.json").read_text())
    per_class = {c["label"]: (c.get("roc_auc"), c["support"]) for c in metrics["per_class"]}
    current = out / family / "current"
    card = json.loads((current / "card.json").read_text())
    kind = card["model"]["kind"]
    if kind in ("ensemble", "cascade"):  # a composite's rows are its members'
        card = json.loads((current / "lexical" / "card.json").read_text())
    return {
        "model": family,
        "picked": kind,
        "train_rows": (card.get("training") or {}).get("refit_rows") or card["data"]["train_rows"],
        "test_rows": metrics["rows"],
        "macro_f1": metrics["macro_f1"],
        "accuracy": metrics["accuracy"],
        "worst_auc": worst_auc(per_class),
        "train_seconds": train_seconds,
        "titles_per_second": metrics["texts_per_second"],
    }


def auto_candidates(work: Path, test_rows: int) -> list:
    """`auto`'s candidates as it compared them (trained on the training split), scored on the
    same test rows by `prodcat train` itself."""
    comparison = json.loads((work / "auto-report" / "comparison.json").read_text())
    return [{
        "model": f"  auto: {c['model']} (train split)",
        "picked": c["model"],
        "train_rows": None,
        "test_rows": test_rows,
        "macro_f1": c["test_macro_f1"],
        "accuracy": c["test_accuracy"],
        "worst_auc": c["test_worst_auc"] if c["test_worst_auc"] is not None else float("nan"),
        "train_seconds": c["train_seconds"],
        "titles_per_second": c["titles_per_second"],
    } for c in comparison["candidates"]]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--prodcat", default=str(ROOT / "target/debug/prodcat"))
    p.add_argument("--work", default="/tmp/prodcat-quality", type=Path)
    p.add_argument("--transformer", action="store_true", help="also fine-tune MiniLM (with --refit)")
    p.add_argument("--mpnet", action="store_true",
                   help="also fine-tune all-mpnet-base-v2 (with --refit; `bash scripts/provision.sh mpnet`)")
    p.add_argument("--auto", action="store_true",
                   help="also --model-type auto --refit: lexical, MiniLM, ensemble, cascade; the best on "
                        "validation, refitted on train + validation (and each candidate as auto scored it)")
    p.add_argument("--auto-folds", default=None, metavar="K",
                   help="also --model-type auto --folds K: every candidate scored out of fold over train + "
                        "validation, the winner trained on all of them (K + 1 trainings per member)")
    p.add_argument("--epochs", default=None, help="transformer epochs (default: prodcat's)")
    p.add_argument("--sets", default=None, help="comma-separated data set names (default: all)")
    p.add_argument("--seeds", default="42,43,44,45,46", help="one split per seed; the table averages them")
    p.add_argument("--split", default="0.7,0.1,0.2", help="train,validation,test fractions")
    p.add_argument("--families", default=None, help="comma-separated prodcat families (default: all)")
    p.add_argument("--flags", default="", help="more `prodcat train` flags for every family, e.g. "
                                               "'--max-classes-per-feature 16' (one string, split on spaces)")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    families = [
        # Refitted on train + validation (the bench's test split held out); --no-refit is the
        # training split alone; every-row: the default on the baseline's rows as its file.
        ("lexical", ["--model-type", "lexical", "--hold-out-test"]),
        ("lexical-every-row", ["--model-type", "lexical"]),
        ("lexical-every-row-held", ["--model-type", "lexical", "--hold-out-test"]),
        ("lexical-no-refit", ["--model-type", "lexical", "--no-refit"]),
        ("lexical-folds5", ["--model-type", "lexical", "--folds", "5", "--hold-out-test"]),
    ]
    minilm = ["--base", ROOT / ".deps/models/all-MiniLM-L6-v2"] + (["--epochs", args.epochs] if args.epochs else [])
    if args.transformer:
        families.append(("lora-refit", minilm + ["--refit"]))
    if args.mpnet:
        mpnet = ROOT / ".deps/models/all-mpnet-base-v2"
        if not (mpnet / "model.safetensors").exists():
            sys.exit(f"{mpnet} is absent: bash scripts/provision.sh mpnet")
        epochs = ["--epochs", args.epochs] if args.epochs else []
        families.append(("mpnet-lora-refit", ["--base", mpnet, "--refit"] + epochs))
    if args.auto:
        # Chosen on validation, then refitted on train + validation: the baseline's rows.
        families.append(("auto", ["--model-type", "auto", "--refit"] + minilm))
    if args.auto_folds:
        families.append(("auto-folds", ["--model-type", "auto", "--folds", args.auto_folds] + minilm))
    if args.families:
        families = [f for f in families if f[0] in args.families.split(",")]
    families = [(name, flags + args.flags.split()) for name, flags in families]
    rows = []
    for name, path, text, label, group in SETS:
        if args.sets and name not in args.sets.split(","):
            continue
        if not path.exists():
            print(f"skipped {name}: {path} not found (../shared/data is absent on this machine)")
            continue
        for seed in args.seeds.split(","):
            work = args.work / name / f"seed-{seed}"
            work.mkdir(parents=True, exist_ok=True)
            split_csv = work / "split.csv"
            cmd = [args.prodcat, "split", "--data", path, "--text-column", text, "--label-column", label,
                   "--out", split_csv, "--seed", seed, "--split", args.split]
            if group:
                cmd += ["--group-column", group]
            run(cmd)
            split = pd.read_csv(split_csv, keep_default_na=False, dtype=str)
            test_csv = work / "test.csv"
            split[split.split == "test"][["text", "label"]].to_csv(test_csv, index=False)
            pool_columns = ["text", "label"] + (["group"] if group else [])
            split[split.split != "test"][pool_columns].to_csv(work / "pool.csv", index=False)
            for c in (1.0, 3.0):
                base = fit_and_score(split[split.split != "test"], split[split.split == "test"], c=c)
                base["worst_auc"] = worst_auc(base.pop("per_class_auc"))
                base.pop("predictions")
                rows.append({"data": name, "seed": seed, **base})
            for family, extra in families:
                result = prodcat_family(args, name, path, text, label, group, family, extra, test_csv, work, seed)
                rows.append({"data": name, "seed": seed, **result})
                print(f"{name} seed {seed}: {family} macro-F1 {result['macro_f1']:.4f}", file=sys.stderr)
                if family == "auto":
                    rows += [{"data": name, "seed": seed, **c} for c in auto_candidates(work, result["test_rows"])]
    table = pd.DataFrame(rows)
    n_seeds = len(args.seeds.split(","))
    header = f"{'data set':<12} {'model':<34} {'train':>6} {'test':>5} {'macro-F1 (± sd)':>16} {'accuracy':>9} " \
             f"{'worst AUC':>9} {'train s':>8} {'titles/s':>9}"
    print(f"\nmeans over {n_seeds} seeded splits\n" + header)
    print("-" * len(header))
    for (data, model), g in table.groupby(["data", "model"], sort=False):
        if model in ("auto", "auto-folds"):
            model += " → " + "/".join(sorted(set(g.picked)))
        sd = g.macro_f1.std(ddof=0)
        share = f"{float(args.split.split(',')[0]):.0%}"
        train_rows = f"{g.train_rows.mean():>6.0f}" if g.train_rows.notna().all() else f"{share:>6}"
        print(f"{data:<12} {model:<34} {train_rows} {g.test_rows.mean():>5.0f} "
              f"{g.macro_f1.mean():>9.4f} ± {sd:.3f} {g.accuracy.mean():>9.4f} {g.worst_auc.mean():>9.4f} "
              f"{g.train_seconds.mean():>8.1f} {g.titles_per_second.mean():>9.0f}")
    print("\ntargets (means over the seeds; the baseline is the better of C=1 and C=3)")
    for data, g in table.groupby("data", sort=False):
        f1 = g.groupby("model", sort=False).macro_f1.mean()
        baseline = max(v for k, v in f1.items() if k.startswith("tfidf"))
        for model in ("lexical", "lexical-every-row", "lexical-every-row-held", "lexical-no-refit", "lexical-folds5",
                      "auto", "auto-folds"):
            if model in f1:
                verdict = "met" if f1[model] >= baseline else "missed"
                print(f"  {data:<12} {model:<15} {f1[model]:.4f} vs baseline {baseline:.4f}: {verdict} ({f1[model] - baseline:+.4f})")
        for model in ("auto", "auto-folds"):
            if model in f1:
                auc = g[g.model == model].worst_auc
                print(f"  {data:<12} {model} worst-class AUC {auc.mean():.4f} "
                      f"(per seed {', '.join(f'{a:.3f}' for a in auc)})")
    (args.work / "quality.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{args.work / 'quality.json'}")


if __name__ == "__main__":
    main()
