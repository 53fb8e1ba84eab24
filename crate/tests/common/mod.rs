//! Helpers shared by the fixture tests: the GPU device, reference tensors, error metrics.
#![allow(dead_code)]

pub mod checkpoint_files;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::{Device, Tensor, TensorData};
use sdweb::weights::{safetensors::SafetensorsHeader, to_f32};

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures"))
}

pub fn reference_dir() -> PathBuf {
    fixtures().join("reference")
}

/// One wgpu device for the whole test binary (lavapipe in CI).
pub fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            Device::wgpu_options()
                .init()
                .expect("a wgpu adapter (install mesa-vulkan-drivers)")
        })
        .clone()
}

pub struct RefTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl RefTensor {
    pub fn tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        let shape: [usize; D] = self.shape.clone().try_into().expect("rank");
        Tensor::from_data(TensorData::new(self.values.clone(), shape), device)
    }
}

/// All tensors of a reference safetensors file, as f32.
pub fn load_reference(name: &str) -> HashMap<String, RefTensor> {
    let path = reference_dir().join(name);
    let file = path.display().to_string();
    let mut reader = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let header = SafetensorsHeader::read(&mut reader, &file).unwrap();
    header
        .tensors
        .iter()
        .map(|(name, entry)| {
            let bytes = header.read_tensor(&mut reader, entry, &file).unwrap();
            (
                name.clone(),
                RefTensor {
                    shape: entry.shape.clone(),
                    values: to_f32(&bytes, entry.dtype),
                },
            )
        })
        .collect()
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// (max abs error, mean abs error).
pub fn errors(ours: &[f32], reference: &[f32]) -> (f32, f32) {
    assert_eq!(ours.len(), reference.len(), "length mismatch");
    let mut max = 0f32;
    let mut sum = 0f64;
    for (a, b) in ours.iter().zip(reference) {
        let d = (a - b).abs();
        assert!(d.is_finite(), "non-finite value: ours {a}, reference {b}");
        max = max.max(d);
        sum += d as f64;
    }
    (max, (sum / ours.len() as f64) as f32)
}

/// Asserts closeness relative to the reference's scale: max |a-b| <= tol * max(1, max|b|).
pub fn assert_close(what: &str, ours: &[f32], reference: &[f32], tol: f32) {
    let (max, mean) = errors(ours, reference);
    let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
    eprintln!("{what}: max abs err {max:.3e}, mean {mean:.3e}, reference scale {scale:.3}");
    assert!(
        max <= tol * scale,
        "{what}: max abs error {max} > {tol} × {scale}"
    );
}

/// One end-to-end case of reference/e2e/cases.json.
#[derive(serde::Deserialize, Debug, Clone)]
pub struct Case {
    pub name: String,
    pub model: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: String,
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    pub init_noise: String,
    pub png: String,
}

pub fn e2e_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(reference_dir().join("e2e/cases.json")).unwrap();
    // The fixture script writes Python JSON (-Infinity in scheduler configs).
    serde_json::from_value(sdweb::schedulers::parse_json(&text).unwrap()).unwrap()
}

pub fn decode_rgb(bytes: &[u8]) -> (Vec<u8>, u32, u32) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "expected RGB8");
    buf.truncate(info.buffer_size());
    (buf, info.width, info.height)
}

pub fn reference_rgb(case: &Case) -> Vec<u8> {
    let (rgb, w, h) =
        decode_rgb(&std::fs::read(reference_dir().join("e2e").join(&case.png)).unwrap());
    assert_eq!(
        (w as usize, h as usize),
        (case.width, case.height),
        "{}: reference size",
        case.name
    );
    rgb
}

pub fn init_noise(case: &Case) -> Vec<f32> {
    let bytes = std::fs::read(reference_dir().join("e2e").join(&case.init_noise)).unwrap();
    sdweb::npy::read_npy_f32(&bytes).unwrap().1
}

/// The request a txt2img case describes, with its initial noise (diffusers' `latents=`).
pub fn case_request(case: &Case) -> sdweb::pipeline::GenerateRequest {
    sdweb::pipeline::GenerateRequest {
        prompt: case.prompt.clone(),
        negative_prompt: case.negative_prompt.clone(),
        prompt_syntax: Default::default(),
        steps: case.steps,
        guidance: case.guidance,
        scheduler: Some(sdweb::schedulers::SchedulerKind::from_name(&case.scheduler).unwrap()),
        width: case.width,
        height: case.height,
        seed: case.seed,
        init_noise: Some(init_noise(case)),
        init_image: None,
        preview_every: None,
    }
}

/// (max, mean) absolute difference in 1/255 units.
pub fn image_errors(ours: &[u8], reference: &[u8]) -> (u8, f64) {
    assert_eq!(ours.len(), reference.len(), "image sizes differ");
    let max = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    let mean = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| a.abs_diff(*b) as f64)
        .sum::<f64>()
        / ours.len() as f64;
    (max, mean)
}

/// The f32 end-to-end tolerance of the engine issue: max 3/255, mean 0.5/255.
/// PSNR of two RGB8 images in dB (identical images: 100 dB).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-10)).log10()
}

pub fn assert_image_close(name: &str, ours: &[u8], reference: &[u8]) {
    let (max, mean) = image_errors(ours, reference);
    eprintln!("{name}: max {max}/255, mean {mean:.3}/255");
    assert!(
        max <= 3 && mean <= 0.5,
        "{name}: max {max}/255 (≤3), mean {mean:.3}/255 (≤0.5)"
    );
}

/// One case of reference/prompt_syntax.json (A1111 prompt syntax, see make_fixtures.py).
#[derive(serde::Deserialize, Debug, Clone)]
pub struct PromptSyntaxCase {
    pub name: String,
    pub prompt: String,
    pub negative_prompt: String,
    /// 77-token chunks of each prompt after padding.
    pub chunks: usize,
}

pub fn prompt_syntax_cases() -> Vec<PromptSyntaxCase> {
    let path = reference_dir().join("prompt_syntax.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("prompt_syntax.json")
}

/// A CFG request for the case's prompts (only the prompt fields matter to the text encoders).
pub fn prompt_syntax_request(case: &PromptSyntaxCase) -> sdweb::pipeline::GenerateRequest {
    sdweb::pipeline::GenerateRequest {
        prompt: case.prompt.clone(),
        negative_prompt: case.negative_prompt.clone(),
        prompt_syntax: sdweb::options::PromptSyntax::A1111,
        steps: 2,
        guidance: 7.5,
        scheduler: None,
        width: 64,
        height: 64,
        seed: 0,
        init_noise: None,
        init_image: None,
        preview_every: None,
    }
}

/// Reference token rows (int32 stored, read as f32) as ids.
pub fn reference_rows(reference: &RefTensor) -> Vec<Vec<u32>> {
    reference
        .values
        .chunks(reference.shape[1])
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect()
}

/// The prompt-syntax case called `name`.
pub fn prompt_syntax_case(name: &str) -> PromptSyntaxCase {
    prompt_syntax_cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no prompt-syntax case {name}"))
}

/// `model`'s token rows for `case` (asserted equal to the reference's `{prefix}.ids`) and its
/// text condition (context, SDXL's pooled embeddings), with CFG.
pub fn checked_prompt_condition(
    model: &sdweb::pipeline::StableDiffusion,
    case: &PromptSyntaxCase,
    reference: &HashMap<String, RefTensor>,
    prefix: &str,
) -> (Tensor<3>, Option<Tensor<2>>) {
    let req = prompt_syntax_request(case);
    let rows = model.tokenize(&req, true, &mut |_| {}).unwrap();
    assert_eq!(
        rows,
        reference_rows(&reference[&format!("{prefix}.ids")]),
        "{prefix}"
    );
    model.text_condition(&req, true).unwrap()
}
