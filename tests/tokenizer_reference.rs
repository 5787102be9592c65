//! Acceptance: the tokenizer built from GGUF metadata gives exactly llama.cpp's token ids on the
//! fixture strings (code, unicode, whitespace runs, digits, special tokens, ...) of both registry
//! models, and decoding is lossless. The fixtures are written once by
//! scripts/make_tokenizer_fixture.py with llama-cpp-python, an independent tokenizer.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use ucoder_flow::llm::gguf::GgufModel;
use ucoder_flow::llm::tokenizer::Tokenizer;
use ucoder_flow::models::{self, DEFAULT_MODEL, TEST_MODEL};

#[derive(Deserialize)]
struct Header {
    model: String,
    n_vocab: usize,
    bos: i64,
    eog: Vec<u32>,
    add_bos: bool,
}

#[derive(Deserialize)]
struct Row {
    text: String,
    ids: Vec<u32>,
    /// llama.cpp's detokenization of `ids`, present only where it differs from `text`.
    detok: Option<String>,
}

fn fixture_path(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizer")
        .join(format!("{model}.jsonl.gz"))
}

fn read_fixture(model: &str) -> (Header, Vec<Row>) {
    let path = fixture_path(model);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = BufReader::new(flate2::read::GzDecoder::new(file)).lines();
    let header: Header =
        serde_json::from_str(&lines.next().expect("header line").unwrap()).expect("fixture header");
    assert_eq!(header.model, model);
    let rows = lines
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(&line.unwrap())
                .unwrap_or_else(|e| panic!("{}: line {}: {e}", path.display(), i + 2))
        })
        .collect();
    (header, rows)
}

fn tokenizer_for(model: &str) -> Tokenizer {
    let source = models::resolve(
        model,
        &ucoder_flow::fetch::cache_dir(),
        &ucoder_flow::progress::Notes(|line: &str| eprintln!("[models] {line}")),
    )
    .expect("model");
    let gguf = GgufModel::open(source.path()).expect("open GGUF");
    Tokenizer::from_gguf(gguf.content()).expect("tokenizer from GGUF")
}

/// A readable account of where two id sequences part.
fn describe_mismatch(tok: &Tokenizer, text: &str, expected: &[u32], got: &[u32]) -> String {
    let at = expected
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(got.len()));
    let show = |ids: &[u32]| -> String {
        ids.iter()
            .skip(at.saturating_sub(2))
            .take(6)
            .map(|&id| format!("{id}:{:?}", tok.decode(&[id]).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "text {text:?}\n    first difference at token {at}\n    llama.cpp: {}\n    ours:      {}",
        show(expected),
        show(got)
    )
}

fn check_model(model: &str, tok: &Tokenizer) {
    let (header, rows) = read_fixture(model);
    assert!(
        rows.len() >= 1000,
        "{model}: only {} fixture strings",
        rows.len()
    );

    assert_eq!(tok.vocab_size(), header.n_vocab, "{model}: vocabulary size");
    assert_eq!(
        tok.bos_token_id().map(i64::from).unwrap_or(-1),
        header.bos,
        "{model}: BOS"
    );
    assert_eq!(tok.adds_bos(), header.add_bos, "{model}: add_bos");
    let eog: BTreeSet<u32> = header.eog.iter().copied().collect();
    let ours: BTreeSet<u32> = tok.eos_token_ids().iter().copied().collect();
    assert_eq!(ours, eog, "{model}: end-of-generation tokens");

    let mut mismatches = Vec::new();
    let mut round_trip_failures = Vec::new();
    let mut tokens = 0;
    for (i, row) in rows.iter().enumerate() {
        let ids = tok.encode(&row.text, false).expect("encode");
        tokens += ids.len();
        if ids != row.ids {
            mismatches.push(format!(
                "#{i}: {}",
                describe_mismatch(tok, &row.text, &row.ids, &ids)
            ));
        }
        assert_eq!(
            tok.encode(&row.text, true).unwrap(),
            ids,
            "{model}: add_special_tokens without add_bos changes nothing"
        );
        let decoded = tok.decode(&ids).expect("decode");
        if decoded != row.text {
            round_trip_failures.push(format!("#{i}: {:?} -> {decoded:?}", row.text));
        }
        let reference_text = row.detok.as_deref().unwrap_or(&row.text);
        assert_eq!(
            tok.decode(&row.ids).unwrap(),
            reference_text,
            "{model} #{i}: decoding llama.cpp's ids differs from llama.cpp's detokenization"
        );
    }
    eprintln!("{model}: {} strings, {tokens} tokens compared", rows.len());
    assert!(
        mismatches.is_empty(),
        "{model}: {} of {} strings tokenize differently from llama.cpp; first ones:\n{}",
        mismatches.len(),
        rows.len(),
        mismatches
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        round_trip_failures.is_empty(),
        "{model}: decode(encode(s)) != s for {} strings:\n{}",
        round_trip_failures.len(),
        round_trip_failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn test_model_matches_llama_cpp() {
    check_model(TEST_MODEL, &tokenizer_for(TEST_MODEL));
}

#[test]
fn default_model_matches_llama_cpp() {
    check_model(DEFAULT_MODEL, &tokenizer_for(DEFAULT_MODEL));
}

/// The tokenizer saved as tokenizer.json (how fine-tuned safetensors models carry it) and loaded
/// back, with BOS/EOS from a config.json beside it, still gives llama.cpp's ids.
#[test]
fn saved_tokenizer_json_matches_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    tokenizer_for(TEST_MODEL)
        .save_json(&path)
        .expect("save tokenizer.json");
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"bos_token_id": 1, "eos_token_id": 2}"#,
    )
    .unwrap();
    let tok = Tokenizer::from_json_file(&path).expect("load tokenizer.json");
    assert!(tok.token_bytes(0).is_some(), "byte-level decoding");
    check_model(TEST_MODEL, &tok);
}
