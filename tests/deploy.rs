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
    edit(
        "learner.yaml",
        "terminationGracePeriodSeconds: 60",
        "terminationGracePeriodSeconds: 60\n      hostNetwork2: true",
    );
    edit("relabel-cronjob.yaml", "$(JOB_COMPLETION_INDEX)/4", "$(JOB_COMPLETION_INDEX)/3");
    edit("keda-scaledobject.yaml", "consumerGroup: prodcat-catalogue", "consumerGroup: prodcat-learner");
    let o = validate(&broken, &fx.path("broken-pipelines"));
    assert!(!o.status.success());
    let err = stderr(&o);
    for needle in
        ["readinessProbe must GET /readyz", "hostNetwork2", "--shard $(JOB_COMPLETION_INDEX)", "consumer group"]
    {
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
    let o = Command::new("promtool")
        .args(["check", "config", "--syntax-only"])
        .arg(root().join("deploy/prometheus-scrape.yml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // And a broken rule is caught.
    let fx = Fixture::new(10);
    let bad = fx.path("bad-rules.yml");
    std::fs::write(&bad, std::fs::read_to_string(&rules).unwrap().replacen("expr: ", "expr: sum(", 1)).unwrap();
    let o = Command::new("promtool").args(["check", "rules"]).arg(&bad).output().unwrap();
    assert!(!o.status.success());
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Kills the child process when dropped (a failing test must not leave Prometheus running).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_dashboard_query_returns_data_from_prometheus_scraping_a_running_pipeline() {
    use common::kafka::*;
    use std::time::{Duration, Instant};
    let Some(brokers) = broker() else { return };
    if !tool("prometheus", Command::new("prometheus").arg("--version")) {
        return;
    }
    let fx = Fixture::new(600);
    let model = tiny_registry(&fx);
    let t = Topics::new(&brokers, "dashboard", 2);
    // Exactly-once (transactions panel), trusted labels and a low training trigger (learning
    // panels), bad records (dead letters), the fixture's review threshold (review rate).
    let extra = format!(
        "exactly_once = true\ntransactional_id = \"{}\"\n{}",
        unique("txn"),
        label_store_only(&fx).replace("min_new_labels = 1000000", "min_new_labels = 300\nmin_examples_per_class = 5")
    );
    let (pipeline, port) = pipeline_file(&fx, &brokers, &t, &model, &extra);
    let mut child = start(&pipeline);
    wait_ready(port, &mut child);

    let prom_port = free_port();
    let config = fx.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prodcat\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
        ),
    )
    .unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", fx.path("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );

    let mut records: Vec<(String, Vec<u8>)> = (0..600).map(|i| labeled_product(&fx, i)).collect();
    records.extend([("b1".into(), b"{not json".to_vec()), ("b2".into(), br#"{"id": "b2"}"#.to_vec())]);
    produce(&brokers, &t.input, &records);
    let deadline = Instant::now() + Duration::from_secs(240);
    while !http_get(port, "/metrics").is_some_and(|(_, m)| m.contains("prodcat_training_runs_total{")) {
        assert!(Instant::now() < deadline, "no training run finished");
        std::thread::sleep(Duration::from_millis(500));
    }
    // A trickle keeps the rates alive while the panels are queried.
    produce(&brokers, &t.input, &(600..700).map(|i| product(&fx, i)).collect::<Vec<_>>());

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("deploy/grafana/prodcat.json")).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "1m");
            queries.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let mut empty = Vec::new();
    for (title, expr) in &queries {
        let deadline = Instant::now() + Duration::from_secs(60);
        let found = loop {
            let answer = http_get(prom_port, &format!("/api/v1/query?query={}", encode(expr))).map(|(_, b)| b);
            let body = answer.as_deref().and_then(|b| b.split("\r\n\r\n").nth(1)).unwrap_or_default();
            let series = serde_json::from_str::<serde_json::Value>(body.trim())
                .ok()
                .and_then(|v| v["data"]["result"].as_array().map(Vec::len))
                .unwrap_or(0);
            if series > 0 {
                break Some(series);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        eprintln!("{:>3} series  {title}: {expr}", found.map_or("--".to_string(), |n| n.to_string()));
        if found.is_none() {
            empty.push(format!("{title}: {expr}"));
        }
    }
    stop(child);
    assert!(empty.is_empty(), "panel queries without data:\n{}", empty.join("\n"));
}
