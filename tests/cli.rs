//! The `prodcat train` / `prodcat eval` command lines: the happy path, resume after a kill, and
//! every kind of bad input ending in a clear message (never a panic).

mod common;

use std::time::{Duration, Instant};

use common::*;

fn train_tiny(fx: &Fixture, registry: &str, extra: &[&str]) -> std::process::Output {
    let out = run_strings(&train_args(fx, registry, extra));
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    out
}

#[test]
fn train_then_eval_prints_metrics_and_writes_report() {
    let fx = Fixture::new(400);
    let out = train_tiny(&fx, "reg", &["--epochs", "3"]);
    let text = stdout(&out);
    assert!(text.contains("parity:"), "{text}");
    assert!(text.contains(&fx.path("reg/tiny/v1").display().to_string()), "{text}");

    let report = fx.path("report");
    let model = fx.path("reg/tiny/current").display().to_string();
    let csv = fx.csv.display().to_string();
    let report_arg = report.display().to_string();
    let out = prodcat(&[
        "eval",
        "--model",
        &model,
        "--data",
        &csv,
        "--text-column",
        "title",
        "--label-column",
        "category",
        "--report",
        &report_arg,
    ]);
    assert!(out.status.success(), "eval failed: {}", stderr(&out));
    let text = stdout(&out);
    let last = text.lines().last().unwrap_or_default();
    let parts: Vec<&str> = last.split(' ').collect();
    assert_eq!(parts.len(), 2, "last line: {last}");
    let f1: f64 = parts[0].strip_prefix("macro_f1=").expect(last).parse().unwrap();
    let acc: f64 = parts[1].strip_prefix("accuracy=").expect(last).parse().unwrap();
    assert!(f1 > 0.5 && acc > 0.5, "{last}");
    for label in ["Phones", "Laptops", "Fridges", "Shoes", "Books"] {
        assert!(text.contains(label), "table lacks {label}");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("metrics.json")).unwrap()).unwrap();
    assert!((metrics["macro_f1"].as_f64().unwrap() - f1).abs() < 1e-4);
    // Sparse confusion cells [true, predicted, count] covering every row.
    let cells = metrics["confusion"].as_array().unwrap();
    assert!(cells.len() >= 5, "at least the diagonal: {cells:?}");
    let counted: u64 = cells.iter().map(|c| c[2].as_u64().unwrap()).sum();
    assert_eq!(counted, metrics["rows"].as_u64().unwrap());
    assert!(metrics["per_class"][0]["roc_auc"].as_f64().is_some());
    for png in ["confusion_matrix.png", "roc_curves.png"] {
        let bytes = std::fs::read(report.join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000, "{png} is not a real plot");
    }
}

#[test]
fn killed_training_resumes_to_the_same_model() {
    let fx = Fixture::new(2500);
    // Reference: an uninterrupted run.
    train_tiny(&fx, "full", &["--epochs", "3"]);

    // Interrupted run: killed right after its first checkpoint, then resumed.
    let args = train_args(&fx, "resumed", &["--epochs", "3"]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_prodcat"))
        .args(&args)
        .env("PRODCAT_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let checkpoints = fx.path("resumed/tiny/.checkpoints");
    let deadline = Instant::now() + Duration::from_secs(300);
    let first_epoch_saved = || {
        std::fs::read_dir(&checkpoints).ok().into_iter().flatten().flatten().any(|e| {
            std::fs::read_to_string(e.path().join("state.json")).is_ok_and(|s| s.contains("\"epochs_done\": 1"))
        })
    };
    while !first_epoch_saved() {
        assert!(child.try_wait().unwrap().is_none(), "training ended before its first checkpoint was seen");
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!fx.path("resumed/tiny/v1").exists(), "the run finished before it was killed; the test needs a longer run");

    let out = train_tiny(&fx, "resumed", &["--epochs", "3", "--resume"]);
    let _ = out;
    let a = std::fs::read(fx.path("full/tiny/v1/model.onnx")).unwrap();
    let b = std::fs::read(fx.path("resumed/tiny/v1/model.onnx")).unwrap();
    assert!(a == b, "resumed training differs from the uninterrupted run");
}

#[test]
fn bad_training_input_gives_clear_errors() {
    let fx = Fixture::new(50);
    let csv = fx.csv.display().to_string();
    let base = fx.base.display().to_string();
    let out_dir = fx.path("reg").display().to_string();
    let train = |data: &str, text: &str, label: &str, base: &str| {
        prodcat(&[
            "train",
            "--data",
            data,
            "--text-column",
            text,
            "--label-column",
            label,
            "--base",
            base,
            "--out",
            &out_dir,
            "--no-progress",
            "--epochs",
            "1",
        ])
    };
    // A missing column names the column, the file and the columns that exist.
    let o = train(&csv, "name", "category", &base);
    assert_clean_failure(&o, &["`name`", "products.csv", "title"]);
    // An empty text names the file, row and column.
    let empty = fx.path("empty.csv");
    std::fs::write(&empty, "title,category\nphone dual sim,Phones\n,Books\n").unwrap();
    let o = train(&empty.display().to_string(), "title", "category", &base);
    assert_clean_failure(&o, &["empty.csv", "row 2", "`title`", "empty"]);
    // An unknown file type and a missing file.
    let o = train(&fx.path("data.xlsx").display().to_string(), "title", "category", &base);
    assert_clean_failure(&o, &["data.xlsx"]);
    // A base model folder without weights names the missing file.
    std::fs::remove_file(fx.base.join("model.safetensors")).unwrap();
    let o = train(&csv, "title", "category", &base);
    assert_clean_failure(&o, &["model.safetensors"]);
    assert!(!fx.path("reg/classifier/v1").exists());
}

#[test]
fn bad_eval_input_gives_clear_errors() {
    let fx = Fixture::new(300);
    train_tiny(&fx, "reg", &["--epochs", "1"]);
    let model = fx.path("reg/tiny/v1");
    let model_arg = model.display().to_string();
    let eval = |model: &str, data: &str, label: &str, env: &[(&str, &str)]| {
        prodcat_env(
            &[
                "eval",
                "--model",
                model,
                "--data",
                data,
                "--text-column",
                "title",
                "--label-column",
                label,
                "--report",
                &fx.path("r").display().to_string(),
            ],
            env,
        )
    };
    // A label the model has never seen.
    let unknown = fx.path("unknown.csv");
    std::fs::write(&unknown, "title,category\nsmartphone 5g,Phones\nelectric guitar,Guitars\n").unwrap();
    let o = eval(&model_arg, &unknown.display().to_string(), "category", &[]);
    assert_clean_failure(&o, &["`Guitars`", "row 2", "unknown.csv"]);
    // A missing label column.
    let o = eval(&model_arg, &fx.csv.display().to_string(), "label", &[]);
    assert_clean_failure(&o, &["`label`", "products.csv"]);
    // A missing or wrong ONNX Runtime library.
    let csv = fx.csv.display().to_string();
    let o = eval(&model_arg, &csv, "category", &[("PRODCAT_ORT_LIB", "/nonexistent/libonnxruntime.so")]);
    assert_clean_failure(&o, &["ONNX Runtime", "/nonexistent/libonnxruntime.so", "provision"]);
    let not_ort =
        ["/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libc.so.6"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
    if let Some(lib) = not_ort {
        let o = eval(&model_arg, &csv, "category", &[("PRODCAT_ORT_LIB", lib)]);
        assert_clean_failure(&o, &["ONNX Runtime", lib]);
    }
    // A model folder missing a file names the file.
    std::fs::remove_file(model.join("labels.json")).unwrap();
    let o = eval(&model_arg, &csv, "category", &[]);
    assert_clean_failure(&o, &["labels.json"]);
    let o = eval(&fx.path("nowhere").display().to_string(), &csv, "category", &[]);
    assert_clean_failure(&o, &["nowhere"]);
}

/// The fixture's CSV rewritten with `classes` categories of `per_class` titles each: a model
/// token of its own, a brand shared by a few dozen classes, words shared by all.
fn many_classes(fx: &Fixture, classes: usize, per_class: usize) {
    let mut text = String::from("title,category\n");
    for c in 0..classes {
        for r in 0..per_class {
            text.push_str(&format!(
                "brand{} model{c} edition {r} colour {},cat{c:04}\n",
                c % 37,
                ["red", "blue"][r % 2]
            ));
        }
    }
    std::fs::write(&fx.csv, text).expect("the fixture's CSV is writable");
}

#[test]
fn the_dense_sgd_lexical_model_too_large_to_serve_is_refused_before_training() {
    // 1,100 classes at the default 2^19 buckets: 2.2 GiB of dense weights, past what one ONNX file
    // holds — the sgd solver learns them dense.
    let fx = Fixture::new(10);
    many_classes(&fx, 1100, 3);
    let mut args: Vec<String> =
        ["train", "--model-type", "lexical", "--solver", "sgd", "--out"].map(str::to_string).to_vec();
    args.push(fx.path("registry").display().to_string());
    args.extend(fixture_data_args(&fx));
    let started = Instant::now();
    let o = run_strings(&args);
    assert_clean_failure(&o, &["1100 classes", "2 GiB", "--buckets 262144", "svm solver"]);
    assert!(started.elapsed() < Duration::from_secs(30), "refused only after {:?}", started.elapsed());
    assert!(!fx.path("registry/classifier/v1").exists(), "nothing published");
}

#[test]
fn a_lexical_model_of_a_thousand_classes_trains_serves_and_reports_readably() {
    let fx = Fixture::new(10);
    many_classes(&fx, 1100, 4);
    let registry = fx.path("registry");
    let mut args: Vec<String> =
        ["train", "--model-type", "lexical", "--no-progress", "--out"].map(str::to_string).to_vec();
    args.push(registry.display().to_string());
    args.extend(fixture_data_args(&fx));
    let o = run_strings(&args);
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("parity:"), "{text}");
    // The terminal report of 1,100 classes: the worst and best classes and the confusions, no matrix.
    assert!(text.contains("1100 classes: the 10 of lowest and the 10 of highest F1"), "{text}");
    assert!(text.contains("most frequent confusions") && !text.contains("confusion matrix"), "{text}");
    assert!(text.lines().count() < 80, "{} lines", text.lines().count());
    let f1: f64 =
        text.lines().last().unwrap().split(' ').next().unwrap().strip_prefix("macro_f1=").unwrap().parse().unwrap();
    assert!(f1 > 0.9, "{text}");

    // Sparse and capped (the default past 64 classes): at most 16 classes per feature, shared words
    // lost their smallest weights, and the file is a sliver of the 2.2 GiB a dense matrix would take.
    let current = registry.join("classifier/current");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(current.join("card.json")).unwrap()).unwrap();
    let weights = &card["model"]["weights"];
    assert_eq!(weights["width"].as_u64(), Some(16), "{weights}");
    assert!(weights["dropped"].as_u64().unwrap() > 0, "{weights}");
    assert_eq!(card["model"]["settings"]["c_search"], "walk");
    let size = std::fs::metadata(current.join("model.onnx")).unwrap().len();
    assert!(size < 64 << 20, "model.onnx is {size} bytes");

    // eval: the plots of a large label set, and the confusion stored sparsely.
    let report = fx.path("report");
    let o = eval_fixture(&fx, &current, &["--report", &report.display().to_string()]);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["per_class"].as_array().unwrap().len(), 1100);
    let cells = metrics["confusion"].as_array().unwrap();
    assert!(cells.len() < 2 * 4400, "sparse: {} cells", cells.len());
    assert_eq!(cells.iter().map(|c| c[2].as_u64().unwrap()).sum::<u64>(), 4400);
    for png in ["confusion_matrix.png", "roc_curves.png"] {
        let bytes = std::fs::read(report.join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() < 4 << 20, "{png}: {} bytes", bytes.len());
    }
}

#[test]
fn a_memory_budget_trains_on_a_stratified_sample_that_fits_and_refuses_one_too_small() {
    // 3,000 long texts of 4 classes, each some 8,000 features (about 130 KB a row while training):
    // 640 MiB holds only a part of them beside the process and the model, 300 MiB too few to train.
    let fx = Fixture::new(10);
    let mut text = String::from("title,category\n");
    for r in 0..3000usize {
        let words: Vec<String> =
            (0..320).map(|i| format!("w{}q{}", (r * 7919 + i * 104_729) % 50_000, i % 97)).collect();
        text.push_str(&format!("class{} {},cat{}\n", r % 4, words.join(" "), r % 4));
    }
    std::fs::write(&fx.csv, text).unwrap();
    let train = |budget: &str, registry: &str| {
        let mut args: Vec<String> =
            ["train", "--model-type", "lexical", "--no-progress", "--c-grid", "1"].map(str::to_string).to_vec();
        args.extend(["--feature-norm", "joint", "--memory-budget-mib", budget, "--out"].map(str::to_string));
        args.push(fx.path(registry).display().to_string());
        args.extend(fixture_data_args(&fx));
        run_strings(&args)
    };
    let o = train("640", "registry");
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("registry/classifier/current/card.json")).unwrap())
            .unwrap();
    let rows = card["data"]["rows"].as_u64().unwrap();
    assert_eq!(card["training"]["sampled_from"].as_u64(), Some(3000), "{}", card["training"]);
    assert!((200..3000).contains(&rows), "trained on {rows} rows");
    assert!(stdout(&o).contains(&format!("memory:       the budget held {rows} of the 3000 rows")), "{}", stdout(&o));
    // Stratified: each class keeps its share.
    for (class, count) in card["data"]["class_counts"].as_object().unwrap() {
        let count = count.as_u64().unwrap();
        assert!(count.abs_diff(rows / 4) <= 1, "{class}: {count} of {rows}");
    }
    let o = train("300", "small");
    assert_clean_failure(&o, &["--memory-budget-mib", "too few to train 4 classes"]);
    assert!(!fx.path("small/classifier/v1").exists(), "nothing published");
}

#[test]
fn a_graph_past_the_external_data_threshold_keeps_its_weights_beside_it_and_serves_the_same() {
    // The threshold lowered to 64 KiB stands for protobuf's 2 GiB: the weights go to
    // model.onnx.data, ONNX Runtime reads them from there, and nothing else changes.
    let fx = Fixture::new(200);
    let mut scores = Vec::new();
    for (name, threshold) in [("inline", None), ("external", Some("65536"))] {
        let registry = fx.path(name).display().to_string();
        let mut args = vec!["train", "--model-type", "lexical", "--no-progress", "--out", &registry];
        let data = fixture_data_args(&fx);
        args.extend(data.iter().map(String::as_str));
        let env: Vec<(&str, &str)> = threshold.map(|t| ("PRODCAT_ONNX_EXTERNAL_BYTES", t)).into_iter().collect();
        let o = prodcat_env(&args, &env);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let current = fx.path(name).join("classifier/current");
        let model = std::fs::metadata(current.join("model.onnx")).expect("model.onnx").len();
        let data = current.join("model.onnx.data");
        if threshold.is_some() {
            let weights = std::fs::metadata(&data).expect("the weights beside the graph").len();
            assert!(model < 64 << 10 && weights > 1 << 20, "model.onnx {model} bytes, data {weights}");
        } else {
            assert!(!data.exists() && model > 1 << 20, "model.onnx {model} bytes");
        }
        // Served from the version folder (parity passed at training).
        let o = eval_fixture(&fx, &current, &[]);
        assert!(o.status.success(), "eval {name}: {}", stderr(&o));
        scores.push(stdout(&o).lines().last().unwrap_or_default().to_string());
    }
    assert_eq!(scores[0], scores[1]);
}
