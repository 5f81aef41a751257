//! Pipeline configuration accepts every key prodcat documents and refuses a misspelt one, naming
//! it: every key of `pipelines/*.toml` and of the deployment's pipelines, every `PRODCAT__…`
//! variable the docs name, and a misspelling in each section of the configuration.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use prodcat::config::PipelineConfig;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files_in(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .expect("a folder of the repository")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// Every `section.key` path of a TOML table (tables recurse; a value is a leaf).
fn key_paths(table: &toml_tree::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml_tree::Value::Object(t) => key_paths(t, &path, out),
            _ => out.push(path),
        }
    }
}

/// A TOML file's keys, read with the `config` crate (a TOML reader prodcat already has) as a JSON
/// tree.
mod toml_tree {
    pub type Table = serde_json::Map<String, serde_json::Value>;
    pub use serde_json::Value;

    pub fn parse(text: &str) -> Table {
        let c = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .expect("TOML parses");
        match c.try_deserialize::<Value>().expect("TOML as a tree") {
            Value::Object(t) => t,
            other => panic!("a TOML document is a table, not {other}"),
        }
    }
}

/// The TOML pipelines embedded in `deploy/k8s/configmap.yaml` (`name.toml: |` blocks).
fn configmap_pipelines() -> Vec<(String, String)> {
    let yaml = std::fs::read_to_string(root().join("deploy/k8s/configmap.yaml")).expect("the ConfigMap");
    let mut out = Vec::new();
    let mut current: Option<(String, String, usize)> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some((_, body, block_indent)) = current.as_mut() {
            if line.trim().is_empty() || indent > *block_indent {
                body.push_str(line.get(*block_indent + 2..).unwrap_or(""));
                body.push('\n');
                continue;
            }
            let (name, body, _) = current.take().expect("a block is open");
            out.push((name, body));
        }
        if let Some(name) = line.trim().strip_suffix(": |").filter(|n| n.ends_with(".toml")) {
            current = Some((name.to_string(), String::new(), indent));
        }
    }
    out.extend(current.map(|(n, b, _)| (n, b)));
    out
}

fn merge_text(toml: &str, overrides: &[String]) -> prodcat::Result<PipelineConfig> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pipeline.toml");
    std::fs::write(&file, toml).expect("pipeline file");
    PipelineConfig::merge(Some(&file), overrides)
}

#[test]
fn every_key_of_the_pipeline_files_and_the_deployment_is_accepted() {
    let mut checked = 0;
    let mut sources: Vec<(String, String)> = files_in("pipelines", "toml")
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    let deployed = configmap_pipelines();
    assert_eq!(deployed.len(), 2, "serving.toml and learner.toml in the ConfigMap");
    sources.extend(deployed);
    for (name, text) in sources {
        let mut keys = Vec::new();
        key_paths(&toml_tree::parse(&text), "", &mut keys);
        assert!(!keys.is_empty(), "{name}: no keys");
        if let Err(e) = merge_text(&text, &[]) {
            panic!("{name}: {e}");
        }
        checked += keys.len();
    }
    assert!(checked > 40, "only {checked} keys checked");
}

/// The value of `path` in the default configuration, as a `--set` value.
fn default_value(defaults: &Value, path: &str) -> Option<String> {
    let v = path.split('.').try_fold(defaults, |v, k| v.get(k))?;
    Some(match v {
        Value::String(s) => s.clone(),
        Value::Null => return None,
        Value::Array(a) => {
            a.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string)).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    })
}

#[test]
fn every_documented_environment_variable_names_a_key() {
    let defaults = serde_json::to_value(PipelineConfig::default()).unwrap();
    let mut docs: Vec<PathBuf> = vec![root().join("README.md"), root().join("deploy/README.md")];
    docs.extend(files_in("docs", "md"));
    docs.extend(files_in("deploy/k8s", "yaml"));
    docs.extend(files_in("deploy/k8s/gpu", "yaml"));
    let mut keys = BTreeSet::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (i, _) in text.match_indices("PRODCAT__") {
            let name: String = text[i + "PRODCAT__".len()..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let key = name.trim_end_matches('_').split("__").map(str::to_lowercase).collect::<Vec<_>>().join(".");
            // `PRODCAT__SECTION__KEY`, `PRODCAT__…`: the pattern, not a variable.
            if !key.is_empty() && key != "section.key" {
                keys.insert(key);
            }
        }
    }
    assert!(keys.len() >= 10, "only {} documented variables: {keys:?}", keys.len());
    for key in &keys {
        let value = default_value(&defaults, key).unwrap_or_else(|| panic!("documented `{key}` is not a key"));
        if let Err(e) = PipelineConfig::merge(None, &[format!("{key}={value}")]) {
            panic!("documented `{key}` is refused: {e}");
        }
    }
}

/// Every section (a table of settings, not a free map such as `kafka.properties`) and its keys.
fn sections(v: &Value, path: &str, out: &mut Vec<(String, Vec<String>)>) {
    let Value::Object(map) = v else { return };
    if map.is_empty() {
        return; // a free map (librdkafka properties, per-field limits) or an empty list of keys
    }
    out.push((path.to_string(), map.keys().cloned().collect()));
    for (k, child) in map {
        let child_path = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        sections(child, &child_path, out);
    }
}

#[test]
fn a_misspelt_key_is_refused_in_every_section_and_named() {
    let defaults = serde_json::to_value(PipelineConfig::default()).unwrap();
    let mut all = Vec::new();
    sections(&defaults, "", &mut all);
    let names: Vec<&str> = all.iter().map(|(s, _)| s.as_str()).collect();
    for expected in ["engine", "engine.limits", "relabel.rotation", "training.settings", "training.settings.lora"] {
        assert!(names.contains(&expected), "section {expected} not found in {names:?}");
    }
    for expected in ["training.lexical", "training.lexical.featurizer", "kafka", "files.rotation", "model"] {
        assert!(names.contains(&expected), "section {expected} not found in {names:?}");
    }
    for (section, keys) in &all {
        // A key of the section with one letter doubled: `window` → `windoww`.
        let key = keys.iter().find(|k| !keys.contains(&format!("{k}{}", k.chars().last().unwrap()))).unwrap();
        let typo = format!("{key}{}", key.chars().last().unwrap());
        let path = if section.is_empty() { typo.clone() } else { format!("{section}.{typo}") };
        // A top-level section misspelt is `[enginee]` with one key.
        let toml = if section.is_empty() { format!("[{typo}]\nx = 1\n") } else { format!("[{section}]\n{typo} = 1\n") };
        match merge_text(&toml, &[]) {
            Ok(_) => panic!("`{path}` was accepted:\n{toml}"),
            Err(e) => {
                let message = e.to_string();
                assert!(message.contains(&typo), "`{path}` refused without naming it: {message}");
            }
        }
        // The same through an override (and so the environment, which the same builder reads).
        let Err(e) = PipelineConfig::merge(None, &[format!("{path}=1")]) else {
            panic!("--set {path}=1 was accepted");
        };
        assert!(e.to_string().contains(&typo), "--set {path}: {e}");
    }
    eprintln!("{} sections: {:?}", all.len(), all.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>());
    assert!(all.len() >= 15, "only {} sections", all.len());
}
