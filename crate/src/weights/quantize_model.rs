//! `sdweb quantize`: a diffusers folder in, the same folder layout out with layer weights as
//! q8_0/q4_0 blocks. Quantised tensors are safetensors `U8` tensors shaped
//! `[rows, blocks per row, block bytes]` (34 bytes: q8_0, 18: q4_0) in GGUF's block layout;
//! every other float tensor is stored as f16. CLI and browser load the result like any
//! diffusers folder, tensor by tensor, without a whole file in memory.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use super::quant::{self, QuantPolicy, QuantType};
use super::safetensors::{SafetensorsHeader, TensorEntry};
use super::{StorageDType, WeightError, find_component_file, to_f32};

/// What one component's file became.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ComponentReport {
    pub component: String,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// Tensor counts by stored type (q8_0, q4_0, f16, ...).
    pub tensors: BTreeMap<String, usize>,
}

/// Folder-level files copied as they are: configs, tokenizer, scheduler.
const COPIED: &[&str] = &[
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "unet/config.json",
    "vae/config.json",
];

/// Quantises the diffusers folder `input` into `output` (created; existing files replaced);
/// with no policy, every float tensor is just stored as f16 (an fp16 copy).
pub fn quantize_folder(
    input: &Path,
    output: &Path,
    policy: Option<&QuantPolicy>,
) -> Result<Vec<ComponentReport>, WeightError> {
    let io = |p: &Path, e: std::io::Error| WeightError::io(&p.display().to_string(), e);
    for rel in COPIED {
        let (from, to) = (input.join(rel), output.join(rel));
        std::fs::create_dir_all(to.parent().unwrap()).map_err(|e| io(&to, e))?;
        std::fs::copy(&from, &to).map_err(|e| io(&from, e))?;
    }
    let tokenizer = input.join("tokenizer");
    let entries = std::fs::read_dir(&tokenizer).map_err(|e| io(&tokenizer, e))?;
    std::fs::create_dir_all(output.join("tokenizer")).map_err(|e| io(output, e))?;
    for entry in entries {
        let path = entry.map_err(|e| io(&tokenizer, e))?.path();
        if path.is_file() {
            let to = output.join("tokenizer").join(path.file_name().unwrap());
            std::fs::copy(&path, &to).map_err(|e| io(&path, e))?;
        }
    }
    let mut reports = Vec::new();
    for (component, stem) in [
        ("text_encoder", "model"),
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
    ] {
        let source = find_component_file(&input.join(component), stem, false)?;
        let target = output.join(component).join(format!("{stem}.safetensors"));
        reports.push(quantize_file(&source, &target, component, policy)?);
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

fn quantize_file(
    source: &Path,
    target: &Path,
    component: &str,
    policy: Option<&QuantPolicy>,
) -> Result<ComponentReport, WeightError> {
    let file = source.display().to_string();
    let mut reader =
        BufReader::new(std::fs::File::open(source).map_err(|e| WeightError::io(&file, e))?);
    let header = SafetensorsHeader::read(&mut reader, &file)?;
    let mut entries: Vec<(&String, &TensorEntry)> = header.tensors.iter().collect();
    entries.sort_by_key(|(_, e)| e.begin);

    // Plan every tensor first: the header (with offsets) precedes the data.
    let mut plan = Vec::new();
    let mut json = serde_json::Map::new();
    json.insert(
        "__metadata__".into(),
        serde_json::json!({
            "format": "pt",
            "sdweb.quantization": "U8 [rows, blocks, 34|18] tensors are GGUF q8_0|q4_0 blocks of the row-major [rows, row length] weight",
        }),
    );
    let mut offset = 0u64;
    let mut report = ComponentReport {
        component: component.to_string(),
        input_bytes: std::fs::metadata(source).map_or(0, |m| m.len()),
        ..Default::default()
    };
    for (name, entry) in &entries {
        let numel: usize = entry.shape.iter().product();
        let float = matches!(
            entry.dtype,
            StorageDType::F32 | StorageDType::F16 | StorageDType::BF16
        );
        let choice = if float {
            policy
                .and_then(|p| p.choose(component, name, &entry.shape))
                .map_or(Output::F16, Output::Blocks)
        } else {
            Output::Copy
        };
        let choice = match (choice, entry.dtype) {
            (Output::F16, StorageDType::F16) => Output::Copy,
            (c, _) => c,
        };
        let (dtype, shape, bytes) = match choice {
            Output::Blocks(ty) => {
                let rows = entry.shape[0] as u64;
                let blocks = numel as u64 / rows / quant::BLOCK as u64;
                let bb = ty.block_bytes() as u64;
                ("U8".to_string(), vec![rows, blocks, bb], rows * blocks * bb)
            }
            Output::F16 => (
                "F16".to_string(),
                entry.shape.iter().map(|&d| d as u64).collect(),
                numel as u64 * 2,
            ),
            Output::Copy => (
                safetensors_dtype(entry.dtype).to_string(),
                entry.shape.iter().map(|&d| d as u64).collect(),
                entry.end - entry.begin,
            ),
        };
        let key = match choice {
            Output::Blocks(ty) => ty.name().to_string(),
            Output::F16 => "f16".to_string(),
            Output::Copy => safetensors_dtype(entry.dtype).to_ascii_lowercase(),
        };
        *report.tensors.entry(key).or_default() += 1;
        json.insert(
            (*name).clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
        plan.push((*name, *entry, choice));
    }
    let mut header_bytes =
        serde_json::to_vec(&serde_json::Value::Object(json)).expect("a JSON map serialises");
    while header_bytes.len() % 8 != 0 {
        header_bytes.push(b' ');
    }

    // Written under a temporary name and renamed: an interrupted run leaves no half file.
    let partial = target.with_extension("safetensors.partial");
    let out_name = partial.display().to_string();
    std::fs::create_dir_all(target.parent().unwrap()).map_err(|e| WeightError::io(&out_name, e))?;
    let mut out =
        BufWriter::new(std::fs::File::create(&partial).map_err(|e| WeightError::io(&out_name, e))?);
    let write = |out: &mut BufWriter<std::fs::File>, bytes: &[u8]| {
        out.write_all(bytes)
            .map_err(|e| WeightError::io(&out_name, e))
    };
    write(&mut out, &(header_bytes.len() as u64).to_le_bytes())?;
    write(&mut out, &header_bytes)?;
    for (_, entry, choice) in plan {
        let raw = header.read_tensor(&mut reader, entry, &file)?;
        match choice {
            Output::Copy => write(&mut out, &raw)?,
            Output::F16 => {
                let halves: Vec<u8> = to_f32(&raw, entry.dtype)
                    .into_iter()
                    .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
                    .collect();
                write(&mut out, &halves)?
            }
            Output::Blocks(ty) => write(
                &mut out,
                &quant::quantize_blocks(&to_f32(&raw, entry.dtype), ty),
            )?,
        }
    }
    out.flush().map_err(|e| WeightError::io(&out_name, e))?;
    drop(out);
    std::fs::rename(&partial, target).map_err(|e| WeightError::io(&out_name, e))?;
    report.output_bytes = std::fs::metadata(target).map_or(0, |m| m.len());
    Ok(report)
}

fn safetensors_dtype(dtype: StorageDType) -> &'static str {
    match dtype {
        StorageDType::F32 => "F32",
        StorageDType::F16 => "F16",
        StorageDType::BF16 => "BF16",
        StorageDType::I64 => "I64",
        StorageDType::I32 => "I32",
        StorageDType::U8 => "U8",
    }
}
