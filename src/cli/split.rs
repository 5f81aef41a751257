//! `prodcat split`: writes the train/validation/test assignment that `prodcat train` uses for the
//! same data, columns and seed, so other tools (baselines, notebooks) can score on the same rows.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use prodcat::data::prepare::{check_fractions, prepare_data};
use prodcat::data::{LabeledData, Split};

#[derive(Debug, Args)]
pub struct SplitArgs {
    #[command(flatten)]
    data: super::DataArgs,
    #[command(flatten)]
    deal: super::DealArgs,
    /// Output CSV with columns `text,label,split` and, with a group column, `group` (one row per
    /// usable input row, in order).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: SplitArgs) -> anyhow::Result<()> {
    let (spec, source) = args.data.read(args.deal.group_column.as_deref(), args.deal.seed)?;
    let data = super::tokio_runtime()?.block_on(LabeledData::read(&spec))?;
    // Exactly what `prodcat train` does with the same file, columns, fractions and seed.
    let (_, _, split) = prepare_data(&data, None, &source, args.deal.fractions.get()?, args.deal.seed, false)?;
    let mut which = vec![Split::Train; data.len()];
    for s in [Split::Validation, Split::Test] {
        for &r in split.rows(s) {
            which[r] = s;
        }
    }
    let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    // With a group column, the groups too (so a tool can keep a product's rows together again).
    writeln!(w, "text,label,split{}", if data.groups.is_some() { ",group" } else { "" })?;
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    // A multi-label row's labels joined as they were given (`|` for a list column).
    let separator = args.data.label_separator.as_deref().unwrap_or("|");
    for (i, s) in which.iter().enumerate() {
        let name = match s {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        };
        let group = data.groups.as_ref().map(|g| format!(",{}", quote(&g[i]))).unwrap_or_default();
        writeln!(w, "{},{},{name}{group}", quote(&data.texts[i]), quote(&data.labels_of(i).join(separator)))?;
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
#[derive(Debug, Clone, Args)]
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
