//! Opening and validating a GGUF model file before any tensor is loaded.
//!
//! [`GgufModel::open`] checks that the file starts with the GGUF magic, reads the header with
//! candle's [`gguf_file::Content`], checks that `general.architecture` is one the engine
//! implements and that the hyper-parameters and tokenizer keys the engine needs are present, and
//! finally what candle leaves to the first tensor read: that the file is long enough to hold every
//! tensor its header declares (sizes computed from each tensor's ggml dtype and shape). Every error names the file. The typed metadata
//! accessors ([`meta_str`], [`meta_u64`], ...) are shared with the tokenizer and the chat template,
//! which read their own keys from the same [`gguf_file::Content`].

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Content, Value};

/// The four bytes every GGUF file starts with.
const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// A model architecture the engine implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// Qwen2 / Qwen2.5 (attention with q/k/v biases).
    Qwen2,
    /// Llama and its relatives that GGUF files label `llama` (SmolLM2, ...).
    Llama,
}

impl Architecture {
    /// Every supported architecture, in the order error messages list them.
    pub const ALL: [Architecture; 2] = [Architecture::Qwen2, Architecture::Llama];

    /// The value of `general.architecture`, which is also the prefix of the model's own keys.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "qwen2",
            Architecture::Llama => "llama",
        }
    }

    fn from_gguf_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.gguf_name() == name)
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.gguf_name())
    }
}

fn supported_architectures() -> String {
    Architecture::ALL.map(Architecture::gguf_name).join(", ")
}

/// A metadata key that is absent or has the wrong type.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("missing GGUF metadata key `{key}`")]
    Missing { key: String },
    #[error("GGUF metadata key `{key}` is {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
}

fn describe(value: &Value) -> String {
    match value {
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::String(_) => "a string".to_string(),
        other => format!("{:?}", other.value_type()).to_lowercase(),
    }
}

fn wrong_type(key: &str, expected: &'static str, value: &Value) -> MetadataError {
    MetadataError::WrongType {
        key: key.to_string(),
        expected,
        found: describe(value),
    }
}

/// A string value, `None` when the key is absent.
pub fn meta_str<'a>(content: &'a Content, key: &str) -> Result<Option<&'a str>, MetadataError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

fn value_as_i128(value: &Value) -> Option<i128> {
    Some(match value {
        Value::U8(v) => i128::from(*v),
        Value::I8(v) => i128::from(*v),
        Value::U16(v) => i128::from(*v),
        Value::I16(v) => i128::from(*v),
        Value::U32(v) => i128::from(*v),
        Value::I32(v) => i128::from(*v),
        Value::U64(v) => i128::from(*v),
        Value::I64(v) => i128::from(*v),
        _ => return None,
    })
}

/// A non-negative integer of any GGUF integer type, `None` when the key is absent.
pub fn meta_u64(content: &Content, key: &str) -> Result<Option<u64>, MetadataError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(value) => value_as_i128(value)
            .and_then(|v| u64::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| wrong_type(key, "a non-negative integer", value)),
    }
}

/// A token id (any integer type that fits in u32), `None` when the key is absent.
pub fn meta_u32(content: &Content, key: &str) -> Result<Option<u32>, MetadataError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(value) => value_as_i128(value)
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| wrong_type(key, "an integer in 0..2^32", value)),
    }
}

/// A floating-point value (f32, f64 or an integer), `None` when the key is absent.
pub fn meta_f64(content: &Content, key: &str) -> Result<Option<f64>, MetadataError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::F32(v)) => Ok(Some(f64::from(*v))),
        Some(Value::F64(v)) => Ok(Some(*v)),
        Some(value) => value_as_i128(value)
            .map(|v| Some(v as f64))
            .ok_or_else(|| wrong_type(key, "a number", value)),
    }
}

/// A boolean value, `None` when the key is absent.
pub fn meta_bool(content: &Content, key: &str) -> Result<Option<bool>, MetadataError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(wrong_type(key, "a boolean", other)),
    }
}

/// An array of strings, `None` when the key is absent.
pub fn meta_str_array<'a>(
    content: &'a Content,
    key: &str,
) -> Result<Option<Vec<&'a str>>, MetadataError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.as_str()),
                other => Err(wrong_type(key, "an array of strings", other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(wrong_type(key, "an array of strings", other)),
    }
}

/// An array of integers (each fitting in i64), `None` when the key is absent.
pub fn meta_int_array(content: &Content, key: &str) -> Result<Option<Vec<i64>>, MetadataError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                value_as_i128(item)
                    .and_then(|v| i64::try_from(v).ok())
                    .ok_or_else(|| wrong_type(key, "an array of integers", item))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(wrong_type(key, "an array of integers", other)),
    }
}

fn required<T>(key: &str, value: Option<T>) -> Result<T, MetadataError> {
    value.ok_or_else(|| MetadataError::Missing {
        key: key.to_string(),
    })
}

/// Why a GGUF file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: cannot read the model file: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: not a GGUF file (it starts with {found:?}, a GGUF file starts with \"GGUF\"); pass a .gguf model or a safetensors directory"
    )]
    NotGguf { path: PathBuf, found: String },
    #[error("{path}: the GGUF header is truncated or corrupt: {reason}")]
    BadHeader { path: PathBuf, reason: String },
    #[error(
        "{path}: truncated GGUF file: it is {file_len} bytes but its tensors need {needed} bytes (tensor `{tensor}` ends there); the download or copy is incomplete, fetch the model again"
    )]
    Truncated {
        path: PathBuf,
        file_len: u64,
        needed: u64,
        tensor: String,
    },
    #[error("{path}: tensor `{tensor}`: {reason}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error(
        "{path}: unsupported model architecture `{found}` (general.architecture); supported: {supported}",
        supported = supported_architectures()
    )]
    UnsupportedArchitecture { path: PathBuf, found: String },
    #[error("{path}: {source}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: MetadataError,
    },
}

/// The hyper-parameters the engine needs, read from `<architecture>.*` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyperparameters {
    /// `<arch>.context_length`: the longest sequence the model was trained for.
    pub context_length: usize,
    /// `<arch>.block_count`: transformer layers.
    pub block_count: usize,
    /// `<arch>.embedding_length`: hidden size.
    pub embedding_length: usize,
    /// `<arch>.feed_forward_length`: MLP intermediate size.
    pub feed_forward_length: usize,
    /// `<arch>.attention.head_count`: query heads.
    pub head_count: usize,
    /// `<arch>.attention.head_count_kv`: key/value heads (defaults to `head_count`).
    pub head_count_kv: usize,
    /// `<arch>.attention.layer_norm_rms_epsilon`.
    pub rms_norm_eps: f64,
    /// `<arch>.rope.freq_base` (defaults to 10000).
    pub rope_freq_base: f64,
    /// `<arch>.rope.dimension_count` (defaults to `embedding_length / head_count`).
    pub rope_dimension_count: usize,
}

impl Hyperparameters {
    fn read(content: &Content, arch: Architecture) -> Result<Self, MetadataError> {
        let key = |name: &str| format!("{}.{name}", arch.gguf_name());
        let usize_key = |name: &str| -> Result<Option<usize>, MetadataError> {
            let k = key(name);
            Ok(meta_u64(content, &k)?.map(|v| v as usize))
        };
        let required_usize =
            |name: &str| -> Result<usize, MetadataError> { required(&key(name), usize_key(name)?) };
        let context_length = required_usize("context_length")?;
        let block_count = required_usize("block_count")?;
        let embedding_length = required_usize("embedding_length")?;
        let feed_forward_length = required_usize("feed_forward_length")?;
        let head_count = required_usize("attention.head_count")?;
        if head_count == 0 {
            return Err(MetadataError::WrongType {
                key: key("attention.head_count"),
                expected: "a positive integer",
                found: "0".to_string(),
            });
        }
        let head_count_kv = usize_key("attention.head_count_kv")?.unwrap_or(head_count);
        let eps_key = key("attention.layer_norm_rms_epsilon");
        let rms_norm_eps = required(&eps_key, meta_f64(content, &eps_key)?)?;
        let rope_freq_base = meta_f64(content, &key("rope.freq_base"))?.unwrap_or(10_000.0);
        let rope_dimension_count =
            usize_key("rope.dimension_count")?.unwrap_or(embedding_length / head_count);
        Ok(Self {
            context_length,
            block_count,
            embedding_length,
            feed_forward_length,
            head_count,
            head_count_kv,
            rms_norm_eps,
            rope_freq_base,
            rope_dimension_count,
        })
    }
}

/// A validated GGUF model file: its parsed header and where to read its tensors from.
#[derive(Debug)]
pub struct GgufModel {
    path: PathBuf,
    file_len: u64,
    content: Content,
    architecture: Architecture,
    hyperparameters: Hyperparameters,
}

impl GgufModel {
    /// Opens `path`, parses the header and validates it (see the module docs).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();

        let mut magic = [0u8; 4];
        let read = read_up_to(&mut file, &mut magic).map_err(io)?;
        if read < 4 || &magic != GGUF_MAGIC {
            return Err(GgufError::NotGguf {
                path,
                found: String::from_utf8_lossy(&magic[..read]).into_owned(),
            });
        }
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| GgufError::BadHeader {
            path: path.clone(),
            reason: e.to_string(),
        })?;

        let metadata = |source| GgufError::Metadata {
            path: path.clone(),
            source,
        };
        let arch_name = required(
            "general.architecture",
            meta_str(&content, "general.architecture").map_err(metadata)?,
        )
        .map_err(metadata)?;
        let architecture = Architecture::from_gguf_name(arch_name).ok_or_else(|| {
            GgufError::UnsupportedArchitecture {
                path: path.clone(),
                found: arch_name.to_string(),
            }
        })?;
        let hyperparameters = Hyperparameters::read(&content, architecture).map_err(metadata)?;
        for key in ["tokenizer.ggml.model", "tokenizer.ggml.tokens"] {
            if !content.metadata.contains_key(key) {
                return Err(metadata(MetadataError::Missing {
                    key: key.to_string(),
                }));
            }
        }
        check_tensor_extents(&path, file_len, &content)?;
        Ok(Self {
            path,
            file_len,
            content,
            architecture,
            hyperparameters,
        })
    }

    /// The file this model was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The parsed header: metadata and tensor infos (pass it to candle's model loaders).
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// `general.architecture`, validated.
    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// The architecture's hyper-parameters.
    pub fn hyperparameters(&self) -> &Hyperparameters {
        &self.hyperparameters
    }

    /// `<arch>.context_length`.
    pub fn context_length(&self) -> usize {
        self.hyperparameters.context_length
    }

    /// `general.name`, when the file has one.
    pub fn name(&self) -> Option<&str> {
        meta_str(&self.content, "general.name").ok().flatten()
    }

    /// A fresh buffered reader over the file, for loading tensors with
    /// [`Content::tensor`] (tensor offsets are absolute, so any reader of the file works).
    pub fn reader(&self) -> Result<BufReader<File>, GgufError> {
        File::open(&self.path)
            .map(BufReader::new)
            .map_err(|source| GgufError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Gives up the header, for loaders that take [`Content`] by value.
    pub fn into_content(self) -> Content {
        self.content
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The number of bytes a tensor of this dtype and shape occupies in the file.
pub fn tensor_byte_size(info: &gguf_file::TensorInfo) -> Result<u64, String> {
    let elements = info.shape.elem_count();
    let block = info.ggml_dtype.block_size();
    if !elements.is_multiple_of(block) {
        return Err(format!(
            "{elements} elements of {:?} are not a whole number of {block}-element blocks",
            info.ggml_dtype
        ));
    }
    ((elements / block) as u64)
        .checked_mul(info.ggml_dtype.type_size() as u64)
        .ok_or_else(|| format!("shape {:?} overflows", info.shape.dims()))
}

fn check_tensor_extents(path: &Path, file_len: u64, content: &Content) -> Result<(), GgufError> {
    let mut furthest: Option<(u64, &str)> = None;
    for (name, info) in &content.tensor_infos {
        let size = tensor_byte_size(info).map_err(|reason| GgufError::BadTensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
            reason,
        })?;
        let end = content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|start| start.checked_add(size))
            .ok_or_else(|| GgufError::BadTensor {
                path: path.to_path_buf(),
                tensor: name.clone(),
                reason: format!("offset {} overflows", info.offset),
            })?;
        if furthest.is_none_or(|(e, _)| end > e) {
            furthest = Some((end, name));
        }
    }
    match furthest {
        Some((needed, tensor)) if needed > file_len => Err(GgufError::Truncated {
            path: path.to_path_buf(),
            file_len,
            needed,
            tensor: tensor.to_string(),
        }),
        _ => Ok(()),
    }
}
