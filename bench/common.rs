//! Helpers shared by the benchmarks (included with `#[path]`; not every bench uses every one).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use prodcat::config::PipelineConfig;
use prodcat::metrics::Metrics;
use prodcat::pipeline::relabel::{RelabelSummary, relabel};

/// The p-th percentile of sorted values (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() { f64::NAN } else { sorted[((sorted.len() - 1) as f64 * p).round() as usize] }
}

/// Peak resident set size of this process, MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// PriceRunner's CSV, or None (with a message) where ../shared/data is absent.
pub fn pricerunner_csv(root: &Path) -> Option<PathBuf> {
    let csv = root.join("../shared/data/pricerunner/pricerunner.csv");
    if csv.exists() {
        Some(csv)
    } else {
        println!("skipped: {} not found (PriceRunner lives in ../shared/data on prepared machines)", csv.display());
        None
    }
}

/// PriceRunner's (id, title) pairs.
pub fn pricerunner_titles(runtime: &tokio::runtime::Runtime, csv: &Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let columns = runtime.block_on(prodcat::data::read_string_columns(csv, &["Product ID", "Product Title"]))?;
    Ok(columns[0].iter().zip(&columns[1]).filter_map(|(i, t)| Some((i.clone()?, t.clone()?))).unzip())
}

/// A Parquet file of the titles repeated `copies` times in file order (written once, then reused).
pub fn titles_parquet(work: &Path, ids: &[String], titles: &[String], copies: usize) -> anyhow::Result<PathBuf> {
    let input = work.join(format!("pricerunner-x{copies}.parquet"));
    if input.exists() {
        return Ok(input);
    }
    std::fs::create_dir_all(work)?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
    ]));
    let props =
        parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(32_768)).build();
    let partial = input.with_extension("partial");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&partial)?, schema.clone(), Some(props))?;
    for copy in 0..copies {
        let id = StringArray::from(ids.iter().map(|i| format!("{copy}-{i}")).collect::<Vec<_>>());
        let title = StringArray::from(titles.to_vec());
        writer.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(id), Arc::new(title)])?)?;
    }
    writer.close()?;
    std::fs::rename(&partial, &input)?;
    Ok(input)
}

/// The benchmark input: PriceRunner titles ×`copies` in one Parquet file under the bench folder.
pub struct Input {
    pub runtime: tokio::runtime::Runtime,
    pub csv: PathBuf,
    pub titles: Vec<String>,
    pub work: PathBuf,
    pub parquet: PathBuf,
}

/// Builds (once) the Parquet input; None where ../shared/data is absent.
pub fn pricerunner_input(copies: usize) -> anyhow::Result<Option<Input>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(csv) = pricerunner_csv(root) else { return Ok(None) };
    let runtime = tokio::runtime::Runtime::new()?;
    let (ids, titles) = pricerunner_titles(&runtime, &csv)?;
    println!("PriceRunner: {} titles; input ×{copies} = {} rows", titles.len(), titles.len() * copies);
    let work = root.join(".prodcat/bench/relabel");
    let parquet = titles_parquet(&work, &ids, &titles, copies)?;
    Ok(Some(Input { runtime, csv, titles, work, parquet }))
}

/// One end-to-end relabel run of `input` with `model`: the summary, wall seconds and metrics.
pub fn relabel_once(
    runtime: &tokio::runtime::Runtime,
    model: &Path,
    input: &Path,
    out: &Path,
    device: &str,
    max_records: usize,
) -> anyhow::Result<(RelabelSummary, f64, Arc<Metrics>)> {
    let _ = std::fs::remove_dir_all(out);
    let mut config = PipelineConfig::merge(
        None,
        &[
            format!("model.path={}", model.display()),
            format!("relabel.output={}", out.display()),
            format!("model.device={device}"),
            "relabel.progress=false".into(),
            format!("engine.limits.max_records={max_records}"),
        ],
    )?;
    config.relabel.inputs = vec![input.display().to_string()];
    config.validate("bench")?;
    let metrics = Arc::new(Metrics::new());
    let started = Instant::now();
    let summary = runtime.block_on(relabel(config.relabel_job(None)?, metrics.clone()))?;
    Ok((summary, started.elapsed().as_secs_f64(), metrics))
}

/// Whether a Kafka broker answers at `brokers`; prints the skip message when none does.
pub fn broker_answers(brokers: &str) -> bool {
    let up = std::net::TcpStream::connect(brokers).is_ok();
    if !up {
        println!("skipped: no Kafka broker at {brokers} (start one with `bash scripts/kafka-broker.sh start`)");
    }
    up
}

/// Sends `record`, polling the producer while its queue is full.
pub fn send_blocking<C: rdkafka::producer::ProducerContext>(
    producer: &rdkafka::producer::BaseProducer<C>,
    mut record: rdkafka::producer::BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                producer.poll(std::time::Duration::from_millis(1));
            }
        }
    }
}
