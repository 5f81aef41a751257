"""TF-IDF (word 1-2 grams + character 2-5 grams) + linear SVM baseline, scored on the split that
`prodcat split` wrote (the same rows `prodcat train` tests on).

    python bench/tfidf_svm.py SPLIT.csv   # prints one JSON line with metrics and timings

`fit_and_score` is also used by bench/quality.py.
"""
import json
import sys
import time

import numpy as np
import pandas as pd
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.svm import LinearSVC


def fit_and_score(train: pd.DataFrame, test: pd.DataFrame, c: float = 1.0) -> dict:
    """Trains on `train` (columns text, label), scores `test`: metrics, per-class one-vs-rest ROC
    AUC from the decision function, timings."""
    started = time.perf_counter()
    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
    x_train = hstack([word.fit_transform(train.text), char.fit_transform(train.text)]).tocsr()
    clf = LinearSVC(C=c).fit(x_train, train.label)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    x_test = hstack([word.transform(test.text), char.transform(test.text)]).tocsr()
    pred = clf.predict(x_test)
    predict_seconds = time.perf_counter() - started
    scores = clf.decision_function(x_test)
    auc = {}
    for k, label in enumerate(clf.classes_):
        truth = (test.label == label).to_numpy()
        if 0 < truth.sum() < len(truth):
            column = scores[:, k] if scores.ndim == 2 else (scores if k == 1 else -scores)
            auc[str(label)] = (roc_auc_score(truth, column), int(truth.sum()))
    return {
        "model": f"tfidf+linearsvc (C={c})",
        "train_rows": len(train),
        "test_rows": len(test),
        "macro_f1": f1_score(test.label, pred, average="macro"),
        "accuracy": accuracy_score(test.label, pred),
        "per_class_auc": auc,
        "train_seconds": train_seconds,
        "titles_per_second": len(test) / predict_seconds,
        "predictions": [str(p) for p in pred],
    }


def main() -> None:
    df = pd.read_csv(sys.argv[1], keep_default_na=False, dtype=str)
    result = fit_and_score(df[df.split == "train"], df[df.split == "test"])
    result.pop("per_class_auc")
    result.pop("predictions")
    print(json.dumps(result))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
