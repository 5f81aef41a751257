//! The replay sample kept with a model version (`replay.jsonl`): up to a fixed number of the
//! model's training examples per class, so continuous learning retrains on what the serving model
//! knew as well as on the label store, and the gate holds out rows of every class it knew (a
//! candidate trained only on labels that arrived one category at a time would otherwise forget
//! the others). Composite models (cascade, ensemble, int8) carry their source's sample.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use crate::data::LabeledData;
use crate::error::{Error, IoContext, Result};

/// File name inside a version folder.
pub const FILE: &str = "replay.jsonl";

/// Examples kept per class.
pub const PER_CLASS: usize = 200;

#[derive(serde::Serialize, serde::Deserialize)]
struct Row {
    text: String,
    label: String,
}

/// A replay sample: (text, label) rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    pub rows: Vec<(String, String)>,
}

/// FNV-1a: a stable order that does not depend on the data's order or a seed.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl Replay {
    /// Up to `per_class` examples of each class of `data` (the same ones however often it is
    /// sampled: the rows with the smallest text hashes).
    pub fn sample(data: &LabeledData, per_class: usize) -> Self {
        let mut by_class: BTreeMap<&str, Vec<(u64, usize)>> = BTreeMap::new();
        for (i, (text, label)) in data.texts.iter().zip(&data.labels).enumerate() {
            by_class.entry(label).or_default().push((stable_hash(text), i));
        }
        let mut rows = Vec::new();
        for (_, mut members) in by_class {
            members.sort_unstable();
            members.dedup_by_key(|m| m.0);
            rows.extend(
                members.into_iter().take(per_class).map(|(_, i)| (data.texts[i].clone(), data.labels[i].clone())),
            );
        }
        Self { rows }
    }

    /// The sample kept in version folder `dir` (`None`: the version has none, e.g. it predates
    /// replay samples).
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(FILE);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut rows = Vec::new();
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.at(&path)?;
            let row: Row = serde_json::from_str(&line)
                .map_err(|e| Error::model(&path, format!("replay sample line {}: {e}", n + 1)))?;
            rows.push((row.text, row.label));
        }
        Ok(Some(Self { rows }))
    }

    /// Writes the sample into (staged) version folder `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).at(&path)?);
        for (text, label) in &self.rows {
            let line = serde_json::to_string(&Row { text: text.clone(), label: label.clone() })
                .map_err(|e| Error::Internal(format!("replay row as JSON: {e}")))?;
            writeln!(out, "{line}").at(&path)?;
        }
        out.flush().at(&path)
    }

    /// Copies the sample of version folder `from` (if it has one) into staged folder `to`.
    pub fn copy(from: &Path, to: &Path) -> Result<()> {
        let source = from.join(FILE);
        if source.is_file() {
            std::fs::copy(&source, to.join(FILE)).at(to.join(FILE))?;
        }
        Ok(())
    }

    /// The rows as labeled data, each its own group (`replay:N`).
    pub fn to_data(&self) -> LabeledData {
        LabeledData {
            texts: self.rows.iter().map(|r| r.0.clone()).collect(),
            labels: self.rows.iter().map(|r| r.1.clone()).collect(),
            groups: Some((0..self.rows.len()).map(|i| format!("replay:{i}")).collect()),
            rejected: 0,
            fixed_split: None,
            head: Default::default(),
            paths: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_n_per_class_stably_and_round_trips() {
        let texts: Vec<String> = (0..50).map(|i| format!("product {i}")).collect();
        let labels: Vec<String> = (0..50).map(|i| if i % 5 == 0 { "rare" } else { "common" }.to_string()).collect();
        let data = LabeledData { texts, labels, groups: None, ..Default::default() };
        let replay = Replay::sample(&data, 8);
        let count = |l: &str| replay.rows.iter().filter(|r| r.1 == l).count();
        assert_eq!((count("rare"), count("common")), (8, 8));
        let reversed = data.select(&(0..50).rev().collect::<Vec<_>>());
        let mut a = Replay::sample(&reversed, 8).rows;
        let mut b = replay.rows.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "the sample does not depend on row order");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Replay::read(dir.path()).unwrap(), None);
        replay.write(dir.path()).unwrap();
        assert_eq!(Replay::read(dir.path()).unwrap(), Some(replay));
    }
}
