//! A bounds-checked GGUF (v2, v3) reader that reads tensors one at a time and dequantises them
//! to f32 on the CPU.
//!
//! Layout (little-endian): magic `GGUF`, u32 version, u64 tensor count, u64 metadata count,
//! metadata key/values, tensor infos (name, u32 n_dims, u64 dims innermost first, u32 ggml
//! type, u64 offset relative to the data section), padding to `general.alignment` (default 32),
//! data section. Like [`super::safetensors`], every malformed input is an error naming the
//! problem: lengths and counts are checked against the bytes left in the file before anything
//! is allocated, tensor ranges must lie inside the data section and not overlap.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

use super::WeightError;

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: usize = 4;
/// Metadata arrays may nest (arrays of arrays); deeper than this is refused.
const MAX_ARRAY_DEPTH: usize = 8;
/// Strings (keys, names, values) longer than this are refused: real ones are far shorter.
const MAX_STRING_BYTES: u64 = 16 * 1024 * 1024;
/// All metadata arrays together (an LLM tokenizer has a few hundred thousand entries).
const MAX_ARRAY_ELEMS: u64 = 8 * 1024 * 1024;
/// Far more than any diffusion (or language) model has.
const MAX_TENSORS: u64 = 1024 * 1024;

/// ggml tensor types, with block size (elements) and block size (bytes) as gguf-py lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlType {
    pub id: u32,
    pub name: &'static str,
    pub block_elems: u64,
    pub block_bytes: u64,
}

const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

impl GgmlType {
    pub fn from_id(id: u32) -> Option<Self> {
        GGML_TYPES
            .iter()
            .find(|t| t.0 == id)
            .map(|&(id, name, block_elems, block_bytes)| Self {
                id,
                name,
                block_elems,
                block_bytes,
            })
    }

    /// Whether [`dequantize`] handles this type.
    pub fn is_supported(self) -> bool {
        matches!(self.id, 0 | 1 | 2 | 3 | 6 | 7 | 8 | 24..=28 | 30)
    }
}

pub const SUPPORTED_TYPES: &str =
    "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (and I8..I64, F64 by value)";

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetadataValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetadataValue {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v as u64),
            Self::U16(v) => Some(v as u64),
            Self::U32(v) => Some(v as u64),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// PyTorch order (outermost first): GGUF's dims reversed.
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Byte offset relative to the data section.
    pub offset: u64,
    pub size_bytes: u64,
}

impl GgufTensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Clone, Debug)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, MetadataValue>,
    /// In file order.
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_start: u64,
}

/// Sequential header reader that never reads (or allocates) past the end of the file.
struct Cursor<'a, R> {
    reader: &'a mut R,
    pos: u64,
    size: u64,
    file: &'a str,
    array_elems: u64,
}

impl<R: Read> Cursor<'_, R> {
    fn bad(&self, why: String) -> WeightError {
        WeightError::Malformed {
            file: self.file.to_string(),
            why,
        }
    }

    fn left(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], WeightError> {
        if self.left() < N as u64 {
            return Err(self.bad(format!(
                "file ends at byte {} inside the header (reading {what}; truncated?)",
                self.size
            )));
        }
        let mut buf = [0u8; N];
        self.reader
            .read_exact(&mut buf)
            .map_err(|e| WeightError::io(self.file, e))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, WeightError> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, WeightError> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, WeightError> {
        let len = self.u64(what)?;
        if len > self.left() || len > MAX_STRING_BYTES {
            return Err(self.bad(format!(
                "{what}: string length {len} exceeds the {} bytes left in the file (or the {MAX_STRING_BYTES}-byte limit)",
                self.left()
            )));
        }
        let mut buf = vec![0u8; len as usize];
        self.reader
            .read_exact(&mut buf)
            .map_err(|e| WeightError::io(self.file, e))?;
        self.pos += len;
        String::from_utf8(buf).map_err(|_| self.bad(format!("{what}: string is not UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetadataValue, WeightError> {
        use MetadataValue as V;
        Ok(match ty {
            0 => V::U8(self.bytes::<1>(key)?[0]),
            1 => V::I8(self.bytes::<1>(key)?[0] as i8),
            2 => V::U16(u16::from_le_bytes(self.bytes(key)?)),
            3 => V::I16(i16::from_le_bytes(self.bytes(key)?)),
            4 => V::U32(self.u32(key)?),
            5 => V::I32(i32::from_le_bytes(self.bytes(key)?)),
            6 => V::F32(f32::from_le_bytes(self.bytes(key)?)),
            7 => match self.bytes::<1>(key)?[0] {
                0 => V::Bool(false),
                1 => V::Bool(true),
                b => return Err(self.bad(format!("metadata {key}: bool byte {b} is not 0 or 1"))),
            },
            8 => V::String(self.string(&format!("metadata {key}"))?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.bad(format!(
                        "metadata {key}: arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let elem_ty = self.u32(key)?;
                let count = self.u64(key)?;
                let min = min_value_bytes(elem_ty).ok_or_else(|| {
                    self.bad(format!(
                        "metadata {key}: unknown array element type {elem_ty}"
                    ))
                })?;
                if count.checked_mul(min).is_none_or(|b| b > self.left()) {
                    return Err(self.bad(format!(
                        "metadata {key}: array of {count} elements does not fit in the {} bytes left",
                        self.left()
                    )));
                }
                self.array_elems += count;
                if self.array_elems > MAX_ARRAY_ELEMS {
                    return Err(self.bad(format!(
                        "metadata {key}: more than {MAX_ARRAY_ELEMS} array elements in all"
                    )));
                }
                // Grows as elements are actually read (each takes at least one byte).
                let mut items = Vec::with_capacity(count.min(1024) as usize);
                for _ in 0..count {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                V::Array(items)
            }
            10 => V::U64(self.u64(key)?),
            11 => V::I64(i64::from_le_bytes(self.bytes(key)?)),
            12 => V::F64(f64::from_le_bytes(self.bytes(key)?)),
            other => return Err(self.bad(format!("metadata {key}: unknown value type {other}"))),
        })
    }
}

/// Fewest bytes one value of a metadata type takes.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,     // length
        9 => 4 + 8, // element type + count
        10..=12 => 8,
        _ => return None,
    })
}

impl GgufFile {
    /// Reads the header (metadata and tensor infos) of a seekable GGUF file.
    pub fn read<R: Read + Seek>(reader: &mut R, file: &str) -> Result<Self, WeightError> {
        let size = reader
            .seek(SeekFrom::End(0))
            .map_err(|e| WeightError::io(file, e))?;
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| WeightError::io(file, e))?;
        let mut c = Cursor {
            reader,
            pos: 0,
            size,
            file,
            array_elems: 0,
        };
        let magic: [u8; 4] = c.bytes("the magic")?;
        if magic != GGUF_MAGIC {
            return Err(c.bad(format!("not a GGUF file (magic {magic:02x?})")));
        }
        let version = c.u32("the version")?;
        if (2..=3).contains(&version.swap_bytes()) {
            return Err(c.bad(format!(
                "big-endian GGUF (version {}) is not supported",
                version.swap_bytes()
            )));
        }
        if !(2..=3).contains(&version) {
            return Err(c.bad(format!(
                "GGUF version {version} is not supported (versions 2 and 3 are)"
            )));
        }
        let tensor_count = c.u64("the tensor count")?;
        let kv_count = c.u64("the metadata count")?;
        // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info 8 + 4 + 4 + 8.
        if kv_count.checked_mul(13).is_none_or(|b| b > c.left()) {
            return Err(c.bad(format!(
                "{kv_count} metadata entries cannot fit in the {} bytes left",
                c.left()
            )));
        }
        if tensor_count > MAX_TENSORS || tensor_count.checked_mul(24).is_none_or(|b| b > c.left()) {
            return Err(c.bad(format!(
                "{tensor_count} tensor infos cannot fit in the {} bytes left (or exceed the limit of {MAX_TENSORS})",
                c.left()
            )));
        }

        let mut metadata = BTreeMap::new();
        for i in 0..kv_count {
            let key = c.string(&format!("metadata key {i}"))?;
            let ty = c.u32(&key)?;
            let value = c.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(c.bad(format!("metadata key {key} appears twice")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 30 => a,
                _ => {
                    return Err(c.bad(format!(
                        "general.alignment {v:?} is not a power of two up to 2^30"
                    )));
                }
            },
        };

        let mut infos = Vec::with_capacity(tensor_count.min(4096) as usize);
        for i in 0..tensor_count {
            let name = c.string(&format!("tensor {i} name"))?;
            let n_dims = c.u32(&name)? as usize;
            if n_dims > MAX_DIMS {
                return Err(c.bad(format!(
                    "tensor {name}: {n_dims} dimensions (ggml has at most {MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64(&name)?);
            }
            let type_id = c.u32(&name)?;
            let offset = c.u64(&name)?;
            infos.push((name, dims, type_id, offset));
        }
        let data_start = c.pos.div_ceil(alignment).saturating_mul(alignment);
        if data_start > size {
            return Err(c.bad(format!(
                "the data section would start at byte {data_start}, past the end of the file ({size} bytes)"
            )));
        }
        let data_len = size - data_start;

        let mut tensors = Vec::with_capacity(infos.len());
        let mut names = std::collections::HashSet::new();
        for (name, dims, type_id, offset) in infos {
            let bad = |why: String| WeightError::Malformed {
                file: file.to_string(),
                why: format!("tensor {name}: {why}"),
            };
            if !names.insert(name.clone()) {
                return Err(bad("name appears twice".into()));
            }
            let ggml_type = GgmlType::from_id(type_id)
                .ok_or_else(|| bad(format!("unknown ggml type id {type_id}")))?;
            let numel = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| {
                    bad(format!(
                        "absurd GGUF dims {dims:?} (element count overflows)"
                    ))
                })?;
            // With a zero dim the element count is 0 whatever the others are; the others must
            // still multiply without overflow (shape products elsewhere are plain usize math).
            dims.iter()
                .try_fold(16u64, |acc, &d| acc.checked_mul(d.max(1)))
                .filter(|&b| usize::try_from(b).is_ok())
                .ok_or_else(|| bad(format!("absurd GGUF dims {dims:?} (dimensions overflow)")))?;
            let inner = dims.first().copied().unwrap_or(1);
            if inner % ggml_type.block_elems != 0 {
                return Err(bad(format!(
                    "inner dimension {inner} is not a multiple of the {}-element {} block",
                    ggml_type.block_elems, ggml_type.name
                )));
            }
            let size_bytes = (numel / ggml_type.block_elems)
                .checked_mul(ggml_type.block_bytes)
                .ok_or_else(|| bad(format!("absurd GGUF dims {dims:?} (byte count overflows)")))?;
            if offset % alignment != 0 {
                return Err(bad(format!(
                    "offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            if offset
                .checked_add(size_bytes)
                .is_none_or(|end| end > data_len)
            {
                return Err(bad(format!(
                    "data [{offset}, +{size_bytes}) ends past the data section's {data_len} bytes (file truncated, or GGUF dims {dims:?} absurd?)"
                )));
            }
            let shape = dims
                .iter()
                .rev()
                .map(|&d| usize::try_from(d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad(format!("dims {dims:?} do not fit this platform")))?;
            tensors.push(GgufTensorInfo {
                name,
                shape,
                ggml_type,
                offset,
                size_bytes,
            });
        }
        check_no_overlap(&tensors).map_err(|why| WeightError::Malformed {
            file: file.to_string(),
            why,
        })?;
        Ok(Self {
            version,
            metadata,
            tensors,
            alignment,
            data_start,
        })
    }

    /// Tensor infos sorted by offset, for sequential reading.
    pub fn tensors_by_offset(&self) -> Vec<&GgufTensorInfo> {
        let mut sorted: Vec<&GgufTensorInfo> = self.tensors.iter().collect();
        sorted.sort_by_key(|t| t.offset);
        sorted
    }

    /// One tensor's raw bytes.
    pub fn read_raw<R: Read + Seek>(
        &self,
        reader: &mut R,
        info: &GgufTensorInfo,
        file: &str,
    ) -> Result<Vec<u8>, WeightError> {
        let len = usize::try_from(info.size_bytes).map_err(|_| WeightError::Malformed {
            file: file.to_string(),
            why: format!(
                "tensor {}: {} bytes do not fit in memory",
                info.name, info.size_bytes
            ),
        })?;
        reader
            .seek(SeekFrom::Start(self.data_start + info.offset))
            .map_err(|e| WeightError::io(file, e))?;
        let mut bytes = vec![0u8; len];
        reader
            .read_exact(&mut bytes)
            .map_err(|e| WeightError::io(file, e))?;
        Ok(bytes)
    }

    /// One tensor dequantised to f32 (row-major in [`GgufTensorInfo::shape`]).
    pub fn read_f32<R: Read + Seek>(
        &self,
        reader: &mut R,
        info: &GgufTensorInfo,
        file: &str,
    ) -> Result<Vec<f32>, WeightError> {
        if !info.ggml_type.is_supported() {
            return Err(WeightError::Malformed {
                file: file.to_string(),
                why: format!(
                    "tensor {}: ggml type {} (id {}) is not supported (supported: {SUPPORTED_TYPES})",
                    info.name, info.ggml_type.name, info.ggml_type.id
                ),
            });
        }
        let bytes = self.read_raw(reader, info, file)?;
        dequantize(&bytes, info.ggml_type, info.numel()).map_err(|why| WeightError::Malformed {
            file: file.to_string(),
            why: format!("tensor {}: {why}", info.name),
        })
    }
}

fn check_no_overlap(tensors: &[GgufTensorInfo]) -> Result<(), String> {
    let mut ranges: Vec<(&str, u64, u64)> = tensors
        .iter()
        .filter(|t| t.size_bytes > 0)
        .map(|t| (t.name.as_str(), t.offset, t.offset + t.size_bytes))
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

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantises `numel` values of ggml type `ty` from `bytes` (ggml block layouts: 32 values per
/// block, an f16 scale `d`, for the `_1` kinds an f16 minimum `m`, for q5 the 5th bits in a
/// little-endian u32; value `j < 16` in a byte's low nibble, `j + 16` in its high nibble).
pub fn dequantize(bytes: &[u8], ty: GgmlType, numel: usize) -> Result<Vec<f32>, String> {
    let blocks = numel as u64 / ty.block_elems;
    let expected = blocks * ty.block_bytes;
    if numel as u64 % ty.block_elems != 0 || bytes.len() as u64 != expected {
        return Err(format!(
            "{numel} {} values need {expected} bytes, got {}",
            ty.name,
            bytes.len()
        ));
    }
    let block = ty.block_bytes as usize;
    let mut out = Vec::with_capacity(numel);
    match ty.id {
        0 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        1 => out.extend(bytes.chunks_exact(2).map(|c| f16_at(c, 0))),
        30 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        // Integer and f64 tensors (buffers such as position_ids) are converted by value.
        24 => out.extend(bytes.iter().map(|&b| b as i8 as f32)),
        25 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32),
        ),
        26 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32),
        ),
        27 => out.extend(
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32),
        ),
        28 => out.extend(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32),
        ),
        8 => {
            for b in bytes.chunks_exact(block) {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        2 | 3 => {
            let with_min = ty.id == 3;
            let qs_at = if with_min { 4 } else { 2 };
            for b in bytes.chunks_exact(block) {
                let d = f16_at(b, 0);
                let (m, offset) = if with_min {
                    (f16_at(b, 2), 0.0)
                } else {
                    (0.0, 8.0)
                };
                let qs = &b[qs_at..qs_at + 16];
                for shift in [0, 4] {
                    out.extend(
                        qs.iter()
                            .map(|&q| (((q >> shift) & 0x0F) as f32 - offset) * d + m),
                    );
                }
            }
        }
        6 | 7 => {
            let with_min = ty.id == 7;
            let qh_at = if with_min { 4 } else { 2 };
            for b in bytes.chunks_exact(block) {
                let d = f16_at(b, 0);
                let (m, offset) = if with_min {
                    (f16_at(b, 2), 0.0)
                } else {
                    (0.0, 16.0)
                };
                let qh = u32::from_le_bytes(b[qh_at..qh_at + 4].try_into().unwrap());
                let qs = &b[qh_at + 4..qh_at + 20];
                for (half_idx, shift) in [(0usize, 0u32), (1, 4)] {
                    out.extend(qs.iter().enumerate().map(|(j, &q)| {
                        let i = half_idx * 16 + j;
                        let low = ((q >> shift) & 0x0F) as u32;
                        let high = ((qh >> i) & 1) << 4;
                        ((low | high) as f32 - offset) * d + m
                    }));
                }
            }
        }
        _ => {
            return Err(format!(
                "ggml type {} (id {}) is not supported (supported: {SUPPORTED_TYPES})",
                ty.name, ty.id
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: u32) -> GgmlType {
        GgmlType::from_id(id).unwrap()
    }

    #[test]
    fn dequantizes_hand_made_blocks() {
        // q8_0: d = 0.5, values -2..29
        let mut b = half::f16::from_f32(0.5).to_le_bytes().to_vec();
        b.extend((0..32).map(|i| (i as i8 - 2) as u8));
        let v = dequantize(&b, q(8), 32).unwrap();
        assert_eq!(v[0], -1.0);
        assert_eq!(v[31], 14.5);

        // q4_0: d = 2, byte j = (hi << 4) | lo with lo = j % 16, hi = 15 - j % 16
        let mut b = half::f16::from_f32(2.0).to_le_bytes().to_vec();
        b.extend((0..16u8).map(|j| ((15 - j) << 4) | j));
        let v = dequantize(&b, q(2), 32).unwrap();
        assert_eq!(v[0], (0.0 - 8.0) * 2.0);
        assert_eq!(v[15], (15.0 - 8.0) * 2.0);
        assert_eq!(v[16], (15.0 - 8.0) * 2.0);

        // q5_1: d = 1, m = -1, all low nibbles 3, 5th bit set for odd indices
        let mut b = half::f16::from_f32(1.0).to_le_bytes().to_vec();
        b.extend(half::f16::from_f32(-1.0).to_le_bytes());
        b.extend(0xAAAA_AAAAu32.to_le_bytes());
        b.extend([0x33u8; 16]);
        let v = dequantize(&b, q(7), 32).unwrap();
        assert_eq!(v[0], 3.0 - 1.0);
        assert_eq!(v[1], 19.0 - 1.0);
        assert_eq!(v[17], 19.0 - 1.0);

        assert!(dequantize(&b, q(7), 64).is_err());
        assert!(
            dequantize(&[0u8; 144], q(12), 256)
                .unwrap_err()
                .contains("not supported")
        );
    }
}
