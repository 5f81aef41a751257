//! Helpers for tests, benchmarks and the demo: a tiny random-weight BERT base model built on the
//! spot, and synthetic product titles. Not part of the stable API.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;

use crate::encoder::{EncoderConfig, EncoderFamily};
use crate::error::{Error, IoContext, Result};

/// Categories and vocabulary of the synthetic catalogue.
pub const CATEGORIES: [(&str, &[&str]); 5] = [
    ("Phones", &["smartphone", "phone", "dual", "sim", "5g", "unlocked", "android", "iphone", "galaxy", "pixel"]),
    (
        "Laptops",
        &["laptop", "notebook", "ultrabook", "ssd", "ram", "intel", "ryzen", "thinkpad", "macbook", "chromebook"],
    ),
    ("Fridges", &["fridge", "freezer", "litre", "frost", "free", "larder", "cooler", "a++", "integrated", "tall"]),
    ("Shoes", &["sneaker", "trainer", "running", "shoe", "leather", "boot", "sole", "laces", "size", "mesh"]),
    (
        "Books",
        &[
            "paperback",
            "hardcover",
            "novel",
            "edition",
            "author",
            "illustrated",
            "guide",
            "cookbook",
            "volume",
            "stories",
        ],
    ),
];

const FILLER: [&str; 10] = ["black", "white", "new", "pro", "max", "mini", "2024", "series", "pack", "deluxe"];

/// A synthetic product title with its category and a group key (the "product" it belongs to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticProduct {
    pub title: String,
    pub category: String,
    pub group: String,
}

/// `n` synthetic products; titles mix category words and shared filler words.
pub fn synthetic_products(n: usize, seed: u64) -> Vec<SyntheticProduct> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let (category, words) = CATEGORIES[i % CATEGORIES.len()];
            let mut title: Vec<&str> = (0..3).map(|_| *words.choose(&mut rng).unwrap_or(&"item")).collect();
            title.extend((0..rng.random_range(1..4)).map(|_| *FILLER.choose(&mut rng).unwrap_or(&"new")));
            title.shuffle_in_place(&mut rng);
            SyntheticProduct { title: title.join(" "), category: category.to_string(), group: format!("p{}", i / 3) }
        })
        .collect()
}

trait ShuffleInPlace {
    fn shuffle_in_place(&mut self, rng: &mut ChaCha8Rng);
}

impl<T> ShuffleInPlace for Vec<T> {
    fn shuffle_in_place(&mut self, rng: &mut ChaCha8Rng) {
        use rand::seq::SliceRandom;
        self.shuffle(rng);
    }
}

/// Writes products as a CSV with columns `id,title,category,group`.
pub fn write_products_csv(path: &Path, products: &[SyntheticProduct]) -> Result<()> {
    let mut out = String::from("id,title,category,group\n");
    for (i, p) in products.iter().enumerate() {
        out.push_str(&format!("{i},\"{}\",{},{}\n", p.title.replace('"', "\"\""), p.category, p.group));
    }
    std::fs::write(path, out).at(path)
}

/// Shape of a tiny test encoder of `family` (RoBERTa's positions start past its padding id 1, so
/// its table has two more rows).
///
/// The Llama-shaped ones have two key/value heads for four query heads (grouped-query attention);
/// Qwen3's heads are 16 wide, wider than 32 / 4, as its real `head_dim` can be.
pub fn tiny_config_of(family: EncoderFamily, vocab_size: usize) -> EncoderConfig {
    use crate::encoder::config::{Activation, NormKind};
    let (types, pad, positions) = match family {
        EncoderFamily::Bert => (2, 0, 64),
        EncoderFamily::Roberta | EncoderFamily::Mpnet => (1, 1, 66),
        _ => (1, 0, 64),
    };
    let llama = matches!(family, EncoderFamily::Llama | EncoderFamily::Qwen2 | EncoderFamily::Qwen3);
    let decoder = llama || family == EncoderFamily::Gpt2;
    let activation = match family {
        EncoderFamily::Gpt2 => Activation::GeluTanh,
        _ if llama => Activation::SwiGlu,
        _ => Activation::Gelu,
    };
    EncoderConfig {
        family,
        vocab_size,
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        intermediate_size: 64,
        max_positions: positions,
        type_vocab_size: types,
        layer_norm_eps: if llama {
            1e-6
        } else if decoder {
            1e-5
        } else {
            1e-12
        },
        pad_token_id: pad,
        norm_first: decoder,
        causal: decoder,
        activation,
        norm: if llama { NormKind::RmsNorm } else { NormKind::LayerNorm },
        kv_heads: llama.then_some(2),
        head_width: (family == EncoderFamily::Qwen3).then_some(16),
        rope_theta: llama.then_some(if family == EncoderFamily::Llama { 10_000.0 } else { 1_000_000.0 }),
        qk_norm: family == EncoderFamily::Qwen3,
        relative_buckets: (family == EncoderFamily::Mpnet).then_some(32),
    }
}

/// The tiny checkpoints tests write, each in the real layout of a Hugging Face model of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyCheckpoint {
    /// BERT: WordPiece, tensors without a prefix (as sentence-transformers' MiniLM).
    Bert,
    /// DistilBERT: WordPiece, `distilbert.` tensors, DistilBERT's config keys.
    DistilBert,
    /// RoBERTa: byte-level BPE, `roberta.` tensors, padding id 1.
    Roberta,
    /// XLM-RoBERTa: a SentencePiece Unigram tokenizer, RoBERTa's tensors, `model_type: xlm-roberta`.
    XlmRoberta,
    /// MPNet: WordPiece with `<s>`/`</s>` around the text, padding id 1, tensors without a prefix
    /// (`MPNetModel`), the shared relative position bias.
    Mpnet,
    /// GPT-2: byte-level BPE with no special tokens added, `transformer.` tensors in Conv1D layout
    /// (`[in, out]`, query/key/value fused in `c_attn`), the causal-mask buffers.
    Gpt2,
    /// Llama: byte-level BPE, `model.` tensors without biases, RMSNorm, grouped-query attention,
    /// SwiGLU, an `lm_head` nothing reads.
    Llama,
    /// Qwen2: Llama's layout with query, key and value biases.
    Qwen2,
    /// Qwen3: Llama's layout with per-head `q_norm`/`k_norm` and an explicit `head_dim`.
    Qwen3,
}

impl TinyCheckpoint {
    pub const ALL: [TinyCheckpoint; 9] = [
        Self::Bert,
        Self::DistilBert,
        Self::Roberta,
        Self::XlmRoberta,
        Self::Mpnet,
        Self::Gpt2,
        Self::Llama,
        Self::Qwen2,
        Self::Qwen3,
    ];

    /// The family that loads it.
    pub fn family(self) -> EncoderFamily {
        match self {
            Self::Bert => EncoderFamily::Bert,
            Self::DistilBert => EncoderFamily::DistilBert,
            Self::Roberta | Self::XlmRoberta => EncoderFamily::Roberta,
            Self::Gpt2 => EncoderFamily::Gpt2,
            Self::Mpnet => EncoderFamily::Mpnet,
            Self::Llama => EncoderFamily::Llama,
            Self::Qwen2 => EncoderFamily::Qwen2,
            Self::Qwen3 => EncoderFamily::Qwen3,
        }
    }
}

/// Builds a tiny random-weight BERT (config.json, model.safetensors, tokenizer.json) in `dir`.
pub fn tiny_base_model(dir: &Path, seed: u64) -> Result<EncoderConfig> {
    tiny_checkpoint(TinyCheckpoint::Bert, dir, seed)
}

/// Every word of [`CATEGORIES`] and the filler list.
fn catalogue_words() -> Vec<&'static str> {
    let mut words: Vec<&str> = CATEGORIES.iter().flat_map(|(_, w)| w.iter().copied()).collect();
    words.extend(FILLER);
    let mut seen = std::collections::HashSet::new();
    words.retain(|w| seen.insert(*w));
    words
}

/// Characters any synthetic text is made of (besides letters and digits, some punctuation).
const CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789+-.,'&/()!?:";

fn tok_err(e: Box<dyn std::error::Error + Send + Sync>) -> Error {
    Error::Internal(format!("building a tiny tokenizer: {e}"))
}

/// BERT's special tokens, at their ids, and the two around a text.
const BERT_SPECIALS: WordPieceSpecials =
    WordPieceSpecials { tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], unk: 1, start: 2, end: 3 };
/// MPNet's.
const MPNET_SPECIALS: WordPieceSpecials =
    WordPieceSpecials { tokens: ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk: 3, start: 0, end: 2 };

/// A WordPiece vocabulary's special tokens and which of them is unknown, starts and ends a text.
struct WordPieceSpecials {
    tokens: [&'static str; 5],
    unk: usize,
    start: usize,
    end: usize,
}

/// A WordPiece tokenizer (BERT's, or MPNet's specials): the special tokens, single characters (as
/// word starts and `##` continuations) and every catalogue word, so any ASCII text tokenizes
/// without unknown tokens. Returns it and its vocabulary size.
fn wordpiece_tokenizer(dir: &Path, specials: &WordPieceSpecials) -> Result<(Tokenizer, usize)> {
    let mut vocab: Vec<String> = specials.tokens.map(String::from).to_vec();
    for c in CHARS.chars() {
        vocab.push(c.to_string());
        vocab.push(format!("##{c}"));
    }
    vocab.extend(catalogue_words().iter().map(|w| w.to_string()));
    let mut seen = std::collections::HashSet::new();
    vocab.retain(|w| seen.insert(w.clone()));
    let vocab_path = dir.join("vocab.txt");
    std::fs::write(&vocab_path, vocab.join("\n") + "\n").at(&vocab_path)?;
    let vocab_file = vocab_path.to_str().ok_or_else(|| Error::Internal("non-UTF-8 temp path".into()))?;
    let [start, end, unk] = [specials.start, specials.end, specials.unk].map(|i| specials.tokens[i]);
    let wordpiece = WordPiece::from_file(vocab_file).unk_token(unk.into()).build().map_err(tok_err)?;
    let mut tokenizer = Tokenizer::new(wordpiece);
    tokenizer.with_normalizer(Some(BertNormalizer::new(true, true, None, true))).map_err(tok_err)?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    let template = TemplateProcessing::builder()
        .try_single(format!("{start} $A {end}"))
        .and_then(|b| b.try_pair(format!("{start} $A {end} $B:1 {end}:1")))
        .map_err(|e| Error::Internal(format!("building tiny tokenizer template: {e}")))?
        .special_tokens(vec![(start, specials.start as u32), (end, specials.end as u32)])
        .build()
        .map_err(|e| Error::Internal(format!("building tiny tokenizer template: {e}")))?;
    tokenizer.with_post_processor(Some(template));
    Ok((tokenizer, vocab.len()))
}

/// RoBERTa's special tokens, at their ids.
const ROBERTA_SPECIALS: [&str; 4] = ["<s>", "<pad>", "</s>", "<unk>"];

/// A byte-level BPE tokenizer: `specials`, the 256 byte symbols, and merges that spell out each
/// catalogue word after a space (`Ġ`); RoBERTa's wraps a text in `<s> … </s>`, GPT-2's adds
/// nothing.
fn byte_level_bpe_tokenizer(specials: &[&str], roberta: bool) -> Result<(Tokenizer, usize)> {
    use tokenizers::models::bpe::{BPE, Merges, Vocab};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::processors::roberta::RobertaProcessing;
    let mut tokens: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort_unstable();
    tokens.extend(alphabet.iter().map(|c| c.to_string()));
    let mut merges: Merges = Vec::new();
    for word in catalogue_words() {
        let mut current = String::from("Ġ");
        for c in word.chars() {
            let next = format!("{current}{c}");
            if !tokens.contains(&next) {
                merges.push((current.clone(), c.to_string()));
                tokens.push(next.clone());
            }
            current = next;
        }
    }
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let mut bpe = BPE::builder().vocab_and_merges(vocab, merges);
    if roberta {
        bpe = bpe.unk_token("<unk>".into());
    }
    let mut tokenizer = Tokenizer::new(bpe.build().map_err(tok_err)?);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(true, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    if roberta {
        tokenizer.with_post_processor(Some(RobertaProcessing::new(("</s>".into(), 2), ("<s>".into(), 0))));
    }
    Ok((tokenizer, tokens.len()))
}

/// A SentencePiece Unigram tokenizer (XLM-R's kind): the specials, `▁word` pieces for the
/// catalogue, and single characters so nothing is unknown.
fn unigram_tokenizer() -> Result<(Tokenizer, usize)> {
    use tokenizers::models::unigram::Unigram;
    use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
    let mut pieces: Vec<(String, f64)> = ROBERTA_SPECIALS.iter().map(|s| (s.to_string(), 0.0)).collect();
    pieces.extend(catalogue_words().iter().map(|w| (format!("▁{w}"), -2.0)));
    pieces.push(("▁".into(), -3.0));
    pieces.extend(CHARS.chars().map(|c| (c.to_string(), -5.0)));
    let size = pieces.len();
    let unigram = Unigram::from(pieces, Some(3), false).map_err(tok_err)?;
    let mut tokenizer = Tokenizer::new(unigram);
    tokenizer.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
    tokenizer.with_decoder(Some(Metaspace::new('▁', PrependScheme::Always, true)));
    let template = TemplateProcessing::builder()
        .try_single("<s> $A </s>")
        .map_err(|e| Error::Internal(format!("building tiny tokenizer template: {e}")))?
        .special_tokens(vec![("<s>", 0), ("</s>", 2)])
        .build()
        .map_err(|e| Error::Internal(format!("building tiny tokenizer template: {e}")))?;
    tokenizer.with_post_processor(Some(template));
    Ok((tokenizer, size))
}

/// Builds a tiny random-weight checkpoint of `kind` in `dir`, in the real layout of its kind:
/// `config.json` in the family's own keys, `model.safetensors` under its tensor names and
/// prefix, and its kind of `tokenizer.json` (WordPiece, byte-level BPE or Unigram).
pub fn tiny_checkpoint(kind: TinyCheckpoint, dir: &Path, seed: u64) -> Result<EncoderConfig> {
    std::fs::create_dir_all(dir).at(dir)?;
    let (tokenizer, vocab_size) = match kind {
        TinyCheckpoint::Bert | TinyCheckpoint::DistilBert => wordpiece_tokenizer(dir, &BERT_SPECIALS)?,
        TinyCheckpoint::Mpnet => wordpiece_tokenizer(dir, &MPNET_SPECIALS)?,
        TinyCheckpoint::Roberta => byte_level_bpe_tokenizer(&ROBERTA_SPECIALS, true)?,
        TinyCheckpoint::Gpt2 | TinyCheckpoint::Llama | TinyCheckpoint::Qwen2 | TinyCheckpoint::Qwen3 => {
            byte_level_bpe_tokenizer(&["<|endoftext|>"], false)?
        }
        TinyCheckpoint::XlmRoberta => unigram_tokenizer()?,
    };
    tokenizer.save(dir.join("tokenizer.json"), false).map_err(tok_err)?;
    let config = tiny_config_of(kind.family(), vocab_size);
    let mut json = config.to_hf_json();
    if kind == TinyCheckpoint::XlmRoberta {
        json["model_type"] = "xlm-roberta".into();
        json["architectures"] = serde_json::json!(["XLMRobertaModel"]);
    }
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(dir.join("config.json"), text).at(dir.join("config.json"))?;
    let prefix = match kind.family() {
        EncoderFamily::DistilBert => "distilbert.",
        EncoderFamily::Roberta => "roberta.",
        EncoderFamily::Gpt2 => "transformer.",
        EncoderFamily::Llama | EncoderFamily::Qwen2 | EncoderFamily::Qwen3 => "model.",
        EncoderFamily::Bert | EncoderFamily::Mpnet => "",
    };
    let mut tensors = tiny_weights(&config, seed)?;
    if kind == TinyCheckpoint::Gpt2 {
        tensors = gpt2_layout(tensors, &config)?;
    }
    let mut tensors: HashMap<String, Tensor> = tensors.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)).collect();
    if prefix == "model." {
        // `*ForCausalLM`'s language-model head, outside the prefix: stored, never read.
        let (vocab, h) = (config.vocab_size, config.hidden_size);
        tensors.insert("lm_head.weight".into(), Tensor::zeros((vocab, h), DType::F32, &Device::Cpu)?);
    }
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &path).map_err(|e| Error::model(&path, e.to_string()))?;
    Ok(config)
}

/// Random weights for `config` under its family's tensor names (no prefix).
fn tiny_weights(config: &EncoderConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    use crate::encoder::LoraTarget;
    let family = crate::encoder::family::of(config.family);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (h, i, dev) = (config.hidden_size, config.intermediate_size, Device::Cpu);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut random = |shape: &[usize], std: f32| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.random_range(-std..std) * 1.7).collect();
        Ok(Tensor::from_vec(data, shape, &dev)?)
    };
    let ones = |n: usize| Tensor::ones(n, DType::F32, &Device::Cpu);
    let zeros = |n: usize| Tensor::zeros(n, DType::F32, &Device::Cpu);
    let e = family.embeddings();
    tensors.insert(format!("{}.weight", e.word), random(&[config.vocab_size, h], 1.0)?);
    if let Some(position) = e.position {
        tensors.insert(format!("{position}.weight"), random(&[config.max_positions, h], 0.1)?);
    }
    if let Some(types) = e.token_type {
        tensors.insert(format!("{types}.weight"), random(&[config.type_vocab_size, h], 0.1)?);
    }
    if let Some(name) = family.relative_bias() {
        let buckets = config.relative_buckets.unwrap_or(32);
        tensors.insert(format!("{name}.weight"), random(&[buckets, config.num_heads], 1.0)?);
    }
    let rms = config.norm == crate::encoder::config::NormKind::RmsNorm;
    // LayerNorm: γ = 1, β = 0; RMSNorm: γ about 1 (each norm its own, so a swapped one shows).
    type Random<'a> = dyn FnMut(&[usize], f32) -> Result<Tensor> + 'a;
    let norm =
        |random: &mut Random<'_>, tensors: &mut HashMap<String, Tensor>, name: &str, width: usize| -> Result<()> {
            if rms {
                tensors.insert(format!("{name}.weight"), (random(&[width], 0.2)? + 1.0)?);
            } else {
                tensors.insert(format!("{name}.weight"), ones(width)?);
                tensors.insert(format!("{name}.bias"), zeros(width)?);
            }
            Ok(())
        };
    for name in e.norm.into_iter().chain(family.final_norm()) {
        norm(&mut random, &mut tensors, name, h)?;
    }
    let (q_width, kv_width) = (config.num_heads * config.head_dim(), config.kv_heads() * config.head_dim());
    for l in 0..config.num_layers {
        let names = family.layer(l);
        for (target, name) in &names.dense {
            let (out_f, in_f) = match target {
                LoraTarget::Query => (q_width, h),
                LoraTarget::Key | LoraTarget::Value => (kv_width, h),
                LoraTarget::AttentionOutput => (h, q_width),
                LoraTarget::Gate | LoraTarget::Intermediate => (i, h),
                LoraTarget::Output => (h, i),
            };
            tensors.insert(format!("{name}.weight"), random(&[out_f, in_f], 1.0 / (in_f as f32).sqrt())?);
            if family.has_bias(*target) {
                tensors.insert(format!("{name}.bias"), random(&[out_f], 0.02)?);
            }
        }
        for name in [&names.attention_norm, &names.output_norm] {
            norm(&mut random, &mut tensors, name, h)?;
        }
        for name in names.qk_norm.iter().flatten() {
            norm(&mut random, &mut tensors, name, config.head_dim())?;
        }
    }
    Ok(tensors)
}

/// GPT-2's checkpoint layout of weights named as the block reads them: Conv1D weights `[in, out]`,
/// query, key and value fused into `c_attn`, and each block's causal-mask buffer (`attn.bias`).
fn gpt2_layout(mut tensors: HashMap<String, Tensor>, config: &EncoderConfig) -> Result<HashMap<String, Tensor>> {
    let n = config.max_positions;
    let causal: Vec<f32> = (0..n * n).map(|k| if k % n <= k / n { 1.0 } else { 0.0 }).collect();
    for i in 0..config.num_layers {
        let p = format!("h.{i}");
        let mut take = |name: String| tensors.remove(&name).ok_or_else(|| Error::Internal(format!("no `{name}`")));
        let (mut weights, mut biases) = (Vec::new(), Vec::new());
        for part in ["q", "k", "v"] {
            weights.push(take(format!("{p}.attn.{part}.weight"))?);
            biases.push(take(format!("{p}.attn.{part}.bias"))?);
        }
        let fused = Tensor::cat(&weights, 0)?.t()?.contiguous()?;
        let mut converted = vec![
            (format!("{p}.attn.c_attn.weight"), fused),
            (format!("{p}.attn.c_attn.bias"), Tensor::cat(&biases, 0)?),
            (format!("{p}.attn.bias"), Tensor::from_vec(causal.clone(), (1, 1, n, n), &Device::Cpu)?),
        ];
        for conv in ["attn.c_proj", "mlp.c_fc", "mlp.c_proj"] {
            let w = take(format!("{p}.{conv}.weight"))?;
            converted.push((format!("{p}.{conv}.weight"), w.t()?.contiguous()?));
        }
        tensors.extend(converted);
    }
    Ok(tensors)
}
