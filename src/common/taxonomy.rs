//! Category paths and the taxonomy tree a model's classes make.
//!
//! A label column whose values are paths (`Electronics > Audio > Headphones`, split on a
//! separator, ` > ` by default) makes a taxonomy: the model's classes are the leaf paths (each
//! class's label is its whole path, so `labels.json`, `top_k` and every report name a leaf by its
//! path), and each level above the leaves is the set of path prefixes of that length. A leaf
//! shallower than the deepest one stands for itself at the levels below it, so every class has
//! one node at every level and each level's scores sum to 1.
//!
//! Scores are path-consistent: a node's score is the sum of its leaves' probabilities
//! ([`Taxonomy::node_score`]; the exported graphs compute the same per level as
//! `level{N}_probabilities`). A row's path is its predicted leaf's ancestors, so a parent's score
//! is never below its child's.
//!
//! A taxonomy file (`--taxonomy FILE`: Google's `ID - A > B > C` lines, or one path per line)
//! says which paths exist, and lets a label column name a category by its id or, where unique, by
//! its last part ([`TaxonomyFile::resolve`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The separator of category paths when none is given.
pub const DEFAULT_PATH_SEPARATOR: &str = " > ";

/// How a data set's labels are paths: recorded on the data ([`crate::data::LabeledData`]) and,
/// with the tree, in the card.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathLabels {
    /// What separates the parts of a path.
    pub separator: String,
    /// The taxonomy file the labels were checked against (`--taxonomy`).
    pub file: Option<String>,
}

/// One level above the leaves: its nodes (path prefixes) and each class's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxonomyLevel {
    /// The level's nodes, as paths, sorted.
    pub nodes: Vec<String>,
    /// Each class's node at this level (an index into `nodes`), by class id.
    pub of_class: Vec<u32>,
}

/// The tree over a model's classes (leaf paths). Levels are numbered from 1 (the top) to
/// [`Taxonomy::depth`] (the leaves, the classes themselves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taxonomy {
    pub separator: String,
    /// The taxonomy file the labels were checked against, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The levels above the leaves, top first.
    pub levels: Vec<TaxonomyLevel>,
}

/// The parts of a path, trimmed (an empty separator: the path is one part).
pub fn path_parts<'a>(path: &'a str, separator: &str) -> Vec<&'a str> {
    if separator.is_empty() {
        return vec![path.trim()];
    }
    path.split(separator).map(str::trim).collect()
}

impl Taxonomy {
    /// The tree the class labels `labels` make as paths split on `paths.separator`; `None` when
    /// no label has more than one part (flat labels: nothing changes for them).
    pub fn of_labels(labels: &[String], paths: &PathLabels) -> Option<Taxonomy> {
        let parts: Vec<Vec<&str>> = labels.iter().map(|l| path_parts(l, &paths.separator)).collect();
        let depth = parts.iter().map(Vec::len).max().unwrap_or(1);
        if depth < 2 {
            return None;
        }
        let levels = (1..depth)
            .map(|len| {
                // A class's node at this level: its first `len` parts, or the whole class when
                // it is shallower.
                let node_of = |c: usize| -> String {
                    if parts[c].len() <= len { labels[c].clone() } else { parts[c][..len].join(&paths.separator) }
                };
                let names: Vec<String> = (0..labels.len()).map(node_of).collect();
                let mut nodes = names.clone();
                nodes.sort();
                nodes.dedup();
                let index: HashMap<&str, u32> = nodes.iter().enumerate().map(|(i, n)| (n.as_str(), i as u32)).collect();
                let of_class = names.iter().map(|n| index[n.as_str()]).collect();
                TaxonomyLevel { nodes, of_class }
            })
            .collect();
        Some(Taxonomy { separator: paths.separator.clone(), file: paths.file.clone(), levels })
    }

    /// How labels are paths in this tree (its separator and file).
    pub fn path_labels(&self) -> PathLabels {
        PathLabels { separator: self.separator.clone(), file: self.file.clone() }
    }

    /// Levels, leaves included.
    pub fn depth(&self) -> usize {
        self.levels.len() + 1
    }

    /// Whether the tree is one over `classes` classes (a card's tree against its labels).
    pub fn check(&self, classes: usize) -> Result<(), String> {
        for (i, level) in self.levels.iter().enumerate() {
            if level.of_class.len() != classes || level.of_class.iter().any(|&n| n as usize >= level.nodes.len()) {
                return Err(format!("taxonomy level {} does not map the {classes} classes onto its nodes", i + 1));
            }
        }
        Ok(())
    }

    /// The score of node `node` of level `level` (an index into `levels`): the sum of its leaves'
    /// probabilities in the row `probs`.
    pub fn node_score(&self, level: usize, node: u32, probs: &[f32]) -> f32 {
        let of_class = &self.levels[level].of_class;
        probs.iter().zip(of_class).filter(|(_, n)| **n == node).map(|(p, _)| *p).sum()
    }

    /// Every node's score at level `level` (an index into `levels`) for the row `probs`.
    pub fn level_scores(&self, level: usize, probs: &[f32]) -> Vec<f32> {
        let level = &self.levels[level];
        let mut out = vec![0.0; level.nodes.len()];
        for (p, &n) in probs.iter().zip(&level.of_class) {
            out[n as usize] += p;
        }
        out
    }

    /// Class ids mapped to their nodes at level `level` (an index into `levels`).
    pub fn nodes_of(&self, level: usize, classes: &[usize]) -> Vec<usize> {
        classes.iter().map(|&c| self.levels[level].of_class[c] as usize).collect()
    }

    /// The class's ancestors, top first, without the class itself: (level index, node).
    pub fn ancestors(&self, class: usize) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.levels.iter().enumerate().map(move |(l, level)| (l, level.of_class[class]))
    }
}

/// A taxonomy file: the paths it lists, and the ids of Google-style `ID - path` lines.
#[derive(Debug, Clone, Default)]
pub struct TaxonomyFile {
    pub paths: Vec<String>,
    ids: HashMap<String, usize>,
    by_path: HashMap<String, usize>,
    /// Last part → the paths ending in it.
    by_leaf: HashMap<String, Vec<usize>>,
}

impl TaxonomyFile {
    /// Parses the text of a taxonomy file. Blank lines and `#` comments (Google's version line)
    /// are skipped; a line `123 - A > B` gives path `A > B` the id `123`.
    pub fn parse(text: &str, separator: &str) -> Result<Self, String> {
        let mut file = TaxonomyFile::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, path) = match line.split_once(" - ") {
                Some((id, path)) if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) => (Some(id), path.trim()),
                _ => (None, line),
            };
            let parts = path_parts(path, separator);
            if parts.iter().any(|p| p.is_empty()) {
                return Err(format!("line {}: `{line}` has an empty part between separators `{separator}`", n + 1));
            }
            let path = parts.join(separator);
            let at = match file.by_path.get(&path) {
                Some(&at) => at,
                None => {
                    file.paths.push(path.clone());
                    let at = file.paths.len() - 1;
                    file.by_path.insert(path.clone(), at);
                    file.by_leaf.entry(parts[parts.len() - 1].to_string()).or_default().push(at);
                    at
                }
            };
            if let Some(id) = id
                && file.ids.insert(id.to_string(), at).is_some_and(|before| before != at)
            {
                return Err(format!("line {}: id {id} names two paths", n + 1));
            }
        }
        if file.paths.is_empty() {
            return Err("it lists no categories".into());
        }
        Ok(file)
    }

    /// The path a data label names: a path of the file (parts trimmed), an id of the file, or a
    /// last part only one path of the file ends in.
    pub fn resolve(&self, label: &str, separator: &str) -> Result<&str, String> {
        let path = path_parts(label, separator).join(separator);
        if let Some(&at) = self.by_path.get(&path).or_else(|| self.ids.get(label.trim())) {
            return Ok(&self.paths[at]);
        }
        match self.by_leaf.get(label.trim()).map(Vec::as_slice) {
            Some([at]) => Ok(&self.paths[*at]),
            Some(several) => Err(format!(
                "label `{label}` names {} categories of the taxonomy ({}); give its path",
                several.len(),
                several.iter().take(3).map(|&a| self.paths[a].as_str()).collect::<Vec<_>>().join("; ")
            )),
            None => Err(format!("label `{label}` is not in the taxonomy ({} categories)", self.paths.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn paths() -> PathLabels {
        PathLabels { separator: DEFAULT_PATH_SEPARATOR.into(), file: None }
    }

    #[test]
    fn a_ragged_tree_gives_every_class_one_node_per_level() {
        let l = labels(&["A > B > C", "A > B > D", "A > E", "F > G > H"]);
        let t = Taxonomy::of_labels(&l, &paths()).unwrap();
        assert_eq!(t.depth(), 3);
        assert_eq!(t.levels[0].nodes, labels(&["A", "F"]));
        assert_eq!(t.levels[0].of_class, vec![0, 0, 0, 1]);
        // `A > E` stands for itself at level 2.
        assert_eq!(t.levels[1].nodes, labels(&["A > B", "A > E", "F > G"]));
        assert_eq!(t.levels[1].of_class, vec![0, 0, 1, 2]);
        assert!(t.check(4).is_ok());
        assert!(t.check(5).is_err());
        let probs = [0.1, 0.2, 0.3, 0.4];
        assert_eq!(t.level_scores(0, &probs), vec![0.1 + 0.2 + 0.3, 0.4]);
        assert!((t.node_score(1, 0, &probs) - 0.3).abs() < 1e-6);
        assert_eq!(t.ancestors(2).collect::<Vec<_>>(), vec![(0, 0), (1, 1)]);
        assert_eq!(t.nodes_of(0, &[3, 1]), vec![1, 0]);
    }

    #[test]
    fn flat_labels_make_no_taxonomy() {
        assert!(Taxonomy::of_labels(&labels(&["a", "b>c"]), &paths()).is_none());
        let none = PathLabels { separator: String::new(), file: None };
        assert!(Taxonomy::of_labels(&labels(&["a > b", "c"]), &none).is_none());
    }

    #[test]
    fn a_google_file_resolves_paths_ids_and_unique_leaves() {
        let text = "# Google_Product_Taxonomy_Version: 2021-09-21\n1 - Animals\n3237 - Animals > Live Animals\n\
                    2 - Animals > Pet Supplies\n4 - Animals > Pet Supplies > Bird Supplies\n\
                    5 - Toys > Bird Supplies\n";
        let f = TaxonomyFile::parse(text, " > ").unwrap();
        assert_eq!(f.paths.len(), 5);
        assert_eq!(f.resolve(" Animals  >  Live Animals", " > "), Ok("Animals > Live Animals"));
        assert_eq!(f.resolve("3237", " > "), Ok("Animals > Live Animals"));
        assert_eq!(f.resolve("Pet Supplies", " > "), Ok("Animals > Pet Supplies"));
        let err = f.resolve("Bird Supplies", " > ").unwrap_err();
        assert!(err.contains("names 2 categories"), "{err}");
        let err = f.resolve("Plants", " > ").unwrap_err();
        assert!(err.contains("`Plants` is not in the taxonomy (5 categories)"), "{err}");
        let plain = TaxonomyFile::parse("A > B\nA > C\n", " > ").unwrap();
        assert_eq!(plain.resolve("C", " > "), Ok("A > C"));
        assert!(TaxonomyFile::parse("A >  > B", " > ").unwrap_err().contains("line 1"));
        assert!(TaxonomyFile::parse("1 - A\n1 - B", " > ").unwrap_err().contains("id 1 names two paths"));
        assert!(TaxonomyFile::parse("# nothing\n", " > ").is_err());
    }
}
