//! Encoder families (#27), each from a tiny random checkpoint written in Hugging Face's layout
//! for it (its `config.json` keys, its tensor names and prefix): every tensor is consumed, and it
//! trains, exports with parity and serves through relabel.

mod common;

use std::path::PathBuf;

use common::{Fixture, prodcat_env, relabel_titles, stderr, train_args};
use prodcat::encoder::family::tensor_names;
use prodcat::encoder::{EncoderConfig, EncoderFamily, load_base_weights};
use prodcat::testkit::TinyCheckpoint;

const FAMILIES: [TinyCheckpoint; 9] = TinyCheckpoint::ALL;

fn base_of(fx: &Fixture, kind: TinyCheckpoint) -> PathBuf {
    let dir = fx.path(&format!("base-{kind:?}"));
    prodcat::testkit::tiny_checkpoint(kind, &dir, 7).unwrap();
    dir
}

#[test]
fn every_family_reads_its_own_config_keys_and_consumes_every_tensor() {
    let fx = Fixture::new(10);
    for kind in FAMILIES {
        let (base, family) = (base_of(&fx, kind), kind.family());
        let config = EncoderConfig::from_hf_file(&base.join("config.json")).unwrap();
        assert_eq!((config.family, config.hidden_size, config.num_layers), (family, 32, 2), "{kind:?}");
        let written = prodcat::testkit::tiny_config_of(family, config.vocab_size);
        assert_eq!(config, written, "{kind:?}: config.json reads back as the architecture it was written from");
        let raw: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(base.join("config.json")).unwrap()).unwrap();
        if family == EncoderFamily::DistilBert {
            // DistilBERT's own keys, not BERT's.
            assert_eq!((raw["dim"].as_u64(), raw.get("hidden_size")), (Some(32), None));
        }
        let weights = load_base_weights(&base.join("model.safetensors")).unwrap();
        // Every tensor but GPT-2's causal-mask buffers, which nothing reads.
        let held: std::collections::BTreeSet<String> =
            weights.keys().filter(|n| !n.ends_with(".attn.bias")).cloned().collect();
        assert_eq!(held, tensor_names(&config), "{kind:?}: the checkpoint's tensors and those the block reads");
        let tokenizer: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(base.join("tokenizer.json")).unwrap()).unwrap();
        let expected = match kind {
            TinyCheckpoint::Bert => ("WordPiece", "bert"),
            TinyCheckpoint::DistilBert => ("WordPiece", "distilbert"),
            TinyCheckpoint::Roberta => ("BPE", "roberta"),
            TinyCheckpoint::XlmRoberta => ("Unigram", "xlm-roberta"),
            TinyCheckpoint::Mpnet => ("WordPiece", "mpnet"),
            TinyCheckpoint::Gpt2 => ("BPE", "gpt2"),
            TinyCheckpoint::Llama => ("BPE", "llama"),
            TinyCheckpoint::Qwen2 => ("BPE", "qwen2"),
            TinyCheckpoint::Qwen3 => ("BPE", "qwen3"),
        };
        assert_eq!(
            (tokenizer["model"]["type"].as_str(), raw["model_type"].as_str()),
            (Some(expected.0), Some(expected.1))
        );
        if family == EncoderFamily::Roberta {
            // Positions past the padding id: the table's first rows are never read.
            assert_eq!((config.pad_token_id, config.position_offset(), config.max_sequence()), (1, 2, 64));
        }
    }
    // A family prodcat does not read yet is named, with those it does.
    let other = fx.path("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("config.json"), r#"{"model_type": "t5", "d_model": 32}"#).unwrap();
    let err = EncoderConfig::from_hf_file(&other.join("config.json")).unwrap_err().to_string();
    assert!(err.contains("`t5`") && err.contains("distilbert") && err.contains("xlm-roberta"), "{err}");
}

/// Every family trains, exports with parity — its weights in ONNX external data, as a model past
/// 2 GiB would be (the threshold lowered to one byte) —, serves through relabel, and converts to
/// fp16 and int8 within their tolerances.
#[test]
fn every_family_trains_exports_with_parity_and_serves_through_relabel() {
    use prodcat::models::quantize::{Precision, QuantizeJob, quantize_model};
    use prodcat::onnx::quantize::QuantizeSettings;
    use prodcat::registry::{ModelCard, ModelVersion, files};
    use prodcat::serve::SessionSettings;
    let fx = Fixture::new(120);
    for kind in FAMILIES {
        let base = base_of(&fx, kind);
        let name = format!("{kind:?}").to_lowercase();
        let registry = fx.path("registry");
        // The standard tiny training run, on this family's checkpoint.
        let mut args = train_args(&fx, "registry", &["--epochs", "1"]);
        for (flag, value) in [("--base", base.display().to_string()), ("--name", name.clone())] {
            let at = args.iter().position(|a| a == flag).expect("the standard run names it") + 1;
            args[at] = value;
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = prodcat_env(&refs, &[("PRODCAT_ONNX_EXTERNAL_BYTES", "1")]);
        assert!(o.status.success(), "{kind:?}: {}", stderr(&o));
        let model = registry.join(&name).join("current");
        assert!(model.join("model.onnx.data").is_file(), "{kind:?}: the weights in external data");
        let card: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(model.join("card.json")).unwrap()).unwrap();
        let parity = card["parity"]["max_abs_diff"].as_f64().expect("a parity figure");
        assert!(parity < 1e-3, "{kind:?}: parity {parity}");
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
        assert_eq!(labels.len(), titles.len(), "{kind:?}");
        let categories: Vec<&str> = prodcat::testkit::CATEGORIES.iter().map(|(c, _)| *c).collect();
        assert!(labels.iter().all(|l| categories.contains(&l.as_str())), "{kind:?}: {labels:?}");
        std::fs::remove_dir_all(fx.path("out")).ok();

        // fp16 (run by the CPU provider as CUDA would) and int8, each against fp32 on the rows.
        let int8 = Precision::Int8(QuantizeSettings { min_dim: 8, ..Default::default() });
        for (suffix, precision) in [("fp16", Precision::fp16()), ("int8", int8)] {
            let job = QuantizeJob {
                model: ModelVersion::open(&registry.join(&name)).unwrap(),
                texts: fx.products.iter().map(|p| p.title.clone()).collect(),
                labels: fx.products.iter().map(|p| p.category.clone()).collect(),
                origin: "fixture".into(),
                registry: registry.clone(),
                name: format!("{name}-{suffix}"),
                tolerance: 1.0,
                precision,
                session: SessionSettings::default(),
            };
            let dir = quantize_model(job)
                .unwrap_or_else(|e| panic!("{kind:?} {suffix}: {e}"))
                .publish(true)
                .unwrap_or_else(|e| panic!("{kind:?} {suffix}: {e}"));
            let card = ModelCard::read(&dir.join(files::CARD)).unwrap();
            let q = card.model.transformer().and_then(|t| t.quantization.clone()).expect("a conversion record");
            assert!(q.agreement >= 0.95, "{kind:?} {suffix}: agrees with fp32 on only {:.3}", q.agreement);
            let served = prodcat::models::open(&dir, &SessionSettings::default()).unwrap();
            assert_eq!(served.labels().len(), categories.len(), "{kind:?} {suffix}");
        }
    }
}

#[test]
fn every_family_scores_a_text_alone_as_inside_a_padded_batch() {
    use prodcat::encoder::{EncoderClassifier, LoraSettings, Pooling};
    use prodcat::tokenize::{PaddedBatch, TextTokenizer};
    let fx = Fixture::new(10);
    let texts = ["phone", "laptop ssd ram intel ryzen thinkpad notebook", "paperback novel edition", "a"];
    for kind in FAMILIES {
        let base = base_of(&fx, kind);
        let config = EncoderConfig::from_hf_file(&base.join("config.json")).unwrap();
        let path = base.join("model.safetensors");
        let weights = load_base_weights(&path).unwrap();
        let model =
            EncoderClassifier::new(config, &weights, &path, LoraSettings::default(), Pooling::Mean, 3, 1).unwrap();
        let tokenizer = TextTokenizer::from_file(&base.join("tokenizer.json"), 32).unwrap();
        let tokens = tokenizer.encode_batch(&texts).unwrap();
        let batch = PaddedBatch::from_tokens(tokens.iter());
        assert!(batch.attention_mask.contains(&0), "{kind:?}: the batch is padded");
        let together = model.forward(&batch, None).unwrap().to_vec2::<f32>().unwrap();
        for (i, t) in tokens.iter().enumerate() {
            let alone = model.forward(&PaddedBatch::from_tokens(std::iter::once(t)), None).unwrap();
            let alone = alone.to_vec2::<f32>().unwrap().remove(0);
            let diff = alone.iter().zip(&together[i]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-5, "{kind:?}: `{}` differs by {diff} inside the batch", texts[i]);
        }
    }
}

#[test]
fn a_decoder_never_lets_a_later_token_change_an_earlier_position() {
    use prodcat::encoder::{EncoderClassifier, LoraSettings, Pooling};
    use prodcat::tokenize::{PaddedBatch, TextTokenizer};
    let fx = Fixture::new(10);
    // The first position's state (cls pooling) of a text and of the same text continued: equal
    // for GPT-2, different for bidirectional BERT.
    let texts = ["phone", "phone laptop ssd ram"];
    for (kind, causal) in [
        (TinyCheckpoint::Gpt2, true),
        (TinyCheckpoint::Llama, true),
        (TinyCheckpoint::Qwen3, true),
        (TinyCheckpoint::Bert, false),
    ] {
        let base = base_of(&fx, kind);
        let config = EncoderConfig::from_hf_file(&base.join("config.json")).unwrap();
        assert_eq!(config.causal, causal);
        let path = base.join("model.safetensors");
        let weights = load_base_weights(&path).unwrap();
        let model =
            EncoderClassifier::new(config, &weights, &path, LoraSettings::default(), Pooling::Cls, 3, 1).unwrap();
        let tokenizer = TextTokenizer::from_file(&base.join("tokenizer.json"), 32).unwrap();
        let tokens = tokenizer.encode_batch(&texts).unwrap();
        let out = model.forward(&PaddedBatch::from_tokens(tokens.iter()), None).unwrap().to_vec2::<f32>().unwrap();
        let diff = out[0].iter().zip(&out[1]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert_eq!(diff < 1e-5, causal, "{kind:?}: first position moved by {diff}");
    }
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

#[test]
fn grouped_query_attention_equals_the_full_head_model_with_repeated_key_value_weights() {
    use prodcat::encoder::{EncoderClassifier, LoraSettings, Pooling};
    use prodcat::tokenize::{PaddedBatch, TextTokenizer};
    let fx = Fixture::new(10);
    for kind in [TinyCheckpoint::Llama, TinyCheckpoint::Qwen3] {
        let base = base_of(&fx, kind);
        let grouped = EncoderConfig::from_hf_file(&base.join("config.json")).unwrap();
        let (heads, kv, hd) = (grouped.num_heads, grouped.kv_heads(), grouped.head_dim());
        assert_eq!((heads, kv), (4, 2), "{kind:?}: the tiny checkpoint groups two query heads per key/value head");
        let path = base.join("model.safetensors");
        let weights = load_base_weights(&path).unwrap();
        // Key/value head j / (heads / kv) for query head j: the same model with every head.
        let mut full = weights.clone();
        for i in 0..grouped.num_layers {
            for part in ["k_proj", "v_proj"] {
                let name = format!("layers.{i}.self_attn.{part}.weight");
                let w = &weights[&name];
                let rows: Vec<_> = (0..heads).map(|j| w.narrow(0, (j / (heads / kv)) * hd, hd).unwrap()).collect();
                full.insert(name, candle_core::Tensor::cat(&rows, 0).unwrap());
            }
        }
        let full_config = EncoderConfig { kv_heads: None, ..grouped.clone() };
        let lora = LoraSettings::default();
        let a = EncoderClassifier::new(grouped, &weights, &path, lora.clone(), Pooling::Last, 3, 1).unwrap();
        let b = EncoderClassifier::new(full_config, &full, &path, lora, Pooling::Last, 3, 1).unwrap();
        let tokenizer = TextTokenizer::from_file(&base.join("tokenizer.json"), 32).unwrap();
        let tokens = tokenizer.encode_batch(&["phone", "laptop ssd ram intel ryzen", "novel"]).unwrap();
        let batch = PaddedBatch::from_tokens(tokens.iter());
        let (a, b) = (a.forward(&batch, None).unwrap(), b.forward(&batch, None).unwrap());
        let diff = max_diff(&a.to_vec2::<f32>().unwrap(), &b.to_vec2::<f32>().unwrap());
        assert!(diff < 1e-5, "{kind:?}: grouped and repeated heads differ by {diff}");
    }
}

#[test]
fn every_family_merged_equals_its_adapter_model() {
    use prodcat::encoder::{EncoderClassifier, LoraSettings, LoraTarget, Pooling};
    use prodcat::tokenize::{PaddedBatch, TextTokenizer};
    let fx = Fixture::new(10);
    for kind in FAMILIES {
        let base = base_of(&fx, kind);
        let config = EncoderConfig::from_hf_file(&base.join("config.json")).unwrap();
        let path = base.join("model.safetensors");
        let weights = load_base_weights(&path).unwrap();
        let adapted =
            EncoderClassifier::new(config, &weights, &path, LoraSettings::default(), Pooling::Mean, 3, 1).unwrap();
        // Trained-looking adapters: B away from its zero start.
        let mut adapters = 0;
        for layer in &adapted.layers {
            for target in LoraTarget::ALL {
                if let Some(adapter) = layer.dense(target).and_then(|d| d.adapter.as_ref()) {
                    let b = adapter.b.as_tensor();
                    adapter.b.set(&(b.randn_like(0.0, 0.05).unwrap())).unwrap();
                    adapters += 1;
                }
            }
        }
        let gated = matches!(kind, TinyCheckpoint::Llama | TinyCheckpoint::Qwen2 | TinyCheckpoint::Qwen3);
        assert_eq!(adapters, 2 * if gated { 7 } else { 6 }, "{kind:?}: an adapter on every dense layer");
        let mut merged = adapted.clone();
        for layer in &mut merged.layers {
            for dense in [&mut layer.query, &mut layer.key, &mut layer.value, &mut layer.attention_output]
                .into_iter()
                .chain(layer.gate.as_mut())
                .chain([&mut layer.intermediate, &mut layer.output])
            {
                *dense = dense.merged().unwrap();
            }
        }
        let tokenizer = TextTokenizer::from_file(&base.join("tokenizer.json"), 32).unwrap();
        let tokens = tokenizer.encode_batch(&["phone", "laptop ssd ram intel ryzen", "novel"]).unwrap();
        let batch = PaddedBatch::from_tokens(tokens.iter());
        let a = adapted.forward(&batch, None).unwrap().to_vec2::<f32>().unwrap();
        let m = merged.forward(&batch, None).unwrap().to_vec2::<f32>().unwrap();
        let base_model = EncoderClassifier::new(
            adapted.config.clone(),
            &weights,
            &path,
            LoraSettings::default(),
            Pooling::Mean,
            3,
            1,
        )
        .unwrap();
        let untouched = base_model.forward(&batch, None).unwrap().to_vec2::<f32>().unwrap();
        assert!(max_diff(&a, &untouched) > 1e-3, "{kind:?}: the adapters change the logits");
        let diff = max_diff(&a, &m);
        assert!(diff < 1e-4, "{kind:?}: merged and adapter models differ by {diff}");
    }
}

#[test]
fn lora_targets_take_each_familys_own_module_names_as_peft_does() {
    use prodcat::encoder::LoraTarget::{self, *};
    use prodcat::encoder::family::{lora_targets, of};
    let pick = |family: EncoderFamily, names: &[&str]| -> Result<Vec<LoraTarget>, String> {
        lora_targets(of(family), &names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).map_err(|e| e.to_string())
    };
    assert_eq!(pick(EncoderFamily::Llama, &["q_proj", "v_proj", "gate_proj"]), Ok(vec![Query, Value, Gate]));
    assert_eq!(pick(EncoderFamily::Qwen3, &["up_proj", "down_proj", "key"]), Ok(vec![Key, Intermediate, Output]));
    // GPT-2's fused c_attn is query, key and value; `c_proj` ends both projections' names.
    assert_eq!(pick(EncoderFamily::Gpt2, &["c_attn"]), Ok(vec![Query, Key, Value]));
    assert_eq!(pick(EncoderFamily::Gpt2, &["c_proj"]), Ok(vec![AttentionOutput, Output]));
    assert_eq!(pick(EncoderFamily::Bert, &["query", "attention.output.dense"]), Ok(vec![Query, AttentionOutput]));
    assert_eq!(pick(EncoderFamily::DistilBert, &["q_lin", "lin1"]), Ok(vec![Query, Intermediate]));
    assert_eq!(pick(EncoderFamily::Mpnet, &["attn.q", "attn.v"]), Ok(vec![Query, Value]));
    // A name no module of the family ends is refused, naming both vocabularies.
    let err = pick(EncoderFamily::Bert, &["q_proj"]).unwrap_err();
    assert!(err.contains("`q_proj`") && err.contains("attention_output") && err.contains("query"), "{err}");

    // Through `prodcat train`: the card records the targets by prodcat's names.
    let fx = Fixture::new(60);
    let base = base_of(&fx, TinyCheckpoint::Qwen3);
    let mut args = train_args(&fx, "registry", &["--epochs", "1", "--lora-targets", "q_proj,v_proj,gate_proj"]);
    let at = args.iter().position(|a| a == "--base").unwrap() + 1;
    args[at] = base.display().to_string();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = prodcat_env(&refs, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let card = std::fs::read_to_string(fx.path("registry/tiny/current/card.json")).unwrap();
    let card: serde_json::Value = serde_json::from_str(&card).unwrap();
    let lora = &card["model"]["encoder"]["lora"]["targets"];
    assert_eq!(lora, &serde_json::json!(["query", "value", "gate"]), "{card}");
}

/// `auto` over two bases (a BERT and a Qwen3 checkpoint): a transformer from each and each one's
/// ensemble and cascade with the lexical model, every candidate naming its base; the refit trains
/// the winner's own base again. `--folds` takes one base.
#[test]
fn auto_compares_several_bases_and_refits_the_winners_own() {
    let fx = Fixture::new(300);
    let qwen = base_of(&fx, TinyCheckpoint::Qwen3);
    let bases = format!("{},{}", fx.base.display(), qwen.display());
    let report = fx.path("auto-report");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["train", "--model-type", "auto", "--base", &bases]
            .into_iter()
            .chain(["--data", &fx.csv.display().to_string(), "--text-column", "title", "--label-column", "category"])
            .chain(["--group-column", "group", "--epochs", "2", "--lr", "1e-2", "--max-length", "32"])
            .chain(["--buckets", "65536", "--out", &fx.path("registry").display().to_string(), "--no-progress"])
            .map(str::to_string)
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |a: Vec<String>| prodcat_env(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let o = run(args(&[
        "--name",
        "multi",
        "--refit",
        "--candidates",
        "transformer",
        "--report",
        &report.display().to_string(),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let comparison: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("comparison.json")).unwrap()).unwrap();
    let scores = comparison["candidates"].as_array().unwrap();
    let named: Vec<(String, String)> = scores
        .iter()
        .map(|s| (s["model"].as_str().unwrap().to_string(), s["base"].as_str().unwrap_or("-").to_string()))
        .collect();
    let base_name = |p: &std::path::Path| p.file_name().unwrap().to_string_lossy().to_string();
    let (bert, qwen_name) = (base_name(&fx.base), base_name(&qwen));
    let expected: Vec<(String, String)> = [
        ("lexical", "-"),
        ("transformer", bert.as_str()),
        ("transformer", qwen_name.as_str()),
        ("ensemble", bert.as_str()),
        ("cascade", bert.as_str()),
        ("ensemble", qwen_name.as_str()),
        ("cascade", qwen_name.as_str()),
    ]
    .map(|(m, b)| (m.to_string(), b.to_string()))
    .to_vec();
    assert_eq!(named, expected, "{stdout}");
    assert!(stdout.contains(&format!("transformer [{qwen_name}]")), "{stdout}");
    let chosen: Vec<&serde_json::Value> = scores.iter().filter(|s| s["chosen"].as_bool().unwrap()).collect();
    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0]["model"], "transformer");
    // The published refit is of the chosen candidate's base.
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("registry/multi/current/card.json")).unwrap()).unwrap();
    let published = card["model"]["encoder"]["base_model"]["path"].as_str().unwrap().to_string();
    assert_eq!(base_name(std::path::Path::new(&published)), chosen[0]["base"].as_str().unwrap(), "{card}");
    assert!(card["training"]["refit_rows"].as_u64().is_some(), "a refit: {card}");

    // Out of fold, one base only: refused before any training.
    let o = run(args(&["--name", "folds", "--folds", "3"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("auto --folds takes one base"), "{}", stderr(&o));
}

/// The backward pass through every family's block (RMSNorm, rotary positions, grouped-query
/// heads, SwiGLU, q/k norm, relative bias, causal mask — all composed of candle ops) against finite
/// differences: the gradient of a fixed function of the logits with respect to a LoRA adapter of
/// the first block, whose effect runs through every later op.
#[test]
fn every_familys_backward_pass_matches_finite_differences() {
    use candle_core::{Device, Tensor};
    use prodcat::encoder::{EncoderClassifier, LoraSettings, LoraTarget, Pooling};
    use prodcat::tokenize::{PaddedBatch, TextTokenizer};
    let fx = Fixture::new(10);
    for kind in FAMILIES {
        let base = base_of(&fx, kind);
        let config = EncoderConfig::from_hf_file(&base.join("config.json")).unwrap();
        let pooling = if config.causal { Pooling::Last } else { Pooling::Mean };
        let path = base.join("model.safetensors");
        let weights = load_base_weights(&path).unwrap();
        let lora = LoraSettings { dropout: 0.0, ..LoraSettings::default() };
        let model = EncoderClassifier::new(config, &weights, &path, lora, pooling, 3, 1).unwrap();
        let tokenizer = TextTokenizer::from_file(&base.join("tokenizer.json"), 32).unwrap();
        let tokens = tokenizer.encode_batch(&["phone", "laptop ssd ram intel ryzen", "novel"]).unwrap();
        let batch = PaddedBatch::from_tokens(tokens.iter());
        let adapter = model.layers[0].dense(LoraTarget::Query).and_then(|d| d.adapter.clone()).unwrap();
        adapter.b.set(&adapter.b.as_tensor().randn_like(0.0, 0.3).unwrap()).unwrap();
        let mix = Tensor::new(&[[1.0f32, -2.0, 0.5], [0.3, 1.0, -1.0], [-0.7, 0.2, 1.5]], &Device::Cpu).unwrap();
        let loss =
            |m: &EncoderClassifier| -> Tensor { (m.forward(&batch, None).unwrap() * &mix).unwrap().sum_all().unwrap() };
        let grads = loss(&model).backward().unwrap();
        for var in [&adapter.a, &adapter.b] {
            let analytic =
                grads.get(var.as_tensor()).expect("a gradient").flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let values = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // The three largest entries of the gradient, each checked by a central difference.
            let mut order: Vec<usize> = (0..analytic.len()).collect();
            order.sort_by(|&i, &j| analytic[j].abs().total_cmp(&analytic[i].abs()));
            assert!(analytic[order[0]].abs() > 1e-3, "{kind:?}: the adapter moves the loss");
            for &i in &order[..3] {
                let h = 1e-2f32;
                let at = |delta: f32| -> f32 {
                    let mut v = values.clone();
                    v[i] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
                    loss(&model).to_scalar::<f32>().unwrap()
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                var.set(&Tensor::from_vec(values.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
                let error = (numeric - analytic[i]).abs() / analytic[i].abs().max(1e-3);
                assert!(
                    error < 2e-2,
                    "{kind:?}: ∂loss/∂{i} = {} by autograd, {numeric} by finite differences",
                    analytic[i]
                );
            }
        }
    }
}
