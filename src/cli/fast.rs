//! `prodcat quantize`, `prodcat cascade` and `prodcat ensemble`: models built from published models.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use prodcat::data::{LabeledData, LabeledDataSpec, Split};
use prodcat::eval::cascade::{format_tuning, plot_tuning};
use prodcat::eval::format_report;
use prodcat::models::cascade::{CascadeJob, build_cascade};
use prodcat::models::ensemble::{EnsembleJob, build_ensemble};
use prodcat::models::pair::{CompositeJob, Rows};
use prodcat::models::quantize::{Precision, QuantizeJob, quantize_model};
use prodcat::onnx::half::HalfSettings;
use prodcat::onnx::quantize::QuantizeSettings;
use prodcat::registry::ModelVersion;
use prodcat::registry::held_out;
use prodcat::serve::SessionSettings;
use prodcat::staging::Candidate;

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The fp32 transformer model (version folder or model folder with `current`).
    #[arg(long)]
    model: PathBuf,
    /// Registry to publish into (default: the source model's registry).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Model name (default: `<source name>-<precision>`).
    #[arg(long)]
    name: Option<String>,
    /// `int8` (dynamic quantization, for CPUs) or `fp16` (for GPUs).
    #[arg(long, value_enum, default_value = "int8")]
    precision: PrecisionArg,
    /// Largest tolerated macro-F1 drop against fp32 (0.003 = 0.3 points).
    #[arg(long, default_value_t = 0.003)]
    tolerance: f64,
    /// fp16: smallest share of rows whose label must not change.
    #[arg(long, default_value_t = 0.995)]
    min_agreement: f64,
    /// fp16: largest tolerated |logit difference| against fp32 over every row and class.
    #[arg(long, default_value_t = 0.05)]
    max_logit_diff: f32,
    /// fp16: op types to keep in fp32 (comma-separated, e.g. Softmax,LayerNormalization).
    #[arg(long, value_delimiter = ',')]
    keep_fp32: Vec<String>,
    /// Where both precisions are evaluated (fp16 wants the GPU it is made for).
    #[command(flatten)]
    device: super::DeviceArgs,
    /// Labeled rows to compare on (default: the test split of the model's training data).
    #[arg(long, requires_all = ["text_column", "label_column"])]
    data: Option<PathBuf>,
    #[arg(long)]
    text_column: Option<String>,
    #[arg(long)]
    label_column: Option<String>,
    /// int8: full 8-bit weights (only safe on CPUs with VNNI; the default 7-bit range is safe on AVX2).
    #[arg(long)]
    full_range: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PrecisionArg {
    Int8,
    Fp16,
}

/// The members of a composite model and where it goes.
#[derive(Debug, Args)]
pub struct MemberArgs {
    /// The lexical member.
    #[arg(long)]
    lexical: PathBuf,
    /// The transformer member.
    #[arg(long)]
    transformer: PathBuf,
    /// Registry to publish into.
    #[arg(long)]
    out: PathBuf,
    /// The training data file, when it moved since the lexical member was trained.
    #[arg(long)]
    train_data: Option<PathBuf>,
    /// Folder for the tuning curve (tuning.json and a plot).
    #[arg(long)]
    report: Option<PathBuf>,
}

impl MemberArgs {
    /// The composite job: both members, and (when `tune`) the validation rows of the lexical
    /// member's training data, with its test rows.
    fn job(&self, name: &str, tune: bool, session: SessionSettings) -> anyhow::Result<CompositeJob> {
        let lexical = ModelVersion::open(&self.lexical)?;
        let transformer = ModelVersion::open(&self.transformer)?;
        single_label(&lexical, "a composite's member")?;
        single_label(&transformer, "a composite's member")?;
        let file = self.train_data.as_deref();
        let validation = if tune { Some(rows_of(&lexical, Split::Validation, file)?) } else { None };
        // A member that learned from its test rows has none held out left to report on.
        let test = if lexical.card.training.as_ref().is_some_and(|t| t.test_before_final_fit) {
            eprintln!(
                "{} learned from its test rows (trained without --hold-out-test): the composite gets no test \
                 figures",
                lexical.id()
            );
            None
        } else {
            rows_of(&lexical, Split::Test, file).ok()
        };
        Ok(CompositeJob {
            lexical,
            transformer,
            registry: self.out.clone(),
            name: name.to_string(),
            validation,
            test,
            session,
        })
    }

    /// Where the tuning report goes.
    fn report_dir(&self, name: &str, kind: &str) -> anyhow::Result<PathBuf> {
        let dir = self.report.clone().unwrap_or_else(|| PathBuf::from("reports").join(format!("{name}-{kind}")));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }
}

#[derive(Debug, Args)]
pub struct CascadeArgs {
    #[command(flatten)]
    members: MemberArgs,
    #[arg(long, default_value = "cascade")]
    name: String,
    /// Fixed confidence threshold (default: tuned on the validation split).
    #[arg(long)]
    threshold: Option<f32>,
    /// Weight in [0, 1] of the lexical member's probabilities averaged into the second stage
    /// (0: the transformer alone; default: chosen on the validation split when the threshold is
    /// tuned, else 0).
    #[arg(long)]
    lexical_weight: Option<f32>,
    /// For a taxonomy model: apply the threshold to the score of each row's level-N category
    /// (1 = the top) instead of its leaf's, so rows sure of their category stay with the lexical
    /// model.
    #[arg(long, default_value_t = 0)]
    level: usize,
    #[command(flatten)]
    bounds: super::eval::BoundsArgs,
}

#[derive(Debug, Args)]
pub struct EnsembleArgs {
    #[command(flatten)]
    members: MemberArgs,
    #[arg(long, default_value = "ensemble")]
    name: String,
    /// Fixed weight of the lexical member in [0, 1] (default: chosen on the validation split).
    #[arg(long)]
    lexical_weight: Option<f32>,
}

/// Refuses a multi-label model where only single-label ones are built on.
fn single_label(version: &ModelVersion, role: &str) -> anyhow::Result<()> {
    let head = version.card.head;
    if head != prodcat::common::Head::SingleLabel {
        anyhow::bail!("{} is a {} model: {role} must have one label per row", version.id(), head.name());
    }
    Ok(())
}

fn rows_of(version: &ModelVersion, split: Split, file: Option<&Path>) -> anyhow::Result<Rows> {
    let card = &version.card;
    let (texts, labels) = super::tokio_runtime()?.block_on(held_out(card, version.taxonomy_file(), split, file))?;
    let origin =
        format!("{:?} split of {}", split, card.data.as_ref().map(|d| d.file.as_str()).unwrap_or("?")).to_lowercase();
    Ok(Rows { texts, labels, origin })
}

/// Prints the test report, publishes, and prints where it went and what the kind's section says.
/// Returns the test metrics.
fn print_published(candidate: Candidate) -> anyhow::Result<Option<prodcat::registry::card::SplitMetrics>> {
    if let Some(test) = &candidate.test {
        println!("{} rows, through ONNX Runtime:\n{}", test.report.rows, format_report(&test.report));
    }
    let (metrics, described) = (candidate.card.test_metrics.clone(), candidate.card.model.describe());
    let dir = candidate.publish(true)?;
    println!("model:        {}", dir.display());
    for (key, value) in described {
        println!("{:<14}{value}", format!("{key}:"));
    }
    Ok(metrics)
}

pub fn quantize(args: QuantizeArgs, ort_lib: Option<PathBuf>) -> anyhow::Result<()> {
    let session = args.device.session(ort_lib);
    let source = ModelVersion::open(&args.model)?;
    single_label(&source, "a converted model (int8, fp16)")?;
    let card = source.card.clone();
    let rows = match &args.data {
        Some(data) => {
            let spec = LabeledDataSpec {
                path: data.clone(),
                text: prodcat::common::TextSpec::column(args.text_column.as_deref().unwrap_or_default()),
                label_column: args.label_column.clone().unwrap_or_default(),
                group_column: None,
                max_rows: None,
                sample_seed: 0,
                skip_invalid: false,
                paths: prodcat::data::PathSpec::of_taxonomy(card.taxonomy.as_ref(), source.taxonomy_file()),
                label_separator: None,
            };
            let d = super::tokio_runtime()?.block_on(LabeledData::read(&spec))?;
            Rows { texts: d.texts, labels: d.labels, origin: data.display().to_string() }
        }
        None => rows_of(&source, Split::Test, None).context("reading the held-out rows (or pass --data)")?,
    };
    let registry = match args.out {
        Some(out) => out,
        None => source
            .dir
            .parent()
            .and_then(Path::parent)
            .context("cannot tell the source model's registry; pass --out")?
            .to_path_buf(),
    };
    let precision = match args.precision {
        PrecisionArg::Int8 => {
            Precision::Int8(QuantizeSettings { reduce_range: !args.full_range, ..Default::default() })
        }
        PrecisionArg::Fp16 => Precision::Fp16 {
            settings: HalfSettings { keep_fp32: args.keep_fp32.clone() },
            min_agreement: args.min_agreement,
            max_logit_diff: args.max_logit_diff,
        },
    };
    let job = QuantizeJob {
        model: source,
        texts: rows.texts,
        labels: rows.labels,
        origin: rows.origin,
        registry,
        name: args.name.unwrap_or_else(|| format!("{}-{}", card.name, precision.name())),
        tolerance: args.tolerance,
        precision,
        session,
    };
    let candidate = quantize_model(job)?;
    let q =
        candidate.card.model.transformer().and_then(|t| t.quantization.clone()).context("no quantization result")?;
    let bytes = candidate.card.onnx.as_ref().map_or(0, |o| o.file_bytes);
    let accuracy = candidate.card.test_metrics.as_ref().map_or(0.0, |m| m.accuracy);
    print_published(candidate)?;
    println!("size:         {:.1} MiB", bytes as f64 / (1 << 20) as f64);
    println!(
        "{} vs fp32: macro-F1 {:.4} vs {:.4} (drop {:+.4}, tolerance {:.4}), agreement {:.4}, max |logit diff| {:.4}",
        q.precision,
        q.converted_macro_f1,
        q.fp32_macro_f1,
        q.macro_f1_drop,
        q.tolerance,
        q.agreement,
        q.max_abs_logit_diff
    );
    println!("macro_f1={:.4} accuracy={accuracy:.4}", q.converted_macro_f1);
    Ok(())
}

pub fn cascade(args: CascadeArgs, ort_lib: Option<PathBuf>) -> anyhow::Result<()> {
    let session = SessionSettings { ort_library: ort_lib, ..Default::default() };
    let members = args.members.job(&args.name, args.threshold.is_none(), session)?;
    let job = CascadeJob {
        members,
        threshold: args.threshold,
        lexical_weight: args.lexical_weight,
        bounds: args.bounds.get(),
        level: args.level,
    };
    let (candidate, tuning) = build_cascade(job)?;
    let share = candidate.test.as_ref().map(|t| {
        t.stages.iter().filter(|s| **s != prodcat::common::Kind::Lexical).count() as f64 / t.stages.len().max(1) as f64
    });
    if let Some(t) = &tuning {
        if let Some(w) = &t.weight {
            print_weights(w);
        }
        println!("{}", format_tuning(&t.threshold));
        let dir = args.members.report_dir(&args.name, "cascade")?;
        write_json(&dir.join("tuning.json"), t)?;
        plot_tuning(&t.threshold, &dir.join("threshold_curve.png"))?;
        println!("curve:        {}, {}", dir.join("tuning.json").display(), dir.join("threshold_curve.png").display());
    }
    let metrics = print_published(candidate)?;
    if let Some(share) = share {
        println!("second stage: {:.1}% of test rows", 100.0 * share);
    }
    print_metrics(metrics);
    Ok(())
}

pub fn ensemble(args: EnsembleArgs, ort_lib: Option<PathBuf>) -> anyhow::Result<()> {
    let session = SessionSettings { ort_library: ort_lib, ..Default::default() };
    let members = args.members.job(&args.name, args.lexical_weight.is_none(), session)?;
    let (candidate, tuning) = build_ensemble(EnsembleJob { members, lexical_weight: args.lexical_weight })?;
    if let Some(t) = &tuning {
        print_weights(t);
        let dir = args.members.report_dir(&args.name, "ensemble")?;
        write_json(&dir.join("tuning.json"), t)?;
        println!("weights:      {} ({} validation rows)", dir.join("tuning.json").display(), t.rows);
    }
    let metrics = print_published(candidate)?;
    print_metrics(metrics);
    Ok(())
}

/// The weights tried on validation, the chosen one marked.
fn print_weights(t: &prodcat::models::ensemble::WeightTuning) {
    println!("{:>14} {:>9} {:>9}", "lexical weight", "macro-F1", "log-loss");
    for p in &t.curve {
        let mark = if p == &t.chosen { "  ← chosen" } else { "" };
        println!("{:>14.2} {:>9.4} {:>9.4}{mark}", p.lexical_weight, p.macro_f1, p.log_loss);
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

fn print_metrics(metrics: Option<prodcat::registry::card::SplitMetrics>) {
    if let Some(m) = metrics {
        print!("{}", prodcat::eval::level_lines(&m.levels));
        println!("macro_f1={:.4} accuracy={:.4}", m.macro_f1, m.accuracy);
    }
}
