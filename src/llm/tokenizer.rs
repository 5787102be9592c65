//! The model's tokenizer: byte-level BPE built from GGUF metadata (`tokenizer.ggml.*`) or loaded
//! from a `tokenizer.json`, encoding with the `tokenizers` crate and decoding to exact bytes.
//!
//! From GGUF it mirrors what llama.cpp does with the same metadata, so both produce the same ids:
//! the BPE vocabulary and merges; the pre-tokenizer regexes that `tokenizer.ggml.pre` names (copied
//! from llama.cpp's `llama-vocab.cpp`; notably `smollm` splits digits and then applies the GPT-2
//! regex *without* a prefix space, and no model gets a Unicode normalizer); control and unknown
//! tokens (`tokenizer.ggml.token_type` 3 and 2) become special tokens and user-defined ones (4)
//! added tokens, so a `<|im_start|>` written in the text encodes as that one token; BOS is
//! prepended when `tokenizer.ggml.add_bos_token` says so. Decoding maps every token back to its
//! raw bytes (the byte-level alphabet inverted; special and added tokens as their text), so
//! `decode(encode(s)) == s` for every string. [`Tokenizer::eos_token_ids`] is the set of tokens
//! that end a generation (EOS plus end-of-turn tokens such as `<|im_end|>` and `<|endoftext|>`).
//!
//! Deliberate llama.cpp parities, checked by tests/tokenizer_reference.rs against llama.cpp's own
//! ids: no NFC normalization for `qwen2` (Hugging Face's tokenizer.json has one; llama.cpp does
//! not, and without it decoding stays lossless), and the token texts llama.cpp promotes to control
//! tokens whatever their GGUF type (FIM markers, end-of-turn texts; for Qwen2.5 that includes a
//! normal token `</s>`, so `</s>` in text encodes as one token that also ends generation).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::gguf::{MetadataError, meta_bool, meta_int_array, meta_str, meta_str_array, meta_u32};

/// Why a tokenizer could not be built or could not encode/decode.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer: {0}")]
    Metadata(#[from] MetadataError),
    #[error(
        "unsupported tokenizer model `tokenizer.ggml.model = {0}`: only byte-level BPE (`gpt2`) is supported"
    )]
    UnsupportedModel(String),
    #[error(
        "unsupported pre-tokenizer `tokenizer.ggml.pre = {found}`; supported: {supported}",
        supported = supported_pre_tokenizers()
    )]
    UnsupportedPreTokenizer { found: String },
    #[error(
        "the GGUF has no `tokenizer.ggml.pre`, so its pre-tokenizer is unknown (supported: {supported}); regenerate the GGUF with a current llama.cpp convert script",
        supported = supported_pre_tokenizers()
    )]
    MissingPreTokenizer,
    #[error(
        "`tokenizer.ggml.merges` entry {index} (`{entry}`) is not two tokens separated by a space"
    )]
    BadMerge { index: usize, entry: String },
    #[error(
        "`tokenizer.ggml.token_type` has {found} entries but `tokenizer.ggml.tokens` has {expected}"
    )]
    TokenTypeCount { found: usize, expected: usize },
    #[error("`{key}` = {id} is outside the vocabulary of {vocab_size} tokens")]
    SpecialIdOutOfRange {
        key: &'static str,
        id: u32,
        vocab_size: usize,
    },
    #[error("building the tokenizer: {0}")]
    Build(String),
    #[error("{path}: cannot load the tokenizer: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("encoding text: {0}")]
    Encode(String),
    #[error("decoding: token id {id} is outside the vocabulary of {vocab_size} tokens")]
    UnknownId { id: u32, vocab_size: usize },
    #[error("decoding: {0}")]
    Decode(String),
}

/// A pre-tokenizer family: the `tokenizer.ggml.pre` names that select it and llama.cpp's regexes,
/// applied in order, each to the pieces the previous one produced.
struct PreTokenizerSpec {
    names: &'static [&'static str],
    regexes: &'static [&'static str],
    /// Whole pre-tokenized words that are in the vocabulary skip the merges (llama3 family).
    ignore_merges: bool,
    /// Whether BOS is added when `tokenizer.ggml.add_bos_token` is absent.
    add_bos_default: bool,
}

const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-2's regex. llama.cpp's version ends at `\s+(?!\S)` but its hand-written matcher for it
/// also takes a trailing whitespace run whole, which is what the final `|\s+` does here.
const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

const PRE_TOKENIZERS: &[PreTokenizerSpec] = &[
    PreTokenizerSpec {
        names: &["qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"],
        regexes: &[QWEN2_REGEX],
        ignore_merges: false,
        add_bos_default: false,
    },
    PreTokenizerSpec {
        names: &[
            "smollm",
            "starcoder",
            "refact",
            "codeshell",
            "exaone",
            "minerva-7b",
        ],
        regexes: &[r"\p{N}", GPT2_REGEX],
        ignore_merges: false,
        add_bos_default: false,
    },
    PreTokenizerSpec {
        names: &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "dbrx",
            "smaug-bpe",
        ],
        regexes: &[LLAMA3_REGEX],
        ignore_merges: true,
        add_bos_default: true,
    },
    PreTokenizerSpec {
        names: &["gpt-2", "gpt2", "phi-2", "mpt", "olmo"],
        regexes: &[GPT2_REGEX],
        ignore_merges: false,
        add_bos_default: false,
    },
];

fn supported_pre_tokenizers() -> String {
    PRE_TOKENIZERS
        .iter()
        .flat_map(|spec| spec.names.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
mod token_type {
    pub const UNKNOWN: i64 = 2;
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
}

/// Token texts that end a generation (llama.cpp's end-of-generation list, including its FIM
/// pad/repo/file-separator markers, which also end an answer).
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

/// Token texts that llama.cpp treats as control tokens even when the GGUF types them as normal
/// (its FIM markers; the end-of-generation texts above are treated the same way). The one that
/// matters for the registry models: Qwen2.5's vocabulary has `</s>` as a *normal* token (128247),
/// which llama.cpp, and therefore this tokenizer, matches in text as a special token and treats
/// as end of generation.
const FIM_MARKER_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];

fn forced_control(text: &str) -> bool {
    END_OF_GENERATION_TEXTS.contains(&text) || FIM_MARKER_TEXTS.contains(&text)
}

/// GPT-2's byte-to-character alphabet: printable Latin-1 bytes stand for themselves, the other
/// bytes for the characters from U+0100 on, in byte order.
fn byte_level_alphabet() -> [char; 256] {
    let mut alphabet = ['\0'; 256];
    let mut next = 256u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        alphabet[byte as usize] = if printable {
            char::from(byte)
        } else {
            let c = char::from_u32(next).expect("U+0100..U+0143 are characters");
            next += 1;
            c
        };
    }
    alphabet
}

/// The raw bytes a byte-level token stands for; characters outside the alphabet (which a
/// well-formed vocabulary does not have) are kept as their UTF-8.
fn byte_level_decode(token: &str, char_to_byte: &HashMap<char, u8>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(token.len());
    for c in token.chars() {
        match char_to_byte.get(&c) {
            Some(b) => bytes.push(*b),
            None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    bytes
}

fn char_to_byte_map() -> HashMap<char, u8> {
    byte_level_alphabet()
        .iter()
        .enumerate()
        .map(|(byte, c)| (*c, byte as u8))
        .collect()
}

/// A model's tokenizer. Cheap to share across threads (`&self` everywhere).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// What each token id decodes to, when the vocabulary is byte-level (always from GGUF).
    token_bytes: Option<Vec<Box<[u8]>>>,
    /// Whether `encode` adds BOS/EOS itself (GGUF) or leaves it to the post-processor (JSON).
    own_specials: bool,
    bos: Option<u32>,
    add_bos: bool,
    eos: Option<u32>,
    add_eos: bool,
    end_of_generation: Vec<u32>,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("add_bos", &self.add_bos)
            .field("eos", &self.eos)
            .field("end_of_generation", &self.end_of_generation)
            .finish_non_exhaustive()
    }
}

fn build_error(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Build(e.to_string())
}

fn checked_id(
    key: &'static str,
    id: Option<u32>,
    vocab_size: usize,
) -> Result<Option<u32>, TokenizerError> {
    match id {
        Some(id) if id as usize >= vocab_size => Err(TokenizerError::SpecialIdOutOfRange {
            key,
            id,
            vocab_size,
        }),
        other => Ok(other),
    }
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes (see the module docs for what is read).
    pub fn from_gguf(content: &Content) -> Result<Self, TokenizerError> {
        let required = |key: &str| MetadataError::Missing {
            key: key.to_string(),
        };
        let model = meta_str(content, "tokenizer.ggml.model")?
            .ok_or_else(|| required("tokenizer.ggml.model"))?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        let pre_name =
            meta_str(content, "tokenizer.ggml.pre")?.ok_or(TokenizerError::MissingPreTokenizer)?;
        let pre = PRE_TOKENIZERS
            .iter()
            .find(|spec| spec.names.contains(&pre_name))
            .ok_or_else(|| TokenizerError::UnsupportedPreTokenizer {
                found: pre_name.to_string(),
            })?;

        let tokens = meta_str_array(content, "tokenizer.ggml.tokens")?
            .ok_or_else(|| required("tokenizer.ggml.tokens"))?;
        let vocab_size = tokens.len();
        let merges = meta_str_array(content, "tokenizer.ggml.merges")?
            .ok_or_else(|| required("tokenizer.ggml.merges"))?;
        let merges = merges
            .iter()
            .enumerate()
            .map(|(index, entry)| split_merge(entry).ok_or_else(|| bad_merge(index, entry)))
            .collect::<Result<Vec<_>, _>>()?;
        let token_types = match meta_int_array(content, "tokenizer.ggml.token_type")? {
            Some(types) if types.len() != vocab_size => {
                return Err(TokenizerError::TokenTypeCount {
                    found: types.len(),
                    expected: vocab_size,
                });
            }
            Some(types) => types,
            None => vec![1; vocab_size],
        };

        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token.to_string(), id as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(pre.ignore_merges)
            .build()
            .map_err(build_error)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer(pre.regexes)?));
        // Decoding uses `token_bytes`; the decoder only matters for `save_json`.
        inner.with_decoder(Some(ByteLevel::new(false, false, false)));

        let mut special = Vec::new();
        let mut user_defined = Vec::new();
        for (id, (&text, &kind)) in tokens.iter().zip(&token_types).enumerate() {
            if kind == token_type::CONTROL || kind == token_type::UNKNOWN || forced_control(text) {
                special.push((id, AddedToken::from(text, true).normalized(false)));
            } else if kind == token_type::USER_DEFINED {
                user_defined.push((id, AddedToken::from(text, false).normalized(false)));
            }
        }
        let special_ids: BTreeSet<usize> = special.iter().map(|(id, _)| *id).collect();
        let user_defined_ids: BTreeSet<usize> = user_defined.iter().map(|(id, _)| *id).collect();
        inner.add_special_tokens(&special.into_iter().map(|(_, t)| t).collect::<Vec<_>>());
        inner.add_tokens(&user_defined.into_iter().map(|(_, t)| t).collect::<Vec<_>>());

        let char_to_byte = char_to_byte_map();
        let token_bytes = tokens
            .iter()
            .enumerate()
            .map(|(id, text)| {
                if special_ids.contains(&id) || user_defined_ids.contains(&id) {
                    text.as_bytes().into()
                } else {
                    byte_level_decode(text, &char_to_byte).into_boxed_slice()
                }
            })
            .collect();

        let bos = checked_id(
            "tokenizer.ggml.bos_token_id",
            meta_u32(content, "tokenizer.ggml.bos_token_id")?,
            vocab_size,
        )?;
        let eos = checked_id(
            "tokenizer.ggml.eos_token_id",
            meta_u32(content, "tokenizer.ggml.eos_token_id")?,
            vocab_size,
        )?;
        let add_bos =
            meta_bool(content, "tokenizer.ggml.add_bos_token")?.unwrap_or(pre.add_bos_default);
        let add_eos = meta_bool(content, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);

        let mut end_of_generation: BTreeSet<u32> = eos.into_iter().collect();
        for key in [
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
            "tokenizer.ggml.fim_pad_token_id",
            "tokenizer.ggml.fim_rep_token_id",
            "tokenizer.ggml.fim_sep_token_id",
        ] {
            end_of_generation
                .extend(meta_u32(content, key)?.filter(|&id| (id as usize) < vocab_size));
        }
        for &id in &special_ids {
            if END_OF_GENERATION_TEXTS.contains(&tokens[id]) {
                end_of_generation.insert(id as u32);
            }
        }

        let add_bos = add_bos && bos.is_some();
        let add_eos = add_eos && eos.is_some();
        if add_bos || add_eos {
            // `encode` adds them itself; the post-processor only matters for `save_json`.
            let bos = bos.filter(|_| add_bos).map(|id| (tokens[id as usize], id));
            let eos = eos.filter(|_| add_eos).map(|id| (tokens[id as usize], id));
            inner.with_post_processor(Some(bos_eos_processor(bos, eos)?));
        }

        Ok(Self {
            inner,
            token_bytes: Some(token_bytes),
            own_specials: true,
            bos,
            add_bos,
            eos,
            add_eos,
            end_of_generation: end_of_generation.into_iter().collect(),
            vocab_size,
        })
    }

    /// Loads a Hugging Face `tokenizer.json` (safetensors model directories). BOS/EOS ids come
    /// from a `config.json` beside it when there is one; end-of-generation tokens are EOS plus
    /// the special tokens with end-of-turn texts.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let file_error = |reason: String| TokenizerError::File {
            path: path.to_path_buf(),
            reason,
        };
        let inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| file_error(e.to_string()))?;
        let vocab_size = inner.get_vocab_size(true);

        let config = path.with_file_name("config.json");
        let (bos, eos_from_config) = if config.is_file() {
            let text = std::fs::read_to_string(&config).map_err(|e| TokenizerError::File {
                path: config.clone(),
                reason: e.to_string(),
            })?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| TokenizerError::File {
                    path: config.clone(),
                    reason: e.to_string(),
                })?;
            (
                json.get("bos_token_id")
                    .and_then(|v| v.as_u64())
                    .map(|v| v as u32),
                id_or_ids(json.get("eos_token_id")),
            )
        } else {
            (None, Vec::new())
        };

        let mut end_of_generation: BTreeSet<u32> = eos_from_config.iter().copied().collect();
        for (id, token) in inner.get_added_tokens_decoder() {
            if token.special && END_OF_GENERATION_TEXTS.contains(&token.content.as_str()) {
                end_of_generation.insert(id);
            }
        }
        end_of_generation.retain(|&id| (id as usize) < vocab_size);
        let eos = eos_from_config
            .first()
            .copied()
            .or_else(|| end_of_generation.first().copied());

        let token_bytes = json_token_bytes(&inner, vocab_size);
        Ok(Self {
            inner,
            token_bytes,
            own_specials: false,
            bos: bos.filter(|&id| (id as usize) < vocab_size),
            add_bos: false,
            eos,
            add_eos: false,
            end_of_generation: end_of_generation.into_iter().collect(),
            vocab_size,
        })
    }

    /// Writes the tokenizer as a Hugging Face `tokenizer.json` (for safetensors model directories,
    /// e.g. fine-tuned weights), atomically: a temp file in the same folder, fsynced, renamed.
    /// [`Tokenizer::from_json_file`] reads it back with the same ids.
    pub fn save_json(&self, path: impl AsRef<Path>) -> Result<(), TokenizerError> {
        let path = path.as_ref();
        let file_error = |reason: String| TokenizerError::File {
            path: path.to_path_buf(),
            reason,
        };
        let json = self
            .inner
            .to_string(false)
            .map_err(|e| file_error(e.to_string()))?;
        crate::store::write_atomic(path, json.as_bytes()).map_err(|e| file_error(e.to_string()))?;
        Ok(())
    }

    /// Token ids for `text`. Special tokens written in the text (`<|im_start|>`, ...) become their
    /// ids. With `add_special_tokens`, BOS (and EOS) are added when the model asks for them.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let hf_specials = add_special_tokens && !self.own_specials;
        let encoding = self
            .inner
            .encode_fast(text, hf_specials)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let ids = encoding.get_ids();
        if !(add_special_tokens && self.own_specials) {
            return Ok(ids.to_vec());
        }
        let mut out = Vec::with_capacity(ids.len() + 2);
        if self.add_bos {
            out.extend(self.bos);
        }
        out.extend_from_slice(ids);
        if self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }

    /// The text of `ids`, special tokens included. For byte-level vocabularies this is exact:
    /// `decode(encode(s)) == s`; byte sequences that are not valid UTF-8 (a completion cut inside
    /// a multi-byte character) decode with U+FFFD replacement characters.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        match &self.token_bytes {
            Some(table) => {
                let mut bytes = Vec::with_capacity(ids.len() * 4);
                for &id in ids {
                    let piece = table.get(id as usize).ok_or(TokenizerError::UnknownId {
                        id,
                        vocab_size: self.vocab_size,
                    })?;
                    bytes.extend_from_slice(piece);
                }
                Ok(match String::from_utf8(bytes) {
                    Ok(s) => s,
                    Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                })
            }
            None => {
                if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
                    return Err(TokenizerError::UnknownId {
                        id,
                        vocab_size: self.vocab_size,
                    });
                }
                self.inner
                    .decode(ids, false)
                    .map_err(|e| TokenizerError::Decode(e.to_string()))
            }
        }
    }

    /// The raw bytes one token stands for, when the vocabulary is byte-level (always for GGUF).
    /// Concatenating them is `decode` before UTF-8 validation: use it to detokenize a stream
    /// incrementally without splitting multi-byte characters.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.token_bytes
            .as_ref()
            .and_then(|table| table.get(id as usize))
            .map(|b| &b[..])
    }

    /// The id of a token given its vocabulary text (e.g. `"<|im_end|>"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokens that end a generation: EOS plus end-of-turn tokens (`<|im_end|>`, `<|endoftext|>`,
    /// ...) that the vocabulary has, sorted.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.end_of_generation
    }

    /// The model's EOS token (`tokenizer.ggml.eos_token_id`).
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos
    }

    /// The model's BOS token (`tokenizer.ggml.bos_token_id`), whether or not encoding adds it.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos
    }

    /// Whether `encode(.., add_special_tokens = true)` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// The number of token ids (the rows of the model's embedding matrix for GGUF files).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}

/// Splits a `tokenizer.ggml.merges` entry the way llama.cpp does: at the first space after the
/// first character.
fn split_merge(entry: &str) -> Option<(String, String)> {
    let first_len = entry.chars().next()?.len_utf8();
    let space = entry[first_len..].find(' ')? + first_len;
    let (left, right) = (&entry[..space], &entry[space + 1..]);
    (!right.is_empty()).then(|| (left.to_string(), right.to_string()))
}

fn bad_merge(index: usize, entry: &str) -> TokenizerError {
    TokenizerError::BadMerge {
        index,
        entry: entry.to_string(),
    }
}

fn pre_tokenizer(regexes: &[&str]) -> Result<PreTokenizerWrapper, TokenizerError> {
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(regexes.len() + 1);
    for regex in regexes {
        let split = Split::new(
            SplitPattern::Regex((*regex).to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(build_error)?;
        steps.push(split.into());
    }
    // Only the byte-to-character mapping: the splitting is done by the regexes above.
    steps.push(ByteLevel::new(false, false, false).into());
    Ok(Sequence::new(steps).into())
}

/// A post-processor that adds BOS and/or EOS around a single sequence.
fn bos_eos_processor(
    bos: Option<(&str, u32)>,
    eos: Option<(&str, u32)>,
) -> Result<TemplateProcessing, TokenizerError> {
    let mut single = Vec::new();
    let mut specials = Vec::new();
    if let Some((text, id)) = bos {
        single.push(text.to_string());
        specials.push((text.to_string(), id));
    }
    single.push("$A".to_string());
    if let Some((text, id)) = eos {
        single.push(text.to_string());
        specials.push((text.to_string(), id));
    }
    TemplateProcessing::builder()
        .try_single(single)
        .map_err(build_error)?
        .special_tokens(specials)
        .build()
        .map_err(build_error)
}

fn id_or_ids(value: Option<&serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| v as u32).into_iter().collect(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect(),
        _ => Vec::new(),
    }
}

/// The byte table of a `tokenizer.json` whose decoder is byte-level; `None` otherwise.
fn json_token_bytes(inner: &tokenizers::Tokenizer, vocab_size: usize) -> Option<Vec<Box<[u8]>>> {
    let byte_level = matches!(
        inner.get_decoder(),
        Some(tokenizers::DecoderWrapper::ByteLevel(_))
    );
    if !byte_level {
        return None;
    }
    let added = inner.get_added_tokens_decoder();
    let char_to_byte = char_to_byte_map();
    (0..vocab_size as u32)
        .map(|id| {
            let text = inner.id_to_token(id)?;
            Some(if added.contains_key(&id) {
                text.into_bytes().into_boxed_slice()
            } else {
                byte_level_decode(&text, &char_to_byte).into_boxed_slice()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet_is_a_bijection() {
        let alphabet = byte_level_alphabet();
        let distinct: BTreeSet<char> = alphabet.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(alphabet[b' ' as usize], '\u{120}');
        assert_eq!(alphabet[b'\n' as usize], '\u{10A}');
        assert_eq!(alphabet[b'a' as usize], 'a');
        let map = char_to_byte_map();
        assert_eq!(byte_level_decode("Ġhello", &map), b" hello");
        assert_eq!(byte_level_decode("Ã©", &map), "é".as_bytes());
    }

    #[test]
    fn merges_split_like_llama_cpp() {
        assert_eq!(split_merge("Ġ t"), Some(("Ġ".into(), "t".into())));
        assert_eq!(split_merge("ĠĠ ĠĠ"), Some(("ĠĠ".into(), "ĠĠ".into())));
        assert_eq!(split_merge("nospace"), None);
        assert_eq!(split_merge("a "), None);
        assert_eq!(split_merge(""), None);
    }

    fn test_model_tokenizer() -> Tokenizer {
        let source = crate::models::test_model().expect("test model");
        let model = crate::llm::gguf::GgufModel::open(source.path()).expect("open test model");
        Tokenizer::from_gguf(model.content()).expect("tokenizer")
    }

    #[test]
    fn smollm_has_no_prefix_space_and_splits_digits() {
        let tok = test_model_tokenizer();
        let id = |t: &str| tok.token_to_id(t).unwrap_or_else(|| panic!("no token {t}"));
        assert_eq!(
            tok.encode("Hello world", true).unwrap(),
            [id("Hello"), id("Ġworld")]
        );
        assert_eq!(
            tok.encode("x=123", false).unwrap(),
            [id("x"), id("="), id("1"), id("2"), id("3")]
        );
        assert_eq!(
            tok.encode("<|im_start|>user", false).unwrap(),
            [1, id("user")],
            "special tokens in the text are parsed"
        );
        assert_eq!(tok.bos_token_id(), Some(1));
        assert!(!tok.adds_bos());
        assert_eq!(tok.eos_token_id(), Some(2));
        assert!(tok.eos_token_ids().contains(&2) && tok.eos_token_ids().contains(&0));
        assert_eq!(tok.vocab_size(), 49152);
        let text = "def f(x):\r\n\treturn x ** 2  # ünïcödé 你好 🎉\n\n";
        assert_eq!(tok.decode(&tok.encode(text, false).unwrap()).unwrap(), text);
        assert!(matches!(
            tok.decode(&[49152]),
            Err(TokenizerError::UnknownId { id: 49152, .. })
        ));
    }

    #[test]
    fn tokenizer_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Tokenizer>();
    }

    #[test]
    fn every_pre_tokenizer_regex_compiles() {
        for spec in PRE_TOKENIZERS {
            pre_tokenizer(spec.regexes).unwrap_or_else(|e| panic!("{:?}: {e}", spec.names));
        }
    }
}
