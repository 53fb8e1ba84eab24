//! Both attention paths against an oracle, including SD's long self-attention that takes the
//! chunked path: the GEMM path (GPUs) against burn's fused kernel, and our chunked use of
//! burn's kernel (CPU adapters) against a plain softmax(QKᵀ/√d)V.

mod common;

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Distribution, Tensor, activation::softmax};
use common::*;
use sdweb::models::nn::{fused_attention, gemm_attention, split_heads};

/// burn's kernel, in query chunks of 256: its non-flash candidates build the whole score
/// matrix, which for 4096×4096 would exceed lavapipe's 128 MiB binding.
fn burn_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let s_q = q.dims()[2];
    let parts = (0..s_q)
        .step_by(256)
        .map(|start| {
            let q = q.clone().narrow(2, start, 256.min(s_q - start));
            let options = AttentionModuleOptions::default();
            attention(q, k.clone(), v.clone(), None, None, options)
        })
        .collect();
    Tensor::cat(parts, 2)
}

/// Heads split from [B, S, H*D] as the models do: strided, non-contiguous views.
fn inputs(b: usize, h: usize, s_q: usize, s_k: usize, d: usize) -> [Tensor<4>; 3] {
    let dev = device();
    let make = |s: usize| {
        let x = Tensor::<3>::random([b, s, h * d], Distribution::Normal(0.0, 1.0), &dev);
        split_heads(x, h)
    };
    [make(s_q), make(s_k), make(s_k)]
}

/// Plain softmax(QKᵀ/√d)V in query chunks of 256, for the fused path.
fn naive(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [_, _, s_q, d] = q.dims();
    let parts = (0..s_q)
        .step_by(256)
        .map(|start| {
            let q = q.clone().narrow(2, start, 256.min(s_q - start));
            softmax(q.matmul(k.clone().swap_dims(2, 3)) / (d as f64).sqrt(), 3).matmul(v.clone())
        })
        .collect();
    Tensor::cat(parts, 2)
}

fn check(b: usize, h: usize, s_q: usize, s_k: usize, d: usize) {
    let [q, k, v] = inputs(b, h, s_q, s_k, d);
    let what = format!("b{b} h{h} q{s_q} k{s_k} d{d}");
    let gemm = gemm_attention(q.clone(), k.clone(), v.clone());
    let oracle = burn_attention(q.clone(), k.clone(), v.clone());
    assert_close(
        &format!("gemm attention {what}"),
        &to_vec(gemm),
        &to_vec(oracle),
        1e-4,
    );
    let fused = fused_attention(q.clone(), k.clone(), v.clone());
    let reference = naive(q, k, v);
    assert_close(
        &format!("fused attention {what}"),
        &to_vec(fused),
        &to_vec(reference),
        1e-4,
    );
}

#[test]
fn short_cross_attention() {
    check(2, 4, 96, 77, 16);
}

/// A long self-attention with a single head, as the VAE's: 8 query chunks of 256 over 2048
/// keys (SD's 4096 only repeats the chunks; several heads and a batch are the short case's).
#[test]
fn long_single_head_self_attention_chunked() {
    check(1, 1, 2048, 2048, 16);
}

/// GEMM path on f16 inputs (the f16 compute path): scores are rounded to f16 by the GEMM,
/// softmax runs in f32. Against the f32 oracle on the same (f16-representable) inputs; measured 7.1e-4.
#[test]
fn f16_attention_matches_the_f32_oracle() {
    let [q, k, v] = inputs(2, 2, 1024, 1024, 40).map(|t| t.cast(DType::F16).cast(DType::F32));
    let oracle = to_vec(burn_attention(q.clone(), k.clone(), v.clone()));
    let half = |t: Tensor<4>| t.cast(DType::F16);
    let ours = gemm_attention(half(q), half(k), half(v));
    assert_eq!(ours.dtype(), DType::F16);
    assert_close("f16 attention", &to_vec(ours), &oracle, 5e-3);
}
