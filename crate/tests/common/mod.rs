//! Helpers shared by the fixture tests: the GPU device, reference tensors, error metrics.
#![allow(dead_code)]

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
