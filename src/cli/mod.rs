//! Command-line parsing and dispatch. Every flag can also be set from a `PRODCAT_…` variable.

mod eval;
mod fast;
mod kafka;
mod models;
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
    /// Log format: `text` (a line per event) or `json` (one JSON object per line, for log
    /// shippers: timestamp, level, message and fields).
    #[arg(long = "log-format", global = true, env = "PRODCAT_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Path to libonnxruntime.so (default: the one installed by scripts/provision.sh).
    #[arg(long = "ort-lib", global = true, env = "PRODCAT_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fine-tune a LoRA classifier on labeled product texts and publish it to a registry.
    Train(Box<train::TrainArgs>),
    /// Evaluate a registry model on labeled data: metrics table, metrics.json and plots.
    Eval(eval::EvalArgs),
    /// Relabel a Parquet catalogue with a registry model into Arrow IPC or Parquet files.
    Relabel(relabel::RelabelArgs),
    /// Run a pipeline file (pipelines/*.toml).
    Run(relabel::RunArgs),
    /// Export a transformer with int8 weights (dynamic quantization, for CPUs) or in fp16 (for GPUs),
    /// refused if it costs accuracy.
    Quantize(fast::QuantizeArgs),
    /// Combine a lexical and a transformer model into a confidence cascade (threshold tuned).
    Cascade(fast::CascadeArgs),
    /// Combine a lexical and a transformer model into an ensemble (weighted average of their
    /// calibrated probabilities, weight chosen on validation).
    Ensemble(fast::EnsembleArgs),
    /// Write the train/validation/test assignment `train` would use (for baselines).
    Split(split::SplitArgs),
    /// Operate a registry: list versions, show a card, promote a version or roll back.
    Models(models::ModelsArgs),
    /// Report every problem of a pipeline file at once (values, model, state folder) and exit
    /// non-zero if there is any; starts nothing.
    Check(models::CheckArgs),
}

/// The labeled file a command reads (`train`, `eval`, `split`), declared once.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Labeled data: CSV, TSV, JSONL or Parquet.
    #[arg(long)]
    pub data: std::path::PathBuf,
    #[command(flatten)]
    pub text: TextColumns,
    /// Column holding the category.
    #[arg(long)]
    pub label_column: String,
    /// Use a seeded random sample of N usable rows (kept in file order).
    #[arg(long)]
    pub max_rows: Option<usize>,
    /// Drop rows with an empty text or label instead of failing.
    #[arg(long)]
    pub skip_invalid: bool,
    /// What separates the parts of a category path in the label column (`Electronics > Audio >
    /// Headphones`): labels with it make a taxonomy whose leaves are the classes. Empty: labels
    /// are never paths.
    #[arg(long, default_value = prodcat::common::DEFAULT_PATH_SEPARATOR)]
    pub path_separator: String,
    /// A taxonomy file (Google's `ID - A > B > C` lines, or one path per line): every label must
    /// name one of its categories, by path, by id or by a last part only one path ends in.
    #[arg(long)]
    pub taxonomy: Option<std::path::PathBuf>,
    /// Several labels per row: what separates them in the label column (`--label-separator '|'`
    /// reads `Audio|Video` as two labels) and trains a multi-label model. A label column of JSON
    /// lists (JSONL) is read as several labels without it.
    #[arg(long)]
    pub label_separator: Option<String>,
}

/// How labeled rows are dealt into train, validation and test (`train`, `split`).
#[derive(Debug, Clone, clap::Args)]
pub struct DealArgs {
    /// Column grouping rows of the same product (kept in one split).
    #[arg(long)]
    pub group_column: Option<String>,
    /// Seed of the split and of --max-rows' sample.
    #[arg(long, default_value_t = prodcat::data::prepare::DEFAULT_SEED)]
    pub seed: u64,
    #[command(flatten)]
    pub fractions: split::Fractions,
}

impl DataArgs {
    /// What to read (rows sampled with `seed`, grouped by `group_column`) and where it came from
    /// (recorded in a card).
    pub fn read(
        &self,
        group_column: Option<&str>,
        seed: u64,
    ) -> anyhow::Result<(prodcat::data::LabeledDataSpec, prodcat::data::prepare::DataSource)> {
        let text = self.text.spec()?;
        let spec = prodcat::data::LabeledDataSpec {
            path: self.data.clone(),
            text: text.clone(),
            label_column: self.label_column.clone(),
            group_column: group_column.map(str::to_string),
            max_rows: self.max_rows,
            sample_seed: seed,
            skip_invalid: self.skip_invalid,
            paths: prodcat::data::PathSpec { separator: self.path_separator.clone(), taxonomy: self.taxonomy.clone() },
            label_separator: self.label_separator.clone(),
        };
        let source = prodcat::data::prepare::DataSource {
            file: self.data.display().to_string(),
            text,
            label_column: self.label_column.clone(),
            group_column: group_column.map(str::to_string),
            label_separator: self.label_separator.clone(),
            ..Default::default()
        };
        Ok((spec, source))
    }
}

/// The column(s) of a labeled file that make up each product text.
#[derive(Debug, Clone, clap::Args)]
pub struct TextColumns {
    /// Column holding the product text; several, comma-separated (e.g. title,description), are
    /// joined in that order with " | ", as a pipeline's text.fields are (the first must be set,
    /// the others are used when present).
    #[arg(long, visible_alias = "text-columns", value_delimiter = ',', required = true)]
    pub text_column: Vec<String>,
    /// Cut a text column to its first N characters, as COLUMN=N (repeat for several, e.g.
    /// description=300): keeps a long description from crowding the title out of the model's
    /// token window. Recorded in the card, as the columns are.
    #[arg(long, value_parser = parse_max_chars)]
    pub max_chars: Vec<(String, usize)>,
}

fn parse_max_chars(value: &str) -> Result<(String, usize), String> {
    let (column, n) = value.split_once('=').ok_or_else(|| format!("`{value}` is not COLUMN=N"))?;
    let n: usize = n.trim().parse().map_err(|_| format!("`{n}` is not a number of characters"))?;
    if n == 0 {
        return Err("a column cut to 0 characters adds nothing; leave it out of --text-column".into());
    }
    Ok((column.trim().to_string(), n))
}

impl TextColumns {
    /// How each text is composed from the row's columns.
    pub fn spec(&self) -> anyhow::Result<prodcat::common::TextSpec> {
        let fields: Vec<String> = self.text_column.iter().map(|c| c.trim().to_string()).collect();
        if fields.iter().any(String::is_empty) {
            anyhow::bail!("--text-column: an empty column name in {:?}", self.text_column.join(","));
        }
        if let Some((column, _)) = self.max_chars.iter().find(|(c, _)| !fields.contains(c)) {
            anyhow::bail!(
                "--max-chars {column}=…: `{column}` is not one of the --text-column columns ({})",
                fields.join(", ")
            );
        }
        // Files are read whole: no size limit, as `TextSpec::column`.
        Ok(prodcat::common::TextSpec {
            fields,
            max_chars: self.max_chars.iter().cloned().collect(),
            max_bytes: usize::MAX,
            ..Default::default()
        })
    }
}

/// Where a command runs its models.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// Execution provider: cpu or cuda.
    #[arg(long, default_value = "cpu", env = "PRODCAT_DEVICE")]
    pub device: prodcat::serve::ExecutionTarget,
    /// With --device cuda: fail instead of falling back to CPU when CUDA cannot be used.
    #[arg(long)]
    pub require_gpu: bool,
}

impl DeviceArgs {
    /// Session settings for this device.
    pub fn session(&self, ort_lib: Option<std::path::PathBuf>) -> prodcat::serve::SessionSettings {
        prodcat::serve::SessionSettings {
            target: self.device,
            ort_library: ort_lib,
            require_gpu: self.require_gpu,
            ..Default::default()
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up `tracing` on stderr.
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{filter},ort=warn"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        // Colours only on a terminal: piped logs (log shippers, tests) stay plain text.
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
    };
}

/// Runs the chosen command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train::run(*args, cli.ort_lib),
        Command::Eval(args) => eval::run(args, cli.ort_lib),
        Command::Split(args) => split::run(args),
        Command::Quantize(args) => fast::quantize(args, cli.ort_lib),
        Command::Cascade(args) => fast::cascade(args, cli.ort_lib),
        Command::Ensemble(args) => fast::ensemble(args, cli.ort_lib),
        Command::Relabel(args) => relabel::run_relabel(args, cli.ort_lib),
        Command::Run(args) => relabel::run_pipeline(args, cli.ort_lib),
        Command::Models(args) => models::run(args, cli.ort_lib),
        Command::Check(args) => models::check(args, cli.ort_lib),
    }
}

/// A multi-threaded tokio runtime for commands that read files through DataFusion.
pub fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_subcommand_is_well_formed() {
        // Clap checks names, conflicts and defaults of every subcommand (a clash only panics
        // when that subcommand is used otherwise).
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
