//! A bounds-checked safetensors header parser that reads tensors one at a time.
//!
//! We parse the header ourselves (instead of loading the whole file) so that tensors can be
//! streamed into GPU buffers one by one — the browser cannot hold a whole model in memory —
//! and so that every malformed file gives an error naming the problem, never a panic.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

use super::{QuantType, StorageDType, WeightError};

/// Header sizes above this are refused: real headers are well under 1 MB.
const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub dtype: StorageDType,
    pub shape: Vec<usize>,
    /// Byte range relative to the start of the data section.
    pub begin: u64,
    pub end: u64,
    /// GGUF q8_0/q4_0 blocks (U8 `[rows, blocks, block bytes]`) of a `[rows, row length]`
    /// weight: as the file declares it (see [`QUANT_TYPE_KEY`]).
    pub quant: Option<QuantType>,
}

/// `__metadata__` key prefix declaring a tensor's quantisation type, as sdweb's q8_0/q4_0
/// copies write it: `"sdweb.quant_type.<tensor name>": "q8_0"`. Files without any such key
/// (written before it existed) have every U8 `[rows, blocks, 34 | 18]` tensor read as blocks.
pub const QUANT_TYPE_KEY: &str = "sdweb.quant_type.";

#[derive(Clone, Debug)]
pub struct SafetensorsHeader {
    pub tensors: BTreeMap<String, TensorEntry>,
    /// Absolute offset of the data section in the file.
    pub data_start: u64,
    pub metadata: BTreeMap<String, String>,
}

impl SafetensorsHeader {
    /// Parses the header given the first bytes of the file and the total file size.
    /// `prefix` must hold at least 8 bytes; if it is shorter than the header, the error says
    /// how many bytes are needed (`WeightError::NeedMoreBytes`).
    pub fn parse(prefix: &[u8], file_size: u64, file: &str) -> Result<Self, WeightError> {
        let bad = |why: String| WeightError::Malformed {
            file: file.to_string(),
            why,
        };
        if prefix.len() < 8 {
            return Err(bad(format!(
                "{} bytes is too short for a safetensors file (8-byte header length missing)",
                prefix.len()
            )));
        }
        let header_len = u64::from_le_bytes(prefix[..8].try_into().unwrap());
        if header_len > MAX_HEADER_BYTES || 8 + header_len > file_size {
            return Err(bad(format!(
                "header length {header_len} exceeds the file size {file_size} or the {MAX_HEADER_BYTES}-byte limit"
            )));
        }
        let needed = 8 + header_len as usize;
        if prefix.len() < needed {
            return Err(WeightError::NeedMoreBytes(needed));
        }
        let json: serde_json::Value = serde_json::from_slice(&prefix[8..needed])
            .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        let object = json
            .as_object()
            .ok_or_else(|| bad("header is not a JSON object".into()))?;
        let data_start = 8 + header_len;
        let data_len = file_size - data_start;
        let mut tensors = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, value) in object {
            if name == "__metadata__" {
                if let Some(map) = value.as_object() {
                    for (k, v) in map {
                        metadata.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                    }
                }
                continue;
            }
            let entry =
                parse_entry(name, value).map_err(|why| bad(format!("tensor {name}: {why}")))?;
            if entry.end > data_len {
                return Err(bad(format!(
                    "tensor {name}: data ends at byte {} but the data section has {data_len} bytes (file truncated?)",
                    entry.end
                )));
            }
            tensors.insert(name.clone(), entry);
        }
        check_no_overlap(&tensors).map_err(bad)?;
        assign_quant_types(&mut tensors, &metadata).map_err(bad)?;
        Ok(Self {
            tensors,
            data_start,
            metadata,
        })
    }

    /// Reads the header of a seekable file.
    pub fn read<R: Read + Seek>(reader: &mut R, file: &str) -> Result<Self, WeightError> {
        let size = reader
            .seek(SeekFrom::End(0))
            .map_err(|e| WeightError::io(file, e))?;
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| WeightError::io(file, e))?;
        let mut len = [0u8; 8];
        let got = read_up_to(reader, &mut len).map_err(|e| WeightError::io(file, e))?;
        match Self::parse(&len[..got], size, file) {
            Err(WeightError::NeedMoreBytes(n)) => {
                let mut prefix = vec![0u8; n];
                reader
                    .seek(SeekFrom::Start(0))
                    .map_err(|e| WeightError::io(file, e))?;
                reader
                    .read_exact(&mut prefix)
                    .map_err(|e| WeightError::io(file, e))?;
                Self::parse(&prefix, size, file)
            }
            other => other,
        }
    }

    /// Reads one tensor's raw little-endian bytes.
    pub fn read_tensor<R: Read + Seek>(
        &self,
        reader: &mut R,
        entry: &TensorEntry,
        file: &str,
    ) -> Result<Vec<u8>, WeightError> {
        let mut bytes = vec![0u8; (entry.end - entry.begin) as usize];
        reader
            .seek(SeekFrom::Start(self.data_start + entry.begin))
            .map_err(|e| WeightError::io(file, e))?;
        reader
            .read_exact(&mut bytes)
            .map_err(|e| WeightError::io(file, e))?;
        Ok(bytes)
    }
}

fn read_up_to<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn parse_entry(name: &str, value: &serde_json::Value) -> Result<TensorEntry, String> {
    let _ = name;
    let dtype_name = value
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or("missing dtype")?;
    let dtype = StorageDType::from_safetensors(dtype_name)
        .ok_or_else(|| format!("unsupported dtype {dtype_name}"))?;
    let shape: Vec<usize> = value
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or("missing shape")?
        .iter()
        .map(|d| {
            d.as_u64()
                .map(|d| d as usize)
                .ok_or("shape entries must be non-negative integers")
        })
        .collect::<Result<_, _>>()?;
    let offsets = value
        .get("data_offsets")
        .and_then(|o| o.as_array())
        .filter(|o| o.len() == 2)
        .ok_or("data_offsets must be [begin, end]")?;
    let begin = offsets[0].as_u64().ok_or("bad data_offsets")?;
    let end = offsets[1].as_u64().ok_or("bad data_offsets")?;
    if end < begin {
        return Err(format!("data_offsets end {end} < begin {begin}"));
    }
    let numel = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or("absurd shape (element count overflows)")?;
    // A zero dim makes the count 0 whatever the others are; they must still multiply (in
    // bytes) without overflow, since loaders compute shape products in plain usize.
    shape
        .iter()
        .try_fold(16usize, |acc, &d| acc.checked_mul(d.max(1)))
        .ok_or("absurd shape (dimensions overflow)")?;
    let bytes = numel
        .checked_mul(dtype.size_bytes() as u64)
        .ok_or("absurd shape (byte count overflows)")?;
    if bytes != end - begin {
        return Err(format!(
            "shape {shape:?} of {dtype_name} needs {bytes} bytes but data_offsets span {}",
            end - begin
        ));
    }
    Ok(TensorEntry {
        dtype,
        shape,
        begin,
        end,
        quant: None,
    })
}

/// Sets each entry's [`TensorEntry::quant`] from the metadata's declarations, checking each
/// against the tensor's storage; without declarations, by the block size of U8 tensors.
fn assign_quant_types(
    tensors: &mut BTreeMap<String, TensorEntry>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), String> {
    let declared: Vec<(&str, &str)> = metadata
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(QUANT_TYPE_KEY)?, v.as_str())))
        .collect();
    if declared.is_empty() {
        for entry in tensors.values_mut() {
            entry.quant = match (entry.dtype, entry.shape.as_slice()) {
                (StorageDType::U8, [_, _, block]) => QuantType::from_block_bytes(*block),
                _ => None,
            };
        }
        return Ok(());
    }
    for (name, type_name) in declared {
        let ty = QuantType::parse(type_name).ok_or_else(|| {
            format!("__metadata__ declares tensor {name} as {type_name:?}, not q8_0 or q4_0")
        })?;
        let entry = tensors.get_mut(name).ok_or_else(|| {
            format!(
                "__metadata__ declares a {} tensor {name} the file does not have",
                ty.name()
            )
        })?;
        let blocks = matches!(entry.shape.as_slice(), [_, _, b] if *b == ty.block_bytes());
        if entry.dtype != StorageDType::U8 || !blocks {
            return Err(format!(
                "tensor {name} is declared {} but is {:?} {:?}, not U8 [rows, blocks, {}]",
                ty.name(),
                entry.dtype,
                entry.shape,
                ty.block_bytes()
            ));
        }
        entry.quant = Some(ty);
    }
    Ok(())
}

fn check_no_overlap(tensors: &BTreeMap<String, TensorEntry>) -> Result<(), String> {
    let mut ranges: Vec<(&str, u64, u64)> = tensors
        .iter()
        .filter(|(_, e)| e.end > e.begin)
        .map(|(n, e)| (n.as_str(), e.begin, e.end))
        .collect();
    ranges.sort_by_key(|r| r.1);
    for pair in ranges.windows(2) {
        if pair[1].1 < pair[0].2 {
            return Err(format!(
                "tensors {} and {} overlap in the data section",
                pair[0].0, pair[1].0
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(header: &str, data_len: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend(std::iter::repeat_n(0u8, data_len));
        out
    }

    fn parse(bytes: &[u8]) -> Result<SafetensorsHeader, WeightError> {
        SafetensorsHeader::parse(bytes, bytes.len() as u64, "test.safetensors")
    }

    #[test]
    fn parses_a_valid_header() {
        let f = file_with(
            r#"{"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"__metadata__":{"format":"pt"}}"#,
            12,
        );
        let h = parse(&f).unwrap();
        assert_eq!(h.tensors["a"].shape, vec![2, 3]);
        assert_eq!(h.metadata["format"], "pt");
    }

    /// A U8 [2, 1, 34] tensor `q` and an identical `raw`; `meta`: the __metadata__ entries.
    fn blocks_file(meta: &str) -> Vec<u8> {
        let header = format!(
            r#"{{"q":{{"dtype":"U8","shape":[2,1,34],"data_offsets":[0,68]}},"raw":{{"dtype":"U8","shape":[2,1,34],"data_offsets":[68,136]}},"__metadata__":{{{meta}}}}}"#
        );
        file_with(&header, 136)
    }

    #[test]
    fn quantised_tensors_are_what_the_metadata_declares() {
        let h = parse(&blocks_file(r#""sdweb.quant_type.q":"q8_0""#)).unwrap();
        assert_eq!(h.tensors["q"].quant, Some(QuantType::Q8_0));
        assert_eq!(h.tensors["raw"].quant, None, "undeclared U8 stays bytes");
        // Files from before the declarations: every U8 tensor of 34/18-byte rows is blocks.
        let legacy = parse(&blocks_file(r#""format":"pt""#)).unwrap();
        assert_eq!(legacy.tensors["q"].quant, Some(QuantType::Q8_0));
        assert_eq!(legacy.tensors["raw"].quant, Some(QuantType::Q8_0));
        let wrong = [
            (
                r#""sdweb.quant_type.q":"q4_0""#,
                "tensor q is declared q4_0 but is U8 [2, 1, 34], not U8 [rows, blocks, 18]",
            ),
            (
                r#""sdweb.quant_type.gone":"q8_0""#,
                "declares a q8_0 tensor gone the file does not have",
            ),
            (
                r#""sdweb.quant_type.q":"q5_k""#,
                "declares tensor q as \"q5_k\", not q8_0 or q4_0",
            ),
        ];
        for (meta, expected) in wrong {
            let err = parse(&blocks_file(meta)).unwrap_err().to_string();
            assert!(err.contains(expected), "{meta}: {err}");
        }
    }

    #[test]
    fn rejects_malformed_files_with_reasons() {
        let cases = [
            (
                file_with(
                    r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                    8,
                ),
                "truncated",
            ),
            (
                file_with(
                    r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}}"#,
                    16,
                ),
                "needs 16 bytes",
            ),
            (
                file_with(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    16,
                ),
                "overlap",
            ),
            (
                file_with(
                    r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
                    8,
                ),
                "unsupported dtype",
            ),
            (
                file_with(
                    r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
                    8,
                ),
                "absurd",
            ),
            (file_with("not json", 0), "JSON"),
            (vec![1, 2, 3], "too short"),
            (u64::MAX.to_le_bytes().to_vec(), "exceeds"),
        ];
        for (bytes, expect) in cases {
            let err = parse(&bytes).unwrap_err().to_string();
            assert!(err.contains(expect), "expected '{expect}' in: {err}");
        }
    }
}
