//! Benchmark: the model families side by side on PriceRunner — lexical, MiniLM LoRA fp32,
//! MiniLM LoRA int8 and the cascade — macro-F1 and accuracy on the cluster-grouped test split,
//! and titles/s end to end through `prodcat relabel` on the same Parquet input.
//!
//!     cargo run --release --example bench_fast_paths -- --registry .prodcat/bench/pricerunner/registry
//!
//! The registry must hold `lexical`, `lora`, `lora-int8` and `cascade` (README: "Fast paths").
//! Skips with a message when ../shared/data/pricerunner is absent.

#[path = "common.rs"]
mod common;

use std::path::PathBuf;

use clap::Parser;
use prodcat::common::{BatchLimits, Kind};
use prodcat::data::Split;
use prodcat::eval::{label_ids, score_output};
use prodcat::registry::ModelVersion;
use prodcat::serve::{Model, Scored, SessionSettings, score_texts};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = ".prodcat/bench/pricerunner/registry")]
    registry: PathBuf,
    /// Model names in the registry, in table order.
    #[arg(long, value_delimiter = ',', default_value = "lexical,lora,lora-int8,cascade")]
    models: Vec<String>,
    /// Copies of the PriceRunner titles in the Parquet input.
    #[arg(long, default_value_t = 2)]
    copies: usize,
    /// The engine's records per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
}

struct Row {
    model: String,
    kind: String,
    macro_f1: f64,
    accuracy: f64,
    transformer_share: f64,
    titles_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(common::Input { runtime, csv, titles, work, parquet: input }) = common::pricerunner_input(args.copies)?
    else {
        return Ok(());
    };
    let settings = SessionSettings { target: args.device.parse().map_err(anyhow::Error::msg)?, ..Default::default() };
    let mut rows = Vec::new();
    let mut test_rows = 0;
    for name in &args.models {
        let path = args.registry.join(name);
        let model = Timed { inner: prodcat::models::open(&path, &settings)?, times: Default::default() };
        let card = model.card().clone();
        let (texts, labels) = runtime.block_on(prodcat::registry::held_out(&card, None, Split::Test, Some(&csv)))?;
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        test_rows = texts.len();
        let y = label_ids(model.labels(), &labels, "PriceRunner test split")?;
        // Scored batch by batch (length-sorted, as the engine batches) to time each batch.
        let limits = BatchLimits { max_records: args.batch, ..model.batch_limits() };
        let scored = score_texts(&model, &texts, Some(limits))?;
        let mut times = model.times.lock().map(|t| t.clone()).unwrap_or_default();
        times.sort_by(f64::total_cmp);
        let evaluation = score_output(model.card(), model.labels(), scored.output, scored.stages, y.into());
        drop(model);
        let share = evaluation.stages.iter().filter(|s| **s == Kind::Transformer).count() as f64
            / evaluation.stages.len().max(1) as f64;
        let (summary, secs, metrics) =
            common::relabel_once(&runtime, &path, &input, &work.join(format!("out-{name}")), &args.device, args.batch)?;
        let _ = metrics;
        let (p50, p99) = (common::percentile(&times, 0.5), common::percentile(&times, 0.99));
        let int8 = card.model.transformer().is_some_and(|t| t.quantization.is_some());
        let kind = format!("{}{}", card.model.name(), if int8 { " int8" } else { "" });
        println!(
            "{name}: macro-F1 {:.4}, {:.0} titles/s ({} rows in {secs:.1} s)",
            evaluation.report.macro_f1,
            summary.labeled as f64 / secs,
            summary.labeled
        );
        rows.push(Row {
            model: format!("{}:{}", card.name, card.version),
            kind,
            macro_f1: evaluation.report.macro_f1,
            accuracy: evaluation.report.accuracy,
            transformer_share: share,
            titles_per_s: summary.labeled as f64 / secs,
            p50_ms: p50,
            p99_ms: p99,
        });
    }
    let base = rows.iter().find(|r| r.kind == "transformer").map_or(f64::NAN, |r| r.titles_per_s);
    println!(
        "\nPriceRunner, cluster-grouped test split ({} rows per model); relabel of {} rows on {}\n",
        test_rows,
        titles.len() * args.copies,
        args.device
    );
    println!(
        "{:<22} {:<18} {:>9} {:>9} {:>12} {:>10} {:>9} {:>9} {:>9}",
        "model", "type", "macro-F1", "accuracy", "transformer", "titles/s", "× fp32", "p50 ms", "p99 ms"
    );
    for r in &rows {
        println!(
            "{:<22} {:<18} {:>9.4} {:>9.4} {:>11.1}% {:>10.0} {:>9.2} {:>9.1} {:>9.1}",
            r.model,
            r.kind,
            r.macro_f1,
            r.accuracy,
            100.0 * r.transformer_share,
            r.titles_per_s,
            r.titles_per_s / base,
            r.p50_ms,
            r.p99_ms
        );
    }
    println!(
        "\np50/p99: inference time per batch of the test split (length-sorted, {} titles); peak RSS of this process: {:.0} MiB",
        args.batch,
        common::peak_rss_mib()
    );
    Ok(())
}

/// A model that times each batch it scores (the per-batch latency column).
#[derive(Debug)]
struct Timed {
    inner: std::sync::Arc<dyn Model>,
    times: std::sync::Mutex<Vec<f64>>,
}

impl Model for Timed {
    fn version(&self) -> &ModelVersion {
        self.inner.version()
    }

    fn labels(&self) -> &[String] {
        self.inner.labels()
    }

    fn prepare(&self, texts: &[&str]) -> prodcat::Result<Vec<prodcat::tokenize::TokenizedText>> {
        self.inner.prepare(texts)
    }

    fn score(&self, batch: &prodcat::tokenize::PaddedBatch, texts: &[&str]) -> prodcat::Result<Scored> {
        let t = std::time::Instant::now();
        let scored = self.inner.score(batch, texts);
        if let Ok(mut times) = self.times.lock() {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        scored
    }

    fn batch_limits(&self) -> BatchLimits {
        self.inner.batch_limits()
    }
}
