//! `prodcat train`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use prodcat::common::{CSearch, FeatureNorm, FeaturizerSettings, Kind, LexicalSettings, LexicalSolver, TermFrequency};
use prodcat::data::prepare::read_training_data;
use prodcat::data::{LabeledData, Split};
use prodcat::encoder::{LoraSettings, LoraTarget, Pooling};
use prodcat::eval::format_report;
use prodcat::eval::plots::{TradeoffPoint, tradeoff_plot};
use prodcat::lexical::{LexicalJob, fit_lexical};
use prodcat::models::auto::{AutoJob, AutoOutcome, CandidateScore, train_auto};
use prodcat::serve::{ExecutionTarget, SessionSettings};
use prodcat::train::{DataSource, TrainJob, TrainSettings, default_epochs, fit};

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    data: super::DataArgs,
    #[command(flatten)]
    deal: super::DealArgs,
    /// A file (same columns) that is the validation split as it is; the training file then gives
    /// no validation rows.
    #[arg(long)]
    validation_data: Option<PathBuf>,
    /// A file (same columns) that is the test split as it is; the training file then gives no
    /// test rows.
    #[arg(long)]
    test_data: Option<PathBuf>,
    /// After choosing epochs / regularisation on validation, train the published model on train +
    /// validation (the card says so and keeps the validation-time figures). With `--model-type
    /// auto`: the candidates are compared on validation as without it, then the winner is refitted.
    /// The lexical kind (svm solver) refits by default: a second solve of seconds that learns from
    /// the validation rows too.
    #[arg(long)]
    refit: bool,
    /// Lexical: publish the model trained on the training split alone (no refit).
    #[arg(long, conflicts_with = "refit")]
    no_refit: bool,
    /// Lexical: keep the test rows out of the published model. By default a refitted lexical model
    /// learns from every labeled row: after its test figures are measured on the model of train +
    /// validation, it is trained once more at the same choices with the test rows too (the card's
    /// `training.test_before_final_fit` says so). Keep them out to gate it, or to build a cascade or
    /// ensemble whose test figures must be held out.
    #[arg(long)]
    hold_out_test: bool,
    /// Choices by K-fold cross-validation over train + validation rows (for small data sets; the
    /// lexical kind's default under 10,000 rows, 5 folds, unless --refit, --no-refit or
    /// --validation-data is given),
    /// then the model trained on all of them. Lexical: C and the temperature. Auto: every
    /// candidate scored out of fold (both members trained K times), the ensemble's weight and the
    /// cascade's threshold chosen there, the winner trained on all the rows.
    #[arg(long)]
    folds: Option<usize>,
    /// Hugging Face base model folder (config.json, model.safetensors, tokenizer.json); needed
    /// for transformer models. `auto` takes several (`--base a,b` or `--base a --base b`): a
    /// transformer from each, and their ensembles and cascades, compared on validation.
    #[arg(
        long,
        env = "PRODCAT_BASE_MODEL",
        value_delimiter = ',',
        required_if_eq_any([("model_type", "transformer"), ("model_type", "auto")])
    )]
    base: Vec<PathBuf>,
    /// Model family: transformer (LoRA on the base encoder), lexical (hashed n-grams, linear), or
    /// auto (all of them and their ensemble and cascade; the best on validation is published).
    #[arg(long, value_enum, default_value = "transformer")]
    model_type: ModelType,
    /// Lexical models: solver. svm = one-vs-rest squared-hinge SVMs solved to convergence (dual
    /// coordinate descent, C chosen on validation, temperature-calibrated); sgd = the earlier
    /// AdaGrad softmax regression.
    #[arg(long, value_enum, default_value = "svm")]
    solver: LexicalSolverArg,
    /// Lexical svm: regularisation strengths to try (the best on validation macro-F1 is kept).
    #[arg(long, value_delimiter = ',')]
    c_grid: Option<Vec<f32>>,
    /// Lexical svm: how the C grid is searched on validation: `grid` tries every C (and every
    /// normalisation at each), `walk` (the default) picks the normalisation at the C nearest 1 and
    /// walks the grid from there while validation improves, `auto` walks past 100 classes and
    /// tries the grid below.
    #[arg(long, value_enum, default_value = "walk")]
    c_search: CSearchArg,
    /// Lexical svm: a class's weights of smaller magnitude are dropped when it is solved (0: none).
    #[arg(long, default_value_t = LexicalSettings::default().prune_below)]
    prune_below: f32,
    /// Lexical models: classes a feature keeps weights for, at most, the largest (0: all). Bounds
    /// the model's size and serving cost at thousands of classes. Default: every class up to 64
    /// classes, 16 past that.
    #[arg(long)]
    max_classes_per_feature: Option<usize>,
    /// Lexical svm: training memory in MiB. Past it, training keeps a stratified sample of the rows
    /// that fits (measured on a sample of the texts before featurizing; the card says so).
    /// Default: every row.
    #[arg(long)]
    memory_budget_mib: Option<u64>,
    /// Lexical svm, with category paths or a taxonomy: one flat classifier over the leaves instead
    /// of the two-level label tree (a top-level category classifier, and each leaf trained only
    /// against its category's rows).
    #[arg(long)]
    flat_leaves: bool,
    /// Lexical models: hash buckets (feature ids).
    #[arg(long, default_value_t = 1 << 19)]
    buckets: u32,
    /// Lexical models: distinct n-grams kept per text at most (long descriptions beyond it lose
    /// features).
    #[arg(long, default_value_t = FeaturizerSettings::default().max_features)]
    max_features: usize,
    /// Lexical models: `blocks` scales word and character n-grams to unit length separately,
    /// `joint` both together, `auto` fits both and keeps the better on validation.
    #[arg(long, value_enum, default_value = "auto")]
    feature_norm: FeatureNormArg,
    /// Lexical models: `sublinear` weighs an n-gram seen n times in a text by 1 + ln n, `binary`
    /// by 1.
    #[arg(long, value_enum, default_value = "sublinear")]
    tf: TermFrequencyArg,
    /// Registry folder to publish into.
    #[arg(long)]
    out: PathBuf,
    /// Model name inside the registry.
    #[arg(long, default_value = "classifier")]
    name: String,
    /// Epochs at most, with early stopping (default: transformers, enough passes for about 2,000
    /// optimizer steps, between 3 and 10; lexical sgd, 30).
    #[arg(long)]
    epochs: Option<usize>,
    /// Continue the interrupted run with the same data and settings from its last checkpoint
    /// (after a finished run, `--refit --resume` refits from its choices without searching again).
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Peak learning rate (transformers: AdamW with warm-up and decay, default 1e-3; lexical:
    /// AdaGrad, default 0.5).
    #[arg(long = "lr")]
    learning_rate: Option<f64>,
    /// Tokens per text (longer texts are truncated).
    #[arg(long, default_value_t = 128)]
    max_length: usize,
    #[arg(long, default_value_t = 16)]
    lora_rank: usize,
    #[arg(long, default_value_t = 32.0)]
    lora_alpha: f64,
    #[arg(long, default_value_t = 0.05)]
    lora_dropout: f32,
    /// Dense layers that get adapters (default: every one, attention and feed-forward — a gate
    /// too where the block has one): prodcat's names (query, key, value, attention_output, gate,
    /// intermediate, output) or the checkpoint's module names as PEFT takes them (q_proj, v_proj,
    /// c_attn, attention.self.query, ...).
    #[arg(long, value_delimiter = ',')]
    lora_targets: Option<Vec<String>>,
    /// Train only the classification head on the frozen encoder (no adapters): the baseline.
    #[arg(long)]
    head_only: bool,
    /// Full fine-tuning: every dense layer named by --lora-targets trains its whole weight and
    /// bias (at --encoder-lr) instead of a low-rank adapter; embeddings and layer norms stay
    /// frozen. Slower per step than LoRA; the export is the same shape.
    #[arg(long, conflicts_with = "head_only")]
    full_finetune: bool,
    /// Peak learning rate of the encoder's weights under --full-finetune (the head keeps --lr).
    #[arg(long, default_value_t = TrainSettings::default().encoder_learning_rate, requires = "full_finetune")]
    encoder_lr: f64,
    /// Pooling of token states: mean, cls or last (the last non-padding token). Default: last for
    /// decoders (GPT-2), mean otherwise.
    #[arg(long)]
    pooling: Option<Pooling>,
    /// Weight the loss by inverse class frequency.
    #[arg(long)]
    class_weights: bool,
    /// Epochs without validation improvement before stopping early (default: 2 transformer, 4 lexical).
    #[arg(long)]
    patience: Option<usize>,
    /// `--model-type auto`: the kinds that may be published (all four are built and compared):
    /// lexical, transformer, ensemble, cascade.
    #[arg(long, value_delimiter = ',', value_parser = Kind::parse)]
    candidates: Vec<Kind>,
    /// `--model-type auto`: folder for the comparison (default reports/<name>-auto).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Threads for training (default: all cores).
    #[arg(long, env = "PRODCAT_TRAIN_THREADS")]
    threads: Option<usize>,
}

/// Files with fewer rows are, by default, trained with their choices made by cross-validation
/// (`SMALL_FILE_FOLDS` folds over train + validation) rather than on the validation split alone:
/// on 2,000 rows those choices rest on ~200 validation rows (`bench/quality.py`: Amazon 2023 and
/// the 4-class sample meet the baseline with folds, not without).
const SMALL_FILE_ROWS: usize = 10_000;
const SMALL_FILE_FOLDS: usize = 5;

pub fn run(args: TrainArgs, ort_lib: Option<PathBuf>) -> anyhow::Result<()> {
    // Fail early (before minutes of training) if ONNX Runtime is unusable.
    prodcat::runtime::environment(ort_lib.as_deref())?;
    let (spec, source) = args.data.read(args.deal.group_column.as_deref(), args.deal.seed)?;
    let data = super::tokio_runtime()?.block_on(read_training_data(
        &spec,
        args.validation_data.as_deref(),
        args.test_data.as_deref(),
    ))?;
    let source = DataSource {
        validation_file: args.validation_data.as_ref().map(|p| p.display().to_string()),
        test_file: args.test_data.as_ref().map(|p| p.display().to_string()),
        ..source
    };
    let split = args.deal.fractions.get()?;
    if data.head == prodcat::common::Head::MultiLabel
        && !matches!(args.model_type, ModelType::One(Kind::Lexical | Kind::Transformer))
    {
        anyhow::bail!(
            "several labels per row (--label-separator or a list column) train a lexical or a transformer model: use \
             --model-type lexical or transformer (ensembles, cascades and auto take one label per row)"
        );
    }
    if data.head == prodcat::common::Head::MultiLabel && args.folds.is_some() {
        anyhow::bail!("several labels per row are trained on a validation split: drop --folds");
    }
    if args.folds.is_some_and(|k| k < 2) {
        anyhow::bail!("--folds needs at least 2 folds");
    }
    let session = SessionSettings { target: ExecutionTarget::Cpu, ort_library: ort_lib, ..Default::default() };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()
        .context("building the training thread pool")?;
    if args.folds.is_some() && args.model_type == ModelType::One(Kind::Transformer) {
        anyhow::bail!(
            "--folds applies to lexical and auto models; a transformer alone chooses its epochs on the validation split"
        );
    }
    let base = || match args.base.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(anyhow::anyhow!("--base is required for a transformer model")),
        _ => Err(anyhow::anyhow!("--base takes one folder for a transformer (several are for --model-type auto)")),
    };
    let candidate = match args.model_type {
        ModelType::One(Kind::Lexical) => {
            let mut job = lexical_job(&args, &data, source, session, split);
            // Use the labels: the published model learns from the validation rows too (the
            // choices stay the validation split's), unless told not to or choosing by folds
            // (which trains on all of them anyway).
            job.settings.refit |= !args.no_refit && args.solver == LexicalSolverArg::Svm && args.folds.is_none();
            // A small file (under SMALL_FILE_ROWS rows, no validation file, no choice given): the
            // choices by cross-validation, which use every training row for them as well.
            let small = data.len() < SMALL_FILE_ROWS
                && args.folds.is_none()
                && !(args.refit || args.no_refit)
                && args.validation_data.is_none()
                && args.solver == LexicalSolverArg::Svm
                && data.head == prodcat::common::Head::SingleLabel;
            if small {
                job.settings.folds = SMALL_FILE_FOLDS;
                job.settings.refit = false;
                tracing::info!(
                    rows = data.len(),
                    folds = SMALL_FILE_FOLDS,
                    "a small file: choosing by cross-validation over train + validation (--refit: on the validation split)"
                );
            }
            // And from the test rows, once their figures are measured.
            job.settings.refit_test = (job.settings.refit || job.settings.folds > 1) && !args.hold_out_test;
            pool.install(|| fit_lexical(job))?
        }
        ModelType::One(Kind::Transformer) => {
            let job = transformer_job(&args, &data, source, base()?, session, split)?;
            pool.install(|| fit(job))?
        }
        ModelType::One(composite @ (Kind::Ensemble | Kind::Cascade)) => {
            unreachable!("--model-type offers no {composite}: ModelType::variants leaves composites out")
        }
        ModelType::Auto => {
            let job = AutoJob {
                lexical: lexical_job(&args, &data, source.clone(), session.clone(), split),
                transformers: args
                    .base
                    .iter()
                    .map(|b| transformer_job(&args, &data, source.clone(), b.clone(), session.clone(), split))
                    .collect::<anyhow::Result<_>>()?,
                session,
                eligible: args.candidates.clone(),
            };
            let outcome = pool.install(|| train_auto(job))?;
            auto_report(&args, &outcome)?;
            outcome.winner
        }
    };
    report(candidate, &args.out)
}

fn lexical_job<'a>(
    args: &TrainArgs,
    data: &'a LabeledData,
    source: DataSource,
    session: SessionSettings,
    split: [f64; 3],
) -> LexicalJob<'a> {
    // `--epochs`, `--lr` and `--patience` are the transformer's under `auto`.
    let defaults = LexicalSettings::default();
    let settings = LexicalSettings {
        featurizer: FeaturizerSettings {
            buckets: args.buckets,
            max_features: args.max_features,
            norm: match args.feature_norm {
                FeatureNormArg::Joint => FeatureNorm::Joint,
                FeatureNormArg::Blocks | FeatureNormArg::Auto => FeatureNorm::Blocks,
            },
            tf: match args.tf {
                TermFrequencyArg::Sublinear => TermFrequency::Sublinear,
                TermFrequencyArg::Binary => TermFrequency::Binary,
            },
            ..Default::default()
        },
        epochs: args.epochs.filter(|_| args.model_type == ModelType::One(Kind::Lexical)).unwrap_or(defaults.epochs),
        learning_rate: args
            .learning_rate
            .filter(|_| args.model_type == ModelType::One(Kind::Lexical))
            .map_or(defaults.learning_rate, |lr| lr as f32),
        patience: args
            .patience
            .filter(|_| args.model_type == ModelType::One(Kind::Lexical))
            .unwrap_or(defaults.patience),
        class_weights: args.class_weights,
        seed: args.deal.seed,
        solver: match args.solver {
            LexicalSolverArg::Svm => LexicalSolver::Svm,
            LexicalSolverArg::Sgd => LexicalSolver::Sgd,
        },
        c_grid: args.c_grid.clone().unwrap_or_else(|| defaults.c_grid.clone()),
        c_search: match args.c_search {
            CSearchArg::Grid => CSearch::Grid,
            CSearchArg::Walk => CSearch::Walk,
            CSearchArg::Auto => CSearch::Auto,
        },
        prune_below: args.prune_below,
        max_classes_per_feature: args.max_classes_per_feature,
        memory_budget_mib: args.memory_budget_mib,
        label_tree: !args.flat_leaves,
        folds: args.folds.unwrap_or(0),
        refit: args.refit,
        show_progress: !args.no_progress,
        norms: match args.feature_norm {
            FeatureNormArg::Auto => defaults.norms.clone(),
            FeatureNormArg::Blocks => vec![FeatureNorm::Blocks],
            FeatureNormArg::Joint => vec![FeatureNorm::Joint],
        },
        ..defaults.clone()
    };
    LexicalJob {
        data,
        source,
        registry: args.out.clone(),
        name: args.name.clone(),
        settings,
        split,
        stable_split: false,
        session,
        labels: None,
        parity_tolerance: TrainSettings::default().parity_tolerance,
    }
}

/// The comparison table on the terminal, `comparison.json` and `tradeoff.png` in the report folder.
fn auto_report(args: &TrainArgs, outcome: &AutoOutcome) -> anyhow::Result<()> {
    let scores: &[CandidateScore] = &outcome.candidates;
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
    // With several bases, each candidate holding a transformer names its base.
    let label = |s: &CandidateScore| match &s.base {
        Some(base) => format!("{} [{base}]", s.model),
        None => s.model.to_string(),
    };
    let w = scores.iter().map(|s| label(s).chars().count()).max().unwrap_or(0).max(12);
    println!(
        "{:<w$} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10} {:>8}",
        "model", "val F1", "val acc", "test F1", "test acc", "worst AUC", "titles/s", "train s"
    );
    for s in scores {
        println!(
            "{:<w$} {:>10.4} {:>9.4} {:>9} {:>9} {:>10} {:>10.0} {:>8.1}{}",
            label(s),
            s.validation_macro_f1,
            s.validation_accuracy,
            opt(s.test_macro_f1),
            opt(s.test_accuracy),
            opt(s.test_worst_auc),
            s.titles_per_second,
            s.train_seconds,
            if s.chosen { "  ← chosen" } else { "" }
        );
    }
    println!(
        "chosen{}: best validation macro-F1; within {} of it, the fastest (worst AUC: classes with ≥ 10 test rows)",
        if args.candidates.is_empty() {
            String::new()
        } else {
            format!(" among {}", args.candidates.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "))
        },
        prodcat::models::auto::TIE
    );
    if let Some(k) = outcome.folds {
        println!("val F1 / val acc: out of fold, {k}-fold cross-validation over train + validation");
    }
    if let Some(r) = &outcome.refit {
        println!(
            "{:<w$} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10} {:>8.1}  ← published: the chosen {} refitted on {} rows",
            "refit",
            "-",
            "-",
            opt(r.test_macro_f1),
            opt(r.test_accuracy),
            opt(r.test_worst_auc),
            "-",
            r.train_seconds,
            r.model,
            r.rows
        );
    }
    let dir = args.report.clone().unwrap_or_else(|| PathBuf::from("reports").join(format!("{}-auto", args.name)));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("comparison.json");
    std::fs::write(&json, serde_json::to_string_pretty(outcome)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let points: Vec<TradeoffPoint> = scores
        .iter()
        .map(|s| TradeoffPoint {
            name: s.model.name().to_string(),
            titles_per_second: s.titles_per_second,
            macro_f1: s.validation_macro_f1,
            chosen: s.chosen,
        })
        .collect();
    let png = dir.join("tradeoff.png");
    tradeoff_plot(&points, &format!("{}: macro-F1 against speed", args.name), &png)?;
    println!("report:       {}, {}", json.display(), png.display());
    Ok(())
}

/// `--solver` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LexicalSolverArg {
    Svm,
    Sgd,
}

/// `--c-search` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CSearchArg {
    Auto,
    Grid,
    Walk,
}

/// `--feature-norm` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FeatureNormArg {
    Auto,
    Blocks,
    Joint,
}

/// `--tf` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TermFrequencyArg {
    Sublinear,
    Binary,
}

/// What `prodcat train --model-type` builds: a kind that trains from data alone (the composites
/// are built from trained members, by `prodcat ensemble` / `prodcat cascade` or by `auto`), or
/// `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelType {
    One(Kind),
    /// Every kind on the same split; the best on validation is published, with a comparison
    /// report.
    Auto,
}

impl clap::ValueEnum for ModelType {
    fn value_variants<'a>() -> &'a [Self] {
        static VARIANTS: std::sync::LazyLock<Vec<ModelType>> = std::sync::LazyLock::new(|| {
            let alone = Kind::ALL.into_iter().filter(|k| !k.is_composite()).map(ModelType::One);
            alone.chain([ModelType::Auto]).collect()
        });
        &VARIANTS
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(match self {
            ModelType::One(kind) => clap::builder::PossibleValue::new(kind.name()),
            ModelType::Auto => clap::builder::PossibleValue::new("auto")
                .help("every kind and their ensemble and cascade on one split; the best on validation is published"),
        })
    }
}

fn transformer_job<'a>(
    args: &TrainArgs,
    data: &'a LabeledData,
    source: DataSource,
    base: PathBuf,
    session: SessionSettings,
    split: [f64; 3],
) -> anyhow::Result<TrainJob<'a>> {
    let defaults = TrainSettings::default();
    let settings = TrainSettings {
        epochs: args.epochs.unwrap_or_else(|| {
            // Rows the training split will have, roughly: the training file's share.
            let free = data.len() - data.fixed_rows(Split::Validation) - data.fixed_rows(Split::Test);
            let given = [Split::Validation, Split::Test].map(|s| data.fixed_rows(s) > 0);
            let share =
                split[0] / (split[0] + if given[0] { 0.0 } else { split[1] } + if given[1] { 0.0 } else { split[2] });
            default_epochs((free as f64 * share) as usize, args.batch_size)
        }),
        batch_size: args.batch_size,
        learning_rate: args.learning_rate.unwrap_or(defaults.learning_rate),
        max_length: args.max_length,
        patience: args.patience.unwrap_or(defaults.patience),
        class_weights: args.class_weights,
        seed: args.deal.seed,
        lora: LoraSettings {
            rank: args.lora_rank,
            alpha: args.lora_alpha,
            dropout: args.lora_dropout,
            targets: if args.head_only { Vec::new() } else { lora_targets(args.lora_targets.as_deref(), &base)? },
            full: args.full_finetune,
        },
        pooling: args.pooling.unwrap_or_else(|| default_pooling(&base)),
        split,
        refit: args.refit,
        encoder_learning_rate: args.encoder_lr,
        ..Default::default()
    };
    Ok(TrainJob {
        data,
        source,
        base_dir: base,
        registry: args.out.clone(),
        name: args.name.clone(),
        settings,
        resume: args.resume,
        session,
        show_progress: !args.no_progress,
        cancel: None,
        labels: None,
    })
}

/// The pooling of a base model's family: the last token's state for decoders (the only one that
/// has seen the whole text), the mean otherwise (also when the base cannot be read: training
/// reports that).
/// The LoRA targets `names` select in `base`'s family (none given: every dense layer).
fn lora_targets(names: Option<&[String]>, base: &std::path::Path) -> anyhow::Result<Vec<LoraTarget>> {
    let Some(names) = names else { return Ok(LoraTarget::ALL.to_vec()) };
    let config = prodcat::encoder::EncoderConfig::from_hf_file(&base.join("config.json"))?;
    Ok(prodcat::encoder::family::lora_targets(prodcat::encoder::family::of(config.family), names)?)
}

fn default_pooling(base: &std::path::Path) -> Pooling {
    let config = prodcat::encoder::EncoderConfig::from_hf_file(&base.join("config.json")).ok();
    if config.is_some_and(|c| c.causal) { Pooling::Last } else { Pooling::Mean }
}

/// Prints the test report, publishes the candidate and prints where it went.
fn report(candidate: prodcat::staging::Candidate, out: &std::path::Path) -> anyhow::Result<()> {
    if let Some(test) = &candidate.test {
        let how = if candidate.card.training.as_ref().is_some_and(|t| t.test_before_final_fit) {
            "the model before its final fit, which learned from these rows too"
        } else {
            "through ONNX Runtime"
        };
        println!("test split ({} rows), {how}:\n{}", test.report.rows, format_report(&test.report));
    }
    let card = candidate.card.clone();
    let dir = candidate.publish(true)?;
    println!("model:        {}", dir.display());
    println!("current:      {}", out.join(&card.name).join("current").display());
    for (key, value) in card.model.describe() {
        println!("{:<14}{value}", format!("{key}:"));
    }
    if let Some(t) = &card.training {
        println!(
            "training:     {} epochs (best {}), {:.1} samples/s, {:.1} s wall",
            t.epochs_run, t.best_epoch, t.samples_per_second, t.wall_seconds
        );
        if let Some(k) = t.folds {
            println!("choices:      {k}-fold cross-validation over train + validation");
        }
        if let (Some(all), Some(data)) = (t.sampled_from, &card.data) {
            println!(
                "memory:       the budget held {} of the {all} rows: trained on a stratified sample of them",
                data.rows
            );
        }
        match t.refit_rows {
            Some(rows) if t.test_before_final_fit => println!(
                "refit:        published model trained on train + validation + test ({rows} rows); its test \
                 figures below are the model's of train + validation, measured before"
            ),
            Some(rows) => println!("refit:        published model trained on train + validation ({rows} rows)"),
            None => {}
        }
        if let Some(temperature) = t.temperature {
            let on = if t.folds.is_some() { "out of fold" } else { "on validation" };
            println!("calibration:  temperature {temperature:.3} fitted {on}");
        }
        if let Some(thresholds) = &card.label_thresholds {
            let (lo, hi) = thresholds.iter().fold((1f32, 0f32), |(lo, hi), &t| (lo.min(t), hi.max(t)));
            println!("labels:       several per row; per-label thresholds {lo:.2}–{hi:.2} tuned on validation");
        }
    }
    if let Some(p) = &card.parity {
        println!(
            "parity:       max |reference - onnx| = {:.2e} over {} texts (tolerance {:.0e})",
            p.max_abs_diff, p.samples, p.tolerance
        );
    }
    if let Some(m) = &card.test_metrics {
        if let Some(h) = m.hierarchical_f1 {
            println!("hierarchical: f1={h:.4}");
        }
        print!("{}", prodcat::eval::level_lines(&m.levels));
        if let Some(multilabel) = &m.multilabel {
            println!("multilabel: {multilabel}");
        }
        println!("macro_f1={:.4} accuracy={:.4}", m.macro_f1, m.accuracy);
    }
    Ok(())
}
