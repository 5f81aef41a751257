//! `prodcat split`: writes the train/validation/test assignment that `prodcat train` uses for the
//! same data, columns and seed, so other tools (baselines, notebooks) can score on the same rows.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use prodcat::data::prepare::{DataSource, check_fractions, prepare_data};
use prodcat::data::{LabeledData, LabeledDataSpec, Split};

#[derive(Debug, Args)]
pub struct SplitArgs {
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    text: super::TextColumns,
    #[arg(long)]
    label_column: String,
    #[arg(long)]
    group_column: Option<String>,
    #[arg(long)]
    max_rows: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long)]
    skip_invalid: bool,
    #[command(flatten)]
    fractions: Fractions,
    /// Output CSV with columns `text,label,split` (one row per usable input row, in order).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: SplitArgs) -> anyhow::Result<()> {
    let text = args.text.spec()?;
    let spec = LabeledDataSpec {
        path: args.data.clone(),
        text: text.clone(),
        label_column: args.label_column.clone(),
        group_column: args.group_column.clone(),
        max_rows: args.max_rows,
        sample_seed: args.seed,
        skip_invalid: args.skip_invalid,
    };
    let data = super::tokio_runtime()?.block_on(LabeledData::read(&spec))?;
    // Exactly what `prodcat train` does with the same file, columns, fractions and seed.
    let source = DataSource {
        file: args.data.display().to_string(),
        text,
        label_column: args.label_column,
        group_column: args.group_column,
        ..Default::default()
    };
    let (_, _, split) = prepare_data(&data, None, &source, args.fractions.get()?, args.seed, false)?;
    let mut which = vec![Split::Train; data.len()];
    for s in [Split::Validation, Split::Test] {
        for &r in split.rows(s) {
            which[r] = s;
        }
    }
    let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    writeln!(w, "text,label,split")?;
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    for (i, s) in which.iter().enumerate() {
        let name = match s {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        };
        writeln!(w, "{},{},{name}", quote(&data.texts[i]), quote(&data.labels[i]))?;
    }
    w.flush()?;
    println!(
        "{}: train {} validation {} test {}",
        args.out.display(),
        split.train.len(),
        split.validation.len(),
        split.test.len()
    );
    Ok(())
}

/// `--split TRAIN,VAL,TEST`: the fractions of the training file (shared by `train` and `split`).
#[derive(Debug, Args)]
pub struct Fractions {
    /// Train, validation and test fractions of the training file (stratified, grouped, seeded).
    #[arg(long = "split", value_delimiter = ',', num_args = 1, default_value = "0.8,0.1,0.1")]
    split: Vec<f64>,
}

impl Fractions {
    /// The three fractions, checked.
    pub fn get(&self) -> anyhow::Result<[f64; 3]> {
        let fractions: [f64; 3] = self
            .split
            .clone()
            .try_into()
            .map_err(|_| anyhow::anyhow!("--split takes three fractions: TRAIN,VAL,TEST"))?;
        check_fractions(fractions)?;
        Ok(fractions)
    }
}
