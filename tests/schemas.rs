//! The schemas in `schemas/` are valid Draft 2020-12 schemas and list what the code writes: the
//! `stage` values every family's rows can carry and every dead-letter reason. The records
//! themselves are validated against them where the tests produce them (`tests/relabel.rs`: labeled
//! Parquet rows and dead-letter lines; `tests/kafka.rs`: labeled, review and dead-letter records).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{python, tool};
use prodcat::common::RejectReason;
use prodcat::models::FAMILIES;

fn schema(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn strings(v: &serde_json::Value) -> BTreeSet<String> {
    let items = v.as_array().unwrap_or_else(|| panic!("not a list: {v}"));
    items.iter().map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")).to_string()).collect()
}

#[test]
fn stages_and_reasons_are_those_the_code_writes() {
    let stages: BTreeSet<String> = FAMILIES.iter().flat_map(|f| f.stages()).map(|k| k.name().to_string()).collect();
    let labeled = schema("labeled-output.schema.json");
    assert_eq!(strings(&labeled["properties"]["stage"]["enum"]), stages);
    let reasons: BTreeSet<String> = RejectReason::ALL.iter().map(|r| r.as_str().to_string()).collect();
    assert_eq!(strings(&schema("dead-letter.schema.json")["$defs"]["reason"]["enum"]), reasons);
}

#[test]
fn every_schema_is_a_valid_draft_2020_12_schema() {
    if !tool("python jsonschema", python().args(["-c", "import jsonschema"])) {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if !path.to_string_lossy().ends_with(".schema.json") {
            continue;
        }
        let o = python()
            .args(["-c", "import json, sys; from jsonschema import Draft202012Validator as V; V.check_schema(json.load(open(sys.argv[1])))"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
        checked += 1;
    }
    assert_eq!(checked, 5, "schemas checked");
}
