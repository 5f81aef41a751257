//! Shared helpers for prodcat's integration tests.
#![allow(dead_code)]

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
        Self {
            dir,
            base,
            csv,
            products,
        }
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
    cmd.args(args)
        .env("PRODCAT_LOG", "warn")
        .env_remove("RUST_BACKTRACE");
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
    assert!(
        !o.status.success(),
        "expected failure; stdout: {}\nstderr: {err}",
        stdout(o)
    );
    assert!(
        !err.contains("panicked") && !err.contains("stack backtrace"),
        "panic in: {err}"
    );
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr does not mention `{needle}`:\n{err}"
        );
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
