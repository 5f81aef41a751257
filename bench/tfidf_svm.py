"""TF-IDF (word 1-2 grams + character 2-5 grams) + linear SVM baseline, scored on the split that
`prodcat split` wrote (the same rows `prodcat train` tests on).

    python bench/tfidf_svm.py SPLIT.csv   # prints one JSON line with metrics and timings
"""
import json
import sys
import time

import pandas as pd
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.svm import LinearSVC


def main() -> None:
    df = pd.read_csv(sys.argv[1], keep_default_na=False)
    train = df[df.split == "train"]
    test = df[df.split == "test"]
    started = time.perf_counter()
    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
    x_train = hstack([word.fit_transform(train.text), char.fit_transform(train.text)]).tocsr()
    clf = LinearSVC(C=1.0).fit(x_train, train.label)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    x_test = hstack([word.transform(test.text), char.transform(test.text)]).tocsr()
    pred = clf.predict(x_test)
    predict_seconds = time.perf_counter() - started
    print(json.dumps({
        "model": "tfidf+linearsvc",
        "train_rows": len(train),
        "test_rows": len(test),
        "macro_f1": f1_score(test.label, pred, average="macro"),
        "accuracy": accuracy_score(test.label, pred),
        "train_seconds": train_seconds,
        "titles_per_second": len(test) / predict_seconds,
    }))


if __name__ == "__main__":
    main()
