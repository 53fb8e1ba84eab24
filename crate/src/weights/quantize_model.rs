//! `sdweb quantize`: a diffusers folder in, the same folder layout out with layer weights as
//! q8_0/q4_0 blocks. Quantised tensors are safetensors `U8` tensors shaped
//! `[rows, blocks per row, block bytes]` (34 bytes: q8_0, 18: q4_0) in GGUF's block layout;
//! every other float tensor is stored as f16. CLI and browser load the result like any
//! diffusers folder, tensor by tensor, without a whole file in memory.

use std::collections::{BTreeMap, HashMap};
#[cfg(not(target_arch = "wasm32"))]
use std::io::{BufWriter, Write};
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use super::quant::{self, QuantPolicy, QuantType};
use super::safetensors::{QUANT_TYPE_KEY, TensorEntry};
use super::stream::{SafetensorsStream, TensorSink};
use super::{StorageDType, WeightError, to_f32};
#[cfg(not(target_arch = "wasm32"))]
use crate::layout;

/// What one component's file became.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ComponentReport {
    pub component: String,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// Tensor counts by stored type (q8_0, q4_0, f16, ...).
    pub tensors: BTreeMap<String, usize>,
}

#[cfg(not(target_arch = "wasm32"))]
/// Quantises the diffusers folder `input` into the new folder `output` (whole or not at all:
/// written beside it and renamed at the end; never `input` or inside it, never over a folder);
/// with no policy, every float tensor is just stored as f16 (an fp16 copy).
pub fn quantize_folder(
    input: &Path,
    output: &Path,
    policy: Option<&QuantPolicy>,
) -> Result<Vec<ComponentReport>, WeightError> {
    let mut reports = Vec::new();
    crate::files::create_folder_atomically(input, output, |partial| {
        reports = write_quantized_folder(input, partial, policy)?;
        Ok::<(), WeightError>(())
    })?;
    Ok(reports)
}

#[cfg(not(target_arch = "wasm32"))]
/// [`quantize_folder`]'s work, into the (temporary) folder `output`.
fn write_quantized_folder(
    input: &Path,
    output: &Path,
    policy: Option<&QuantPolicy>,
) -> Result<Vec<ComponentReport>, WeightError> {
    let io = |p: &Path, e: std::io::Error| WeightError::io(&p.display().to_string(), e);
    let index =
        crate::model_index::ModelIndex::read(input).map_err(|why| WeightError::Malformed {
            file: input.join(layout::MODEL_INDEX).display().to_string(),
            why,
        })?;
    // Configs, scheduler and tokenizers are copied as they are.
    let mut copied = vec![
        layout::MODEL_INDEX.to_string(),
        layout::SCHEDULER_CONFIG.to_string(),
    ];
    copied.extend(index.components().iter().map(|&c| layout::config_path(c)));
    for rel in &copied {
        let (from, to) = (input.join(rel), output.join(rel));
        std::fs::create_dir_all(to.parent().unwrap()).map_err(|e| io(&to, e))?;
        std::fs::copy(&from, &to).map_err(|e| io(&from, e))?;
    }
    for folder in index.tokenizer_folders() {
        let tokenizer = input.join(folder);
        let entries = std::fs::read_dir(&tokenizer).map_err(|e| io(&tokenizer, e))?;
        std::fs::create_dir_all(output.join(folder)).map_err(|e| io(output, e))?;
        for entry in entries {
            let path = entry.map_err(|e| io(&tokenizer, e))?.path();
            if path.is_file() {
                let to = output.join(folder).join(path.file_name().unwrap());
                std::fs::copy(&path, &to).map_err(|e| io(&path, e))?;
            }
        }
    }
    let mut reports = Vec::new();
    for &component in index.components() {
        let (folder, stem) = (component.folder(), component.weights_stem());
        let source = super::find_component_file(&input.join(folder), stem, false)?;
        let target = output.join(folder).join(format!("{stem}.safetensors"));
        reports.push(quantize_file(&source, &target, folder, policy)?);
    }
    Ok(reports)
}

/// How one tensor is written.
#[derive(Clone, Copy)]
enum Output {
    Blocks(QuantType),
    F16,
    /// Integers (position ids) and f16 tensors: copied.
    Copy,
}

/// A tensor being collected for conversion.
pub struct PendingOutput {
    dtype: StorageDType,
    output: Output,
    bytes: Vec<u8>,
}

/// Converts a safetensors file read front to back in chunks of any size (the browser's cache
/// chunks, or a native file) into its quantised copy, handing out the output bytes as they
/// become ready: at most one tensor is held in memory.
pub struct QuantizeStream {
    stream: SafetensorsStream<'static, PendingOutput>,
    sink: QuantizeSink,
}

struct QuantizeSink {
    component: String,
    policy: Option<QuantPolicy>,
    outputs: HashMap<String, Output>,
    out: Vec<u8>,
    report: ComponentReport,
}

impl QuantizeStream {
    /// `file`/`file_size` describe the input; `component` (text_encoder, unet, vae) is what
    /// the policy's patterns see; no policy stores every float tensor as f16.
    pub fn new(file: &str, file_size: u64, component: &str, policy: Option<QuantPolicy>) -> Self {
        Self {
            stream: SafetensorsStream::new(
                file,
                file_size,
                Box::new(|n: &str| Some(n.to_string())),
            ),
            sink: QuantizeSink {
                component: component.to_string(),
                policy,
                outputs: HashMap::new(),
                out: Vec::new(),
                report: ComponentReport {
                    component: component.to_string(),
                    input_bytes: file_size,
                    ..Default::default()
                },
            },
        }
    }

    /// Feeds input bytes; returns the output bytes now complete (possibly none).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, WeightError> {
        self.stream.push(&mut self.sink, bytes)?;
        Ok(std::mem::take(&mut self.sink.out))
    }

    /// The output's total size, known once the input header has been read.
    pub fn output_size(&self) -> Option<u64> {
        (self.sink.report.output_bytes > 0).then_some(self.sink.report.output_bytes)
    }

    /// Checks the input was complete; returns the last output bytes and the report.
    pub fn finish(mut self) -> Result<(Vec<u8>, ComponentReport), WeightError> {
        self.stream.finish(&mut self.sink)?;
        Ok((std::mem::take(&mut self.sink.out), self.sink.report))
    }
}

impl TensorSink for QuantizeSink {
    type Pending = PendingOutput;

    // The output header (with every offset) precedes the data, so plan all tensors here.
    fn header(&mut self, entries: &[(Option<String>, TensorEntry)]) -> Result<(), WeightError> {
        let mut json = serde_json::Map::new();
        let mut metadata = serde_json::Map::new();
        metadata.insert("format".into(), "pt".into());
        metadata.insert(
            "sdweb.quantization".into(),
            format!("each {QUANT_TYPE_KEY}<tensor> names the GGUF blocks (q8_0: 34 bytes, q4_0: 18) that U8 tensor [rows, blocks, block bytes] holds of the row-major [rows, row length] weight").into(),
        );
        let mut offset = 0u64;
        for (name, entry) in entries {
            let Some(name) = name else { continue };
            let numel: usize = entry.shape.iter().product();
            let float = matches!(
                entry.dtype,
                StorageDType::F32 | StorageDType::F16 | StorageDType::BF16
            );
            let output = match self
                .policy
                .as_ref()
                .and_then(|p| p.choose_stored(&self.component, name, &entry.shape))
            {
                Some(ty) if float => Output::Blocks(ty),
                _ if float && entry.dtype != StorageDType::F16 => Output::F16,
                _ => Output::Copy,
            };
            let (dtype, shape, bytes) = match output {
                Output::Blocks(ty) => {
                    let rows = entry.shape[0] as u64;
                    let blocks = numel as u64 / rows / quant::BLOCK as u64;
                    let bb = ty.block_bytes() as u64;
                    ("U8", vec![rows, blocks, bb], rows * blocks * bb)
                }
                Output::F16 => (
                    "F16",
                    entry.shape.iter().map(|&d| d as u64).collect(),
                    numel as u64 * 2,
                ),
                Output::Copy => (
                    entry.dtype.safetensors_name(),
                    entry.shape.iter().map(|&d| d as u64).collect(),
                    entry.end - entry.begin,
                ),
            };
            // Blocks copied from an input that is quantised already stay declared.
            let blocks = match output {
                Output::Blocks(ty) => Some(ty),
                Output::Copy => entry.quant,
                Output::F16 => None,
            };
            if let Some(ty) = blocks {
                metadata.insert(format!("{QUANT_TYPE_KEY}{name}"), ty.name().into());
            }
            let kind = match output {
                Output::Blocks(ty) => ty.name().to_string(),
                _ => dtype.to_ascii_lowercase(),
            };
            *self.report.tensors.entry(kind).or_default() += 1;
            json.insert(
                name.clone(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
            );
            offset += bytes;
            self.outputs.insert(name.clone(), output);
        }
        json.insert("__metadata__".into(), metadata.into());
        let mut header =
            serde_json::to_vec(&serde_json::Value::Object(json)).expect("a JSON map serialises");
        while header.len() % 8 != 0 {
            header.push(b' ');
        }
        self.report.output_bytes = 8 + header.len() as u64 + offset;
        self.out.extend((header.len() as u64).to_le_bytes());
        self.out.extend(header);
        Ok(())
    }

    fn begin(&mut self, name: &str, entry: &TensorEntry) -> PendingOutput {
        PendingOutput {
            dtype: entry.dtype,
            output: self.outputs[name],
            bytes: Vec::with_capacity((entry.end - entry.begin) as usize),
        }
    }

    fn push(&mut self, pending: &mut PendingOutput, bytes: &[u8]) {
        pending.bytes.extend_from_slice(bytes);
    }

    fn finish(&mut self, pending: PendingOutput) {
        if matches!(pending.output, Output::Copy) {
            self.out.extend(pending.bytes);
            return;
        }
        // In pieces of 2^20 values (whole blocks, as rows are): no f32 copy of a whole
        // embedding table (152 MB) in the browser's heap.
        let piece = (1 << 20) * pending.dtype.size_bytes();
        for bytes in pending.bytes.chunks(piece) {
            let values = to_f32(bytes, pending.dtype);
            match pending.output {
                Output::Blocks(ty) => self.out.extend(quant::quantize_blocks(&values, ty)),
                _ => self.out.extend(
                    values
                        .into_iter()
                        .flat_map(|v| half::f16::from_f32(v).to_le_bytes()),
                ),
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn quantize_file(
    source: &Path,
    target: &Path,
    component: &str,
    policy: Option<&QuantPolicy>,
) -> Result<ComponentReport, WeightError> {
    // Written under a temporary name and renamed: an interrupted run leaves no half file.
    let partial = target.with_extension("safetensors.partial");
    let out_name = partial.display().to_string();
    let io = |e: std::io::Error| WeightError::io(&out_name, e);
    std::fs::create_dir_all(target.parent().unwrap()).map_err(io)?;
    let mut out = BufWriter::new(std::fs::File::create(&partial).map_err(io)?);
    let stream = super::read_file_chunks(
        source,
        |file, size| QuantizeStream::new(file, size, component, policy.cloned()),
        |stream, bytes| out.write_all(&stream.push(bytes)?).map_err(io),
    )?;
    let (tail, report) = stream.finish()?;
    out.write_all(&tail).map_err(io)?;
    out.flush().map_err(io)?;
    drop(out);
    std::fs::rename(&partial, target).map_err(io)?;
    Ok(report)
}
