//! Several labels per product: a label column with a separator (or a JSONL list) trains a
//! multi-label lexical model whose card keeps per-label thresholds, whose evaluation reports label
//! sets, whose outputs carry a `labels` list in relabel and Kafka, and which the paths that take
//! one label per row refuse with a clear message.

mod common;

use std::path::Path;
use std::time::Duration;

use common::kafka::*;
use common::*;

/// The fixture's products as rows `title,labels,group`: every third row a bundle of itself and
/// the next product of another category (`title A + title B`, `A|B`). Returns each row's title
/// and sorted label set.
fn write_bundles(fx: &Fixture, path: &Path) -> Vec<(String, Vec<String>)> {
    let products = &fx.products;
    let mut rows = Vec::new();
    for (i, p) in products.iter().enumerate() {
        let other = products[i + 1..].iter().chain(products).find(|o| o.category != p.category).unwrap();
        if i % 3 == 0 {
            let mut labels = vec![p.category.clone(), other.category.clone()];
            labels.sort();
            rows.push((format!("{} + {}", p.title, other.title), labels, p.group.clone()));
        } else {
            rows.push((p.title.clone(), vec![p.category.clone()], p.group.clone()));
        }
    }
    let mut csv = String::from("title,labels,group\n");
    for (title, labels, group) in &rows {
        csv.push_str(&format!("{title},{},{group}\n", labels.join("|")));
    }
    std::fs::write(path, csv).unwrap();
    rows.into_iter().map(|(t, l, _)| (t, l)).collect()
}

/// `prodcat train` of the bundles at `data` (a lexical model unless `extra` names another type).
fn train_bundles(data: &Path, registry: &Path, extra: &[&str]) -> std::process::Output {
    let registry = registry.display().to_string();
    let mut flags = vec!["--no-progress", "--group-column", "group", "--out", &registry, "--name", "bundles"];
    if !extra.contains(&"--model-type") {
        flags.extend(["--model-type", "lexical"]);
    }
    flags.extend(extra);
    on_bundles("train", None, data, &flags)
}

/// `prodcat <command> [--model MODEL] --data DATA --text-column title --label-column labels` with
/// `extra` flags.
fn on_bundles(command: &str, model: Option<&Path>, data: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = vec![command.into()];
    if let Some(model) = model {
        args.extend(["--model".into(), model.display().to_string()]);
    }
    args.extend(["--data".into(), data.display().to_string()]);
    args.extend(["--text-column", "title", "--label-column", "labels"].map(str::to_string));
    args.extend(extra.iter().map(|s| s.to_string()));
    run_strings(&args)
}

/// `name=value` of a line `... name=value ...`.
fn figure(line: &str, name: &str) -> f64 {
    let value = line.split(' ').find_map(|w| w.strip_prefix(&format!("{name}="))).unwrap_or_else(|| panic!("{line}"));
    value.parse().expect("a number")
}

/// Micro-F1 of predicted label sets against true ones.
fn micro_f1(truth: &[Vec<String>], predicted: &[Vec<String>]) -> f64 {
    let tp: usize = truth.iter().zip(predicted).map(|(t, p)| p.iter().filter(|l| t.contains(l)).count()).sum();
    let (t, p): (usize, usize) = (truth.iter().map(Vec::len).sum(), predicted.iter().map(Vec::len).sum());
    2.0 * tp as f64 / (t + p) as f64
}

/// The `labels` list of a labeled record, as label names.
fn labels_of(record: &serde_json::Value) -> Vec<String> {
    let mut labels: Vec<String> =
        record["labels"].as_array().unwrap().iter().map(|l| l["label"].as_str().unwrap().to_string()).collect();
    labels.sort();
    labels
}

#[test]
fn several_labels_per_row_train_a_multi_label_model_evaluated_and_served_with_label_lists() {
    let fx = Fixture::new(300);
    let data = fx.path("bundles.csv");
    let rows = write_bundles(&fx, &data);
    let registry = fx.path("registry");
    let o = train_bundles(&data, &registry, &["--label-separator", "|"]);
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    let n = lines.len();
    // The label sets' line, then the per-label line last.
    assert!(lines[n - 2].starts_with("multilabel: micro_f1="), "{text}");
    assert!(figure(lines[n - 2], "micro_f1") > 0.9 && figure(lines[n - 2], "subset_accuracy") > 0.7, "{text}");
    assert!(!text.contains("confusion matrix"), "no confusion matrix of label sets: {text}");

    // The card: the head, the classes (single labels, not their combinations), a threshold each.
    let current = registry.join("bundles/current");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(current.join("card.json")).unwrap()).unwrap();
    assert_eq!(card["head"], "multi_label");
    assert_eq!(card["num_labels"], 5, "{}", card["num_labels"]);
    let thresholds = card["label_thresholds"].as_array().unwrap();
    assert_eq!(thresholds.len(), 5);
    assert!(thresholds.iter().all(|t| (0.05..=0.95).contains(&t.as_f64().unwrap())), "{thresholds:?}");
    assert!(card["model"]["svm"]["shift"].is_number(), "Platt's offset recorded: {}", card["model"]["svm"]);
    assert!(card["test_metrics"]["multilabel"]["hamming_loss"].is_number(), "{}", card["test_metrics"]);
    assert_eq!(card["data"]["label_separator"], "|");
    assert!(card["data"]["class_counts"]["Books"].as_u64().unwrap() > 60, "counts per label: {}", card["data"]);
    let o = prodcat(&["models", "show", &current.display().to_string()]);
    assert!(
        o.status.success() && stdout(&o).contains("head:         multi_label (thresholds, by label: "),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("test sets:    micro_f1="), "{}", stdout(&o));

    // eval: the label sets' figures, metrics.json with them, ROC curves and no confusion plot.
    let report = fx.path("report");
    let o = on_bundles(
        "eval",
        Some(&current),
        &data,
        &["--label-separator", "|", "--report", &report.display().to_string()],
    );
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    let n = lines.len();
    assert!(lines[n - 2].starts_with("multilabel: ") && lines[n - 1].starts_with("macro_f1="), "{text}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("metrics.json")).unwrap()).unwrap();
    let m = &metrics["multilabel"];
    assert!((m["micro_f1"].as_f64().unwrap() - figure(lines[n - 2], "micro_f1")).abs() < 1e-4, "{m}");
    assert!((metrics["accuracy"].as_f64().unwrap() - m["subset_accuracy"].as_f64().unwrap()).abs() < 1e-12);
    assert!(std::fs::read(report.join("roc_curves.png")).unwrap().starts_with(b"\x89PNG"));
    assert!(!report.join("confusion_matrix.png").exists());
    // Without --label-separator the card's separator splits the label sets: the same figures.
    let o = on_bundles("eval", Some(&current), &data, &["--report", &fx.path("report-again").display().to_string()]);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    assert!(stdout(&o).contains(lines[n - 2]), "{}", stdout(&o));
    // A single-label model is not scored on label sets as something else.
    let singles = fx.path("singles.csv");
    let csv: String = fx.products.iter().map(|p| format!("{},{},{}\n", p.title, p.category, p.group)).collect();
    std::fs::write(&singles, format!("title,labels,group\n{csv}")).unwrap();
    let o = train_bundles(&singles, &fx.path("single"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = on_bundles("eval", Some(&fx.path("single/bundles")), &data, &["--label-separator", "|"]);
    assert_clean_failure(&o, &["single_label"]);

    // relabel: each record's `labels` list; bundles get both of theirs.
    let titles: Vec<&str> = rows.iter().map(|(title, _)| title.as_str()).collect();
    let json = batches_as_json(&relabel_titles(&fx, &current, &titles));
    assert_eq!(json.len(), rows.len());
    assert_valid("labeled-output.schema.json", &json);
    let mut predicted = vec![Vec::new(); rows.len()];
    for record in &json {
        let labels = record["labels"].as_array().unwrap();
        // Most likely first; `label` and `confidence` are the first entry's.
        assert_eq!(labels[0]["label"], record["label"]);
        assert!((labels[0]["score"].as_f64().unwrap() - record["confidence"].as_f64().unwrap()).abs() < 1e-6);
        let scores: Vec<f64> = labels.iter().map(|l| l["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{record}");
        predicted[record["id"].as_i64().unwrap() as usize] = labels_of(record);
    }
    let truth: Vec<Vec<String>> = rows.iter().map(|r| r.1.clone()).collect();
    assert!(micro_f1(&truth, &predicted) > 0.9, "{}", micro_f1(&truth, &predicted));
    let bundles_with_two = (0..rows.len()).step_by(3).filter(|&i| predicted[i].len() == 2).count();
    assert!(bundles_with_two * 10 >= rows.len().div_ceil(3) * 8, "{bundles_with_two} bundles given two labels");
    // Independent sigmoids: a bundle's two labels are each likely, together far above 1.
    let sums: Vec<f64> = json
        .iter()
        .filter(|r| r["labels"].as_array().unwrap().len() == 2)
        .map(|r| r["labels"].as_array().unwrap().iter().map(|l| l["score"].as_f64().unwrap()).sum())
        .collect();
    assert!(sums.iter().any(|&s| s > 1.2), "{sums:?}");

    // `split` writes each row's labels as they were given.
    let split = fx.path("split.csv");
    let o = on_bundles("split", None, &data, &["--label-separator", "|", "--out", &split.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let written = std::fs::read_to_string(&split).unwrap();
    assert!(written.lines().skip(1).any(|l| l.contains(&format!("\"{}\",", rows[0].1.join("|")))), "{written}");
    assert!(!written.contains('\u{1f}'));

    // Training paths that take one label per row refuse the data with what to do instead.
    let base = fx.base.display().to_string();
    let o =
        train_bundles(&data, &fx.path("other"), &["--label-separator", "|", "--model-type", "auto", "--base", &base]);
    assert_clean_failure(&o, &["--model-type lexical or transformer"]);
    let o = train_bundles(&data, &fx.path("other"), &["--label-separator", "|", "--solver", "sgd"]);
    assert_clean_failure(&o, &["svm solver"]);
    // Composites and conversions built on a multi-label model are refused.
    let o = prodcat(&[
        "ensemble",
        "--lexical",
        &current.display().to_string(),
        "--transformer",
        &current.display().to_string(),
        "--out",
        &fx.path("composite").display().to_string(),
    ]);
    assert_clean_failure(&o, &["multi_label", "one label per row"]);
}

#[test]
fn a_transformer_trains_several_labels_per_row_with_sigmoid_outputs_and_tuned_thresholds() {
    // The tiny random BERT: binary cross-entropy on each class's sigmoid, Platt scaling and
    // thresholds on validation, the export parity-checked at staging.
    let fx = Fixture::new(300);
    let data = fx.path("bundles.csv");
    let rows = write_bundles(&fx, &data);
    let registry = fx.path("registry");
    let base = fx.base.display().to_string();
    let flags = ["--label-separator", "|", "--model-type", "transformer", "--base", &base, "--lr", "0.01"];
    let o = train_bundles(&data, &registry, &[&flags[..], &["--epochs", "12", "--max-length", "32"]].concat());
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let text = stdout(&o);
    let line = text.lines().find(|l| l.starts_with("multilabel: ")).unwrap_or_else(|| panic!("{text}"));
    assert!(figure(line, "micro_f1") > 0.8, "{text}");
    let current = registry.join("bundles/current");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(current.join("card.json")).unwrap()).unwrap();
    assert_eq!((card["head"].as_str(), card["model"]["kind"].as_str()), (Some("multi_label"), Some("transformer")));
    assert_eq!(card["label_thresholds"].as_array().unwrap().len(), 5);
    assert!(card["parity"]["passed"].as_bool().unwrap(), "{}", card["parity"]);
    // Served: label lists, independent sigmoids (a row's scores need not sum to 1).
    let titles: Vec<&str> = rows.iter().map(|(title, _)| title.as_str()).collect();
    let json = batches_as_json(&relabel_titles(&fx, &current, &titles));
    assert_valid("labeled-output.schema.json", &json);
    let predicted: Vec<Vec<String>> = json.iter().map(labels_of).collect();
    let truth: Vec<Vec<String>> = json.iter().map(|r| rows[r["id"].as_i64().unwrap() as usize].1.clone()).collect();
    assert!(micro_f1(&truth, &predicted) > 0.8, "{}", micro_f1(&truth, &predicted));
    assert!(predicted.iter().any(|p| p.len() == 2), "some bundle gets two labels");
}

#[test]
fn a_jsonl_list_column_is_several_labels_without_a_separator() {
    let fx = Fixture::new(150);
    let csv = fx.path("bundles.csv");
    let rows = write_bundles(&fx, &csv);
    let jsonl = fx.path("bundles.jsonl");
    let lines: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, (title, labels))| serde_json::json!({"title": title, "labels": labels, "group": i / 3}).to_string())
        .collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let registry = fx.path("registry");
    let o = train_bundles(&jsonl, &registry, &[]);
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(registry.join("bundles/current/card.json")).unwrap()).unwrap();
    assert_eq!(card["head"], "multi_label");
    assert_eq!(card["num_labels"], 5);
    assert!(stdout(&o).contains("multilabel: micro_f1="), "{}", stdout(&o));
}

#[test]
fn kafka_serves_a_multi_label_model_with_label_lists_and_the_learner_refuses_it() {
    let Some(brokers) = broker() else { return };
    let fx = Fixture::new(300);
    let data = fx.path("bundles.csv");
    let rows = write_bundles(&fx, &data);
    let o = train_bundles(&data, &fx.path("registry"), &["--label-separator", "|"]);
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let model = fx.path("registry/bundles/current");

    let t = Topics::new(&brokers, "multilabel", 2);
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, "");
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);
    let messages: Vec<(String, Vec<u8>)> = rows
        .iter()
        .enumerate()
        .take(60)
        .map(|(i, (title, _))| {
            (format!("m{i}"), serde_json::json!({"id": format!("m{i}"), "title": title}).to_string().into_bytes())
        })
        .collect();
    produce(&brokers, &t.input, &messages);
    let out = read_topic(&brokers, &t.output, messages.len(), Duration::from_secs(120), false);
    assert_eq!(ids(&out).len(), messages.len());
    let records: Vec<serde_json::Value> = out.iter().map(Read::json).collect();
    assert_valid("labeled-output.schema.json", &records);
    let (mut truth, mut predicted) = (Vec::new(), Vec::new());
    for record in &records {
        let i: usize = record["id"].as_str().unwrap()[1..].parse().unwrap();
        truth.push(rows[i].1.clone());
        predicted.push(labels_of(record));
    }
    assert!(micro_f1(&truth, &predicted) > 0.9, "{}", micro_f1(&truth, &predicted));
    assert!(predicted.iter().any(|p| p.len() == 2), "bundles carry two labels");
    stop(child);

    // Continuous learning retrains single-label models only: the pipeline says so and exits.
    let t = Topics::new(&brokers, "multilabel-learn", 1);
    let (pipeline, _) = pipeline_file(&fx, &brokers, &t, &model, &label_store_only(&fx));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_prodcat"))
        .args(["run", &pipeline.display().to_string()])
        .output()
        .unwrap();
    assert_clean_failure(&o, &["multi_label", "continuous learning retrains single-label models only"]);
}
