//! Opening GGUF files: the real test model opens with the right metadata; broken copies of it
//! (truncated, not a GGUF at all, an altered architecture, a missing key) are rejected with
//! the matching typed error, and every message names the file.

use std::path::{Path, PathBuf};

use ucoder_flow::llm::gguf::{Architecture, GgufError, GgufModel, MetadataError};

fn test_model_path() -> PathBuf {
    ucoder_flow::models::test_model()
        .expect("test model")
        .path()
        .to_path_buf()
}

/// The first `len` bytes of the test model, with `patches` (old, new) applied once each.
fn broken_copy(dir: &Path, name: &str, len: u64, patches: &[(&[u8], &[u8])]) -> PathBuf {
    let full = std::fs::read(test_model_path()).expect("read test model");
    let mut bytes = full[..len as usize].to_vec();
    for (old, new) in patches {
        assert_eq!(old.len(), new.len(), "patches keep the length");
        let at = bytes
            .windows(old.len())
            .position(|w| w == *old)
            .unwrap_or_else(|| panic!("{:?} not in the header", String::from_utf8_lossy(old)));
        bytes[at..at + old.len()].copy_from_slice(new);
    }
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write fixture");
    path
}

fn header_len() -> u64 {
    GgufModel::open(test_model_path())
        .unwrap()
        .content()
        .tensor_data_offset
}

fn assert_names_path(err: &GgufError, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name the file: {msg}"
    );
}

#[test]
fn real_test_model_opens_with_its_metadata() {
    let path = test_model_path();
    let model = GgufModel::open(&path).expect("test model opens");
    assert_eq!(model.path(), path);
    assert_eq!(model.architecture(), Architecture::Llama);
    assert_eq!(model.context_length(), 8192);
    let hp = model.hyperparameters();
    assert_eq!(
        (hp.block_count, hp.embedding_length, hp.feed_forward_length),
        (30, 576, 1536)
    );
    assert_eq!((hp.head_count, hp.head_count_kv), (9, 3));
    assert_eq!(hp.rope_dimension_count, 64);
    assert_eq!(hp.rope_freq_base, 100_000.0);
    assert!((hp.rms_norm_eps - 1e-5).abs() < 1e-9);
    assert_eq!(model.content().tensor_infos.len(), 272);
    // The tensors are readable through the model's reader.
    let mut reader = model.reader().unwrap();
    let embedding = model
        .content()
        .tensor(&mut reader, "token_embd.weight", &candle_core::Device::Cpu)
        .expect("embedding tensor");
    assert_eq!(embedding.shape().dims(), [49152, 576]);
}

#[test]
fn truncated_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let full_len = std::fs::metadata(test_model_path()).unwrap().len();
    let path = broken_copy(dir.path(), "short.gguf", full_len - 1, &[]);
    let err = GgufModel::open(&path).unwrap_err();
    match &err {
        GgufError::Truncated {
            file_len, needed, ..
        } => {
            assert_eq!(*file_len, full_len - 1);
            assert_eq!(
                *needed, full_len,
                "the last tensor ends at the end of the file"
            );
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert_names_path(&err, &path);

    // Cut inside the header: the header itself cannot be parsed.
    let path = broken_copy(dir.path(), "header.gguf", 4096, &[]);
    let err = GgufModel::open(&path).unwrap_err();
    assert!(matches!(err, GgufError::BadHeader { .. }), "{err:?}");
    assert_names_path(&err, &path);
}

#[test]
fn text_file_is_not_a_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, "this is a README, not a model\n").unwrap();
    let err = GgufModel::open(&path).unwrap_err();
    assert!(
        matches!(&err, GgufError::NotGguf { found, .. } if found == "this"),
        "{err:?}"
    );
    assert_names_path(&err, &path);

    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, "").unwrap();
    let err = GgufModel::open(&empty).unwrap_err();
    assert!(matches!(err, GgufError::NotGguf { .. }), "{err:?}");

    let missing = dir.path().join("missing.gguf");
    let err = GgufModel::open(&missing).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }), "{err:?}");
    assert_names_path(&err, &missing);
}

#[test]
fn unsupported_architecture_lists_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    // The value "llama" (u64 length 5, then the bytes) right after the key's type tag.
    let path = broken_copy(
        dir.path(),
        "mamba.gguf",
        header_len(),
        &[(b"\x05\0\0\0\0\0\0\0llama", b"\x05\0\0\0\0\0\0\0mamba")],
    );
    let err = GgufModel::open(&path).unwrap_err();
    assert!(
        matches!(&err, GgufError::UnsupportedArchitecture { found, .. } if found == "mamba"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("qwen2") && msg.contains("llama"), "{msg}");
    assert_names_path(&err, &path);
}

#[test]
fn missing_metadata_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = broken_copy(
        dir.path(),
        "nokey.gguf",
        header_len(),
        &[(b"llama.context_length", b"llama.context_lengtX")],
    );
    let err = GgufModel::open(&path).unwrap_err();
    match &err {
        GgufError::Metadata {
            source: MetadataError::Missing { key },
            ..
        } => assert_eq!(key, "llama.context_length"),
        other => panic!("expected a missing key, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("llama.context_length"), "{msg}");
    assert_names_path(&err, &path);
}
