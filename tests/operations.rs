//! Operator commands: `prodcat models list|show|promote|rollback` on a real registry (the
//! watcher of a running pipeline follows promote and rollback), `prodcat check` reporting every
//! problem of a pipeline file at once, and JSON log lines.

mod common;

use common::*;
use prodcat::learn::watch::ModelWatcher;
use prodcat::metrics::Metrics;
use prodcat::registry::ModelCard;
use prodcat::serve::{ModelSlot, SessionSettings};

fn current(fx: &Fixture) -> String {
    std::fs::read_link(fx.path("registry/tiny/current")).unwrap().to_string_lossy().into_owned()
}

#[test]
fn models_list_show_promote_and_rollback_move_current_and_the_watcher_follows() {
    let fx = Fixture::new(300);
    tiny_registry(&fx);
    tiny_registry(&fx); // v2, current
    let registry = fx.path("registry").display().to_string();
    let model = fx.path("registry/tiny").display().to_string();

    let o = prodcat(&["models", "list", &registry]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    eprintln!("{table}");
    let row = |v: &str| table.lines().find(|l| l.split_whitespace().nth(1) == Some(v)).unwrap_or_default().to_string();
    assert!(row("v1").starts_with("tiny") && row("v1").contains("transformer") && row("v1").contains("passed"));
    assert!(row("v2").contains(" * "), "v2 is current: {table}");
    assert!(!row("v1").contains(" * "));

    let o = prodcat(&["models", "show", &model]);
    let card = stdout(&o);
    assert!(o.status.success() && card.contains("tiny v2") && card.contains("parity:       passed"), "{card}");
    assert!(card.contains("replay:") && card.contains("labels:       Books"), "{card}");

    // A pipeline serving v2 and watching the model folder.
    let session = SessionSettings::default();
    let slot = ModelSlot::new(prodcat::models::open(&fx.path("registry/tiny/current"), &session).unwrap());
    let mut watcher =
        ModelWatcher::new(&fx.path("registry/tiny"), slot.clone(), session, std::sync::Arc::new(Metrics::new()));
    assert_eq!(watcher.check(), None);

    let o = prodcat(&["models", "rollback", &model]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("current v2 -> v1"), "{}", stdout(&o));
    assert_eq!(current(&fx), "v1");
    assert_eq!(watcher.check().as_deref(), Some("v1"), "the running pipeline swaps back");

    let o = prodcat(&["models", "promote", &model, "v2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(current(&fx), "v2");
    assert_eq!(watcher.check().as_deref(), Some("v2"));

    // A version that fails the serving checks is never made current.
    let card_path = fx.path("registry/tiny/v1/card.json");
    let mut card = ModelCard::read(&card_path).unwrap();
    card.parity.as_mut().unwrap().passed = false;
    card.write(&card_path).unwrap();
    let o = prodcat(&["models", "promote", &model, "v1"]);
    assert_clean_failure(&o, &["tiny v1 fails the serving checks", "parity check failed"]);
    let o = prodcat(&["models", "rollback", &model]);
    assert_clean_failure(&o, &["skipping v1", "no version older than v2"]);
    assert_eq!(current(&fx), "v2");
    let o = prodcat(&["models", "promote", &model, "v9"]);
    assert_clean_failure(&o, &["v9"]);
    let o = prodcat(&["models", "list", &fx.path("nowhere").display().to_string()]);
    assert_clean_failure(&o, &["nowhere"]);
}

#[test]
fn check_reports_every_problem_of_a_pipeline_at_once_and_passes_a_good_one() {
    let fx = Fixture::new(300);
    let registry = tiny_registry(&fx);
    let good = fx.path("good.toml");
    std::fs::write(
        &good,
        format!(
            "[pipeline]\nkind = \"kafka\"\n[model]\npath = \"{}\"\n[kafka]\ninput_topic = \"in\"\noutput_topic = \"out\"\n",
            registry.join("tiny").display()
        ),
    )
    .unwrap();
    let o = prodcat(&["check", &good.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("ok"), "{}", stdout(&o));

    // Broken in five independent ways: all five reported, nothing started, exit non-zero.
    let blocked = fx.path("blocked");
    std::fs::write(&blocked, "a file where a folder should be").unwrap();
    let bad = fx.path("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[pipeline]\nkind = \"kafka\"\n[model]\npath = \"{}\"\n[kafka]\ninput_topic = \"in\"\noutput_topic = \"in\"\n\
             review_threshold = 2.0\n[training]\nenabled = true\nbase_model = \"{}\"\nstate_dir = \"{}\"\n",
            fx.path("no-such-model").display(),
            fx.base.display(),
            blocked.join("state").display()
        ),
    )
    .unwrap();
    let o = prodcat(&["check", &bad.display().to_string()]);
    assert_clean_failure(
        &o,
        &[
            "5 problem(s)",
            "training.trusted_label_field",
            "kafka.output_topic: `in` is also kafka.input_topic",
            "kafka.review_threshold",
            "model.path:",
            "training.state_dir:",
        ],
    );
    // The same with JSON logs: one JSON object per line.
    let o = prodcat(&["--log-format", "json", "check", &bad.display().to_string()]);
    assert!(!o.status.success());
    let lines: Vec<&str> = std::str::from_utf8(&o.stderr).unwrap().lines().collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("5 problem(s)")), "{lines:?}");
}
