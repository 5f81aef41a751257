//! `prodcat models list|show|promote|rollback`: the registry for operators. Promote and rollback
//! verify the version as a pipeline would (parity passed, files and labels consistent, a warm-up
//! through every member) before moving `current` atomically; running pipelines that watch the
//! model folder swap to it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use prodcat::registry::{ModelCard, ModelRegistry, ModelVersion, files};
use prodcat::serve::SessionSettings;

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Every version of every model in REGISTRY (or of REGISTRY/NAME): kind, test metrics,
    /// parity, age, and which one is current.
    List { path: PathBuf },
    /// The card of REGISTRY/NAME/VERSION (or of the current version of REGISTRY/NAME).
    Show { path: PathBuf },
    /// Points REGISTRY/NAME's `current` at VERSION once it passes every serving check.
    Promote {
        model: PathBuf,
        #[arg(value_name = "VERSION")]
        to: String,
    },
    /// Points REGISTRY/NAME's `current` back at the newest older version that passes every
    /// serving check.
    Rollback { model: PathBuf },
}

pub fn run(args: ModelsArgs, ort_lib: Option<PathBuf>) -> anyhow::Result<()> {
    let session = SessionSettings { ort_library: ort_lib, ..Default::default() };
    match args.command {
        ModelsCommand::List { path } => list(&path),
        ModelsCommand::Show { path } => show(&path),
        ModelsCommand::Promote { model, to } => {
            let (registry, name) = model_folder(&model)?;
            verify(&registry, &name, &to, &session)?;
            move_current(&registry, &name, &to)
        }
        ModelsCommand::Rollback { model } => {
            let (registry, name) = model_folder(&model)?;
            let current =
                registry.current(&name)?.with_context(|| format!("{} has no current version", model.display()))?;
            let current_number = parse(&current)?;
            let older = registry.versions(&name)?.into_iter().filter(|v| *v < current_number).rev();
            for number in older {
                let version = format!("v{number}");
                match verify(&registry, &name, &version, &session) {
                    Ok(()) => return move_current(&registry, &name, &version),
                    Err(e) => eprintln!("skipping {version}: {e:#}"),
                }
            }
            bail!("no version older than {current} of {} passes the serving checks", model.display())
        }
    }
}

fn parse(version: &str) -> anyhow::Result<u64> {
    version.strip_prefix('v').and_then(|n| n.parse().ok()).with_context(|| format!("`{version}` is not a version (vN)"))
}

/// `REGISTRY/NAME` as a registry and a model name (the folder must hold published versions).
fn model_folder(path: &Path) -> anyhow::Result<(ModelRegistry, String)> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let registry = ModelRegistry::new(path.parent().unwrap_or(Path::new(".")));
    if name.is_empty() || registry.versions(&name)?.is_empty() {
        bail!("{} is not a model folder (REGISTRY/NAME with published versions)", path.display());
    }
    Ok((registry, name))
}

/// The models under `path`: itself when it is a model folder, else its model subfolders.
fn models_under(path: &Path) -> anyhow::Result<Vec<(ModelRegistry, String)>> {
    if let Ok(one) = model_folder(path) {
        return Ok(vec![one]);
    }
    let registry = ModelRegistry::new(path);
    let mut names: Vec<String> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && registry.versions(n).is_ok_and(|v| !v.is_empty()))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no published models under {}", path.display());
    }
    Ok(names.into_iter().map(|n| (registry.clone(), n)).collect())
}

/// "3d 4h", "12m": how long ago `created_at` was.
fn age(created_at: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(created_at) else { return "?".into() };
    let s = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds().max(0);
    match s {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn list(path: &Path) -> anyhow::Result<()> {
    let models = models_under(path)?;
    println!(
        "{:<16} {:<8} {:<8} {:<12} {:>8} {:>8} {:>7} {:<16} {:>8}",
        "model", "version", "current", "kind", "macro_f1", "accuracy", "labels", "parity", "age"
    );
    for (registry, name) in models {
        let current = registry.current(&name)?;
        for number in registry.versions(&name)? {
            let version = format!("v{number}");
            let card = ModelCard::read(&registry.model_dir(&name).join(&version).join(files::CARD))?;
            let metric = |f: fn(&prodcat::registry::card::SplitMetrics) -> f64| {
                card.test_metrics.as_ref().map_or("-".to_string(), |m| format!("{:.4}", f(m)))
            };
            let parity = match &card.parity {
                Some(p) if p.passed => format!("passed {:.1e}", p.max_abs_diff),
                Some(p) => format!("FAILED {:.1e}", p.max_abs_diff),
                None => "none".into(),
            };
            println!(
                "{:<16} {:<8} {:<8} {:<12} {:>8} {:>8} {:>7} {:<16} {:>8}",
                name,
                version,
                if current.as_deref() == Some(version.as_str()) { "*" } else { "" },
                card.model.name(),
                metric(|m| m.macro_f1),
                metric(|m| m.accuracy),
                card.num_labels,
                parity,
                age(&card.created_at)
            );
        }
    }
    Ok(())
}

fn show(path: &Path) -> anyhow::Result<()> {
    let version = ModelVersion::open(path)?;
    let card = &version.card;
    println!("model:        {}", version.dir.display());
    println!("name:         {} {}", card.name, card.version);
    println!("created:      {} ({} ago, prodcat {})", card.created_at, age(&card.created_at), card.prodcat_version);
    for (key, value) in card.model.describe() {
        println!("{:<14}{value}", format!("{key}:"));
    }
    println!("labels:       {}", version.labels()?.join(", "));
    if let Some(thresholds) = &card.label_thresholds {
        let shown: Vec<String> = thresholds.iter().map(|t| format!("{t:.2}")).collect();
        println!("head:         {} (thresholds, by label: {})", card.head.name(), shown.join(", "));
    }
    if let Some(d) = &card.data {
        println!("data:         {} ({} rows, sha256 {})", d.file, d.rows, &d.sha256[..d.sha256.len().min(12)]);
    }
    if let Some(m) = &card.test_metrics {
        println!("test:         macro_f1={:.4} accuracy={:.4}", m.macro_f1, m.accuracy);
        if let Some(multilabel) = &m.multilabel {
            println!("test sets:    {multilabel}");
        }
    }
    match &card.parity {
        Some(p) => println!(
            "parity:       {} (max |reference - onnx| = {:.2e} over {} texts, tolerance {:.0e})",
            if p.passed { "passed" } else { "FAILED" },
            p.max_abs_diff,
            p.samples,
            p.tolerance
        ),
        None => println!("parity:       none recorded (not servable)"),
    }
    let replay = prodcat::registry::replay::Replay::read(&version.dir)?;
    println!("replay:       {}", replay.map_or("none".to_string(), |r| format!("{} rows", r.rows.len())));
    Ok(())
}

/// Loads the version and applies every check a pipeline applies before serving it.
fn verify(registry: &ModelRegistry, name: &str, version: &str, session: &SessionSettings) -> anyhow::Result<()> {
    let dir = registry.model_dir(name).join(version);
    let opened = ModelVersion::at(&dir).with_context(|| format!("{name} {version}"))?;
    prodcat::models::load_verified(opened, session)
        .with_context(|| format!("{name} {version} fails the serving checks"))?;
    Ok(())
}

fn move_current(registry: &ModelRegistry, name: &str, version: &str) -> anyhow::Result<()> {
    let before = registry.current(name)?;
    registry.set_current(name, version)?;
    println!(
        "{name}: current {} -> {version} (pipelines watching {} swap to it)",
        before.as_deref().unwrap_or("none"),
        registry.model_dir(name).display()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Pipeline file (see pipelines/).
    file: PathBuf,
    /// Overrides as key=value, as for `prodcat run`.
    #[arg(long = "set")]
    set: Vec<String>,
}

/// `prodcat check PIPELINE.toml`: every problem `prodcat run` would stop on, at once — the
/// configuration's values, the model it would serve (the serving checks), the base model and state
/// folder continuous learning needs — without starting anything.
pub fn check(args: CheckArgs, ort_lib: Option<PathBuf>) -> anyhow::Result<()> {
    use prodcat::config::PipelineConfig;
    let origin = args.file.display().to_string();
    let config = PipelineConfig::merge(Some(&args.file), &args.set).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    let mut problems = config.problems();
    let session = config.session(ort_lib);
    if !config.model.path.as_os_str().is_empty() {
        match config.model_version() {
            Ok(version) => {
                let id = version.id();
                if let Err(e) = prodcat::models::load_verified(version, &session) {
                    problems.push(format!("model.path: {id} fails the serving checks: {e}"));
                }
            }
            Err(e) => problems.push(format!("model.path: {e}")),
        }
    }
    let t = &config.training;
    if t.enabled && config.pipeline.kind == prodcat::config::PipelineKind::Kafka {
        let probe = t.state_dir.join(format!(".prodcat-check-{}", std::process::id()));
        let writable = std::fs::create_dir_all(&t.state_dir).and_then(|()| std::fs::write(&probe, b"check"));
        let _ = std::fs::remove_file(&probe);
        if let Err(e) = writable {
            problems.push(format!("training.state_dir: {} is not writable: {e}", t.state_dir.display()));
        }
    }
    if problems.is_empty() {
        println!("{origin}: ok ({:?} pipeline, model {})", config.pipeline.kind, config.model.path.display());
        Ok(())
    } else {
        bail!("{origin}: {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))
    }
}
