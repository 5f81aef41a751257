//! The tokenizer's ASCII fast path gives exactly what Hugging Face tokenizers gives: on edge cases
//! with a tiny random BERT's WordPiece vocabulary, and on every line and field of the shared data
//! sets with all-MiniLM-L6-v2's (skipped with a message where those are absent).

use std::path::{Path, PathBuf};

use prodcat::tokenize::TextTokenizer;

/// Every text both ways, at several truncation lengths: the fast path must give exactly what
/// Hugging Face tokenizers gives.
fn assert_parity(path: &Path, texts: &[&str]) {
    for max_length in [2, 3, 8, 128] {
        let fast = TextTokenizer::from_file(path, max_length).expect("tokenizer.json");
        assert!(fast.has_fast_path(), "{} should take the fast path", path.display());
        let slow = fast.clone().without_fast_path();
        let (a, b) = (fast.encode_batch(texts).expect("fast path"), slow.encode_batch(texts).expect("Hugging Face"));
        for ((text, a), b) in texts.iter().zip(&a).zip(&b) {
            assert_eq!(a, b, "max_length {max_length}, text {text:?}");
            assert_eq!(&fast.encode(text).expect("single encode"), b, "single encode, text {text:?}");
        }
    }
}

#[test]
fn ascii_fast_path_matches_hugging_face_on_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    prodcat::testkit::tiny_base_model(dir.path(), 1).unwrap();
    let long_word = "x".repeat(101);
    let exact_word = "y".repeat(100);
    let many = "phone laptop ".repeat(40);
    let texts = [
        "",
        " ",
        "Phone",
        "SAMSUNG Galaxy S23, 128GB (black)!",
        "a\tb\nc\rd\u{b}e\u{c}f\u{1c}g\u{0}h\u{7f}i",
        "tab\t\tsep  and   spaces ",
        "fridge-freezer/60cm & 'eco'... ??",
        "[MASK] phone",
        "phone [mask]",
        "phone[SEP]laptop",
        "[CLS",
        "##ab ## #",
        "zzzq unknownword qq",
        &long_word,
        &exact_word,
        &many,
        "café crème",
        "naïve 日本 phone",
        "\u{fffd} replacement",
        "~`^_|{}<>=@$%*;\"\\",
        "1234567890 12.5kg 3,5\"",
    ];
    assert_parity(&dir.path().join("tokenizer.json"), &texts);
}

#[test]
fn ascii_fast_path_matches_hugging_face_on_the_shared_data() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tokenizer = root.join(".deps/models/all-MiniLM-L6-v2/tokenizer.json");
    let data = root.join("../shared/data");
    if !tokenizer.is_file() || !data.is_dir() {
        eprintln!("skipped: needs the MiniLM tokenizer (scripts/provision.sh) and ../shared/data");
        return;
    }
    let mut lines = Vec::new();
    for entry in walk(&data) {
        if entry.extension().is_some_and(|e| e == "csv") {
            let text = std::fs::read_to_string(&entry).unwrap();
            // Whole lines (quotes and commas included) and each comma-separated field.
            for line in text.lines() {
                lines.push(line.to_string());
                lines.extend(line.split(',').map(str::to_string));
            }
        }
    }
    assert!(lines.len() > 10_000, "expected the shared data sets, found {} texts", lines.len());
    let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
    let taken = texts.iter().filter(|t| t.is_ascii()).count();
    assert!(taken * 10 > texts.len() * 9, "most shared-data texts are ASCII ({taken} of {})", texts.len());
    assert_parity(&tokenizer, &texts);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a data folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
