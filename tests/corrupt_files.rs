//! Corrupt files at every boundary a user controls: a published model's files (ONNX graph,
//! tokenizer, card, label list) truncated or with one bit flipped are refused naming the file —
//! by `relabel`, by the loader and by the hot-swap watcher, which keeps serving the old version;
//! a base model's `config.json`, `tokenizer.json` and `model.safetensors` truncated or flipped
//! give a clear error naming the file when cut, and name it or train on when a bit flips (a
//! flipped weight or JSON value is only a different number);
//! Parquet input truncated or flipped anywhere ends in a clear error naming the file or in a
//! finished relabel — never a panic; label store partitions cut short are named. (Label store
//! write-ahead segments cut or bit-flipped: `tests/properties.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use prodcat::metrics::Metrics;
use prodcat::registry::{ModelVersion, files};
use prodcat::serve::{ModelSlot, SessionSettings};

/// How a file is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Cut to this fraction of its length.
    Truncate(f64),
    /// One bit flipped at this fraction of its length.
    Flip(f64),
}

fn damage(path: &Path, how: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    match how {
        Damage::Truncate(f) => bytes.truncate((bytes.len() as f64 * f) as usize),
        Damage::Flip(f) => {
            let at = ((bytes.len() as f64 * f) as usize).min(bytes.len() - 1);
            bytes[at] ^= 0x04;
        }
    }
    std::fs::write(path, bytes).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

const DAMAGES: [Damage; 4] = [Damage::Truncate(0.5), Damage::Truncate(0.0), Damage::Flip(0.5), Damage::Flip(0.9)];

#[test]
fn a_corrupt_model_file_is_refused_naming_it_and_never_served() {
    let fx = Fixture::new(300);
    let registry = tiny_registry(&fx);
    let v1 = registry.join("tiny/v1");
    assert!(v1.join("SHA256SUMS").is_file(), "publishing writes the checksums");
    let catalogue = fx.path("catalogue.parquet");
    write_catalogue(&catalogue, &(0..20).map(|i| (i, Some(fx.products[i as usize].title.clone()))).collect::<Vec<_>>());
    let settings = SessionSettings::default();
    let mut cases = 0;
    for file in [files::MODEL, files::TOKENIZER, files::CARD, files::LABELS] {
        for how in DAMAGES {
            let dir = fx.path(&format!("damaged/{file}-{how:?}/v1"));
            copy_dir(&v1, &dir);
            damage(&dir.join(file), how);
            // The loader names the file.
            let err = match ModelVersion::open(&dir) {
                Err(e) => e.to_string(),
                Ok(version) => match prodcat::models::load(version, &settings) {
                    Err(e) => e.to_string(),
                    Ok(_) => panic!("{file} {how:?}: a corrupt model loaded"),
                },
            };
            assert!(err.contains(file), "{file} {how:?}: the error does not name the file: {err}");
            // So does `prodcat relabel`, which exits non-zero without output.
            let out = fx.path(&format!("out-{cases}"));
            let o =
                relabel(&dir.display().to_string(), &catalogue.display().to_string(), &out.display().to_string(), &[]);
            assert_clean_failure(&o, &[file]);
            assert!(read_parquet_dir_if_any(&out).is_empty(), "{file} {how:?}: output written from a corrupt model");
            cases += 1;
        }
    }
    eprintln!("{cases} corrupt model versions refused, each naming its file");

    // The hot-swap watcher refuses a corrupt new version and keeps serving the old one.
    let slot = ModelSlot::new(prodcat::models::open(&registry.join("tiny"), &settings).unwrap());
    let v2 = registry.join("tiny/v2");
    copy_dir(&v1, &v2);
    let mut card = prodcat::registry::ModelCard::read(&v2.join(files::CARD)).unwrap();
    card.version = "v2".into();
    card.write(&v2.join(files::CARD)).unwrap();
    prodcat::registry::checksums::seal(&v2).unwrap();
    damage(&v2.join(files::MODEL), Damage::Flip(0.7));
    prodcat::registry::ModelRegistry::new(&registry).set_current("tiny", "v2").unwrap();
    let mut watcher = prodcat::learn::watch::ModelWatcher::new(
        &registry.join("tiny"),
        slot.clone(),
        settings.clone(),
        Arc::new(Metrics::new()),
    );
    assert_eq!(watcher.check(), None);
    assert_eq!(slot.current().1.version, "v1", "the old model keeps serving");
}

fn read_parquet_dir_if_any(dir: &Path) -> Vec<arrow::array::RecordBatch> {
    if dir.is_dir()
        && std::fs::read_dir(dir).unwrap().flatten().any(|e| e.path().extension().is_some_and(|x| x == "parquet"))
    {
        read_parquet_dir(dir)
    } else {
        Vec::new()
    }
}

#[test]
fn a_corrupt_base_model_gives_a_clear_error_naming_the_file() {
    let fx = Fixture::new(120);
    let mut cases = 0;
    let mut trained_on = Vec::new();
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        // The safetensors header (its first bytes) and a weight deep inside.
        let hows: &[Damage] = if file == "model.safetensors" {
            &[Damage::Truncate(0.5), Damage::Truncate(0.0), Damage::Flip(0.0005), Damage::Flip(0.9)]
        } else {
            &DAMAGES
        };
        for &how in hows {
            let base = fx.path(&format!("base-{file}-{how:?}"));
            copy_dir(&fx.base, &base);
            damage(&base.join(file), how);
            let registry = format!("reg-{cases}");
            // The fixture's training command with the damaged base in place of its own.
            let mut args = train_args(&fx, &registry, &["--epochs", "1", "--max-length", "16"]);
            let at = args.iter().position(|a| a == "--base").unwrap() + 1;
            args[at] = base.display().to_string();
            let o = run_strings(&args);
            let registry = fx.path(&registry);
            let err = stderr(&o);
            assert!(!err.contains("panicked"), "{file} {how:?}: {err}");
            if o.status.success() {
                // A cut file never trains; a flipped bit may leave a valid file with another value
                // in it (a weight, a JSON number or key), which no reader can tell from intended.
                assert!(matches!(how, Damage::Flip(_)), "{file} {how:?}: a truncated base model trained");
                assert!(registry.join("tiny/current").exists(), "{file} {how:?}: succeeded without a model");
                trained_on.push(format!("{file} {how:?}"));
            } else {
                assert!(err.contains(file), "{file} {how:?}: the error does not name the file: {err}");
            }
            cases += 1;
        }
    }
    eprintln!("{cases} corrupt base models; trained on only: {trained_on:?}");
}

#[test]
fn corrupt_parquet_input_ends_in_a_clear_error_or_a_finished_relabel_never_a_panic() {
    let fx = Fixture::new(300);
    let registry = tiny_registry(&fx).display().to_string();
    let clean = fx.path("clean.parquet");
    write_catalogue(
        &clean,
        &(0..400).map(|i| (i, Some(fx.products[i as usize % 300].title.clone()))).collect::<Vec<_>>(),
    );
    let len = std::fs::metadata(&clean).unwrap().len() as usize;
    // Truncations at several points, and a bit flipped at 24 places spread over the file (the
    // magic number, data pages, the footer and its length).
    let mut hows: Vec<Damage> = [0.0, 0.1, 0.5, 0.99].into_iter().map(Damage::Truncate).collect();
    hows.extend((0..24).map(|i| Damage::Flip((i as f64 + 0.5) / 24.0)));
    hows.push(Damage::Flip((len - 1) as f64 / len as f64));
    let (mut refused, mut finished) = (0, 0);
    for (i, how) in hows.iter().enumerate() {
        let input = fx.path(&format!("in-{i}.parquet"));
        std::fs::copy(&clean, &input).unwrap();
        damage(&input, *how);
        let out = fx.path(&format!("out-{i}"));
        let o = relabel(&registry, &input.display().to_string(), &out.display().to_string(), &[]);
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{how:?}: {err}");
        if o.status.success() {
            // A flipped bit in a value reads as another value: every row is still accounted for.
            let rows = read_parquet_dir(&out).iter().map(|b| b.num_rows()).sum::<usize>();
            let dead = stdout(&o);
            assert!(rows > 0 || dead.contains("dead-lettered"), "{how:?}: finished with nothing: {dead}");
            finished += 1;
        } else {
            assert_eq!(o.status.code(), Some(1), "{how:?}: {err}");
            assert!(err.contains(&format!("in-{i}.parquet")), "{how:?}: the error does not name the file: {err}");
            refused += 1;
        }
    }
    eprintln!("corrupt Parquet: {refused} refused naming the file, {finished} relabeled (a flipped value), 0 panics");
    assert!(refused >= 5, "truncations and a broken footer must be refused ({refused})");
}

#[test]
fn a_label_store_partition_cut_short_is_named() {
    use prodcat::learn::{LabelSource, LabelStore};
    let dir = tempfile::tempdir().unwrap();
    let store = LabelStore::open(dir.path(), Default::default()).unwrap();
    for i in 0..200 {
        store
            .append(&format!("p{i}"), &format!("title {i}"), if i % 2 == 0 { "a" } else { "b" }, LabelSource::Record)
            .unwrap();
    }
    store.flush().unwrap();
    drop(store);
    let partitions: Vec<PathBuf> =
        walk(dir.path()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    assert!(!partitions.is_empty(), "the flush wrote a partition");
    damage(&partitions[0], Damage::Truncate(0.5));
    let err = match LabelStore::open(dir.path(), Default::default()).and_then(|s| s.snapshot()) {
        Ok(rows) => panic!("a truncated partition read as {} rows", rows.len()),
        Err(e) => e.to_string(),
    };
    let name = partitions[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name), "the error does not name the partition: {err}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}
