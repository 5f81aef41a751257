//! Writes, for every encoder family, a tiny random checkpoint in Hugging Face's layout and what
//! prodcat computes on it: the token ids of a few mixed-length texts, the logits of prodcat's
//! candle forward pass (base weights, a random classification head, the family's default pooling)
//! and the ONNX export of the same model. `bench/reference.py` runs Hugging Face `transformers`
//! on the same checkpoint and ids and reports the largest logit difference per family.
//!
//!     cargo run --example bench_reference -- OUT_DIR [BASE_DIR ...]
//!
//! Each BASE_DIR (a real Hugging Face folder, such as all-mpnet-base-v2) is compared the same way.

use std::path::PathBuf;

use prodcat::common::Head;
use prodcat::encoder::{EncoderClassifier, EncoderConfig, LoraSettings, Pooling, load_base_weights};
use prodcat::testkit::{TinyCheckpoint, tiny_checkpoint};
use prodcat::tokenize::{PaddedBatch, TextTokenizer};

const TEXTS: [&str; 6] = [
    "phone",
    "dual sim smartphone 5g 128gb black unlocked",
    "paperback novel",
    "leather running shoe size 42 with extra grip and a very long title that goes on",
    "a",
    "laptop ssd ram intel ryzen thinkpad notebook",
];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out =
        PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("usage: bench_reference OUT_DIR [BASE_DIR ...]"))?);
    let mut checkpoints = Vec::new();
    for kind in TinyCheckpoint::ALL {
        let dir = out.join(format!("{kind:?}").to_lowercase());
        let config = tiny_checkpoint(kind, &dir, 7)?;
        anyhow::ensure!(
            EncoderConfig::from_hf_file(&dir.join("config.json"))? == config,
            "{kind:?}: config.json reads back"
        );
        checkpoints.push((format!("{kind:?}"), dir.clone(), dir));
    }
    for base in args.map(PathBuf::from) {
        let name = base.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        checkpoints.push((name.clone(), base, out.join(name)));
    }
    for (name, dir, work) in checkpoints {
        std::fs::create_dir_all(&work)?;
        let config = EncoderConfig::from_hf_file(&dir.join("config.json"))?;
        let pooling = if config.causal { Pooling::Last } else { Pooling::Mean };
        let path = dir.join("model.safetensors");
        let weights = load_base_weights(&path)?;
        let model = EncoderClassifier::new(config, &weights, &path, LoraSettings::default(), pooling, 5, 3)?;
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), 64)?;
        let tokens = tokenizer.encode_batch(&TEXTS)?;
        let batch = PaddedBatch::from_tokens(tokens.iter());
        let logits = model.forward(&batch, None)?.to_vec2::<f32>()?;
        let export_dir = work.join("prodcat-onnx");
        std::fs::create_dir_all(&export_dir)?;
        prodcat::onnx::transformer::export(&model, Head::SingleLabel, None, &[])?.write(&export_dir)?;
        let rows = |v: &[i64]| v.chunks(batch.seq).map(<[i64]>::to_vec).collect::<Vec<_>>();
        let record = serde_json::json!({
            "family": name,
            "base": dir,
            "pooling": format!("{pooling:?}").to_lowercase(),
            "input_ids": rows(&batch.input_ids),
            "attention_mask": rows(&batch.attention_mask),
            "token_type_ids": rows(&batch.token_type_ids),
            "head_weight": model.head.weight.as_tensor().to_vec2::<f32>()?,
            "head_bias": model.head.bias.as_tensor().to_vec1::<f32>()?,
            "candle_logits": logits,
        });
        std::fs::write(work.join("prodcat.json"), serde_json::to_string(&record)?)?;
        println!("{}", work.display());
    }
    Ok(())
}
