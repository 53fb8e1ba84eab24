//! Our attention (burn's kernel, chunked over queries) against a plain softmax(QKᵀ/√d)V,
//! including SD's long self-attention that takes the chunked path.

mod common;

use burn::tensor::{Distribution, Tensor, activation::softmax};
use common::*;
use sdweb::models::nn::{scaled_dot_product_attention, split_heads};

/// Reference, in query chunks of 256 so its score matrix stays small too.
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
    let dev = device();
    // Heads split from [B, S, H*D] as the models do: strided, non-contiguous views.
    let make = |s: usize| {
        let x = Tensor::<3>::random([b, s, h * d], Distribution::Normal(0.0, 1.0), &dev);
        split_heads(x, h)
    };
    let (q, k, v) = (make(s_q), make(s_k), make(s_k));
    let ours = to_vec(scaled_dot_product_attention(
        q.clone(),
        k.clone(),
        v.clone(),
    ));
    let reference = to_vec(naive(q, k, v));
    assert_close(
        &format!("attention b{b} h{h} q{s_q} k{s_k} d{d}"),
        &ours,
        &reference,
        1e-4,
    );
}

#[test]
fn short_cross_attention() {
    check(2, 4, 96, 77, 16);
}

#[test]
fn long_self_attention_chunked() {
    check(2, 2, 4096, 4096, 16);
}

#[test]
fn single_head_vae_attention() {
    check(1, 1, 4096, 4096, 16);
}
