//! `prodcat relabel` and `prodcat run` (for relabel pipeline files).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use prodcat::config::{PipelineConfig, PipelineKind};
use prodcat::metrics::Metrics;
use prodcat::pipeline::relabel::relabel;

#[derive(Debug, Args)]
pub struct RelabelArgs {
    /// Registry model: a version folder, a model folder with `current`, or a one-model registry.
    #[arg(long, env = "PRODCAT_MODEL")]
    model: PathBuf,
    /// Parquet files, folders or globs (repeat or separate with commas).
    #[arg(long, required = true, num_args = 1.., value_delimiter = ',')]
    input: Vec<String>,
    /// Output folder (rerun with the same folder to continue an interrupted job).
    #[arg(long)]
    output: PathBuf,
    /// Output format: arrow or parquet.
    #[arg(long, default_value = "parquet")]
    format: String,
    /// SQL predicate on input columns, pushed down into the scan (e.g. "category IS NULL").
    #[arg(long = "where")]
    filter: Option<String>,
    /// Columns composing the model text, in order (first required), e.g. title,brand,description.
    #[arg(long, value_delimiter = ',')]
    text_columns: Option<Vec<String>>,
    /// Input columns to carry into the output (default: all).
    #[arg(long, value_delimiter = ',')]
    keep_columns: Option<Vec<String>>,
    /// This machine's share of the input, I/N (rows whose position % N == I).
    #[arg(long, default_value = "0/1")]
    shard: String,
    #[command(flatten)]
    device: super::DeviceArgs,
    /// More configuration as key=value (pipeline-file keys, e.g. engine.limits.max_tokens=8192).
    #[arg(long = "set")]
    set: Vec<String>,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline file (see pipelines/).
    file: PathBuf,
    /// Overrides as key=value (highest precedence, above PRODCAT__… variables).
    #[arg(long = "set")]
    set: Vec<String>,
}

pub fn run_relabel(args: RelabelArgs, ort_lib: Option<PathBuf>) -> anyhow::Result<()> {
    let mut overrides = vec![
        "pipeline.kind=relabel".to_string(),
        format!("model.path={}", args.model.display()),
        format!("relabel.output={}", args.output.display()),
        format!("relabel.format={}", args.format),
        format!("relabel.shard={}", args.shard),
        format!("model.device={}", args.device.device),
        format!("model.require_gpu={}", args.device.require_gpu),
    ];
    if args.no_progress {
        overrides.push("relabel.progress=false".into());
    }
    if let Some(filter) = &args.filter {
        overrides.push(format!("relabel.where={filter}"));
    }
    overrides.extend(args.set.iter().cloned());
    let mut config = PipelineConfig::merge(None, &overrides)?;
    // Lists are set directly: a `--set`-style string cannot carry commas inside values.
    config.relabel.inputs = args.input.clone();
    if let Some(fields) = args.text_columns {
        config.text.fields = fields;
    }
    if let Some(keep) = args.keep_columns {
        config.relabel.keep_columns = keep;
    }
    config.validate("command line")?;
    execute(config, ort_lib)
}

pub fn run_pipeline(args: RunArgs, ort_lib: Option<PathBuf>) -> anyhow::Result<()> {
    let config = PipelineConfig::load(Some(&args.file), &args.set)?;
    match config.pipeline.kind {
        PipelineKind::Relabel => execute(config, ort_lib),
        PipelineKind::Kafka => super::kafka::run(config, ort_lib),
    }
}

fn execute(config: PipelineConfig, ort_lib: Option<PathBuf>) -> anyhow::Result<()> {
    let job = config.relabel_job(ort_lib)?;
    let runtime = super::tokio_runtime()?;
    let metrics = Arc::new(Metrics::new());
    let summary = runtime.block_on(async {
        tokio::select! {
            result = relabel(job, metrics) => result.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; run the same command again to continue where it stopped")),
        }
    })?;
    println!("{}", summary.table());
    Ok(())
}
