//! Weight loading: tensors go one at a time from a file (or, in the browser, from a stream)
//! into GPU buffers, and models take them by their diffusers names with shape checks.

pub mod gguf;
pub mod ldm_keys;
pub mod quant;
pub mod quantize_model;
pub mod safetensors;
pub mod stream;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Tensor, TensorData};

pub use quant::{QuantPolicy, QuantType};

use crate::kernels::KernelPolicy;
use crate::lora::ComponentLora;

/// Largest single GPU tensor we create: WebGPU's default storage-binding limit is 128 MiB,
/// so bigger weights (SD's CLIP token embedding) are split into row shards.
pub const MAX_TENSOR_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("missing tensor {name} (expected shape {expected:?}) in {source_desc}")]
    Missing {
        name: String,
        expected: Vec<usize>,
        source_desc: String,
    },
    #[error("tensor {name} in {source_desc} has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        source_desc: String,
    },
    #[error("{file}: malformed weights file: {why}")]
    Malformed { file: String, why: String },
    #[error("{file}: {error}")]
    Io { file: String, error: std::io::Error },
    #[error("no weights file in {dir}: looked for {candidates}")]
    NoWeightsFile { dir: String, candidates: String },
    /// Where a converted copy is written (exists, is the input, cannot be created).
    #[error("{0}")]
    Destination(String),
    #[error("internal: header needs {0} bytes")]
    NeedMoreBytes(usize),
    /// A LoRA that does not fit the model (a layer without target, a shape mismatch).
    #[error("{0}")]
    Lora(String),
}

impl WeightError {
    /// What kind of failure this is, for callers that act on it (the browser drops a cached
    /// file whose bytes are malformed): a stable name, never the message text.
    pub fn code(&self) -> &'static str {
        match self {
            WeightError::Malformed { .. } | WeightError::NeedMoreBytes(_) => "malformed-weights",
            WeightError::Missing { .. } | WeightError::Shape { .. } => "weights-mismatch",
            WeightError::Lora(_) => "lora-mismatch",
            WeightError::Io { .. }
            | WeightError::NoWeightsFile { .. }
            | WeightError::Destination(_) => "io",
        }
    }
}

impl From<String> for WeightError {
    fn from(message: String) -> Self {
        Self::Destination(message)
    }
}

impl WeightError {
    pub fn io(file: &str, error: std::io::Error) -> Self {
        Self::Io {
            file: file.to_string(),
            error,
        }
    }
}

/// Element types found in checkpoint files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageDType {
    F32,
    F16,
    BF16,
    I64,
    I32,
    /// Raw bytes: in our quantised files, GGUF q8_0/q4_0 blocks shaped `[rows, blocks, bytes]`.
    U8,
}

impl StorageDType {
    pub fn from_safetensors(name: &str) -> Option<Self> {
        Some(match name {
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "I64" => Self::I64,
            "I32" => Self::I32,
            "U8" => Self::U8,
            _ => return None,
        })
    }

    /// The name safetensors headers use.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::I64 => "I64",
            Self::I32 => "I32",
            Self::U8 => "U8",
        }
    }

    pub fn size_bytes(self) -> usize {
        match self {
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::I64 => 8,
            Self::U8 => 1,
        }
    }
}

/// Little-endian raw bytes of `dtype` to f32 (integers are converted by value).
pub fn to_f32(bytes: &[u8], dtype: StorageDType) -> Vec<f32> {
    match dtype {
        StorageDType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        StorageDType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        StorageDType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        StorageDType::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        StorageDType::I32 => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        StorageDType::U8 => bytes.iter().map(|&b| b as f32).collect(),
    }
}

/// A weight on the GPU, split along dim 0 when larger than [`MAX_TENSOR_BYTES`].
#[derive(Clone, Debug)]
pub struct StoredTensor {
    pub shape: Vec<usize>,
    /// Row shards, each flattened; a single entry for ordinary tensors; empty when quantised.
    pub shards: Vec<Tensor<1>>,
    /// The weight as a quantised `[rows, row length]` matrix (blocks run along rows).
    pub quantized: Option<(QuantType, Tensor<2>)>,
    /// Integer tensors (position ids) are kept for completeness but are no layer weight.
    pub integer: bool,
}

/// How a pending tensor's bytes become a GPU tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Encoding {
    /// Converted to the compute dtype, uploaded in row shards.
    Dense,
    /// Float bytes quantised on the CPU when complete (quantise on load).
    QuantizeTo(QuantType),
    /// Already GGUF blocks (our quantised files, GGUF checkpoints).
    Blocks(QuantType),
    /// GGUF blocks of a table looked up by row (a token embedding stored quantised):
    /// dequantised on the CPU into dense row shards.
    DequantizeBlocks(QuantType),
}

/// A tensor being received piece by piece, see [`TensorStore::begin_tensor`].
pub struct PendingTensor {
    name: String,
    dtype: StorageDType,
    shape: Vec<usize>,
    shard_bytes: usize,
    total_bytes: usize,
    received: usize,
    buffer: Vec<u8>,
    shards: Vec<Tensor<1>>,
    encoding: Encoding,
    quantized: Option<(QuantType, Tensor<2>)>,
    /// Rows already uploaded (where the next shard starts).
    rows_done: usize,
    /// A LoRA patches this tensor (its layers fit): merged shard by shard.
    lora_merge: bool,
}

impl PendingTensor {
    pub fn bytes_missing(&self) -> usize {
        self.total_bytes - self.received
    }
}

/// Named GPU tensors of one model component, filled one tensor at a time.
pub struct TensorStore {
    device: Device,
    dtype: DType,
    description: String,
    max_tensor_bytes: usize,
    tensors: HashMap<String, StoredTensor>,
    taken: RefCell<BTreeSet<String>>,
    /// Quantise-on-load policy and the component name its patterns see.
    quantization: Option<(QuantPolicy, String)>,
    /// The kernels the layers built from this store run (they keep a copy).
    kernels: KernelPolicy,
    /// LoRA layers merged into the weights they patch as those arrive.
    lora: Option<ComponentLora>,
}

impl TensorStore {
    /// `dtype` is the compute precision weights are converted to (F32 or F16).
    pub fn new(device: &Device, dtype: DType, description: impl Into<String>) -> Self {
        Self {
            device: device.clone(),
            dtype,
            description: description.into(),
            max_tensor_bytes: MAX_TENSOR_BYTES,
            tensors: HashMap::new(),
            taken: RefCell::new(BTreeSet::new()),
            quantization: None,
            kernels: KernelPolicy::default(),
            lora: None,
        }
    }

    /// Merges `lora`'s layers into the weights they patch as those arrive (before any
    /// quantisation); set before the first tensor.
    pub fn set_lora(&mut self, lora: ComponentLora) {
        self.lora = Some(lora);
    }

    /// After every tensor is in: Err when a LoRA layer found no weight or misfit one.
    pub fn check_lora(&self) -> Result<(), WeightError> {
        match &self.lora {
            Some(lora) => lora.finish(self.tensors.keys()).map_err(WeightError::Lora),
            None => Ok(()),
        }
    }

    /// Refuses a LoRA that misfits weights a file declares (`(our name, shape)`, blocks as
    /// `[rows, row length]`), before any of their bytes are read.
    pub fn check_lora_shapes<'a>(
        &self,
        entries: impl Iterator<Item = (&'a str, Vec<usize>)>,
    ) -> Result<(), WeightError> {
        let Some(lora) = &self.lora else {
            return Ok(());
        };
        for (name, shape) in entries {
            lora.check_shape(name, &shape).map_err(WeightError::Lora)?;
        }
        Ok(())
    }

    /// Whether a LoRA patches `name` (of logical `shape`): marks it merged when its layers fit.
    fn begin_lora(&self, name: &str, shape: &[usize]) -> bool {
        self.lora
            .as_ref()
            .is_some_and(|l| l.begin(name, shape).is_some())
    }

    /// Adds the LoRA delta of `name`'s rows `row_start..` to `values`.
    fn merge_lora(&self, name: &str, row_start: usize, row_len: usize, values: &mut [f32]) {
        if let Some(factors) = self.lora.as_ref().and_then(|l| l.factors(name)) {
            crate::lora::add_delta(factors, row_start, row_len, values);
        }
    }

    /// What errors name as the tensors' source: the weights file once it is known.
    pub fn set_description(&mut self, description: impl Into<String>) {
        self.description = description.into();
    }

    /// Which kernels the layers loaded from this store use (default: sdweb's).
    pub fn set_kernel_policy(&mut self, kernels: KernelPolicy) {
        self.kernels = kernels;
    }

    /// Quantise float weights that `policy` selects as they arrive; `component` (unet, vae,
    /// text_encoder) is what the policy's patterns match against.
    pub fn set_quantization(&mut self, policy: QuantPolicy, component: &str) {
        self.quantization = Some((policy, component.to_string()));
    }

    /// The quantisation type of `name`, if it is held quantised.
    pub fn quant_type(&self, name: &str) -> Option<QuantType> {
        self.tensors
            .get(name)?
            .quantized
            .as_ref()
            .map(|(ty, _)| *ty)
    }

    /// Bytes the weights occupy on the GPU (quantised values + f32 scales, dense in the
    /// compute dtype).
    pub fn gpu_bytes(&self) -> u64 {
        let elem = if self.dtype == DType::F16 { 2 } else { 4 };
        self.tensors
            .values()
            .map(|t| {
                let n: usize = t.shape.iter().product();
                match &t.quantized {
                    Some((QuantType::Q8_0, _)) => n + n / quant::BLOCK * 4,
                    Some((QuantType::Q4_0, _)) => n / 2 + n / quant::BLOCK * 4,
                    None => n * elem,
                }
            })
            .sum::<usize>() as u64
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Tensors above this many bytes (in the compute dtype) are stored as row shards; the
    /// default is [`MAX_TENSOR_BYTES`]. Lower it to exercise sharding on small tensors.
    pub fn set_max_tensor_bytes(&mut self, bytes: usize) {
        self.max_tensor_bytes = bytes.max(1);
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// How many row shards hold `name` (0: no such tensor).
    pub fn shard_count(&self, name: &str) -> usize {
        self.tensors.get(name).map_or(0, |t| t.shards.len())
    }

    /// Uploads one tensor given as raw little-endian bytes (not quantised blocks); the bytes
    /// can be dropped afterwards.
    pub fn insert_bytes(&mut self, name: &str, dtype: StorageDType, shape: &[usize], bytes: &[u8]) {
        let mut pending = self.begin_tensor(name, dtype, shape, None);
        self.push_tensor_bytes(&mut pending, bytes);
        self.finish_tensor(pending);
    }

    pub fn insert_f32(&mut self, name: &str, shape: &[usize], values: Vec<f32>) {
        let bytes: &[u8] = bytemuck::cast_slice(&values);
        self.insert_bytes(name, StorageDType::F32, shape, bytes);
    }

    /// Starts a tensor whose bytes arrive in pieces ([`Self::push_tensor_bytes`]): each row
    /// shard is uploaded as soon as its bytes are complete, so at most one shard is held in
    /// memory — what the browser needs for a 150 MB embedding. `blocks`: the tensor is U8
    /// q8_0/q4_0 blocks `[rows, blocks, block bytes]` (as its file declares).
    pub fn begin_tensor(
        &self,
        name: &str,
        dtype: StorageDType,
        shape: &[usize],
        blocks: Option<QuantType>,
    ) -> PendingTensor {
        let total_elems: usize = shape.iter().product();
        let encoding = self.encoding_for(name, dtype, shape, blocks);
        let lora_merge = match encoding {
            Encoding::Blocks(_) | Encoding::DequantizeBlocks(_) => {
                self.begin_lora(name, &[shape[0], shape[1].saturating_mul(quant::BLOCK)])
            }
            _ if dtype == StorageDType::U8 => false,
            _ => self.begin_lora(name, shape),
        };
        if let Encoding::DequantizeBlocks(ty) = encoding {
            let mut pending = self.begin_dequantized_table(name, ty, shape);
            pending.lora_merge = lora_merge;
            return pending;
        }
        if encoding != Encoding::Dense {
            // Quantised tensors are small enough to assemble whole (≤ 1/4 of their f32 size).
            let total_bytes = total_elems * dtype.size_bytes();
            let logical = match encoding {
                Encoding::Blocks(_) => vec![shape[0], shape[1].saturating_mul(quant::BLOCK)],
                _ => shape.to_vec(),
            };
            return PendingTensor {
                name: name.to_string(),
                dtype,
                shape: logical,
                shard_bytes: total_bytes.max(1),
                total_bytes,
                received: 0,
                buffer: Vec::with_capacity(total_bytes),
                shards: Vec::new(),
                encoding,
                quantized: None,
                rows_done: 0,
                lora_merge,
            };
        }
        let row_elems: usize = shape.iter().skip(1).product::<usize>().max(1);
        let elem_bytes = if self.dtype == DType::F16 { 2 } else { 4 };
        let max = self.max_tensor_bytes;
        let shard_elems = if total_elems * elem_bytes <= max || shape.len() < 2 {
            total_elems.max(1)
        } else {
            (max / (row_elems * elem_bytes)).max(1) * row_elems
        };
        PendingTensor {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            shard_bytes: shard_elems * dtype.size_bytes(),
            total_bytes: total_elems * dtype.size_bytes(),
            received: 0,
            buffer: Vec::new(),
            shards: Vec::new(),
            encoding,
            quantized: None,
            rows_done: 0,
            lora_merge,
        }
    }

    /// A quantised `[rows, blocks, block bytes]` table whose row shards are uploaded dense, in
    /// the compute dtype, each within `max_tensor_bytes` as [`Self::begin_tensor`]'s are.
    fn begin_dequantized_table(&self, name: &str, ty: QuantType, shape: &[usize]) -> PendingTensor {
        let (rows, blocks) = (shape[0], shape[1]);
        let row_len = blocks * quant::BLOCK;
        let row_bytes = blocks * ty.block_bytes();
        let elem_bytes = if self.dtype == DType::F16 { 2 } else { 4 };
        let rows_per_shard = (self.max_tensor_bytes / (row_len * elem_bytes).max(1)).max(1);
        PendingTensor {
            name: name.to_string(),
            dtype: StorageDType::U8,
            shape: vec![rows, row_len],
            shard_bytes: (rows_per_shard * row_bytes).max(1),
            total_bytes: rows * row_bytes,
            received: 0,
            buffer: Vec::new(),
            shards: Vec::new(),
            encoding: Encoding::DequantizeBlocks(ty),
            quantized: None,
            rows_done: 0,
            lora_merge: false,
        }
    }

    fn encoding_for(
        &self,
        name: &str,
        dtype: StorageDType,
        shape: &[usize],
        blocks: Option<QuantType>,
    ) -> Encoding {
        if let (Some(ty), StorageDType::U8, [rows, count, _]) = (blocks, dtype, shape) {
            let logical = [*rows, count.saturating_mul(quant::BLOCK)];
            if QuantPolicy::is_embedding_table(name, &logical) {
                return Encoding::DequantizeBlocks(ty);
            }
            return Encoding::Blocks(ty);
        }
        if dtype == StorageDType::U8 {
            return Encoding::Dense;
        }
        let float = matches!(
            dtype,
            StorageDType::F32 | StorageDType::F16 | StorageDType::BF16
        );
        match &self.quantization {
            Some((policy, component)) if float => policy
                .choose(component, name, shape)
                .map_or(Encoding::Dense, Encoding::QuantizeTo),
            _ => Encoding::Dense,
        }
    }

    /// Stores a tensor given as GGUF blocks of `[rows, row_len]` (e.g. a q8_0 GGUF tensor),
    /// keeping it quantised; `shape` is the logical shape (rows first).
    pub fn insert_blocks(
        &mut self,
        name: &str,
        ty: QuantType,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<(), String> {
        let rows = shape.first().copied().unwrap_or(0);
        let row_len: usize = shape.iter().skip(1).product();
        let expected = (rows * row_len / quant::BLOCK).checked_mul(ty.block_bytes());
        if shape.len() < 2 || !row_len.is_multiple_of(quant::BLOCK) || expected != Some(bytes.len())
        {
            return Err(format!(
                "{} tensor {name} of shape {shape:?} must have rows of whole 32-value blocks and {} bytes, has {}",
                ty.name(),
                expected.map_or("?".into(), |e| e.to_string()),
                bytes.len()
            ));
        }
        let tensor = if self.begin_lora(name, &[rows, row_len]) {
            let mut values = quant::dequantize_blocks(bytes, ty);
            self.merge_lora(name, 0, row_len, &mut values);
            quant::upload_blocks(
                &quant::quantize_blocks(&values, ty),
                ty,
                rows,
                row_len,
                &self.device,
            )
        } else {
            quant::upload_blocks(bytes, ty, rows, row_len, &self.device)
        };
        self.tensors.insert(
            name.to_string(),
            StoredTensor {
                shape: shape.to_vec(),
                shards: Vec::new(),
                quantized: Some((ty, tensor)),
                integer: false,
            },
        );
        Ok(())
    }

    /// Appends bytes to `pending` (at most the bytes it still lacks are used).
    pub fn push_tensor_bytes(&self, pending: &mut PendingTensor, mut bytes: &[u8]) {
        while !bytes.is_empty() && pending.received < pending.total_bytes {
            let room = (pending.shard_bytes - pending.buffer.len())
                .min(pending.total_bytes - pending.received);
            let take = room.min(bytes.len());
            pending.buffer.extend_from_slice(&bytes[..take]);
            pending.received += take;
            bytes = &bytes[take..];
            if pending.buffer.len() == pending.shard_bytes
                || pending.received == pending.total_bytes
            {
                let shard = std::mem::take(&mut pending.buffer);
                self.upload_pending(pending, shard);
            }
        }
    }

    fn upload_pending(&self, pending: &mut PendingTensor, bytes: Vec<u8>) {
        let rows = pending.shape[0];
        let row_len = pending.shape[1..].iter().product::<usize>();
        // The shard's values with the LoRA merged, when one patches this tensor.
        let merged = |values: Vec<f32>| {
            let mut values = values;
            if pending.lora_merge && row_len > 0 {
                self.merge_lora(&pending.name, pending.rows_done, row_len, &mut values);
            }
            values
        };
        let shard_rows = match pending.encoding {
            Encoding::Dense => {
                let values = merged(to_f32(&bytes, pending.dtype));
                let shard_rows = values.len() / row_len.max(1);
                pending.shards.push(self.upload(values));
                shard_rows
            }
            Encoding::QuantizeTo(ty) => {
                let blocks = quant::quantize_blocks(&merged(to_f32(&bytes, pending.dtype)), ty);
                let tensor = quant::upload_blocks(&blocks, ty, rows, row_len, &self.device);
                pending.quantized = Some((ty, tensor));
                rows
            }
            Encoding::Blocks(ty) if pending.lora_merge => {
                // Dequantise, merge, requantise to the same type.
                let values = merged(quant::dequantize_blocks(&bytes, ty));
                let blocks = quant::quantize_blocks(&values, ty);
                let tensor = quant::upload_blocks(&blocks, ty, rows, row_len, &self.device);
                pending.quantized = Some((ty, tensor));
                rows
            }
            Encoding::Blocks(ty) => {
                let tensor = quant::upload_blocks(&bytes, ty, rows, row_len, &self.device);
                pending.quantized = Some((ty, tensor));
                rows
            }
            Encoding::DequantizeBlocks(ty) => {
                let values = merged(quant::dequantize_blocks(&bytes, ty));
                let shard_rows = values.len() / row_len.max(1);
                pending.shards.push(self.upload(values));
                shard_rows
            }
        };
        pending.rows_done += shard_rows;
    }

    /// Stores a tensor whose bytes are all pushed (zero-element tensors need none).
    pub fn finish_tensor(&mut self, pending: PendingTensor) {
        debug_assert_eq!(pending.received, pending.total_bytes, "{}", pending.name);
        let mut shards = pending.shards;
        if shards.is_empty() && pending.quantized.is_none() {
            shards.push(self.upload(Vec::new()));
        }
        self.tensors.insert(
            pending.name,
            StoredTensor {
                shape: pending.shape,
                shards,
                quantized: pending.quantized,
                integer: matches!(pending.dtype, StorageDType::I32 | StorageDType::I64),
            },
        );
    }

    fn upload(&self, values: Vec<f32>) -> Tensor<1> {
        let n = values.len();
        let data = TensorData::new(values, [n]);
        let tensor = Tensor::<1>::from_data(data, &self.device);
        if self.dtype == DType::F32 {
            tensor
        } else {
            tensor.cast(self.dtype)
        }
    }

    /// Loads every tensor of a safetensors file through the same streaming path the browser
    /// uses. `rename` maps file names to ours (identity for diffusers folders); None skips.
    pub fn load_safetensors_file(
        &mut self,
        path: &Path,
        rename: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), WeightError> {
        self.set_description(path.display().to_string());
        let stream = read_file_chunks(
            path,
            |file, size| stream::SafetensorsStream::new(file, size, Box::new(rename)),
            |stream, bytes| stream.push(self, bytes),
        )?;
        stream.finish(self)
    }

    pub fn root(&self) -> Weights<'_> {
        Weights {
            store: self,
            prefix: String::new(),
        }
    }

    /// Names never taken by the model: usually harmless buffers (e.g. position_ids), listed
    /// so a caller can warn about checkpoints that do not fit the config.
    pub fn unused(&self) -> Vec<String> {
        let taken = self.taken.borrow();
        let mut names: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !taken.contains(*k))
            .cloned()
            .collect();
        names.sort();
        names
    }

    fn lookup(&self, name: &str, expected: &[usize]) -> Result<&StoredTensor, WeightError> {
        let stored = self.tensors.get(name).ok_or_else(|| WeightError::Missing {
            name: name.to_string(),
            expected: expected.to_vec(),
            source_desc: self.description.clone(),
        })?;
        if stored.integer {
            return Err(WeightError::Malformed {
                file: self.description.clone(),
                why: format!(
                    "tensor {name} holds integers; layer weights must be F32, F16 or BF16"
                ),
            });
        }
        // Quantised files record weights as [rows, row length]: the same bytes as any
        // shape with that many rows and elements.
        let same_matrix = stored.quantized.is_some()
            && stored.shape.len() == 2
            && expected.len() >= 2
            && stored.shape[0] == expected[0]
            && stored.shape[1] == expected[1..].iter().product::<usize>();
        if stored.shape != expected && !same_matrix {
            return Err(WeightError::Shape {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: stored.shape.clone(),
                source_desc: self.description.clone(),
            });
        }
        self.taken.borrow_mut().insert(name.to_string());
        Ok(stored)
    }
}

/// Reads `path` front to back in 4 MiB pieces: `start(file name, size)` once, then `chunk` for
/// each piece; returns what `start` made.
pub fn read_file_chunks<S>(
    path: &Path,
    start: impl FnOnce(&str, u64) -> S,
    mut chunk: impl FnMut(&mut S, &[u8]) -> Result<(), WeightError>,
) -> Result<S, WeightError> {
    use std::io::Read;
    let file = path.display().to_string();
    let mut reader = std::fs::File::open(path).map_err(|e| WeightError::io(&file, e))?;
    let size = reader
        .metadata()
        .map_err(|e| WeightError::io(&file, e))?
        .len();
    let mut state = start(&file, size);
    let mut buffer = vec![0u8; 4 << 20];
    loop {
        let got = reader
            .read(&mut buffer)
            .map_err(|e| WeightError::io(&file, e))?;
        if got == 0 {
            return Ok(state);
        }
        chunk(&mut state, &buffer[..got])?;
    }
}

/// A view of a [`TensorStore`] under a name prefix, like diffusers' module paths.
#[derive(Clone)]
pub struct Weights<'a> {
    store: &'a TensorStore,
    prefix: String,
}

impl<'a> Weights<'a> {
    /// Descends into a sub-module: `w.pp("down_blocks").pp(0)`.
    pub fn pp(&self, part: impl std::fmt::Display) -> Weights<'a> {
        let prefix = if self.prefix.is_empty() {
            part.to_string()
        } else {
            format!("{}.{}", self.prefix, part)
        };
        Weights {
            store: self.store,
            prefix,
        }
    }

    pub fn name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{}", self.prefix, leaf)
        }
    }

    pub fn contains(&self, leaf: &str) -> bool {
        self.store.contains(&self.name(leaf))
    }

    pub fn device(&self) -> &Device {
        self.store.device()
    }

    pub fn dtype(&self) -> DType {
        self.store.dtype()
    }

    /// The kernel policy layers loaded from here hold.
    pub fn kernels(&self) -> KernelPolicy {
        self.store.kernels
    }

    /// The tensor `leaf` with exactly `shape`.
    pub fn get<const D: usize>(
        &self,
        leaf: &str,
        shape: [usize; D],
    ) -> Result<Tensor<D>, WeightError> {
        let stored = self.store.lookup(&self.name(leaf), &shape)?;
        if let Some((_, q)) = &stored.quantized {
            return Ok(q.clone().dequantize().cast(self.dtype()).reshape(shape));
        }
        let flat = if stored.shards.len() == 1 {
            stored.shards[0].clone()
        } else {
            Tensor::cat(stored.shards.clone(), 0)
        };
        Ok(flat.reshape(shape))
    }

    /// A layer weight of `shape` (rows = output features), kept quantised when it is stored so.
    pub fn get_layer_weight<const D: usize>(
        &self,
        leaf: &str,
        shape: [usize; D],
    ) -> Result<LayerWeight<D>, WeightError> {
        let stored = self.store.lookup(&self.name(leaf), &shape)?;
        if let Some((ty, q)) = &stored.quantized {
            return Ok(LayerWeight::Quantized {
                ty: *ty,
                matrix: q.clone(),
                shape,
            });
        }
        Ok(LayerWeight::Dense(self.get(leaf, shape)?))
    }

    /// A 2-D tensor kept as row shards (for embeddings larger than a storage binding).
    pub fn get_row_shards(
        &self,
        leaf: &str,
        shape: [usize; 2],
    ) -> Result<Vec<Tensor<2>>, WeightError> {
        let stored = self.store.lookup(&self.name(leaf), &shape)?;
        Ok(stored
            .shards
            .iter()
            .map(|s| {
                let rows = s.dims()[0] / shape[1];
                s.clone().reshape([rows, shape[1]])
            })
            .collect())
    }
}

/// A linear/conv weight: dense in the compute dtype, or quantised `[rows, row length]`.
#[derive(Clone, Debug)]
pub enum LayerWeight<const D: usize> {
    Dense(Tensor<D>),
    Quantized {
        ty: QuantType,
        matrix: Tensor<2>,
        shape: [usize; D],
    },
}

impl<const D: usize> LayerWeight<D> {
    /// The weight in `dtype`; a quantised one is dequantised into a transient buffer.
    pub fn dense(&self, dtype: DType) -> Tensor<D> {
        match self {
            Self::Dense(t) => t.clone(),
            Self::Quantized { matrix, shape, .. } => {
                matrix.clone().dequantize().cast(dtype).reshape(*shape)
            }
        }
    }
}

/// Picks the weights file of a diffusers component folder (`unet/`, `vae/`, `text_encoder/`,
/// a TAESD repository), in [`crate::layout::weights_file_names`]' order: the non-variant file
/// first unless `prefer_fp16`.
pub fn find_component_file(
    dir: &Path,
    stem: &str,
    prefer_fp16: bool,
) -> Result<PathBuf, WeightError> {
    let candidates = crate::layout::weights_file_names(stem, prefer_fp16);
    candidates
        .iter()
        .map(|c| dir.join(c))
        .find(|p| p.is_file())
        .ok_or_else(|| WeightError::NoWeightsFile {
            dir: dir.display().to_string(),
            candidates: candidates.join(", "),
        })
}
