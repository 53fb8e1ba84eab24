//! GroupNorm against a CPU computation, at VAE-decoder sizes (a group of ~1 M values at 512×512).

mod common;

use burn::tensor::{Distribution, Tensor};
use common::*;
use sdweb::models::nn::GroupNorm;
use sdweb::weights::{StorageDType, TensorStore};

fn cpu_group_norm(x: &[f32], c: usize, groups: usize, eps: f64) -> Vec<f32> {
    let per = x.len() / groups;
    let _ = c;
    let mut out = vec![0f32; x.len()];
    for g in 0..groups {
        let s = &x[g * per..(g + 1) * per];
        let mean = s.iter().map(|&v| v as f64).sum::<f64>() / per as f64;
        let var = s.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / per as f64;
        for (i, &v) in s.iter().enumerate() {
            out[g * per + i] = ((v as f64 - mean) / (var + eps).sqrt()) as f32;
        }
    }
    out
}

fn check(c: usize, h: usize, w: usize, groups: usize) {
    let dev = device();
    let mut store = TensorStore::new(&dev, burn::tensor::DType::F32, "test");
    let ones: Vec<u8> = (0..c).flat_map(|_| 1f32.to_le_bytes()).collect();
    let zeros = vec![0u8; c * 4];
    store.insert_bytes("norm.weight", StorageDType::F32, &[c], &ones);
    store.insert_bytes("norm.bias", StorageDType::F32, &[c], &zeros);
    let norm = GroupNorm::load(&store.root().pp("norm"), groups, c, 1e-6).unwrap();
    let x = Tensor::<4>::random([1, c, h, w], Distribution::Normal(0.5, 2.0), &dev);
    let input = to_vec(x.clone());
    let ours = to_vec(norm.forward(x));
    assert_close(
        &format!("group norm c{c} {h}x{w} g{groups}"),
        &ours,
        &cpu_group_norm(&input, c, groups, 1e-6),
        1e-4,
    );
}

#[test]
fn small_groups() {
    check(16, 12, 16, 4);
}

#[test]
fn vae_decoder_sized_groups() {
    check(16, 512, 512, 4);
}
