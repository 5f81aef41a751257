//! Deployment artefacts checked with the real tools: the Kubernetes manifests against the API
//! schemas offline (kubernetes-validate) plus their wiring, the pipelines they run through
//! `prodcat check`, and the Prometheus alert rules and scrape config through `promtool`.
//! `scripts/test.sh` installs the tools (`provision.sh ops`) and sets PRODCAT_REQUIRE_TOOLS=1, so
//! there a missing tool fails the test; elsewhere it skips with a message.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `probe` (a command line) runs; a missing tool fails under PRODCAT_REQUIRE_TOOLS=1.
fn tool(what: &str, probe: &mut Command) -> bool {
    let ok = probe.output().is_ok_and(|o| o.status.success());
    if !ok {
        let required = std::env::var("PRODCAT_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(!required, "{what} is missing although scripts/test.sh installs it (provision.sh ops)");
        eprintln!("skipped: {what} is not installed (bash scripts/provision.sh ops)");
    }
    ok
}

fn python() -> Command {
    let mut c = Command::new("python3");
    c.env("PYTHONPATH", root().join(".deps/python"));
    c
}

fn validate(k8s: &Path, out: &Path) -> Output {
    python()
        .arg(root().join("scripts/validate-deploy.py"))
        .arg("--k8s")
        .arg(k8s)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn kubernetes_manifests_validate_offline_and_their_pipelines_pass_check() {
    if !tool("kubernetes-validate", python().args(["-c", "import kubernetes_validate"])) {
        return;
    }
    let fx = Fixture::new(300);
    let k8s = root().join("deploy/k8s");
    let o = validate(&k8s, &fx.path("pipelines"));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    eprintln!("{}", stdout(&o));

    // The pipelines the pods run pass `prodcat check` (paths pointed at this machine's).
    let registry = tiny_registry(&fx);
    for file in ["serving.toml", "learner.toml"] {
        let path = fx.path(&format!("pipelines/{file}"));
        let o = prodcat(&[
            "check",
            &path.display().to_string(),
            "--set",
            &format!("model.path={}", registry.join("tiny").display()),
            "--set",
            &format!("training.base_model={}", fx.base.display()),
            "--set",
            &format!("training.state_dir={}", fx.path("state").display()),
        ]);
        assert!(o.status.success(), "{file}: {}", stderr(&o));
    }

    // The validation can fail: a wrong probe path, an unknown field, a shard that does not match
    // the completions, and a scaler watching another group are each named.
    let broken = fx.path("k8s");
    copy_tree(&k8s, &broken);
    let edit = |file: &str, from: &str, to: &str| {
        let path = broken.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} lacks {from}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };
    edit("serving.yaml", "path: /readyz", "path: /ready");
    edit("learner.yaml", "terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 60\n      hostNetwork2: true");
    edit("relabel-cronjob.yaml", "$(JOB_COMPLETION_INDEX)/4", "$(JOB_COMPLETION_INDEX)/3");
    edit("keda-scaledobject.yaml", "consumerGroup: prodcat-catalogue", "consumerGroup: prodcat-learner");
    let o = validate(&broken, &fx.path("broken-pipelines"));
    assert!(!o.status.success());
    let err = stderr(&o);
    for needle in ["readinessProbe must GET /readyz", "hostNetwork2", "--shard $(JOB_COMPLETION_INDEX)", "consumer group"] {
        assert!(err.contains(needle), "not reported: {needle}\n{err}");
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn prometheus_alert_rules_and_scrape_config_pass_promtool() {
    if !tool("promtool", Command::new("promtool").arg("--version")) {
        return;
    }
    let rules = root().join("deploy/prometheus-alerts.yml");
    let o = Command::new("promtool").args(["check", "rules"]).arg(&rules).output().unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = Command::new("promtool").args(["check", "config", "--syntax-only"]).arg(root().join("deploy/prometheus-scrape.yml")).output().unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // And a broken rule is caught.
    let fx = Fixture::new(10);
    let bad = fx.path("bad-rules.yml");
    std::fs::write(&bad, std::fs::read_to_string(&rules).unwrap().replacen("expr: ", "expr: sum(", 1)).unwrap();
    let o = Command::new("promtool").args(["check", "rules"]).arg(&bad).output().unwrap();
    assert!(!o.status.success());
}
