//! The safetensors header: its length prefix, its JSON, and the checks that every tensor's
//! byte range lies inside the file and matches its dtype and shape.

use crate::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// The official reader refuses headers over 100 MB; so do we, so that a corrupt length
/// does not make us parse the tensor data as JSON.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A tensor's element type as the file names it. Only the float types convert to f32;
/// the others are listed (a file may hold integer buffers a model does not use) and
/// reported as unsupported when read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredDType {
    F32,
    F16,
    BF16,
    /// Any other dtype string (`"I64"`, `"F64"`, `"BOOL"`, ...).
    Other(String),
}

impl StoredDType {
    fn parse(s: &str) -> Self {
        match s {
            "F32" => StoredDType::F32,
            "F16" => StoredDType::F16,
            "BF16" => StoredDType::BF16,
            other => StoredDType::Other(other.to_string()),
        }
    }

    /// Bytes per element, where the format defines the dtype.
    pub fn size_bytes(&self) -> Option<usize> {
        match self {
            StoredDType::F32 => Some(4),
            StoredDType::F16 | StoredDType::BF16 => Some(2),
            StoredDType::Other(s) => match s.as_str() {
                "F64" | "I64" | "U64" => Some(8),
                "I32" | "U32" => Some(4),
                "I16" | "U16" => Some(2),
                "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => Some(1),
                _ => None,
            },
        }
    }
}

impl fmt::Display for StoredDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredDType::F32 => f.write_str("F32"),
            StoredDType::F16 => f.write_str("F16"),
            StoredDType::BF16 => f.write_str("BF16"),
            StoredDType::Other(s) => f.write_str(s),
        }
    }
}

/// One tensor's header entry. `data_offsets` are byte offsets into the data section
/// (which starts right after the header), end exclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
    pub data_offsets: (usize, usize),
}

/// What the header says: the tensors by name, the metadata, and where the data starts.
pub(crate) struct Header {
    pub tensors: BTreeMap<String, TensorInfo>,
    pub metadata: BTreeMap<String, String>,
    pub data_start: usize,
}

/// Parses and validates the header of the safetensors bytes `file`; `path` labels errors.
pub(crate) fn parse(path: &str, file: &[u8]) -> Result<Header> {
    let err = |tensor: Option<&str>, what: String| Error::Checkpoint {
        path: path.to_string(),
        tensor: tensor.map(str::to_string),
        what,
    };
    let Some((len_bytes, rest)) = file.split_first_chunk::<8>() else {
        return Err(err(
            None,
            format!("is {} bytes long, too short for the 8-byte header length (not a safetensors file?)", file.len()),
        ));
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(err(
            None,
            format!(
                "says its JSON header is {header_len} bytes, over the format's limit of 100 MB (not a safetensors file?)"
            ),
        ));
    }
    if header_len > rest.len() as u64 {
        return Err(err(
            None,
            format!(
                "says its JSON header is {header_len} bytes, but only {} bytes follow the length (a truncated file?)",
                rest.len()
            ),
        ));
    }
    // Both bounds were checked against lengths that are usizes.
    let header_len = header_len as usize;
    let (json, data) = rest.split_at(header_len);
    let value: Value =
        serde_json::from_slice(json).map_err(|e| err(None, format!("has a header that is not valid JSON: {e}")))?;
    let Value::Object(entries) = value else {
        return Err(err(None, "has a JSON header that is not an object of tensor entries".into()));
    };

    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            metadata = parse_metadata(&entry).map_err(|what| err(None, what))?;
            continue;
        }
        let info = parse_entry(&entry).map_err(|what| err(Some(&name), what))?;
        check_size(&info).map_err(|what| err(Some(&name), what))?;
        tensors.insert(name, info);
    }

    // A truncated file: name the first tensor (in file order) whose bytes are cut off.
    let mut by_offset: Vec<(&String, &TensorInfo)> = tensors.iter().collect();
    by_offset.sort_by_key(|(_, info)| info.data_offsets);
    for (name, info) in by_offset {
        let (begin, end) = info.data_offsets;
        if end > data.len() {
            return Err(err(
                Some(name),
                format!(
                    "occupies bytes {begin}..{end} of the data section, which has only {} bytes (a truncated file?)",
                    data.len()
                ),
            ));
        }
    }
    Ok(Header { tensors, metadata, data_start: 8 + header_len })
}

/// `"__metadata__"`: a map of strings to strings.
fn parse_metadata(v: &Value) -> std::result::Result<BTreeMap<String, String>, String> {
    let Value::Object(m) = v else {
        return Err("has a `__metadata__` entry that is not an object".into());
    };
    m.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(format!("has `__metadata__` key `{k}` with a non-string value {other}")),
        })
        .collect()
}

/// One tensor entry; the error says what is malformed (the caller adds the name).
fn parse_entry(v: &Value) -> std::result::Result<TensorInfo, String> {
    let bad = |what: &str| format!("has a malformed header entry: {what} (entry: {v})");
    let Value::Object(m) = v else {
        return Err(bad("not an object"));
    };
    let dtype = match m.get("dtype") {
        Some(Value::String(s)) => StoredDType::parse(s),
        _ => return Err(bad("`dtype` missing or not a string")),
    };
    let shape = index_list(m.get("shape")).ok_or_else(|| bad("`shape` missing or not a list of sizes"))?;
    let offsets = index_list(m.get("data_offsets")).ok_or_else(|| bad("`data_offsets` missing or not integers"))?;
    let &[begin, end] = offsets.as_slice() else {
        return Err(bad("`data_offsets` is not [begin, end]"));
    };
    if begin > end {
        return Err(bad("`data_offsets` begin is after its end"));
    }
    Ok(TensorInfo { dtype, shape, data_offsets: (begin, end) })
}

/// A JSON list of non-negative integers that fit a usize.
fn index_list(v: Option<&Value>) -> Option<Vec<usize>> {
    let Some(Value::Array(items)) = v else { return None };
    items.iter().map(|x| x.as_u64().and_then(|x| usize::try_from(x).ok())).collect()
}

/// The byte range holds exactly shape-product elements of the dtype (when the dtype's
/// size is known).
fn check_size(info: &TensorInfo) -> std::result::Result<(), String> {
    let Some(size) = info.dtype.size_bytes() else { return Ok(()) };
    let (begin, end) = info.data_offsets;
    let want = info.shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
    match want {
        Some(w) if w == end - begin => Ok(()),
        Some(w) => Err(format!(
            "has data_offsets {begin}..{end} ({} bytes), but {} of shape {:?} needs {w} bytes",
            end - begin,
            info.dtype,
            info.shape
        )),
        None => Err(format!("has a shape {:?} whose byte size overflows", info.shape)),
    }
}
