//! Shared helpers for prodcat's integration tests.
#![allow(dead_code)]

pub mod kafka;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prodcat::testkit::{SyntheticProduct, synthetic_products, tiny_base_model, write_products_csv};

/// A temp folder with a tiny random BERT and a synthetic labeled CSV.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub base: PathBuf,
    pub csv: PathBuf,
    pub products: Vec<SyntheticProduct>,
}

impl Fixture {
    pub fn new(rows: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("tiny-bert");
        tiny_base_model(&base, 7).expect("tiny model");
        let products = synthetic_products(rows, 11);
        let csv = dir.path().join("products.csv");
        write_products_csv(&csv, &products).expect("csv");
        Self { dir, base, csv, products }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// Runs the prodcat binary with `args`.
pub fn prodcat(args: &[&str]) -> Output {
    prodcat_env(args, &[])
}

/// Runs the prodcat binary with `args` and extra environment variables.
pub fn prodcat_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prodcat"));
    cmd.args(args).env("PRODCAT_LOG", "warn").env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running prodcat")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failed run whose stderr names every `needle`, with no panic or backtrace.
pub fn assert_clean_failure(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure; stdout: {}\nstderr: {err}", stdout(o));
    assert!(!err.contains("panicked") && !err.contains("stack backtrace"), "panic in: {err}");
    for needle in needles {
        assert!(err.contains(needle), "stderr does not mention `{needle}`:\n{err}");
    }
}

/// The standard tiny-model training command line.
pub fn train_args<'a>(fx: &'a Fixture, registry: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "train".into(),
        "--data".into(),
        fx.csv.display().to_string(),
        "--text-column".into(),
        "title".into(),
        "--label-column".into(),
        "category".into(),
        "--group-column".into(),
        "group".into(),
        "--base".into(),
        fx.base.display().to_string(),
        "--out".into(),
        fx.path(registry).display().to_string(),
        "--name".into(),
        "tiny".into(),
        "--no-progress".into(),
        "--lr".into(),
        "0.01".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

pub fn run_strings(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    prodcat(&refs)
}

/// The base model and data sets that only exist on prepared machines.
pub fn minilm_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/models/all-MiniLM-L6-v2");
    dir.join("model.safetensors").is_file().then_some(dir)
}

/// The fixture's labeled CSV (title, category, grouped by group).
pub fn fixture_data(fx: &Fixture) -> prodcat::data::LabeledData {
    let spec = prodcat::data::LabeledDataSpec {
        path: fx.csv.clone(),
        text: prodcat::common::TextSpec::column("title"),
        label_column: "category".into(),
        group_column: Some("group".into()),
        max_rows: None,
        sample_seed: 0,
        skip_invalid: false,
        paths: Default::default(),
        label_separator: None,
    };
    tokio::runtime::Runtime::new().unwrap().block_on(prodcat::data::LabeledData::read(&spec)).unwrap()
}

/// `--data <fixture csv> --text-column title --label-column category`.
pub fn fixture_data_args(fx: &Fixture) -> Vec<String> {
    ["--data", &fx.csv.display().to_string(), "--text-column", "title", "--label-column", "category"]
        .map(str::to_string)
        .to_vec()
}

/// Runs `prodcat <command> --model <model>` on the fixture's CSV, with `extra` flags.
pub fn on_fixture(fx: &Fixture, command: &str, model: &Path, extra: &[&str]) -> Output {
    let mut args = vec![command.to_string(), "--model".into(), model.display().to_string()];
    args.extend(fixture_data_args(fx));
    args.extend(extra.iter().map(|s| s.to_string()));
    run_strings(&args)
}

/// `prodcat eval` of `model` on the fixture's CSV, with `extra` flags.
pub fn eval_fixture(fx: &Fixture, model: &Path, extra: &[&str]) -> Output {
    on_fixture(fx, "eval", model, extra)
}

/// Trains and publishes a tiny model into `<fixture>/registry/tiny`; returns the registry path.
pub fn tiny_registry(fx: &Fixture) -> PathBuf {
    let data = fixture_data(fx);
    let job = prodcat::train::TrainJob {
        data: &data,
        source: prodcat::train::DataSource::default(),
        base_dir: fx.base.clone(),
        registry: fx.path("registry"),
        name: "tiny".into(),
        settings: prodcat::train::TrainSettings {
            epochs: 3,
            learning_rate: 1e-2,
            max_length: 32,
            ..Default::default()
        },
        resume: false,
        session: prodcat::serve::SessionSettings::default(),
        show_progress: false,
        cancel: None,
        labels: None,
    };
    prodcat::train::fit(job).unwrap().publish(true).unwrap();
    fx.path("registry")
}

/// Writes `rows` as a Parquet file with columns id (Int64), title (Utf8, nullable), brand, price.
pub fn write_catalogue(path: &Path, rows: &[(i64, Option<String>)]) {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("title", DataType::Utf8, true),
        Field::new("brand", DataType::Utf8, true),
        Field::new("price", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rows.iter().map(|r| Some(format!("brand{}", r.0 % 7))).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(rows.iter().map(|r| (r.0 % 100) as f64).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Reads every Parquet file in `dir` (not hidden) into record batches.
pub fn read_parquet_dir(dir: &Path) -> Vec<arrow::array::RecordBatch> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "parquet") && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap())
                    .unwrap()
                    .build()
                    .unwrap();
            reader.map(|b| b.unwrap()).collect::<Vec<_>>()
        })
        .collect()
}

/// Values of an Int64 column across batches.
pub fn i64_column(batches: &[arrow::array::RecordBatch], name: &str) -> Vec<i64> {
    use arrow::array::AsArray;
    batches
        .iter()
        .flat_map(|b| b.column_by_name(name).unwrap().as_primitive::<arrow::datatypes::Int64Type>().values().to_vec())
        .collect()
}

/// Values of a string column across batches.
pub fn string_column(batches: &[arrow::array::RecordBatch], name: &str) -> Vec<String> {
    use arrow::array::{Array, AsArray};
    batches
        .iter()
        .flat_map(|b| {
            let col = arrow::compute::cast(b.column_by_name(name).unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
            let s = col.as_string::<i32>().clone();
            (0..s.len()).map(move |i| s.value(i).to_string()).collect::<Vec<_>>()
        })
        .collect()
}

/// A 200 KiB tmpfs mounted at `dir` (a disk that fills up), unmounted on drop. `None`, with a
/// message, where mounting is not permitted (not root).
pub struct FullDisk(PathBuf);

impl FullDisk {
    pub fn mount(dir: &Path) -> Option<Self> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=200k", "tmpfs", &dir.display().to_string()])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipped: cannot mount a small tmpfs here (needs root) to fill a disk");
            return None;
        }
        Some(Self(dir.to_path_buf()))
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Whether a test tool that `scripts/test.sh` installs is here: a missing one fails under
/// PRODCAT_REQUIRE_TOOLS=1 (the test script, CI) and skips with a message elsewhere.
pub fn tool(what: &str, probe: &mut Command) -> bool {
    let ok = probe.output().is_ok_and(|o| o.status.success());
    if !ok {
        let required = std::env::var("PRODCAT_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(!required, "{what} is missing although scripts/test.sh installs it (provision.sh ops)");
        eprintln!("skipped: {what} is not installed (bash scripts/provision.sh ops)");
    }
    ok
}

/// Python with the tools `provision.sh ops` installs into `.deps/python`.
pub fn python() -> Command {
    let mut c = Command::new("python3");
    c.env("PYTHONPATH", Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/python"));
    c
}

/// Checks every record against `schemas/<schema>` with the reference implementation of JSON
/// Schema (`scripts/validate-records.py`); fails naming each invalid record's errors.
pub fn assert_valid(schema: &str, records: &[serde_json::Value]) {
    use std::io::Write;
    assert!(!records.is_empty(), "no {schema} records to validate");
    if !tool("python jsonschema", python().args(["-c", "import jsonschema"])) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = python()
        .arg(root.join("scripts/validate-records.py"))
        .arg(root.join("schemas").join(schema))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for r in records {
            writeln!(stdin, "{r}").expect("records to the validator");
        }
    }
    let o = child.wait_with_output().expect("validator");
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{schema}:\n{report}");
    assert!(report.contains(&format!("{} valid, 0 invalid", records.len())), "{report}");
}

/// Record batches as JSON objects, one per row (Arrow's JSON writer: timestamps as strings).
pub fn batches_as_json(batches: &[arrow::array::RecordBatch]) -> Vec<serde_json::Value> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer.write(b).expect("batch as JSON");
    }
    writer.finish().expect("JSON array");
    let rows: serde_json::Value = serde_json::from_slice(&writer.into_inner()).expect("JSON rows");
    rows.as_array().cloned().unwrap_or_default()
}

/// `prodcat relabel` of `titles` (ids in order) with `model` into a fresh folder of the fixture;
/// the labeled record batches.
pub fn relabel_titles(fx: &Fixture, model: &Path, titles: &[&str]) -> Vec<arrow::array::RecordBatch> {
    let input = fx.path("catalogue.parquet");
    let catalogue: Vec<(i64, Option<String>)> =
        titles.iter().enumerate().map(|(i, title)| (i as i64, Some(title.to_string()))).collect();
    write_catalogue(&input, &catalogue);
    let out = fx.path("out");
    let o = prodcat(&[
        "relabel",
        "--no-progress",
        "--model",
        &model.display().to_string(),
        "--input",
        &input.display().to_string(),
        "--output",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "relabel failed: {}", stderr(&o));
    read_parquet_dir(&out)
}

/// `prodcat relabel --model MODEL --input INPUT --output OUTPUT`, then `extra` flags.
pub fn relabel(model: &str, input: &str, output: &str, extra: &[&str]) -> Output {
    let mut all = vec!["relabel", "--no-progress", "--model", model, "--input", input, "--output", output];
    all.extend_from_slice(extra);
    prodcat(&all)
}
