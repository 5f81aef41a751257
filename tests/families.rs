//! Encoder families (#27), each from a tiny random checkpoint written in Hugging Face's layout
//! for it (its `config.json` keys, its tensor names and prefix): every tensor is consumed, and it
//! trains, exports with parity and serves through relabel.

mod common;

use std::path::PathBuf;

use common::{Fixture, prodcat, relabel_titles, stderr};
use prodcat::encoder::family::tensor_names;
use prodcat::encoder::{EncoderConfig, EncoderFamily, load_base_weights};

const FAMILIES: [EncoderFamily; 2] = [EncoderFamily::Bert, EncoderFamily::DistilBert];

fn base_of(fx: &Fixture, family: EncoderFamily) -> PathBuf {
    let dir = fx.path(&format!("base-{family:?}"));
    prodcat::testkit::tiny_base_model_of(family, &dir, 7).unwrap();
    dir
}

#[test]
fn every_family_reads_its_own_config_keys_and_consumes_every_tensor() {
    let fx = Fixture::new(10);
    for family in FAMILIES {
        let base = base_of(&fx, family);
        let config = EncoderConfig::from_hf_file(&base.join("config.json")).unwrap();
        assert_eq!((config.family, config.hidden_size, config.num_layers), (family, 32, 2), "{family:?}");
        let raw: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(base.join("config.json")).unwrap()).unwrap();
        if family == EncoderFamily::DistilBert {
            // DistilBERT's own keys, not BERT's.
            assert_eq!((raw["dim"].as_u64(), raw.get("hidden_size")), (Some(32), None));
        }
        let weights = load_base_weights(&base.join("model.safetensors")).unwrap();
        let held: std::collections::BTreeSet<String> = weights.keys().cloned().collect();
        assert_eq!(held, tensor_names(&config), "{family:?}: the checkpoint's tensors and those the block reads");
    }
    // A family prodcat does not read yet is named, with those it does.
    let other = fx.path("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("config.json"), r#"{"model_type": "t5", "d_model": 32}"#).unwrap();
    let err = EncoderConfig::from_hf_file(&other.join("config.json")).unwrap_err().to_string();
    assert!(err.contains("`t5`") && err.contains("distilbert") && err.contains("xlm-roberta"), "{err}");
}

#[test]
fn every_family_trains_exports_with_parity_and_serves_through_relabel() {
    let fx = Fixture::new(120);
    for family in FAMILIES {
        let base = base_of(&fx, family);
        let name = format!("{family:?}").to_lowercase();
        let registry = fx.path("registry");
        let o = prodcat(&[
            "train",
            "--base",
            &base.display().to_string(),
            "--data",
            &fx.csv.display().to_string(),
            "--text-column",
            "title",
            "--label-column",
            "category",
            "--epochs",
            "1",
            "--out",
            &registry.display().to_string(),
            "--name",
            &name,
            "--no-progress",
        ]);
        assert!(o.status.success(), "{family:?}: {}", stderr(&o));
        let model = registry.join(&name).join("current");
        let card: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(model.join("card.json")).unwrap()).unwrap();
        let parity = card["parity"]["max_abs_diff"].as_f64().expect("a parity figure");
        assert!(parity < 1e-3, "{family:?}: parity {parity}");
        let titles = ["dual sim phone 5g", "paperback novel", "leather running shoe"];
        let batches = relabel_titles(&fx, &model, &titles);
        let labels: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let column = b.column_by_name("label").expect("a label column");
                let strings = column.as_any().downcast_ref::<arrow::array::StringArray>().expect("strings");
                strings.iter().map(|s| s.unwrap_or_default().to_string()).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(labels.len(), titles.len(), "{family:?}");
        let categories: Vec<&str> = prodcat::testkit::CATEGORIES.iter().map(|(c, _)| *c).collect();
        assert!(labels.iter().all(|l| categories.contains(&l.as_str())), "{family:?}: {labels:?}");
        std::fs::remove_dir_all(fx.path("out")).ok();
    }
}
