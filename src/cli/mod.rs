//! Command-line parsing and dispatch. Every flag can also be set from a `PRODCAT_…` variable.

mod eval;
mod fast;
mod kafka;
mod relabel;
mod split;
mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Streaming product categorization with LoRA-tuned transformers served by ONNX Runtime.
#[derive(Debug, Parser)]
#[command(name = "prodcat", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `prodcat=debug`.
    #[arg(long = "log", global = true, env = "PRODCAT_LOG", default_value = "info")]
    pub log: String,
    /// Path to libonnxruntime.so (default: the one installed by scripts/provision.sh).
    #[arg(long = "ort-lib", global = true, env = "PRODCAT_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fine-tune a LoRA classifier on labeled product texts and publish it to a registry.
    Train(train::TrainArgs),
    /// Evaluate a registry model on labeled data: metrics table, metrics.json and plots.
    Eval(eval::EvalArgs),
    /// Relabel a Parquet catalogue with a registry model into Arrow IPC or Parquet files.
    Relabel(relabel::RelabelArgs),
    /// Run a pipeline file (pipelines/*.toml).
    Run(relabel::RunArgs),
    /// Export a transformer with int8 weights (dynamic quantization), refused if it costs accuracy.
    Quantize(fast::QuantizeArgs),
    /// Combine a lexical and a transformer model into a confidence cascade (threshold tuned).
    Cascade(fast::CascadeArgs),
    /// Combine a lexical and a transformer model into an ensemble (weighted average of their
    /// calibrated probabilities, weight chosen on validation).
    Ensemble(fast::EnsembleArgs),
    /// Write the train/validation/test assignment `train` would use (for baselines).
    Split(split::SplitArgs),
}

/// Sets up `tracing` on stderr.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{filter},ort=warn"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    // Colours only on a terminal: piped logs (log shippers, tests) stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}

/// Runs the chosen command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train::run(args, cli.ort_lib),
        Command::Eval(args) => eval::run(args, cli.ort_lib),
        Command::Split(args) => split::run(args),
        Command::Quantize(args) => fast::quantize(args, cli.ort_lib),
        Command::Cascade(args) => fast::cascade(args, cli.ort_lib),
        Command::Ensemble(args) => fast::ensemble(args, cli.ort_lib),
        Command::Relabel(args) => relabel::run_relabel(args, cli.ort_lib),
        Command::Run(args) => relabel::run_pipeline(args, cli.ort_lib),
    }
}

/// A multi-threaded tokio runtime for commands that read files through DataFusion.
pub fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
