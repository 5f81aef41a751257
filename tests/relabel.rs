//! `prodcat relabel` / `prodcat run`: Parquet in, labeled Parquet/Arrow out, dead letters,
//! filters, shards, restart after a kill, and clear errors for bad input.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

/// Catalogue rows: good titles from the synthetic products, plus bad ones.
fn catalogue(fx: &Fixture, n: usize, first_id: i64) -> Vec<(i64, Option<String>)> {
    (0..n).map(|i| (first_id + i as i64, Some(fx.products[i % fx.products.len()].title.clone()))).collect()
}

/// A fixture with a tiny registry and a catalogue of `rows` products at `name`: the fixture, the
/// registry and the catalogue's path.
fn with_catalogue(name: &str, rows: usize) -> (Fixture, String, String) {
    let fx = Fixture::new(300);
    let registry = tiny_registry(&fx).display().to_string();
    let input = fx.path(name);
    write_catalogue(&input, &catalogue(&fx, rows, 0));
    (fx, registry, input.display().to_string())
}

#[test]
fn labels_every_row_and_dead_letters_the_bad_ones() {
    let fx = Fixture::new(300);
    let registry = tiny_registry(&fx);
    let input = fx.path("in");
    std::fs::create_dir_all(&input).unwrap();
    let mut rows = catalogue(&fx, 250, 0);
    rows[3].1 = None; // missing title
    rows[7].1 = Some("   ".into()); // blank title
    rows[11].1 = Some("x".repeat(20_000)); // oversized
    write_catalogue(&input.join("a.parquet"), &rows);
    write_catalogue(&input.join("b.parquet"), &catalogue(&fx, 120, 1000));
    let out = fx.path("out");
    let o = relabel(&registry.display().to_string(), &input.display().to_string(), &out.display().to_string(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = stdout(&o);
    assert!(summary.contains("dead-lettered"), "{summary}");

    let batches = read_parquet_dir(&out);
    let ids = i64_column(&batches, "id");
    assert_eq!(ids.len(), 250 + 120 - 3);
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a row was written twice");
    for bad in [3, 7, 11] {
        assert!(!unique.contains(&bad));
    }
    let labels = string_column(&batches, "label");
    let known = ["Books", "Fridges", "Laptops", "Phones", "Shoes"];
    assert!(labels.iter().all(|l| known.contains(&l.as_str())));
    assert!(string_column(&batches, "model_version").iter().all(|v| v == "v1"));
    assert!(string_column(&batches, "brand").iter().all(|b| b.starts_with("brand")), "passthrough column lost");
    // Source positions point back at the input rows.
    let files = string_column(&batches, "source_file");
    let source_rows = i64_column(&batches, "source_row");
    for ((id, file), row) in ids.iter().zip(&files).zip(&source_rows) {
        let expected = if file.ends_with("a.parquet") { *id } else { id - 1000 };
        assert_eq!(*row, expected);
    }
    // The model should get most synthetic titles right.
    let correct = ids
        .iter()
        .zip(&labels)
        .filter(|(id, label)| fx.products[(**id as usize % 1000) % fx.products.len()].category == **label)
        .count();
    assert!(correct as f64 > 0.6 * ids.len() as f64, "{correct}/{}", ids.len());

    let dead: Vec<serde_json::Value> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("dead-letter-"))
        .flat_map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let reasons: BTreeSet<String> = dead.iter().map(|d| d["reason"].as_str().unwrap().to_string()).collect();
    assert_eq!(reasons, ["empty_text", "missing_text", "oversized"].map(String::from).into_iter().collect());
    assert!(dead.iter().all(|d| d["record"]["id"].is_i64() && d["source_row"].is_i64()));
    // Both kinds of output record are what schemas/ publishes.
    assert_valid("labeled-output.schema.json", &batches_as_json(&batches));
    assert_valid("dead-letter.schema.json", &dead);
    // No temporary files are left behind.
    assert!(std::fs::read_dir(&out).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().ends_with(".tmp")));
}

#[test]
fn arrow_output_where_filter_and_shards() {
    let (fx, registry, input) = with_catalogue("cat.parquet", 400);

    let out = fx.path("arrow-out");
    let o = relabel(&registry, &input, &out.display().to_string(), &["--format", "arrow", "--where", "price < 50"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut rows = 0;
    let mut batches = Vec::new();
    for entry in
        std::fs::read_dir(&out).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "arrow"))
    {
        let reader = arrow::ipc::reader::FileReader::try_new(std::fs::File::open(entry.path()).unwrap(), None).unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let prices = batch.column_by_name("price").unwrap();
            let prices = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(prices);
            assert!(prices.values().iter().all(|p| *p < 50.0));
            rows += batch.num_rows();
            batches.push(batch);
        }
    }
    assert_eq!(rows, 200);
    assert_valid("labeled-output.schema.json", &batches_as_json(&batches));

    let mut seen = Vec::new();
    for shard in ["0/2", "1/2"] {
        let dir = fx.path(&format!("shard-{}", &shard[..1]));
        let o = relabel(&registry, &input, &dir.display().to_string(), &["--shard", shard]);
        assert!(o.status.success(), "{}", stderr(&o));
        let ids = i64_column(&read_parquet_dir(&dir), "id");
        assert_eq!(ids.len(), 200);
        seen.extend(ids);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..400).collect::<Vec<_>>(), "shards must split the rows exactly");
}

#[test]
fn killed_relabel_resumes_and_writes_every_row_once() {
    let fx = Fixture::new(300);
    let registry = tiny_registry(&fx).display().to_string();
    let input = fx.path("in");
    std::fs::create_dir_all(&input).unwrap();
    let files = 12;
    for f in 0..files {
        write_catalogue(&input.join(format!("part-{f:02}.parquet")), &catalogue(&fx, 3000, f * 10_000));
    }
    let out = fx.path("out");
    let args = [
        "relabel",
        "--no-progress",
        "--model",
        &registry,
        "--input",
        &input.display().to_string(),
        "--output",
        &out.display().to_string(),
    ];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_prodcat"))
        .args(args)
        .env("PRODCAT_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let manifest = out.join("_prodcat_manifest.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !manifest.exists() {
        assert!(child.try_wait().unwrap().is_none(), "relabel ended before its first file was complete");
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let completed = done["completed"].as_object().unwrap().len() as i64;
    assert!(completed < files, "the job finished before the kill; the test needs more input");

    let o = prodcat(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut ids = i64_column(&read_parquet_dir(&out), "id");
    ids.sort_unstable();
    let expected: Vec<i64> = (0..files).flat_map(|f| (0..3000).map(move |i| f * 10_000 + i)).collect();
    assert_eq!(ids.len(), expected.len(), "rows lost or duplicated after the restart");
    assert_eq!(ids, expected);
    assert!(stdout(&o).contains("already done"), "{}", stdout(&o));
}

#[test]
fn bad_relabel_input_gives_clear_errors_and_no_partial_output() {
    let (fx, registry, good) = with_catalogue("good.parquet", 50);
    let not_parquet = fx.path("notes.parquet");
    std::fs::write(&not_parquet, "this is not parquet").unwrap();
    let out = fx.path("out");
    let out_arg = out.display().to_string();

    let o = relabel(&registry, &not_parquet.display().to_string(), &out_arg, &[]);
    assert_clean_failure(&o, &["notes.parquet", "Parquet"]);
    let o = relabel(&registry, &good, &out_arg, &["--text-columns", "name"]);
    assert_clean_failure(&o, &["`name`", "good.parquet"]);
    let o = relabel(&registry, &good, &out_arg, &["--where", "price >>> 3"]);
    assert_clean_failure(&o, &["--where"]);
    let o = relabel(&registry, &good, &out_arg, &["--where", "no_such_column = 1"]);
    assert_clean_failure(&o, &["--where", "no_such_column"]);
    let o = relabel(&registry, &fx.path("missing/*.parquet").display().to_string(), &out_arg, &[]);
    assert_clean_failure(&o, &["missing"]);
    // CUDA on a CPU-only ONNX Runtime: one clear line and CPU — or, required, an error.
    let cpu_build = prodcat::runtime::find_in_deps("libonnxruntime.so").expect("scripts/provision.sh installs it");
    let cpu_build = cpu_build.display().to_string();
    // `relabel --device cuda` into `out`, with `first` flags before the usual ones.
    let on_cuda = |first: &[&str], out: &str| {
        let out = fx.path(out).display().to_string();
        relabel(&registry, &good, &out, &[first, &["--device", "cuda"][..]].concat())
    };
    let o = on_cuda(&["--ort-lib", &cpu_build], "cuda-out");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).matches("CUDA requested but this ONNX Runtime build has no CUDA support").count(),
        1,
        "{}",
        stderr(&o)
    );
    let o = on_cuda(&["--ort-lib", &cpu_build, "--require-gpu"], "cuda-out");
    assert_clean_failure(&o, &["model.require_gpu", "CUDA was required", "no CUDA support"]);
    // The GPU build (`scripts/provision.sh gpu`), found on its own: CUDA where a GPU is, else the
    // same single line naming why (here: no driver) — and, required, an error.
    if prodcat::runtime::find_gpu_build().is_some() {
        let o = on_cuda(&[], "cuda-build-out");
        assert!(o.status.success(), "{}", stderr(&o));
        let err = stderr(&o);
        if !err.contains("execution_provider=\"CUDA\"") && !err.contains("execution_provider=CUDA") {
            assert_eq!(err.matches("CUDA requested but").count(), 1, "{err}");
            assert!(!err.contains("no CUDA support"), "the GPU build was not the one loaded: {err}");
            let o = on_cuda(&["--require-gpu"], "cuda-build-out");
            assert_clean_failure(&o, &["model.require_gpu", "CUDA was required"]);
        }
    } else {
        eprintln!("skipped the GPU-build part: .deps/lib-cuda is absent (`bash scripts/provision.sh gpu`)");
    }
    // A version the hot-swap watcher would refuse does not serve a relabel either.
    let v1 = fx.path("registry/tiny/v1");
    let mut card = prodcat::registry::ModelCard::read(&v1.join("card.json")).unwrap();
    // (Sealed again as publishing would: a changed card is otherwise refused as corrupt first.)
    card.parity.as_mut().unwrap().passed = false;
    card.write(&v1.join("card.json")).unwrap();
    prodcat::registry::checksums::seal(&v1).unwrap();
    let o = relabel(&registry, &good, &out_arg, &[]);
    assert_clean_failure(&o, &["parity check failed"]);
    card.parity.as_mut().unwrap().passed = true;
    card.write(&v1.join("card.json")).unwrap();
    prodcat::registry::checksums::seal(&v1).unwrap();
    // An output "folder" that is a file cannot be created.
    let blocked = fx.path("blocked");
    std::fs::write(&blocked, "").unwrap();
    let o = relabel(&registry, &good, &blocked.join("sub").display().to_string(), &[]);
    assert_clean_failure(&o, &["--output", "blocked"]);
    // Nothing was written by any failed run.
    let leftovers: Vec<_> =
        std::fs::read_dir(&out).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(leftovers.iter().all(|n| !n.to_string_lossy().contains(".parquet")), "{leftovers:?}");
}

#[test]
fn a_full_disk_ends_the_relabel_with_a_clear_error() {
    let fx = Fixture::new(300);
    let registry = tiny_registry(&fx).display().to_string();
    let input = fx.path("big.parquet");
    // Distinct titles, so the labeled output cannot compress into the 200 KiB disk.
    let rows: Vec<(i64, Option<String>)> =
        catalogue(&fx, 60_000, 0).into_iter().map(|(id, t)| (id, t.map(|t| format!("{t} sku{id:08}")))).collect();
    write_catalogue(&input, &rows);
    let Some(_disk) = FullDisk::mount(&fx.path("full")) else { return };
    let out = fx.path("full/out");
    let (input_arg, out_arg) = (input.display().to_string(), out.display().to_string());
    let o = relabel(&registry, &input_arg, &out_arg, &[]);
    assert_clean_failure(&o, &["No space left on device"]);
    // No finished output file claims to be complete.
    let finished: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(finished.iter().all(|n| !n.ends_with(".parquet")), "{finished:?}");
}

#[test]
fn pipeline_file_runs_with_environment_overrides() {
    let (fx, registry, input) = with_catalogue("cat.parquet", 100);
    let out = fx.path("env-out");
    let pipeline = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/nightly-relabel.toml");
    let o = prodcat_env(
        &["run", &pipeline.display().to_string(), "--set", "relabel.progress=false"],
        &[
            ("PRODCAT__MODEL__PATH", &registry),
            ("PRODCAT__RELABEL__INPUTS", &input),
            ("PRODCAT__RELABEL__OUTPUT", &out.display().to_string()),
            ("PRODCAT__RELABEL__FORMAT", "arrow"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let arrow_files = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "arrow"))
        .count();
    assert!(arrow_files >= 1);

    // Every problem is reported at once, with its key.
    let bad = fx.path("bad.toml");
    std::fs::write(&bad, "[pipeline]\nkind = \"relabel\"\n[relabel]\nshard = \"3/2\"\n").unwrap();
    let o = prodcat(&["run", &bad.display().to_string()]);
    assert_clean_failure(&o, &["bad.toml", "model.path", "relabel.inputs", "relabel.output", "relabel.shard"]);
    // Kafka settings that would loop, wedge a partition on a near-1 MB record, or half-work.
    let kafka = fx.path("kafka.toml");
    std::fs::write(
        &kafka,
        format!(
            "[pipeline]\nkind = \"kafka\"\n[model]\npath = \"{registry}\"\n[kafka]\ninput_topic = \"p\"\n\
             output_topic = \"p\"\nreview_topic = \"fb\"\nmax_message_bytes = 1048576\nexactly_once = true\n\
             transactional_id = \"t\"\n[training]\nenabled = true\nfeedback_topic = \"fb\"\n\
             base_model = \"{}\"\n",
            fx.base.display()
        ),
    )
    .unwrap();
    let o = prodcat(&["run", &kafka.display().to_string()]);
    assert_clean_failure(
        &o,
        &[
            "kafka.output_topic: `p` is also kafka.input_topic",
            "kafka.review_topic: `fb` is also training.feedback_topic",
            "kafka.max_message_bytes: 1048576",
            "use at most 967232",
        ],
    );
    let typo = fx.path("typo.toml");
    std::fs::write(&typo, "[relabel]\nwher = \"x\"\n").unwrap();
    let o = prodcat(&["run", &typo.display().to_string()]);
    assert_clean_failure(&o, &["typo.toml", "wher"]);
}

#[test]
fn output_schema_matches_the_published_snapshot() {
    use arrow::datatypes::{DataType, Field, Schema};
    let input = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("title", DataType::Utf8, true),
        Field::new("label", DataType::Utf8, true),
    ]);
    let schema = prodcat::pipeline::output::output_schema(&input);
    let rendered: String = schema
        .fields()
        .iter()
        .map(|f| format!("{}: {} (nullable: {})\n", f.name(), f.data_type(), f.is_nullable()))
        .collect();
    let snapshot_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/labeled-output.arrow.txt");
    let snapshot = std::fs::read_to_string(&snapshot_path).unwrap_or_default();
    assert_eq!(rendered, snapshot, "output schema changed; update {} if intended", snapshot_path.display());
}
