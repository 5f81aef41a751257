//! Benchmark: end-to-end `relabel` throughput on PriceRunner titles against the raw ONNX Runtime
//! ceiling on the same model, and (with `--python`) the Python Hugging Face pipeline and Python
//! ONNX Runtime on the same rows.
//!
//!     cargo run --example bench_relabel -- --model .prodcat/registry/demo/current [--copies 10] [--python]
//!
//! Prints a table (titles/s, ratio to the ceiling, p50/p99 batch latency, peak RSS). Skips with a
//! message when ../shared/data/pricerunner is absent.

#[path = "common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{peak_rss_mib, percentile};

use clap::Parser;
use prodcat::common::BatchLimits;
use prodcat::registry::ModelVersion;
use prodcat::serve::plan_batches;
use prodcat::serve::{Model, SessionSettings, SingleModel};
use prodcat::tokenize::{PaddedBatch, TextTokenizer};

#[derive(Parser)]
struct Args {
    /// Registry model (MiniLM-based for the reference numbers).
    #[arg(long)]
    model: PathBuf,
    /// Copies of the PriceRunner titles in the Parquet input.
    #[arg(long, default_value_t = 10)]
    copies: usize,
    /// Titles used for the ONNX Runtime ceiling.
    #[arg(long, default_value_t = 20_000)]
    ceiling_rows: usize,
    /// Batch size for the ceiling (and the engine's max_records).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Also run the Python baselines (installs transformers/torch into .deps/bench-venv once).
    #[arg(long)]
    python: bool,
    #[arg(long, default_value_t = 5000)]
    python_rows: usize,
    /// Execution provider for every Rust measurement: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
}

struct Row {
    name: String,
    titles_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    note: String,
}

impl Row {
    /// A row of timed batches: their rate and the p50 / p99 of their times.
    fn timed(name: impl Into<String>, titles_per_s: f64, times: &[f64], note: String) -> Self {
        Self { name: name.into(), titles_per_s, p50_ms: percentile(times, 0.5), p99_ms: percentile(times, 0.99), note }
    }
}

fn ceiling(
    model: &SingleModel,
    tokens: &[prodcat::tokenize::TokenizedText],
    plans: &[Vec<usize>],
) -> anyhow::Result<(f64, Vec<f64>, f64)> {
    let batches: Vec<PaddedBatch> =
        plans.iter().map(|p| PaddedBatch::from_tokens(p.iter().map(|&i| &tokens[i]))).collect();
    let padded: usize = batches.iter().map(|b| b.batch * b.seq).sum();
    let real: usize = batches.iter().map(PaddedBatch::real_tokens).sum();
    model.run(&batches[0])?; // warm-up
    let mut times = Vec::with_capacity(batches.len());
    let started = Instant::now();
    for b in &batches {
        let t = Instant::now();
        model.run(b)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let rate = tokens.len() as f64 / started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    Ok((rate, times, padded as f64 / real as f64))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(common::Input { runtime, titles, work, parquet: input, .. }) = common::pricerunner_input(args.copies)?
    else {
        return Ok(());
    };

    let settings = SessionSettings { target: args.device.parse().map_err(anyhow::Error::msg)?, ..Default::default() };
    let mut rows: Vec<Row> = Vec::new();

    // 1. End to end through the relabel job.
    let (summary, e2e_secs, metrics) =
        common::relabel_once(&runtime, &args.model, &input, &work.join("out"), &args.device, args.batch)?;
    let e2e_rate = summary.labeled as f64 / e2e_secs;
    let infer = metrics.stage_seconds.with_label_values(&["infer"]);
    let tokenize = metrics.stage_seconds.with_label_values(&["tokenize"]);
    let mean_batch_ms = infer.get_sample_sum() / infer.get_sample_count().max(1) as f64 * 1e3;
    rows.push(Row {
        name: "prodcat relabel (Parquet → Parquet, end to end)".into(),
        titles_per_s: e2e_rate,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        note: format!(
            "{} rows in {:.1} s; {} batches, mean {:.1} ms; inference thread busy {:.1} s, prep thread tokenizing {:.1} s",
            summary.labeled,
            e2e_secs,
            infer.get_sample_count(),
            mean_batch_ms,
            infer.get_sample_sum(),
            tokenize.get_sample_sum()
        ),
    });
    drop(runtime);

    // 2. The ceiling: ONNX Runtime session time alone on pre-tokenized batches.
    // The raw session of the transformer under test (the ceiling has no pipeline around it).
    let model = prodcat::models::transformer::open(ModelVersion::open(&args.model)?, &settings)?;
    let n = args.ceiling_rows.min(titles.len());
    let sample: Vec<&str> = titles[..n].iter().map(String::as_str).collect();
    let started = Instant::now();
    let tokens = model.prepare(&sample)?;
    let tokenize_secs = started.elapsed().as_secs_f64();
    let lengths: Vec<usize> = tokens.iter().map(|t| t.len()).collect();
    let sorted_plans = plan_batches(&lengths, BatchLimits { max_tokens: usize::MAX, max_records: args.batch });
    let (sorted_rate, sorted_times, sorted_pad) = ceiling(&model, &tokens, &sorted_plans)?;
    let file_plans: Vec<Vec<usize>> = (0..n).collect::<Vec<_>>().chunks(args.batch).map(<[usize]>::to_vec).collect();
    let (file_rate, file_times, file_pad) = ceiling(&model, &tokens, &file_plans)?;
    rows.push(Row::timed(
        "ONNX Runtime session.run, length-sorted batches (ceiling)",
        sorted_rate,
        &sorted_times,
        format!("{n} titles, padding {sorted_pad:.2}× real tokens"),
    ));
    rows.push(Row::timed(
        "ONNX Runtime session.run, file-order batches",
        file_rate,
        &file_times,
        format!("padding {file_pad:.2}× real tokens"),
    ));
    // The same ceiling with the other I/O path (plain `run` on CUDA, where a binding is the default).
    let other_binding = !model.session.io_bound();
    let other = prodcat::models::transformer::open(
        ModelVersion::open(&args.model)?,
        &SessionSettings { io_binding: Some(other_binding), ..settings.clone() },
    )?;
    let (other_rate, other_times, _) = ceiling(&other, &tokens, &sorted_plans)?;
    rows.push(Row::timed(
        format!(
            "ONNX Runtime session.run, length-sorted, {} I/O binding",
            if other_binding { "with" } else { "without" }
        ),
        other_rate,
        &other_times,
        format!("the ceiling above {} one", if other_binding { "has no" } else { "has" }),
    ));
    drop(other);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    rows.push(Row {
        name: "tokenizer alone (the model's prepare, all cores)".into(),
        titles_per_s: n as f64 / tokenize_secs,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        note: format!("{n} titles, {threads} threads"),
    });
    // The baseline of the ASCII fast path: every title through Hugging Face tokenizers.
    let dir = ModelVersion::open(&args.model)?.dir;
    let reference = TextTokenizer::from_file(&dir.join("tokenizer.json"), 128)?.without_fast_path();
    let started = Instant::now();
    reference.encode_batch(&sample)?;
    rows.push(Row {
        name: "tokenizer alone, Hugging Face tokenizers only".into(),
        titles_per_s: n as f64 / started.elapsed().as_secs_f64(),
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        note: format!("{n} titles, {threads} threads; the row above takes the ASCII fast path"),
    });

    // 3. Python baselines.
    if args.python {
        let titles_file = work.join("titles.txt");
        std::fs::write(&titles_file, titles[..args.python_rows.min(titles.len())].join("\n"))?;
        let dir = ModelVersion::open(&args.model)?.dir;
        let base = root.join(".deps/models/all-MiniLM-L6-v2");
        let output = std::process::Command::new("bash")
            .arg(root.join("bench/python_baselines.sh"))
            .args([titles_file.as_os_str(), dir.as_os_str(), base.as_os_str()])
            .arg(args.batch.to_string())
            .arg(&args.device)
            .output()?;
        if !output.status.success() {
            eprintln!("python baselines failed:\n{}", String::from_utf8_lossy(&output.stderr));
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                rows.push(Row {
                    name: v["name"].as_str().unwrap_or("python").to_string(),
                    titles_per_s: v["titles_per_second"].as_f64().unwrap_or(0.0),
                    p50_ms: v["p50_ms"].as_f64().unwrap_or(f64::NAN),
                    p99_ms: v["p99_ms"].as_f64().unwrap_or(f64::NAN),
                    note: v["note"].as_str().unwrap_or("").to_string(),
                });
            }
        }
    }

    println!("\nrelabel throughput, model {} on {} ({} batch {})\n", model.id(), args.device, n, args.batch);
    println!("{:<58} {:>10} {:>11} {:>9} {:>9}  {}", "pipeline", "titles/s", "× ceiling", "p50 ms", "p99 ms", "notes");
    for r in &rows {
        let fmt = |v: f64| if v.is_nan() { "-".to_string() } else { format!("{v:.1}") };
        println!(
            "{:<58} {:>10.0} {:>11.2} {:>9} {:>9}  {}",
            r.name,
            r.titles_per_s,
            r.titles_per_s / sorted_rate,
            fmt(r.p50_ms),
            fmt(r.p99_ms),
            r.note
        );
    }
    println!("\npeak RSS of this process (relabel + ceiling): {:.0} MiB", peak_rss_mib());
    Ok(())
}
