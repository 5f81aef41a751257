//! The fast paths on small generated data: the lexical model family (train, ONNX export, parity,
//! serving), int8 and fp16 exports of a transformer (accuracy change recorded, refused past the bounds)
//! and cascades (threshold tuned on validation rows, each record labeled by the stage it says).

mod common;

use std::path::Path;

use common::*;
use prodcat::common::Kind;
use prodcat::models::cascade::Cascade;
use prodcat::models::ensemble::Ensemble;
use prodcat::models::quantize::{Precision, QuantizeJob, quantize_model};
use prodcat::onnx::half::HalfSettings;
use prodcat::onnx::quantize::QuantizeSettings;
use prodcat::registry::{ModelCard, ModelKind, ModelRegistry, ModelVersion, files};
use prodcat::serve::{ExecutionTarget, Model, SessionSettings, score_texts};

/// Trains the lexical model `lex` into `registry`, its test rows held out (composites are tuned and
/// reported on the member's splits).
fn train_lexical(fx: &Fixture, registry: &str) -> std::process::Output {
    let mut args: Vec<String> = [
        "train",
        "--model-type",
        "lexical",
        "--group-column",
        "group",
        "--name",
        "lex",
        "--buckets",
        "65536",
        "--hold-out-test",
    ]
    .map(str::to_string)
    .to_vec();
    args.extend(fixture_data_args(fx));
    args.extend(["--out".to_string(), fx.path(registry).display().to_string()]);
    run_strings(&args)
}

fn card(dir: &std::path::Path) -> ModelCard {
    ModelVersion::open(dir).unwrap().card
}

/// Trains a lexical model on the fixture's CSV with `extra` flags into `registry`; returns its card.
fn train_lexical_with(fx: &Fixture, registry: &str, extra: &[&str]) -> ModelCard {
    let out = fx.path(registry).display().to_string();
    let mut args: Vec<&str> =
        vec!["train", "--model-type", "lexical", "--group-column", "group", "--name", "lex", "--buckets", "65536"];
    let data = fixture_data_args(fx);
    args.extend(data.iter().map(String::as_str));
    args.extend(["--out", &out]);
    args.extend(extra);
    let o = prodcat(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    card(&fx.path(registry).join("lex"))
}

#[test]
fn explicit_split_files_refit_and_folds_use_every_label_they_say() {
    let fx = Fixture::new(300);
    let write = |name: &str, rows: usize, seed: u64| {
        let path = fx.path(name);
        prodcat::testkit::write_products_csv(&path, &prodcat::testkit::synthetic_products(rows, seed)).unwrap();
        path.display().to_string()
    };
    let (validation, test) = (write("validation.csv", 80, 21), write("test.csv", 100, 22));
    let c = train_lexical_with(&fx, "given", &["--validation-data", &validation, "--test-data", &test, "--refit"]);
    let data = c.data.clone().unwrap();
    // The training file gives only training rows; the given files are the other splits whole.
    assert_eq!((data.train_rows, data.validation_rows, data.test_rows, data.rows), (300, 80, 100, 480));
    assert_eq!(data.validation_file.as_deref(), Some(validation.as_str()));
    let training = c.training.clone().unwrap();
    // By default the published model learns from every row: the test rows too, once their
    // figures were measured on the model of train + validation.
    assert_eq!(training.refit_rows, Some(480), "the final fit learns from every row");
    assert!(training.test_before_final_fit);
    assert!(training.temperature.is_some_and(|t| t > 0.0 && t.is_finite()));
    assert_eq!(c.test_metrics.as_ref().unwrap().rows, 100);
    assert!(c.test_metrics.as_ref().unwrap().accuracy > 0.8);
    let held = train_lexical_with(
        &fx,
        "held",
        &["--validation-data", &validation, "--test-data", &test, "--refit", "--hold-out-test"],
    );
    let held_training = held.training.clone().unwrap();
    assert_eq!(held_training.refit_rows, Some(380), "refit trains on train + validation");
    assert!(!held_training.test_before_final_fit);
    // The figures are the same model's: measured before the final fit, or of the model published.
    assert_eq!(held.test_metrics, c.test_metrics);
    let onnx = |dir: &str| std::fs::read(fx.path(dir).join("lex/v1/model.onnx")).unwrap();
    assert!(onnx("given") != onnx("held"), "the final fit learned from the test rows");
    // The held-out rows re-derived from the card are exactly the test file's.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (texts, _) = runtime.block_on(prodcat::registry::held_out(&c, None, prodcat::data::Split::Test, None)).unwrap();
    let expected: Vec<String> =
        prodcat::testkit::synthetic_products(100, 22).into_iter().map(|p| p.title.trim().to_string()).collect();
    assert_eq!(texts, expected);

    // With fractions and no files the split follows them; a file this small (under 10,000 rows)
    // has its choices made by 5-fold cross-validation over train + validation by default, and the
    // model learns from every row; with --no-refit it trains on the training split only.
    let c = train_lexical_with(&fx, "fractions", &["--split", "0.6,0.2,0.2"]);
    let data = c.data.clone().unwrap();
    assert_eq!(data.train_rows + data.validation_rows + data.test_rows, 300);
    assert!((55..=65).contains(&data.test_rows) && (55..=65).contains(&data.validation_rows), "{data:?}");
    let training = c.training.clone().unwrap();
    assert_eq!((training.folds, training.refit_rows, training.test_before_final_fit), (Some(5), Some(300), true));
    // --refit chooses on the validation split whatever the size.
    let c = train_lexical_with(&fx, "refit", &["--split", "0.6,0.2,0.2", "--refit"]);
    let training = c.training.clone().unwrap();
    assert_eq!((training.folds, training.refit_rows), (None, Some(300)));
    let c = train_lexical_with(&fx, "no-refit", &["--split", "0.6,0.2,0.2", "--no-refit"]);
    assert_eq!(c.training.as_ref().unwrap().refit_rows, None);
    assert_eq!(c.data.clone().unwrap().train_rows, data.train_rows);

    // K-fold choices: recorded, and the model trains on train + validation (+ test unless held out).
    let c = train_lexical_with(&fx, "folds", &["--split", "0.6,0.2,0.2", "--folds", "3", "--hold-out-test"]);
    let (training, data) = (c.training.clone().unwrap(), c.data.clone().unwrap());
    assert_eq!(training.folds, Some(3));
    assert_eq!(training.refit_rows, Some(data.train_rows + data.validation_rows));
    assert!(c.test_metrics.as_ref().unwrap().accuracy > 0.8);
    let all = train_lexical_with(&fx, "folds-all", &["--split", "0.6,0.2,0.2", "--folds", "3"]);
    assert_eq!(all.training.as_ref().unwrap().refit_rows, Some(300));
    // The same choices and test figures (measured before the final fit), another model.
    assert_eq!(all.test_metrics, c.test_metrics);
    assert_eq!(all.training.as_ref().unwrap().temperature, training.temperature);

    // Bad fractions and --folds with the transformer are refused before any work.
    let o = prodcat(&[
        "train",
        "--data",
        &validation,
        "--text-column",
        "title",
        "--label-column",
        "category",
        "--out",
        "unused",
        "--model-type",
        "lexical",
        "--split",
        "0.9,0.2,0.1",
    ]);
    assert_clean_failure(&o, &["fractions", "sum to 1"]);
}

#[test]
fn lexical_model_trains_exports_with_parity_and_serves() {
    let fx = Fixture::new(400);
    let o = train_lexical(&fx, "registry");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).lines().last().unwrap().starts_with("macro_f1="), "{}", stdout(&o));
    let model_dir = fx.path("registry/lex");
    let c = card(&model_dir);
    let ModelKind::Lexical(lexical) = &c.model else { panic!("not a lexical card: {:?}", c.model) };
    assert!(c.parity.as_ref().unwrap().passed && c.parity.as_ref().unwrap().max_abs_diff < 1e-3);
    assert_eq!(lexical.featurizer.buckets, 65536);
    assert!(!model_dir.join("current").join(files::TOKENIZER).exists(), "a lexical model needs no tokenizer");
    let test = c.test_metrics.unwrap();
    assert!(test.accuracy > 0.8, "lexical test accuracy {}", test.accuracy);

    // Served through the same ONNX Runtime path: eval and relabel.
    let o = eval_fixture(&fx, &model_dir, &["--report", &fx.path("report").display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = prodcat::models::open(&model_dir, &SessionSettings::default()).unwrap();
    let scored = score_texts(&*model, &["laptop notebook ssd", "novel paperback author"], None).unwrap();
    let (out, stages) = (scored.output, scored.stages);
    assert_eq!(stages, vec![Kind::Lexical; 2]);
    assert_eq!(model.labels()[out.argmax(0).0], "Laptops");
    assert_eq!(model.labels()[out.argmax(1).0], "Books");
    // A lexical model stays on the CPU whatever the device: even a required GPU does not apply.
    let on_gpu = SessionSettings { target: ExecutionTarget::Cuda, require_gpu: true, ..Default::default() };
    assert!(prodcat::models::open(&model_dir, &on_gpu).is_ok());

    // The same data and seed give the same model.
    let o = train_lexical(&fx, "again");
    assert!(o.status.success(), "{}", stderr(&o));
    let a = std::fs::read(fx.path("registry/lex/v1/model.onnx")).unwrap();
    let b = std::fs::read(fx.path("again/lex/v1/model.onnx")).unwrap();
    assert!(a == b, "lexical training is not reproducible");
}

#[test]
fn text_composed_of_several_columns_is_recorded_in_the_card_and_checked_where_it_is_served() {
    let fx = Fixture::new(300);
    // `name` says nothing about the category; the description does, within its first 40 chars.
    let products = prodcat::testkit::synthetic_products(300, 31);
    let name = |i: usize| format!("item {}", i % 7);
    let body = |i: usize| {
        format!("{} with spec sheet, warranty terms and a long list of accessories", products[i].title.trim())
    };
    let mut csv = String::from("id,name,body,category,group\n");
    for (i, p) in products.iter().enumerate() {
        csv.push_str(&format!("{i},{},\"{}\",{},{}\n", name(i), body(i), p.category, p.group));
    }
    let data = fx.path("composed.csv");
    std::fs::write(&data, csv).unwrap();
    let (data, out) = (data.display().to_string(), fx.path("registry").display().to_string());
    let columns = ["--text-column", "name,body", "--max-chars", "body=40", "--label-column", "category"];
    let mut args = vec!["train", "--model-type", "lexical", "--data", &data, "--group-column", "group", "--out", &out];
    args.extend(["--name", "lex", "--buckets", "65536"]);
    args.extend(columns);
    let o = prodcat(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = card(&fx.path("registry/lex"));
    let info = c.data.clone().unwrap();
    assert_eq!(info.text_column, "name");
    let text = info.text.clone().expect("a composed text is recorded");
    assert_eq!(
        (text.fields.as_slice(), text.separator.as_str()),
        (["name".to_string(), "body".to_string()].as_slice(), " | ")
    );
    assert_eq!(text.max_chars.get("body"), Some(&40));
    assert!(c.test_metrics.as_ref().unwrap().accuracy > 0.8, "the description reached the model: {:?}", c.test_metrics);

    // The held-out rows read again are composed as training composed them.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (texts, _) = runtime.block_on(prodcat::registry::held_out(&c, None, prodcat::data::Split::Test, None)).unwrap();
    let composed: Vec<String> = (0..products.len())
        .map(|i| format!("{} | {}", name(i), body(i).chars().take(40).collect::<String>()))
        .collect();
    assert!(!texts.is_empty() && texts.iter().all(|t| composed.contains(t)), "{:?}", &texts[..texts.len().min(3)]);
    // `split` writes the same texts.
    let split = fx.path("split.csv").display().to_string();
    let mut args = vec!["split", "--data", &data, "--group-column", "group", "--out", &split];
    args.extend(columns);
    let o = prodcat(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let written = std::fs::read_to_string(&split).unwrap();
    assert!(written.contains(&composed[0]), "split.csv lacks {:?}", composed[0]);
    // The groups too, so a baseline can keep a product's rows together again.
    assert!(written.starts_with("text,label,split,group\n"), "{}", &written[..80.min(written.len())]);

    // Evaluated or served on texts composed otherwise: a warning that says how training composed them.
    let model = fx.path("registry/lex").display().to_string();
    let eval = |text: &[&str]| {
        let mut args = vec!["eval", "--model", &model, "--data", &data, "--label-column", "category"];
        args.extend(["--report", fx.dir.path().to_str().unwrap()]);
        args.extend(text);
        let o = prodcat(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let warned = eval(&["--text-column", "name"]);
    assert!(warned.contains("trained on texts composed of `name`, `body` (first 40 chars)"), "{warned}");
    assert!(!eval(&["--text-column", "name,body", "--max-chars", "body=40"]).contains("trained on texts"));
    let check = |text: &str| {
        let file = fx.path("pipeline.toml");
        let pipeline = format!(
            "[pipeline]\nkind = \"kafka\"\n[model]\npath = \"{model}\"\n[kafka]\ninput_topic = \"in\"\noutput_topic = \"out\"\n[text]\n{text}\n"
        );
        std::fs::write(&file, pipeline).unwrap();
        let o = prodcat(&["check", &file.display().to_string()]);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let warned = check("fields = [\"title\"]");
    assert!(warned.contains("but these are composed of `title` joined"), "{warned}");
    assert!(
        !check("fields = [\"title\", \"description\"]\nmax_chars = { description = 40 }").contains("trained on texts")
    );

    let o = prodcat(&[
        "split",
        "--data",
        &data,
        "--out",
        &split,
        "--label-column",
        "category",
        "--text-column",
        "name",
        "--max-chars",
        "body=4",
    ]);
    assert_clean_failure(&o, &["--max-chars body", "not one of the --text-column columns"]);
}

/// Converting the tiny model to `precision`, judged on every fixture product.
fn conversion_job(fx: &Fixture, registry: &Path, name: &str, tolerance: f64, precision: Precision) -> QuantizeJob {
    QuantizeJob {
        model: ModelVersion::open(&registry.join("tiny")).unwrap(),
        texts: fx.products.iter().map(|p| p.title.clone()).collect(),
        labels: fx.products.iter().map(|p| p.category.clone()).collect(),
        origin: "fixture".into(),
        registry: registry.to_path_buf(),
        name: name.into(),
        tolerance,
        precision,
        session: SessionSettings::default(),
    }
}

#[test]
fn int8_export_records_its_accuracy_change_and_is_refused_past_the_tolerance() {
    let fx = Fixture::new(300);
    let registry = tiny_registry(&fx);
    let texts: Vec<String> = fx.products.iter().map(|p| p.title.clone()).collect();
    // The tiny model's matrices are small; quantize them all.
    let int8 = Precision::Int8(QuantizeSettings { min_dim: 8, ..Default::default() });
    let job = |tolerance: f64| conversion_job(&fx, &registry, "tiny-int8", tolerance, int8.clone());
    let dir = quantize_model(job(1.0)).unwrap().publish(true).unwrap();
    let c = ModelCard::read(&dir.join(files::CARD)).unwrap();
    let q = c.model.transformer().unwrap().quantization.clone().unwrap();
    assert_eq!(c.onnx.as_ref().unwrap().precision, "int8");
    assert_eq!(q.rows, texts.len());
    assert!((q.macro_f1_drop - (q.fp32_macro_f1 - q.converted_macro_f1)).abs() < 1e-12);
    assert!(q.agreement > 0.9, "int8 agrees with fp32 on only {:.3}", q.agreement);
    let onnx = std::fs::read(dir.join(files::MODEL)).unwrap();
    assert!(String::from_utf8_lossy(&onnx).contains("DynamicQuantizeMatMul"));
    let fp32_len = std::fs::metadata(registry.join("tiny/current/model.onnx")).unwrap().len();
    assert!((onnx.len() as u64) < fp32_len, "int8 model is not smaller");
    let served = prodcat::models::open(&dir, &SessionSettings::default()).unwrap();
    assert_eq!(served.labels().len(), 5);

    // A tolerance nothing can meet: refused, and no version is published.
    let err = quantize_model(job(-1.0)).err().expect("must be refused").to_string();
    assert!(err.contains("refused"), "{err}");
    assert_eq!(ModelRegistry::new(&registry).versions("tiny-int8").unwrap(), vec![1]);

    // The CLI names the problem when there is nothing worth quantizing.
    let o = on_fixture(&fx, "quantize", &registry.join("tiny"), &[]);
    assert_clean_failure(&o, &["MatMul"]);
}

#[test]
fn fp16_export_checks_agreement_and_logits_against_fp32_and_is_refused_past_its_bounds() {
    let fx = Fixture::new(300);
    let registry = tiny_registry(&fx);
    let texts: Vec<String> = fx.products.iter().map(|p| p.title.clone()).collect();
    let job = |precision: Precision| conversion_job(&fx, &registry, "tiny-fp16", 0.01, precision);
    // ONNX Runtime's CPU provider runs this graph in fp16 as the CUDA provider would.
    let dir = quantize_model(job(Precision::fp16())).unwrap().publish(true).unwrap();
    let c = ModelCard::read(&dir.join(files::CARD)).unwrap();
    let q = c.model.transformer().unwrap().quantization.clone().unwrap();
    assert_eq!((c.onnx.as_ref().unwrap().precision.as_str(), q.precision.as_str()), ("fp16", "fp16"));
    assert_eq!((q.min_agreement, q.max_logit_diff), (Some(0.995), Some(0.05)));
    assert!(q.agreement >= 0.995, "fp16 agrees with fp32 on only {:.4}", q.agreement);
    assert!(q.max_abs_logit_diff > 0.0 && q.max_abs_logit_diff <= 0.05, "{}", q.max_abs_logit_diff);
    let fp32_len = std::fs::metadata(registry.join("tiny/current/model.onnx")).unwrap().len();
    let fp16_len = std::fs::metadata(dir.join(files::MODEL)).unwrap().len();
    assert!(fp16_len * 10 < fp32_len * 6, "fp16 {fp16_len} bytes vs fp32 {fp32_len}");
    // Served as any model: the outputs are fp32 again.
    let served = prodcat::models::open(&dir, &SessionSettings::default()).unwrap();
    let scored = score_texts(&*served, &[texts[0].as_str()], None).unwrap();
    assert!((scored.output.probs(0).iter().sum::<f32>() - 1.0).abs() < 1e-2);

    // A logit bound fp16 rounding cannot meet: refused, nothing more published.
    let strict = Precision::Fp16 { settings: HalfSettings::gpu(), min_agreement: 0.995, max_logit_diff: 1e-9 };
    let err = quantize_model(job(strict)).err().expect("must be refused").to_string();
    assert!(err.contains("refused") && err.contains("logit diff"), "{err}");
    assert_eq!(ModelRegistry::new(&registry).versions("tiny-fp16").unwrap(), vec![1]);

    // The command line: `--precision fp16` publishes `<name>-fp16`.
    let o = on_fixture(&fx, "quantize", &registry.join("tiny"), &["--precision", "fp16", "--tolerance", "0.01"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("fp16 vs fp32") && stdout(&o).contains("fp16 (macro-F1 drop"), "{}", stdout(&o));
    assert!(registry.join("tiny-fp16/v2/model.onnx").exists());
}

#[test]
fn a_transformer_of_a_thousand_classes_trains_exports_and_converts_to_int8_and_fp16() {
    // 1,100 classes of 4 titles under 10 categories (`group3 > cat0013`): the head is 1,100 wide;
    // training, export, parity, both conversions and serving handle it, and every graph's level
    // scores are the sums of its leaves' (quality is not the point of a tiny random encoder).
    let fx = Fixture::new(10);
    let (mut texts, mut labels) = (Vec::new(), Vec::new());
    let mut csv = String::from("title,category,group\n");
    for c in 0..1100 {
        for r in 0..4 {
            let (title, label) =
                (format!("brand{} model{c} edition {r}", c % 37), format!("group{} > cat{c:04}", c % 10));
            csv.push_str(&format!("{title},{label},{c}-{r}\n"));
            texts.push(title);
            labels.push(label);
        }
    }
    std::fs::write(&fx.csv, csv).expect("the fixture's CSV is writable");
    let o = run_strings(&train_args(&fx, "registry", &["--epochs", "1"]));
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    assert!(stdout(&o).contains("parity:"), "{}", stdout(&o));
    let registry = fx.path("registry");
    let trained = card(&registry.join("tiny/current"));
    assert_eq!(trained.num_labels, 1100);
    let taxonomy = trained.taxonomy.expect("category paths make a taxonomy");
    assert_eq!(taxonomy.levels.len(), 1);
    assert_eq!(taxonomy.levels[0].nodes.len(), 10);
    assert!(trained.onnx.unwrap().outputs.contains(&"level1_probabilities".to_string()));

    let job = |name: &str, precision: Precision| QuantizeJob {
        model: ModelVersion::open(&registry.join("tiny")).expect("the trained model"),
        texts: texts[..400].to_vec(),
        labels: labels[..400].to_vec(),
        origin: "1,100 classes".into(),
        registry: registry.clone(),
        name: name.into(),
        tolerance: 1.0,
        precision,
        session: SessionSettings::default(),
    };
    let int8 = Precision::Int8(QuantizeSettings { min_dim: 8, ..Default::default() });
    let fp16 = Precision::Fp16 { settings: HalfSettings::gpu(), min_agreement: 0.0, max_logit_diff: 1.0 };
    for (name, precision) in [("tiny-int8", int8), ("tiny-fp16", fp16)] {
        let dir = quantize_model(job(name, precision)).expect("converted").publish(true).expect("published");
        let served = prodcat::models::open(&dir, &SessionSettings::default()).expect("served");
        assert_eq!(served.labels().len(), 1100, "{name}");
        let scored = score_texts(&*served, &[texts[7].as_str(), texts[4000].as_str()], None).expect("scored");
        for row in 0..2 {
            let probs = scored.output.probs(row);
            assert_eq!(probs.len(), 1100, "{name}");
            assert!(
                (probs.iter().sum::<f32>() - 1.0).abs() < 1e-2,
                "{name}: probabilities sum to {}",
                probs.iter().sum::<f32>()
            );
        }
        let q = card(&dir).model.transformer().and_then(|t| t.quantization.clone()).expect("conversion record");
        assert_eq!(q.rows, 400, "{name}");
    }
}

/// `prodcat <kind> --lexical .. --transformer .. --out .. --name .. --report ..`.
fn composite(
    kind: &str,
    lexical: &std::path::Path,
    transformer: &std::path::Path,
    registry: &std::path::Path,
    name: &str,
    report: &std::path::Path,
) -> std::process::Output {
    let [lexical, transformer, registry, report] =
        [lexical, transformer, registry, report].map(|p| p.display().to_string());
    prodcat(&[
        kind,
        "--lexical",
        &lexical,
        "--transformer",
        &transformer,
        "--out",
        &registry,
        "--name",
        name,
        "--report",
        &report,
    ])
}

#[test]
fn ensemble_chooses_its_weight_on_validation_and_averages_calibrated_probabilities() {
    let fx = Fixture::new(400);
    let registry = tiny_registry(&fx);
    let o = train_lexical(&fx, "registry");
    assert!(o.status.success(), "{}", stderr(&o));
    let (lex, tiny) = (registry.join("lex"), registry.join("tiny"));
    let report = fx.path("ensemble-report");
    let o = composite("ensemble", &lex, &tiny, &registry, "ens", &report);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("← chosen"), "{}", stdout(&o));
    assert!(report.join("tuning.json").is_file());
    let c = card(&registry.join("ens"));
    // A member that learned from its test rows leaves the composite without test figures.
    let o = run_strings(
        &[
            &["train", "--model-type", "lexical", "--group-column", "group", "--name", "all-rows"].map(str::to_string)
                [..],
            &fixture_data_args(&fx),
            &["--out".into(), registry.display().to_string()],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = composite("ensemble", &registry.join("all-rows"), &tiny, &registry, "ens-all", &report);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("learned from its test rows"), "{}", stderr(&o));
    assert!(card(&registry.join("ens-all")).test_metrics.is_none());
    let ModelKind::Ensemble(info) = c.model.clone() else { panic!("not an ensemble card: {:?}", c.model) };
    let tuning = info.tuning.clone().unwrap();
    assert_eq!(tuning["curve"].as_array().unwrap().len(), 21);
    assert_eq!(tuning["chosen"]["lexical_weight"].as_f64().unwrap() as f32, info.lexical_weight);
    // The chosen weight is the curve's lowest log-loss.
    let best =
        tuning["curve"].as_array().unwrap().iter().map(|p| p["log_loss"].as_f64().unwrap()).fold(f64::MAX, f64::min);
    assert_eq!(tuning["chosen"]["log_loss"].as_f64().unwrap(), best);
    assert!(c.test_metrics.as_ref().unwrap().accuracy > 0.8);
    assert!(c.parity.as_ref().unwrap().passed);

    // Weight 1: the lexical member's probabilities; 0: the transformer's; between: the average.
    let texts: Vec<&str> = fx.products.iter().take(50).map(|p| p.title.as_str()).collect();
    let settings = SessionSettings::default();
    let mut ensemble = Ensemble::load(ModelVersion::open(&registry.join("ens")).unwrap(), &settings).unwrap();
    let lexical = score_texts(&*prodcat::models::open(&lex, &settings).unwrap(), &texts, None).unwrap().output;
    let transformer = prodcat::models::open(&tiny, &settings).unwrap();
    let transformer_out = score_texts(&*transformer, &texts, None).unwrap().output;
    // The tiny transformer's labels are the lexical member's (same data), in the same order.
    assert_eq!(transformer.labels(), ensemble.labels());
    for w in [0.0f32, 0.3, 1.0] {
        ensemble.lexical_weight = w;
        let scored = score_texts(&ensemble, &texts, None).unwrap();
        assert!(scored.stages.iter().all(|s| *s == Kind::Ensemble));
        for (i, p) in scored.output.probabilities.iter().enumerate() {
            let expected = w * lexical.probabilities[i] + (1.0 - w) * transformer_out.probabilities[i];
            assert!((p - expected).abs() < 1e-5, "weight {w}, value {i}: {p} vs {expected}");
        }
    }
    // Served like any model, and verified like one: a broken member fails the load.
    let served = prodcat::models::load_verified(ModelVersion::open(&registry.join("ens")).unwrap(), &settings).unwrap();
    assert_eq!(served.card().model.name(), "ensemble");
    let member = ModelVersion::open(&registry.join("ens")).unwrap().dir.join("transformer").join(files::MODEL);
    std::fs::write(&member, b"not onnx").unwrap();
    assert!(prodcat::models::open(&registry.join("ens"), &settings).is_err());
}

#[test]
fn auto_trains_every_family_publishes_the_best_on_validation_and_reports_the_comparison() {
    let fx = Fixture::new(400);
    // Without --refit the winner is published as trained; with it, the same choice is made and
    // the winner is trained again on train + validation (each kind's refit, by restricting the
    // kinds that may win).
    for (name, refit, only) in [
        ("auto", false, None),
        ("auto-refit", true, Some("transformer")),
        ("auto-refit-e", true, Some("ensemble")),
        ("auto-refit-c", true, Some("cascade")),
    ] {
        let (registry, report) = (fx.path("registry").display().to_string(), fx.path(&format!("{name}-report")));
        let mut args: Vec<String> = fixture_data_args(&fx);
        args.splice(0..0, ["train".to_string(), "--model-type".into(), "auto".into()]);
        for extra in [
            ["--base", &fx.base.display().to_string()],
            ["--group-column", "group"],
            ["--epochs", "3"],
            ["--lr", "1e-2"],
            ["--max-length", "32"],
            ["--buckets", "65536"],
            ["--out", &registry],
            ["--name", name],
            ["--report", &report.display().to_string()],
        ] {
            args.extend(extra.map(str::to_string));
        }
        args.push("--no-progress".into());
        if refit {
            args.push("--refit".into());
        }
        if let Some(kind) = only {
            args.extend(["--candidates".to_string(), kind.to_string()]);
        }
        // At info level, to count the epochs the log reports.
        let o = prodcat_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[("PRODCAT_LOG", "info")]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("← chosen"), "{}", stdout(&o));
        // 40 validation rows: the log suggests choosing out of fold.
        assert!(stderr(&o).contains("--folds K compares them out of fold"), "{}", stderr(&o));
        let comparison: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report.join("comparison.json")).unwrap()).unwrap();
        let scores = comparison["candidates"].as_array().unwrap();
        let kinds: Vec<&str> = scores.iter().map(|s| s["model"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["lexical", "transformer", "ensemble", "cascade"]);
        let chosen: Vec<&serde_json::Value> = scores.iter().filter(|s| s["chosen"].as_bool().unwrap()).collect();
        assert_eq!(chosen.len(), 1);
        if let Some(kind) = only {
            assert_eq!(chosen[0]["model"], kind, "only {kind} may be published");
        } else {
            // The rule: best validation macro-F1; within the tie margin, the fastest.
            let f1 = |s: &serde_json::Value| s["validation_macro_f1"].as_f64().unwrap();
            let speed = |s: &serde_json::Value| s["titles_per_second"].as_f64().unwrap();
            let best = scores.iter().map(f1).fold(0.0, f64::max);
            assert!(f1(chosen[0]) >= best - prodcat::models::auto::TIE);
            for s in scores.iter().filter(|s| f1(s) >= best - prodcat::models::auto::TIE) {
                assert!(speed(chosen[0]) >= speed(s), "a tied, faster candidate was not chosen: {s}");
            }
        }
        for s in scores {
            assert!(s["test_macro_f1"].as_f64().is_some() && s["train_seconds"].as_f64().unwrap() > 0.0, "{s}");
        }
        assert!(report.join("tradeoff.png").metadata().unwrap().len() > 1000);
        // Only the winner is published, as v1 of the model, with its own kind.
        let c = card(&fx.path(&format!("registry/{name}")));
        assert_eq!(c.model.name(), chosen[0]["model"].as_str().unwrap());
        assert_eq!(ModelRegistry::new(fx.path("registry")).versions(name).unwrap(), vec![1]);
        let leftovers: Vec<String> = std::fs::read_dir(fx.path(&format!("registry/{name}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !["v1", "current", ".checkpoints"].contains(&n.as_str()))
            .collect();
        assert!(leftovers.is_empty(), "staged candidates left behind: {leftovers:?}");
        let version = ModelVersion::open(&fx.path(&format!("registry/{name}"))).unwrap();
        prodcat::models::load_verified(version.clone(), &SessionSettings::default()).unwrap();

        // What the published model was trained on: the training split, or train + validation.
        let data = c.data.as_ref().unwrap();
        let trained = |dir: &std::path::Path| {
            let c = ModelVersion::at(dir).unwrap().card;
            c.training.as_ref().unwrap().refit_rows.unwrap_or(c.data.as_ref().unwrap().train_rows)
        };
        let trained_on: Vec<usize> = match c.model {
            ModelKind::Lexical(_) | ModelKind::Transformer(_) => vec![trained(&version.dir)],
            _ => ["lexical", "transformer"].iter().map(|m| trained(&version.dir.join(m))).collect(),
        };
        let expected = if refit { data.train_rows + data.validation_rows } else { data.train_rows };
        assert!(trained_on.iter().all(|&n| n == expected), "{trained_on:?} vs {expected}");
        let published_f1 = c.test_metrics.as_ref().unwrap().macro_f1;
        if refit {
            let r = &comparison["refit"];
            assert_eq!(r["model"], chosen[0]["model"]);
            assert_eq!(r["rows"].as_u64(), Some(expected as u64));
            assert_eq!(r["test_macro_f1"].as_f64(), Some(published_f1));
            // The transformer's search ran once: the refit resumed its checkpoint.
            let searched = stderr(&o).matches("epoch finished").count() - stderr(&o).matches("refit epoch").count();
            assert_eq!(searched, 3, "{}", stderr(&o));
            // A composite keeps the weight and threshold it chose on validation, with their tuning.
            match &c.model {
                ModelKind::Cascade(info) => assert!(info.tuning.is_some() && info.weight_tuning.is_some()),
                ModelKind::Ensemble(info) => assert!(info.tuning.is_some()),
                _ => {}
            }
        } else {
            assert!(comparison["refit"].is_null());
            assert_eq!(chosen[0]["test_macro_f1"].as_f64(), Some(published_f1));
        }
    }
}

#[test]
fn auto_with_folds_chooses_out_of_fold_and_trains_the_winner_on_train_and_validation() {
    let fx = Fixture::new(300);
    let (registry, report) = (fx.path("registry"), fx.path("folds-report"));
    let mut args: Vec<String> = fixture_data_args(&fx);
    args.splice(0..0, ["train".to_string(), "--model-type".into(), "auto".into()]);
    let (base, out, rep) =
        (fx.base.display().to_string(), registry.display().to_string(), report.display().to_string());
    for extra in [
        ["--base", &base],
        ["--group-column", "group"],
        ["--epochs", "2"],
        ["--lr", "1e-2"],
        ["--max-length", "32"],
        ["--buckets", "65536"],
        ["--out", &out],
        ["--name", "cv"],
        ["--report", &rep],
        ["--folds", "3"],
        // A composite winner, so both final members are trained.
        ["--candidates", "cascade"],
    ] {
        args.extend(extra.map(str::to_string));
    }
    args.push("--no-progress".into());
    let o = prodcat_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[("PRODCAT_LOG", "info")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("out of fold"), "{}", stdout(&o));
    let log = stderr(&o);
    // Each member trained once per fold and once on train + validation.
    assert_eq!(log.matches("auto: training the fold's members").count(), 3, "{log}");
    assert!(!log.contains("--folds K compares them"), "{log}");
    assert_eq!(log.matches("training transformer classifier").count(), 4, "{log}");
    assert_eq!(log.matches("training lexical classifier").count(), 4, "{log}");

    let comparison: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("comparison.json")).unwrap()).unwrap();
    assert_eq!(comparison["folds"].as_u64(), Some(3));
    let scores = comparison["candidates"].as_array().unwrap();
    let kinds: Vec<&str> = scores.iter().map(|s| s["model"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["lexical", "transformer", "ensemble", "cascade"]);
    for s in scores {
        let f1 = s["validation_macro_f1"].as_f64().unwrap();
        assert!(f1 > 0.0 && f1 <= 1.0 && s["titles_per_second"].as_f64().unwrap() > 0.0, "{s}");
        // Only the final model sees the test rows.
        assert!(s["test_macro_f1"].is_null(), "{s}");
    }
    let chosen: Vec<&str> =
        scores.iter().filter(|s| s["chosen"].as_bool().unwrap()).map(|s| s["model"].as_str().unwrap()).collect();
    assert_eq!(chosen, ["cascade"]);

    // The published cascade: both members on train + validation, with the folds' choices.
    let c = card(&registry.join("cv"));
    let data = c.data.clone().unwrap();
    let pool = data.train_rows + data.validation_rows;
    assert!(data.validation_rows > 0 && data.test_rows > 0, "{data:?}");
    let r = &comparison["refit"];
    assert_eq!(r["model"], "cascade");
    assert_eq!(r["rows"].as_u64(), Some(pool as u64));
    assert_eq!(r["test_macro_f1"].as_f64(), Some(c.test_metrics.as_ref().unwrap().macro_f1));
    let ModelKind::Cascade(info) = c.model.clone() else { panic!("not a cascade: {:?}", c.model) };
    // Weight and threshold were chosen on every train + validation row, out of fold.
    assert_eq!(info.tuning.as_ref().unwrap()["rows"].as_u64(), Some(pool as u64));
    assert_eq!(info.tuning.as_ref().unwrap()["chosen"]["threshold"].as_f64().unwrap() as f32, info.threshold);
    let weights = info.weight_tuning.as_ref().unwrap();
    assert_eq!(weights["rows"].as_u64(), Some(pool as u64));
    assert_eq!(weights["chosen"]["lexical_weight"].as_f64().unwrap() as f32, info.lexical_weight);
    let version = ModelVersion::open(&registry.join("cv")).unwrap();
    for member in ["lexical", "transformer"] {
        let m = ModelVersion::at(&version.dir.join(member)).unwrap().card;
        let t = m.training.clone().unwrap();
        assert_eq!(t.folds, Some(3), "{member}");
        assert_eq!(t.refit_rows, Some(pool), "{member}");
        assert!(t.temperature.is_some_and(|t| t > 0.0 && t.is_finite()), "{member}: {t:?}");
        // The split the card records is the one the held-out rows are re-derived from.
        assert_eq!(m.data.as_ref().unwrap().test_rows, data.test_rows, "{member}");
    }
    let t = ModelVersion::at(&version.dir.join("transformer")).unwrap().card.training.unwrap();
    assert!(t.validation_macro_f1.is_empty() && t.epochs_run == t.best_epoch && t.epochs_run <= 2, "{t:?}");
    prodcat::models::load_verified(version.clone(), &SessionSettings::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (texts, _) = runtime.block_on(prodcat::registry::held_out(&c, None, prodcat::data::Split::Test, None)).unwrap();
    assert_eq!(texts.len(), data.test_rows);
    // The folds' scratch models are gone; only the published version (and checkpoints) remain.
    let left: Vec<String> = std::fs::read_dir(registry.join("cv"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !["v1", "current", ".checkpoints"].contains(&n.as_str()))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Without a test split the final transformer trains on every row; its parity check then samples
    // training rows instead of none.
    let swap = |args: &[String], flag: &str, value: &str| -> Vec<String> {
        let mut out = args.to_vec();
        let i = out.iter().position(|a| a == flag).unwrap();
        out[i + 1] = value.to_string();
        out
    };
    let mut no_test = swap(&swap(&args, "--candidates", "transformer"), "--name", "cv-no-test");
    no_test.extend(["--split".to_string(), "0.8,0.2,0".into()]);
    let o = prodcat(&no_test.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let c = card(&registry.join("cv-no-test"));
    assert_eq!((c.model.name(), c.data.as_ref().unwrap().test_rows), ("transformer", 0));
    let parity = c.parity.unwrap();
    assert!(parity.passed && parity.samples > 0, "{parity:?}");

    // Stopped at the third fold: the first two folds' checkpoints stay, and `--resume` exports
    // them without training again and ends where an uninterrupted run ends.
    let (again, again_report) = (fx.path("again").display().to_string(), fx.path("again-report").display().to_string());
    let interrupted = swap(&swap(&args, "--out", &again), "--report", &again_report);
    let o =
        prodcat_env(&interrupted.iter().map(String::as_str).collect::<Vec<_>>(), &[("PRODCAT_FAULTS", "auto.fold=3")]);
    assert_clean_failure(&o, &["fold 3: injected fault", "--resume continues"]);
    let scratch = fx.path("again/cv/.folds/cv");
    let kept: Vec<String> =
        std::fs::read_dir(&scratch).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(kept, [".checkpoints"], "only checkpoints are kept");
    let mut resumed = interrupted;
    resumed.push("--resume".into());
    let o = prodcat_env(&resumed.iter().map(String::as_str).collect::<Vec<_>>(), &[("PRODCAT_LOG", "info")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o).matches("resuming training").count(), 2, "{}", stderr(&o));
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("again-report").join("comparison.json")).unwrap())
            .unwrap();
    for (a, b) in scores.iter().zip(again["candidates"].as_array().unwrap()) {
        assert_eq!(a["validation_macro_f1"], b["validation_macro_f1"], "{a} vs {b}");
        assert_eq!(a["chosen"], b["chosen"]);
    }
    assert!(!fx.path("again/cv/.folds").exists(), "a finished run leaves no scratch");

    // A transformer alone cannot take --folds.
    let o = prodcat(&[
        "train",
        "--data",
        &fx.csv.display().to_string(),
        "--text-column",
        "title",
        "--label-column",
        "category",
        "--out",
        &out,
        "--base",
        &base,
        "--folds",
        "3",
    ]);
    assert_clean_failure(&o, &["--folds applies to lexical and auto"]);
}

#[test]
fn cascade_tunes_its_threshold_and_labels_each_record_by_the_stage_it_reports() {
    let fx = Fixture::new(400);
    let registry = tiny_registry(&fx);
    let o = train_lexical(&fx, "registry");
    assert!(o.status.success(), "{}", stderr(&o));
    let (lex, tiny) = (registry.join("lex"), registry.join("tiny"));
    let report = fx.path("cascade-report");
    let o = composite("cascade", &lex, &tiny, &registry, "casc", &report);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("← chosen"), "{}", stdout(&o));
    assert!(report.join("threshold_curve.png").metadata().unwrap().len() > 1000);
    let c = card(&registry.join("casc"));
    let ModelKind::Cascade(info) = c.model.clone() else { panic!("not a cascade card: {:?}", c.model) };
    let tuning = info.tuning.unwrap();
    assert!(tuning["curve"].as_array().unwrap().len() > 20);
    assert_eq!(tuning["chosen"]["threshold"].as_f64().unwrap() as f32, info.threshold);
    // The chosen point: the lowest threshold within the loss bound of the best among those
    // agreeing with the second stage on enough rows.
    let bounds = prodcat::eval::cascade::ThresholdBounds::default();
    let curve = tuning["curve"].as_array().unwrap();
    let agrees = |p: &&serde_json::Value| p["agreement"].as_f64().unwrap() >= bounds.min_agreement;
    let best = curve.iter().filter(agrees).map(|p| p["macro_f1"].as_f64().unwrap()).fold(0.0, f64::max);
    let first = curve.iter().filter(agrees).find(|p| p["macro_f1"].as_f64().unwrap() >= best - bounds.max_f1_loss);
    assert_eq!(first, Some(&tuning["chosen"]));
    assert_eq!(curve.last().unwrap()["agreement"].as_f64(), Some(1.0), "sending every row on agrees everywhere");
    // The second stage's weight was chosen on the same rows, from the ensemble's grid.
    let weights = info.weight_tuning.unwrap();
    assert_eq!(weights["curve"].as_array().unwrap().len(), 21);
    assert_eq!(weights["chosen"]["lexical_weight"].as_f64().unwrap() as f32, info.lexical_weight);
    // And the temperature of the rows the first stage keeps, fitted on the same rows.
    assert_eq!(tuning["first_stage_temperature"].as_f64().unwrap() as f32, info.first_stage_temperature);
    assert!(info.first_stage_temperature > 0.0 && info.first_stage_temperature.is_finite());
    assert!(c.test_metrics.is_some());

    // `prodcat eval --tune-threshold` re-tunes on other labeled data and stores the choice.
    let o = eval_fixture(
        &fx,
        &registry.join("casc"),
        &["--tune-threshold", "--report", &fx.path("eval-report").display().to_string()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("stored in"), "{}", stdout(&o));
    let ModelKind::Cascade(retuned) = card(&registry.join("casc")).model else { panic!("not a cascade") };
    assert_eq!(retuned.tuning.unwrap()["rows"].as_u64(), Some(400));
    assert!(fx.path("eval-report/threshold_curve.png").exists());
    let o = eval_fixture(&fx, &lex, &["--tune-threshold"]);
    assert_clean_failure(&o, &["needs a cascade"]);

    // Threshold 0: the lexical member answers; above 1: the transformer answers. The cascade
    // gives exactly the member's labels either way, and says which stage labeled each row.
    let texts: Vec<&str> = fx.products.iter().take(60).map(|p| p.title.as_str()).collect();
    let settings = SessionSettings::default();
    let mut cascade = Cascade::load(ModelVersion::open(&registry.join("casc")).unwrap(), &settings).unwrap();
    let lexical = score_texts(&*prodcat::models::open(&lex, &settings).unwrap(), &texts, None).unwrap().output;
    let transformer = prodcat::models::open(&tiny, &settings).unwrap();
    let transformer_out = score_texts(&*transformer, &texts, None).unwrap().output;
    cascade.lexical_weight = 0.0;
    for (threshold, stage) in [(0.0f32, Kind::Lexical), (1.01, Kind::Transformer)] {
        cascade.threshold = threshold;
        let scored = score_texts(&cascade, &texts, None).unwrap();
        let (out, stages) = (scored.output, scored.stages);
        assert!(stages.iter().all(|s| *s == stage), "threshold {threshold}");
        for r in 0..texts.len() {
            let expected = if stage == Kind::Lexical {
                cascade.labels()[lexical.argmax(r).0].clone()
            } else {
                transformer.labels()[transformer_out.argmax(r).0].clone()
            };
            assert_eq!(cascade.labels()[out.argmax(r).0], expected, "row {r} at threshold {threshold}");
        }
    }
    // With a lexical weight, the rows sent on get the ensemble's average of both members
    // (the transformer's classes mapped to the cascade's, the lexical scores as calibrated
    // whatever the first stage's temperature), and say so.
    cascade.lexical_weight = 0.3;
    cascade.first_stage_temperature = 2.0;
    let scored = score_texts(&cascade, &texts, None).unwrap();
    assert!(scored.stages.iter().all(|s| *s == Kind::Ensemble));
    let mapped = cascade.members.score_transformer(&texts).unwrap();
    for r in 0..texts.len() {
        for (k, p) in scored.output.probs(r).iter().enumerate() {
            let expected = 0.3 * lexical.probs(r)[k] + 0.7 * mapped.probs(r)[k];
            assert!((p - expected).abs() < 1e-5, "row {r} class {k}: {p} vs {expected}");
        }
    }
    // Rows the first stage keeps: its labels, its logits at the first stage's temperature.
    cascade.threshold = 0.0;
    let scored = score_texts(&cascade, &texts, None).unwrap();
    assert!(scored.stages.iter().all(|s| *s == Kind::Lexical));
    for r in 0..texts.len() {
        let logits: Vec<f32> = lexical.logits_row(r).iter().map(|l| l / 2.0).collect();
        let sum: f32 = logits.iter().map(|l| l.exp()).sum();
        for (k, p) in scored.output.probs(r).iter().enumerate() {
            assert!((p - logits[k].exp() / sum).abs() < 1e-5, "row {r} class {k}: {p}");
        }
        assert_eq!(scored.output.argmax(r).0, lexical.argmax(r).0);
    }

    // Relabel serves the cascade like any model; the output names the stage.
    let input = fx.path("in");
    std::fs::create_dir_all(&input).unwrap();
    let rows: Vec<(i64, Option<String>)> =
        fx.products.iter().take(120).enumerate().map(|(i, p)| (i as i64, Some(p.title.clone()))).collect();
    write_catalogue(&input.join("a.parquet"), &rows);
    let o = prodcat(&[
        "relabel",
        "--no-progress",
        "--model",
        &registry.join("casc").display().to_string(),
        "--input",
        &input.display().to_string(),
        "--output",
        &fx.path("out").display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let batches = read_parquet_dir(&fx.path("out"));
    assert_eq!(i64_column(&batches, "id").len(), 120);
    let stages = string_column(&batches, "stage");
    assert!(stages.iter().all(|s| ["lexical", "transformer", "ensemble"].contains(&s.as_str())));
    assert!(string_column(&batches, "model_name").iter().all(|n| n == "casc"));
}
