//! Model core end to end on a tiny random-weight BERT: fine-tune with LoRA, merge and export to
//! ONNX, parity between candle and ONNX Runtime, registry layout, evaluation.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::Fixture;
use prodcat::data::LabeledData;
use prodcat::encoder::{EncoderClassifier, EncoderConfig, LoraSettings, LoraTarget, Pooling, load_base_weights};
use prodcat::onnx::transformer;
use prodcat::registry::ModelVersion;
use prodcat::registry::{ModelCard, files};
use prodcat::serve::{SessionSettings, SingleModel, score_texts};
use prodcat::tokenize::{PaddedBatch, TextTokenizer};
use prodcat::train::{DataSource, TrainJob, TrainSettings, fit};

fn tiny_classifier(fx: &Fixture, targets: Vec<LoraTarget>, pooling: Pooling) -> EncoderClassifier {
    let config = EncoderConfig::from_hf_file(&fx.base.join("config.json")).unwrap();
    let path = fx.base.join("model.safetensors");
    let weights = load_base_weights(&path).unwrap();
    let lora = LoraSettings { targets, ..Default::default() };
    let model = EncoderClassifier::new(config, &weights, &path, lora, pooling, 5, 3).unwrap();
    // Non-zero B so the merge is really exercised (fresh adapters have ΔW = 0).
    for (i, (name, var)) in model.trainable().into_iter().enumerate() {
        if name.ends_with("lora_b") {
            let n = var.elem_count();
            let data: Vec<f32> = (0..n).map(|j| (((i * 31 + j * 17) % 23) as f32 - 11.0) * 0.01).collect();
            var.set(&Tensor::from_vec(data, var.shape(), &Device::Cpu).unwrap()).unwrap();
        }
    }
    model
}

/// Writes the exported model into a folder the transformer kind loads (an earlier card shape:
/// `model_type` with no transformer section, which must keep loading).
fn served(fx: &Fixture, model: &EncoderClassifier, name: &str) -> SingleModel {
    let dir = fx.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(files::MODEL),
        transformer::export(model, prodcat::common::Head::SingleLabel, None, &[]).unwrap().model,
    )
    .unwrap();
    std::fs::copy(fx.base.join("tokenizer.json"), dir.join(files::TOKENIZER)).unwrap();
    let labels: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
    prodcat::registry::write_labels(&dir.join(files::LABELS), &labels).unwrap();
    let card = serde_json::json!({
        "name": "t", "version": "v0", "model_type": "transformer", "created_at": "", "prodcat_version": "",
        "max_length": 32, "num_labels": 5,
        "onnx": {"opset": 17, "precision": "fp32", "inputs": [], "outputs": [], "file_bytes": 0}
    });
    std::fs::write(dir.join(files::CARD), card.to_string()).unwrap();
    prodcat::models::transformer::open(ModelVersion::open(&dir).unwrap(), &SessionSettings::default()).unwrap()
}

fn mixed_batch(fx: &Fixture) -> PaddedBatch {
    let tok = TextTokenizer::from_file(&fx.base.join("tokenizer.json"), 32).unwrap();
    let texts = [
        "phone",
        "laptop ssd ram intel ryzen thinkpad notebook ultrabook",
        "fridge freezer litre",
        "a",
        "paperback novel edition",
    ];
    let tokens = tok.encode_batch(&texts).unwrap();
    PaddedBatch::from_tokens(tokens.iter())
}

#[test]
fn exported_onnx_matches_candle_for_every_target_and_pooling() {
    let fx = Fixture::new(10);
    let batch = mixed_batch(&fx);
    assert!(batch.attention_mask.contains(&0), "batch should contain padding");
    for (targets, pooling) in
        [(LoraSettings::default().targets, Pooling::Mean), (LoraTarget::ALL.to_vec(), Pooling::Cls)]
    {
        let model = tiny_classifier(&fx, targets.clone(), pooling);
        let reference = model.forward(&batch, None).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let onnx = served(&fx, &model, &format!("parity-{pooling:?}"));
        let out = onnx.run(&batch).unwrap();
        let diff = reference.iter().zip(&out.logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-3, "{targets:?}/{pooling:?}: max |candle - onnx| = {diff}");
        // The I/O-binding path (the CUDA default; here on the CPU provider) gives the same rows.
        assert!(!onnx.session.io_bound(), "a CPU session runs without a binding unless asked");
        let bound = prodcat::models::transformer::open(
            ModelVersion::open(&fx.path(&format!("parity-{pooling:?}"))).unwrap(),
            &SessionSettings { io_binding: Some(true), ..Default::default() },
        )
        .unwrap();
        assert!(bound.session.io_bound());
        for _ in 0..2 {
            // Twice: a binding is made per run, nothing of the first run may leak into the second.
            assert_eq!(bound.run(&batch).unwrap(), out, "{targets:?}/{pooling:?}: bound run differs");
        }
        // Probabilities are the softmax of the logits, per row.
        for row in 0..out.rows {
            let sum: f32 = out.probs(row).iter().sum();
            assert!((sum - 1.0).abs() < 1e-4);
        }
    }
}

#[test]
fn merging_changes_the_model_and_parity_catches_a_wrong_merge() {
    let fx = Fixture::new(10);
    let batch = mixed_batch(&fx);
    let model = tiny_classifier(&fx, LoraSettings::default().targets, Pooling::Mean);
    let with_lora = model.forward(&batch, None).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    // Export the same model with adapters zeroed: ONNX must now disagree with the LoRA forward.
    let zeroed = model.clone();
    let snapshot: HashMap<String, Tensor> = zeroed
        .snapshot()
        .unwrap()
        .into_iter()
        .map(|(n, t)| if n.ends_with("lora_b") { (n, t.zeros_like().unwrap()) } else { (n, t) })
        .collect();
    let detached = tiny_classifier(&fx, LoraSettings::default().targets, Pooling::Mean);
    detached.load_trainable(&snapshot, &fx.base).unwrap();
    let onnx = served(&fx, &detached, "zeroed");
    let out = onnx.run(&batch).unwrap();
    let diff = with_lora.iter().zip(&out.logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff > 1e-3, "a model without its LoRA deltas should not pass parity (diff {diff})");
}

#[test]
fn full_finetuning_updates_whole_dense_layers_and_exports_them_with_parity() {
    let fx = Fixture::new(300);
    let batch = mixed_batch(&fx);
    let config = EncoderConfig::from_hf_file(&fx.base.join("config.json")).unwrap();
    let path = fx.base.join("model.safetensors");
    let weights = load_base_weights(&path).unwrap();
    let lora = LoraSettings { full: true, ..Default::default() };
    let model = EncoderClassifier::new(config, &weights, &path, lora, Pooling::Mean, 5, 3).unwrap();
    let names: Vec<String> = model.trainable().into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().all(|n| !n.contains("lora")), "{names:?}");
    // Six dense layers per block, weight and bias each, plus the head.
    assert_eq!(names.iter().filter(|n| n.ends_with("full_weight") || n.ends_with("full_bias")).count(), 2 * 6 * 2);
    // Non-zero updates of weights and biases, so the export must merge both.
    for (i, (name, var)) in model.trainable().into_iter().enumerate() {
        if name.contains("full_") {
            let n = var.elem_count();
            let data: Vec<f32> = (0..n).map(|j| (((i * 13 + j * 7) % 19) as f32 - 9.0) * 0.01).collect();
            var.set(&Tensor::from_vec(data, var.shape(), &Device::Cpu).unwrap()).unwrap();
        }
    }
    let reference = model.forward(&batch, None).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let out = served(&fx, &model, "full").run(&batch).unwrap();
    let diff = reference.iter().zip(&out.logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff <= 1e-3, "max |candle - onnx| = {diff}");

    // Trained end to end: it learns, the export passes parity, the card says how it was adapted.
    let data = read(&fx);
    let mut full = job(&fx, &data, "full", 3);
    full.settings.lora.full = true;
    full.settings.encoder_learning_rate = 1e-3;
    let candidate = fit(full).unwrap();
    let card = candidate.card.clone();
    assert!(card.parity.as_ref().unwrap().passed);
    assert!(card.test_metrics.as_ref().unwrap().accuracy > 0.6, "{:?}", card.test_metrics);
    let encoder = card.model.transformer().unwrap().encoder.clone().unwrap();
    assert!(encoder.lora.full);
    // Every dense weight and bias of every block, and the head.
    let a = &encoder.base_model.architecture;
    let (h, i) = (a.hidden_size, a.intermediate_size);
    let block = 4 * (h * h + h) + (h * i + i) + (i * h + h);
    assert_eq!(encoder.trainable_parameters, a.num_layers * block + 5 * h + 5);
    let described = card.model.describe();
    assert!(described.iter().any(|(k, v)| *k == "adaptation" && v.starts_with("full fine-tuning")), "{described:?}");
}

fn job<'a>(fx: &'a Fixture, data: &'a LabeledData, registry: &str, epochs: usize) -> TrainJob<'a> {
    TrainJob {
        data,
        source: DataSource {
            file: fx.csv.display().to_string(),
            text: prodcat::common::TextSpec::column("title"),
            label_column: "category".into(),
            group_column: Some("group".into()),
            ..Default::default()
        },
        base_dir: fx.base.clone(),
        registry: fx.path(registry),
        name: "tiny".into(),
        settings: TrainSettings { epochs, learning_rate: 1e-2, max_length: 32, ..Default::default() },
        resume: false,
        session: SessionSettings::default(),
        show_progress: false,
        cancel: None,
        labels: None,
    }
}

fn read(fx: &Fixture) -> LabeledData {
    common::fixture_data(fx)
}

#[test]
fn training_learns_and_publishes_a_complete_registry_version() {
    let fx = Fixture::new(600);
    let data = read(&fx);
    let candidate = fit(job(&fx, &data, "registry", 4)).unwrap();
    let test = candidate.test.as_ref().expect("test split").report.clone();
    let dir = candidate.publish(true).unwrap();
    assert_eq!(dir, fx.path("registry/tiny/v1"));
    for f in [files::MODEL, files::TOKENIZER, files::LABELS, files::CARD] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert_eq!(std::fs::read_link(fx.path("registry/tiny/current")).unwrap().to_string_lossy(), "v1");
    let card = ModelCard::read(&dir.join(files::CARD)).unwrap();
    assert_eq!(card.version, "v1");
    let parity = card.parity.clone().unwrap();
    assert!(parity.passed && parity.max_abs_diff <= 1e-3 && parity.samples > 0);
    let data_info = card.data.clone().unwrap();
    assert_eq!(data_info.rows, 600);
    assert_eq!(data_info.train_rows + data_info.validation_rows + data_info.test_rows, 600);
    let t = card.model.transformer().unwrap().encoder.clone().unwrap();
    assert!(t.trainable_parameters > 0 && t.trainable_percent > 0.0 && t.trainable_percent < 100.0);
    assert_eq!(t.lora.rank, 16);
    // Five balanced classes: chance is 0.2. The tiny model must clearly learn.
    let metrics = card.test_metrics.clone().unwrap();
    assert!(metrics.accuracy > 0.6, "test accuracy {} (report {test:?})", metrics.accuracy);
    assert!((metrics.accuracy - test.accuracy).abs() < 1e-12);

    // A second run publishes v2 and moves `current`.
    let candidate = fit(job(&fx, &data, "registry", 1)).unwrap();
    candidate.publish(true).unwrap();
    assert_eq!(std::fs::read_link(fx.path("registry/tiny/current")).unwrap().to_string_lossy(), "v2");
    let model = prodcat::models::open(&fx.path("registry"), &SessionSettings::default()).unwrap();
    assert_eq!(model.card().version, "v2");
    let out = score_texts(&*model, &["smartphone dual sim 5g"], None).unwrap().output;
    assert_eq!(model.labels()[out.argmax(0).0], "Phones");
}

#[test]
fn refit_trains_on_train_and_validation_and_calibration_is_folded_into_the_head() {
    let fx = Fixture::new(300);
    let data = read(&fx);
    let mut refit = job(&fx, &data, "refit", 2);
    refit.settings.refit = true;
    let candidate = fit(refit).unwrap();
    let card = candidate.card.clone();
    let (info, training) = (card.data.clone().unwrap(), card.training.clone().unwrap());
    assert_eq!(training.refit_rows, Some(info.train_rows + info.validation_rows));
    let t = training.temperature.expect("calibrated");
    assert!(t > 0.0 && t.is_finite());
    // Parity holds for the refit, calibrated model (the temperature is inside the graph).
    assert!(card.parity.as_ref().unwrap().passed);
    assert!(card.test_metrics.as_ref().unwrap().accuracy > 0.6);

    let plain = fit(job(&fx, &data, "plain", 2)).unwrap();
    assert_eq!(plain.card.training.as_ref().unwrap().refit_rows, None);
    let a = std::fs::read(candidate.staged.dir.join(files::MODEL)).unwrap();
    let b = std::fs::read(plain.staged.dir.join(files::MODEL)).unwrap();
    assert!(a != b, "a refit model must differ from the one trained on the train rows alone");
}

#[test]
fn same_seed_gives_the_same_model() {
    let fx = Fixture::new(300);
    let data = read(&fx);
    let a = fit(job(&fx, &data, "a", 2)).unwrap().publish(true).unwrap();
    let b = fit(job(&fx, &data, "b", 2)).unwrap().publish(true).unwrap();
    let bytes = |d: &std::path::Path| std::fs::read(d.join(files::MODEL)).unwrap();
    assert!(bytes(&a) == bytes(&b), "same seed produced different model.onnx");
    let mut other = job(&fx, &data, "c", 2);
    other.settings.seed = 7;
    let c = fit(other).unwrap().publish(true).unwrap();
    assert!(bytes(&a) != bytes(&c), "a different seed should give a different model");
}
