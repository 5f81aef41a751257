//! `prodcat eval`.

use std::path::PathBuf;

use clap::Args;

use prodcat::common::BatchLimits;
use prodcat::data::LabeledData;
use prodcat::eval::cascade::{ThresholdBounds, format_tuning, plot_tuning};
use prodcat::eval::{evaluate, format_report, label_ids, truth_of, write_report};
use prodcat::models::cascade::Cascade;
use prodcat::registry::{ModelVersion, files};
use prodcat::serve::Model;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Registry model: a version folder, a model folder with `current`, or a one-model registry.
    #[arg(long, env = "PRODCAT_MODEL")]
    model: PathBuf,
    #[command(flatten)]
    data: super::DataArgs,
    /// Folder for metrics.json and the PNG plots (default: reports/<name>-<version>).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Most texts per batch (default: the model's own token-budget batching).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Cascades: choose the confidence threshold on this data (curve table and PNG in the report
    /// folder) and store it in the model's card.json.
    #[arg(long)]
    tune_threshold: bool,
    /// With --tune-threshold: how the threshold is chosen.
    #[command(flatten)]
    bounds: BoundsArgs,
    #[command(flatten)]
    device: super::DeviceArgs,
}

pub fn run(args: EvalArgs, ort_lib: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = args.device.session(ort_lib);
    let version = ModelVersion::open(&args.model)?;
    let (mut spec, _) = args.data.read(None, 0)?;
    // Labels named through the model's taxonomy file are read through it unless another is given;
    // a multi-label model's label sets are split as its training data's were.
    if spec.paths.taxonomy.is_none() {
        spec.paths.taxonomy = version.taxonomy_file();
    }
    if spec.label_separator.is_none() && version.card.head == prodcat::common::Head::MultiLabel {
        spec.label_separator = version.card.data.as_ref().and_then(|d| d.label_separator.clone());
    }
    if let Some(problem) = version.card.data.as_ref().and_then(|d| d.text.as_ref()).and_then(|t| t.mismatch(&spec.text))
    {
        tracing::warn!(model = %version.id(), "--text-column: {problem}");
    }
    let data = super::tokio_runtime()?.block_on(LabeledData::read(&spec))?;
    let origin = format!("{} column `{}`", args.data.data.display(), args.data.label_column);
    let report_dir = args
        .report
        .unwrap_or_else(|| PathBuf::from("reports").join(format!("{}-{}", version.card.name, version.card.version)));
    let texts: Vec<&str> = data.texts.iter().map(String::as_str).collect();
    let model: std::sync::Arc<dyn Model> = if args.tune_threshold {
        let id = version.id();
        let kind = version.card.model.name();
        let mut cascade = Cascade::load(version, &settings)
            .map_err(|e| anyhow::anyhow!("--tune-threshold needs a cascade model; {id} is a {kind} model ({e})"))?;
        let y_true = label_ids(cascade.labels(), &data.labels, &origin)?;
        // The second stage's weight stays as built; only the threshold is re-tuned.
        let tuning = cascade.tune(&texts, &y_true, args.bounds.get(), Some(cascade.lexical_weight))?;
        println!("{}", format_tuning(&tuning.threshold));
        std::fs::create_dir_all(&report_dir)?;
        plot_tuning(&tuning.threshold, &report_dir.join("threshold_curve.png"))?;
        cascade.set_tuning(&tuning);
        // Written beside and renamed over, so a reader never sees half a card.
        let card_path = cascade.version.dir.join(files::CARD);
        cascade.version.card.write(&card_path)?;
        prodcat::registry::checksums::seal(&cascade.version.dir)?;
        println!("threshold {:.3} stored in {}\n", tuning.threshold.chosen.threshold, card_path.display());
        std::sync::Arc::new(cascade)
    } else {
        prodcat::models::load(version, &settings)?
    };
    let truth = truth_of(model.labels(), &data, &origin)?;
    let started = std::time::Instant::now();
    let limits = args.batch_size.map(|n| BatchLimits { max_records: n.max(1), ..model.batch_limits() });
    let evaluation = evaluate(&*model, &texts, truth, limits)?;
    let seconds = started.elapsed().as_secs_f64();
    let extra = serde_json::json!({
        "model": model.id(),
        "model_dir": model.dir().display().to_string(),
        "data": args.data.data.display().to_string(),
        "rows_rejected": data.rejected,
        "seconds": seconds,
        "texts_per_second": data.len() as f64 / seconds.max(1e-9),
    });
    let files = write_report(&report_dir, &evaluation, extra)?;
    println!(
        "{} on {} ({} rows, {:.0} texts/s)\n",
        model.id(),
        args.data.data.display(),
        data.len(),
        data.len() as f64 / seconds.max(1e-9)
    );
    println!("{}", format_report(&evaluation.report));
    println!("report:  {}", files.metrics_json.display());
    let plots: Vec<String> = [files.confusion_png, Some(files.roc_png), files.level_confusion_png]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
    println!("plots:   {}", plots.join(", "));
    print!("{}", prodcat::eval::level_lines(&evaluation.report.headline().levels));
    if let Some(multilabel) = &evaluation.report.multilabel {
        println!("multilabel: {multilabel}");
    }
    println!("macro_f1={:.4} accuracy={:.4}", evaluation.report.macro_f1, evaluation.report.accuracy);
    Ok(())
}

/// How a cascade's threshold is chosen: the lowest one within `--max-f1-loss` of the curve's best
/// macro-F1 among those labeling at least `--min-agreement` of the rows as the second stage does.
#[derive(Debug, clap::Args)]
pub struct BoundsArgs {
    #[arg(long, default_value_t = ThresholdBounds::default().max_f1_loss)]
    max_f1_loss: f64,
    #[arg(long, default_value_t = ThresholdBounds::default().min_agreement)]
    min_agreement: f64,
}

impl BoundsArgs {
    pub fn get(&self) -> ThresholdBounds {
        ThresholdBounds { max_f1_loss: self.max_f1_loss, min_agreement: self.min_agreement }
    }
}
