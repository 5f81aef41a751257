//! `prodcat run` for Kafka pipeline files: the streaming service with its HTTP endpoint and
//! graceful shutdown on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prodcat::config::PipelineConfig;
use prodcat::metrics::Metrics;
use prodcat::pipeline::kafka::{self, Health};

pub fn run(config: PipelineConfig, ort_lib: Option<PathBuf>) -> anyhow::Result<()> {
    let runtime = super::tokio_runtime()?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let stop = Arc::new(AtomicBool::new(false));
    if !config.http.listen.is_empty() {
        let server = runtime.block_on(prodcat::http::bind(&config.http.listen, metrics.clone(), health.clone()))?;
        runtime.spawn(server);
    }
    let job = config.kafka_job(ort_lib)?;
    // Refuse to start on a version the hot-swap watcher would refuse.
    let model = prodcat::models::load_verified(job.model.clone(), &job.session)?;
    tracing::info!(model = %model.id(), kind = model.card().model.name(), topic = %job.kafka.input_topic, "starting the Kafka pipeline");
    let signal_stop = stop.clone();
    runtime.spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutdown requested: finishing records in flight, then committing");
        signal_stop.store(true, Ordering::Relaxed);
    });
    let pipeline_health = health.clone();
    let summary = runtime.block_on(async move {
        tokio::task::spawn_blocking(move || kafka::run(&job, model, metrics, pipeline_health, stop)).await
    })??;
    println!(
        "kafka pipeline stopped: {} received, {} labeled, {} dead-lettered, {} sent to review",
        summary.received, summary.labeled, summary.dead_lettered, summary.reviewed
    );
    Ok(())
}
