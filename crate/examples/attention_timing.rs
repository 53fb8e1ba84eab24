//! Times sdweb's attention kernel for this adapter against burn's fused attention at one shape
//! (both on random q, k, v; three runs each, the first includes compilation), after checking
//! they agree:
//!
//!     cargo run --release --example attention_timing -- BATCH TOKENS HEADS HEAD_DIM
//!
//! e.g. `2 4096 8 4`: the sd1 fixture's 4096-token self-attention with CFG.
use burn::tensor::{Distribution, Tensor};
use sdweb::kernels::{self, AttentionKernel};
use sdweb::models::nn::{fused_attention, merge_heads, split_heads};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let [batch, tokens, heads, dim] = args[..] else {
        panic!("usage: attention_timing BATCH TOKENS HEADS HEAD_DIM")
    };
    let device = burn::tensor::Device::wgpu_options()
        .init()
        .expect("a WebGPU adapter");
    let random = || {
        Tensor::<3>::random(
            [batch, tokens, heads * dim],
            Distribution::Normal(0.0, 1.0),
            &device,
        )
    };
    let (q, k, v) = (random(), random(), random());
    let kernel = AttentionKernel::for_adapter(kernels::on_cpu_adapter(&q));
    let ours = || {
        kernels::flash_attention_with(
            kernel,
            (&q).into(),
            (&k).into(),
            (&v).into(),
            heads,
            dim,
            false,
        )
        .expect("the kernel applies")
    };
    let split = |t: &Tensor<3>| split_heads(t.clone(), heads);
    let burn = || merge_heads(fused_attention(split(&q), split(&k), split(&v)));
    let diff: f32 = (ours() - burn()).abs().max().into_scalar();
    assert!(
        diff <= 1e-4,
        "{kernel:?} differs from burn's attention by {diff}"
    );
    println!("{kernel:?} vs burn: max difference {diff:.2e}");
    let time = |name: &str, f: &dyn Fn() -> Tensor<3>| {
        for run in 0..3 {
            let start = std::time::Instant::now();
            // The output's sum, read back: the time includes the kernel and one reduction.
            let total: f32 = f().sum().into_scalar();
            assert!(total.is_finite(), "{name}: non-finite output");
            println!(
                "{name} run {run}: {:.0} ms",
                start.elapsed().as_secs_f64() * 1e3
            );
        }
    };
    time(&format!("{kernel:?}"), &ours);
    time("burn fused", &burn);
}
