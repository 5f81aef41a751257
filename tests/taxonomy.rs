//! Category paths: a label column of paths (or a taxonomy file's ids) trains a model whose card
//! records the tree, whose graph gives each level's scores, whose outputs carry the path and the
//! score at each level, and whose evaluation reports every level.

mod common;

use std::path::Path;

use arrow::array::{Array, AsArray};
use common::*;

const TOPS: [&str; 3] = ["Electronics", "Home", "Toys"];
const SUBS: [&str; 3] = ["Alpha", "Beta", "Gamma"];

/// A leaf's path and the words its titles share: 3 top categories × 3 subcategories × 3 leaves,
/// and one leaf (`Toys > Puzzles`) only two levels deep.
fn leaves() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (t, top) in TOPS.iter().enumerate() {
        for (s, sub) in SUBS.iter().enumerate() {
            for l in 0..3 {
                let word = format!("item{t}{s}{l}");
                out.push((
                    format!("{top} > {top}{sub} > {word}"),
                    format!("{word} {}{sub} {top}ware", top.to_lowercase()),
                ));
            }
        }
    }
    out.push(("Toys > Puzzles".into(), "jigsaw puzzle toysware".into()));
    out
}

/// Writes `rows_per_leaf` titles of every leaf as `title,category,group` with the label `label`
/// gives a leaf's path; returns the titles and paths in file order. With `vague`, every third
/// title lacks its leaf's own word: sure of its category, not of its leaf.
fn write_paths(
    path: &Path,
    rows_per_leaf: usize,
    vague: bool,
    label: impl Fn(&str) -> String,
) -> Vec<(String, String)> {
    let mut csv = String::from("title,category,group\n");
    let mut rows = Vec::new();
    for (i, (leaf, words)) in leaves().iter().enumerate() {
        for r in 0..rows_per_leaf {
            let words = if vague && r % 3 == 0 { words.split_once(' ').map_or(words.as_str(), |w| w.1) } else { words };
            let title = format!("brand{} {words} {} size {r}", (i + r) % 5, ["red", "blue", "black"][r % 3]);
            csv.push_str(&format!("{title},{},{i}-{r}\n", label(leaf)));
            rows.push((title, leaf.clone()));
        }
    }
    std::fs::write(path, csv).expect("the CSV is writable");
    rows
}

fn lexical_train(fx: &Fixture, registry: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> =
        ["train", "--model-type", "lexical", "--no-progress", "--group-column", "group", "--out"]
            .map(str::to_string)
            .to_vec();
    args.push(registry.display().to_string());
    args.extend(fixture_data_args(fx));
    args.extend(extra.iter().map(|s| s.to_string()));
    run_strings(&args)
}

/// `name=value` of a line `... name=value ...`.
fn figure(line: &str, name: &str) -> f64 {
    let value = line.split(' ').find_map(|w| w.strip_prefix(&format!("{name}="))).unwrap_or_else(|| panic!("{line}"));
    value.parse().expect("a number")
}

fn read_card(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("card.json")).expect("card.json");
    serde_json::from_str(&text).expect("card.json is JSON")
}

#[test]
fn category_paths_train_a_taxonomy_model_reported_and_served_per_level() {
    let fx = Fixture::new(10);
    let rows = write_paths(&fx.csv, 12, false, str::to_string);
    let registry = fx.path("registry");
    let o = lexical_train(&fx, &registry, &[]);
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    let n = lines.len();
    // `level 1`, `level 2`, then the leaves' line last.
    assert!(lines[n - 3].starts_with("level 1: macro_f1=") && lines[n - 2].starts_with("level 2: macro_f1="), "{text}");
    assert!(text.contains("hierarchical: f1="), "{text}");
    let (top, leaf) = (figure(lines[n - 3], "accuracy"), figure(lines[n - 1], "accuracy"));
    assert!(leaf > 0.8, "{text}");
    // A right leaf has the right ancestors: the top level is at least as accurate.
    assert!(top >= leaf, "{text}");

    // The card records the tree; the graph gives every level's scores (checked at staging
    // against the sums of its probabilities).
    let current = registry.join("classifier/current");
    let card = read_card(&current);
    let taxonomy = &card["taxonomy"];
    assert_eq!(taxonomy["separator"], " > ");
    assert_eq!(taxonomy["levels"][0]["nodes"], serde_json::json!(TOPS));
    let second: Vec<&str> =
        taxonomy["levels"][1]["nodes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(second.len(), 10, "9 subcategories and the two-level leaf standing for itself: {second:?}");
    assert!(second.contains(&"Toys > Puzzles") && second.contains(&"Home > HomeBeta"), "{second:?}");
    // The lexical model is a label tree over the top level (3 categories): its leaves scored
    // within their category (the staging parity check compared the graph with the Rust tree).
    assert_eq!(card["model"]["label_tree"]["groups"], 3, "{}", card["model"]);
    assert!(card["model"]["label_tree"]["svm"]["c"].as_f64().is_some(), "{}", card["model"]);
    let outputs = card["onnx"]["outputs"].as_array().unwrap();
    assert!(outputs.contains(&"level1_probabilities".into()) && outputs.contains(&"level2_probabilities".into()));
    assert_eq!(card["test_metrics"]["levels"].as_array().unwrap().len(), 2, "{}", card["test_metrics"]);

    // eval: a line per level before the leaves', and the figures of every level in metrics.json.
    let report = fx.path("report");
    let o = eval_fixture(&fx, &current, &["--report", &report.display().to_string()]);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    let n = lines.len();
    assert!(lines[n - 3].starts_with("level 1: ") && lines[n - 2].starts_with("level 2: "), "{text}");
    assert!(text.contains("level 1 of the taxonomy (3 categories)") && text.contains("top-3 recall"), "{text}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["levels"].as_array().unwrap().len(), 2);
    assert_eq!(metrics["levels"][0]["labels"], serde_json::json!(TOPS));
    let h = metrics["hierarchical_f1"].as_f64().unwrap();
    assert!(h >= metrics["macro_f1"].as_f64().unwrap() - 0.05 && h <= 1.0, "{h}");
    let recall = &metrics["top_k_recall"];
    assert!(recall["3"].as_f64().unwrap() >= recall["1"].as_f64().unwrap(), "{recall}");
    assert!((recall["1"].as_f64().unwrap() - metrics["accuracy"].as_f64().unwrap()).abs() < 1e-9, "{recall}");
    assert!(std::fs::read(report.join("confusion_matrix_level1.png")).unwrap().starts_with(b"\x89PNG"));

    // relabel: each record carries its path and the score at each level, parents never below
    // their children.
    let titles: Vec<&str> = rows.iter().map(|(title, _)| title.as_str()).collect();
    let batches = relabel_titles(&fx, &current, &titles);
    let json = batches_as_json(&batches);
    assert_eq!(json.len(), rows.len());
    assert_valid("labeled-output.schema.json", &json);
    let mut right = 0;
    for record in &json {
        let label = record["label"].as_str().unwrap();
        let path: Vec<&str> = record["path"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert_eq!(path.join(" > "), label);
        let levels = record["levels"].as_array().unwrap();
        assert_eq!(levels.len(), 3, "{record}");
        assert_eq!(levels[0]["label"], path[0]);
        assert_eq!(levels[2]["label"], label);
        assert!((levels[2]["score"].as_f64().unwrap() - record["confidence"].as_f64().unwrap()).abs() < 1e-6);
        let scores: Vec<f64> = levels.iter().map(|l| l["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1] - 1e-6) && scores[0] <= 1.0 + 1e-6, "{record}");
        let id = record["id"].as_i64().unwrap() as usize;
        right += usize::from(rows[id].1 == label);
    }
    assert!(right * 10 > rows.len() * 9, "{right}/{}", rows.len());
    // The same columns exist for Arrow readers as lists.
    let levels = batches[0].column_by_name("levels").unwrap();
    assert_eq!(levels.as_list::<i32>().value_length(0), 3);
    assert!(!levels.is_null(0));
}

#[test]
fn a_taxonomy_file_resolves_ids_and_leaf_names_and_refuses_unknown_labels() {
    let fx = Fixture::new(10);
    // Google's layout: a version comment, then `ID - path` for every node.
    let mut file = String::from("# Google_Product_Taxonomy_Version: 2021-09-21\n");
    let mut ids = std::collections::HashMap::new();
    for (i, (leaf, _)) in leaves().iter().enumerate() {
        let parts: Vec<&str> = leaf.split(" > ").collect();
        for depth in 1..parts.len() {
            let node = parts[..depth].join(" > ");
            if !file.contains(&format!(" - {node}\n")) {
                file.push_str(&format!("{} - {node}\n", 9000 + file.lines().count()));
            }
        }
        file.push_str(&format!("{} - {leaf}\n", 100 + i));
        ids.insert(leaf.clone(), 100 + i);
    }
    let taxonomy = fx.path("taxonomy.txt");
    std::fs::write(&taxonomy, file).unwrap();
    // Half the leaves named by id, the others by their last part.
    write_paths(&fx.csv, 8, false, |leaf| {
        if ids[leaf] % 2 == 0 { ids[leaf].to_string() } else { leaf.rsplit(" > ").next().unwrap().to_string() }
    });
    let registry = fx.path("registry");
    // One flat classifier over the leaves, as asked.
    let o = lexical_train(&fx, &registry, &["--taxonomy", &taxonomy.display().to_string(), "--flat-leaves"]);
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    let current = registry.join("classifier/current");
    assert!(read_card(&current)["model"].get("label_tree").is_none(), "--flat-leaves: no label tree");
    let labels: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(current.join("labels.json")).unwrap()).unwrap();
    let mut expected: Vec<String> = leaves().into_iter().map(|l| l.0).collect();
    expected.sort();
    assert_eq!(labels, expected, "classes are the paths the labels name");
    let card = read_card(&current);
    assert_eq!(card["taxonomy"]["file"], taxonomy.display().to_string());
    // The version keeps a copy of the file: eval reads ids through it even once the original is
    // gone (a model moved to another machine).
    let copy = std::fs::read_to_string(current.join("taxonomy.txt")).expect("the version's taxonomy.txt");
    assert_eq!(copy, std::fs::read_to_string(&taxonomy).unwrap());
    let moved = fx.path("taxonomy-moved.txt");
    std::fs::rename(&taxonomy, &moved).unwrap();
    let o = eval_fixture(&fx, &current, &[]);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    assert!(stdout(&o).contains("level 2: macro_f1="), "{}", stdout(&o));
    std::fs::rename(&moved, &taxonomy).unwrap();

    // A label the file does not have: refused, naming it and its row.
    let mut csv = std::fs::read_to_string(&fx.csv).unwrap();
    csv.push_str("some new gadget,Gadgets,x-1\n");
    std::fs::write(&fx.csv, csv).unwrap();
    let o = lexical_train(&fx, &fx.path("other"), &["--taxonomy", &taxonomy.display().to_string()]);
    assert_clean_failure(&o, &["label `Gadgets` is not in the taxonomy", "row 225", "taxonomy.txt"]);
}

#[test]
fn a_cascade_threshold_can_apply_at_a_level_of_the_taxonomy() {
    let fx = Fixture::new(10);
    let rows = write_paths(&fx.csv, 12, true, str::to_string);
    let registry = fx.path("registry");
    let o = lexical_train(&fx, &registry, &["--name", "lex"]);
    assert!(o.status.success(), "lexical: {}", stderr(&o));
    let o = run_strings(&train_args(&fx, "registry", &["--epochs", "1"]));
    assert!(o.status.success(), "transformer: {}", stderr(&o));
    let input = fx.path("catalogue.parquet");
    let catalogue: Vec<(i64, Option<String>)> =
        rows.iter().enumerate().map(|(i, (title, _))| (i as i64, Some(title.clone()))).collect();
    write_catalogue(&input, &catalogue);
    // The same threshold on the leaf's confidence and on its top-level category's score.
    let mut second_stage = Vec::new();
    for level in ["0", "1"] {
        let name = format!("cascade{level}");
        let o = prodcat(&[
            "cascade",
            "--lexical",
            &registry.join("lex").display().to_string(),
            "--transformer",
            &registry.join("tiny").display().to_string(),
            "--out",
            &registry.display().to_string(),
            "--name",
            &name,
            "--threshold",
            "0.6",
            "--level",
            level,
        ]);
        assert!(o.status.success(), "cascade --level {level}: {}", stderr(&o));
        let card = read_card(&registry.join(&name).join("current"));
        assert_eq!(card["model"]["level"].as_u64().unwrap_or(0), level.parse::<u64>().unwrap(), "{card}");
        let out = fx.path(&format!("out{level}"));
        let o = prodcat(&[
            "relabel",
            "--no-progress",
            "--model",
            &registry.join(&name).display().to_string(),
            "--input",
            &input.display().to_string(),
            "--output",
            &out.display().to_string(),
        ]);
        assert!(o.status.success(), "relabel: {}", stderr(&o));
        let stages = string_column(&read_parquet_dir(&out), "stage");
        assert_eq!(stages.len(), rows.len());
        second_stage.push(stages.iter().filter(|s| *s != "lexical").count());
    }
    // Vague titles are unsure of their leaf but sure of their category: at level 1 the lexical
    // model keeps them.
    assert!(second_stage[0] >= rows.len() / 6, "{second_stage:?} of {}", rows.len());
    assert!(second_stage[1] * 2 < second_stage[0], "{second_stage:?}");
}
