//! sdweb's WGSL kernels against burn's ops (their oracle) at SD's real shapes, in f32 and f16.
//! Errors are relative to the oracle's scale (`common::assert_close`, which fails on any
//! non-finite value). f16 kernels read f16 inputs and accumulate in f32; their oracle is burn's
//! op in f32 on the same (f16-representable) inputs, so the bound is the f16 rounding of the
//! result.

mod common;

use burn::tensor::activation::{gelu, silu};
use burn::tensor::module::{attention, conv2d, layer_norm};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use burn::tensor::{DType, Distribution, Tensor};
use common::*;
use sdweb::kernels::{self, AttentionKernel, ConvEpilogue, GemmWeight, Heads, Tiles};
use sdweb::models::nn::{merge_heads, split_heads, upsample_nearest_2x};

const F32_TOL: f32 = 1e-4;
const F16_TOL: f32 = 4e-3;

fn random<const D: usize>(shape: [usize; D], std: f64) -> Tensor<D> {
    Tensor::<D>::random(shape, Distribution::Normal(0.0, std), &device())
}

/// Rounds to f16 and back: inputs both sides can hold exactly.
fn f16_exact<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    t.cast(DType::F16).cast(DType::F32)
}

fn check<const D: usize>(what: &str, ours: Tensor<D>, oracle: Tensor<D>, tol: f32) {
    assert_eq!(ours.dims(), oracle.dims(), "{what}: shape");
    assert_close(what, &to_vec(ours), &to_vec(oracle), tol);
}

fn burn_linear(x: &Tensor<2>, w: &Tensor<2>, b: &Tensor<1>) -> Tensor<2> {
    burn::tensor::module::linear(x.clone(), w.clone().transpose(), Some(b.clone()))
}

/// Both GEMM tiles (GPUs take the large one for big outputs, CPU adapters always the small).
const TILES: [Tiles; 2] = [Tiles::Small, Tiles::Large];

#[test]
fn linear_matches_burn_for_gemm_gemv_and_unaligned_k() {
    // (M, N, K): a UNet projection (1024 of its 8192 rows at 64×64 latents with CFG: tiles
    // repeat along M, and burn's autotuned oracle costs a minute at full size), CLIP's 2×77
    // rows, the time embedding's 2 rows (GEMV), a fixture's K = 37 (scalar loads), a ragged
    // everything.
    for (m, n, k) in [
        (1024, 320, 320),
        (154, 768, 768),
        (2, 1280, 320),
        (77, 32, 37),
        (70, 45, 19),
    ] {
        let (x, w, b) = (random([m, k], 1.0), random([n, k], 0.05), random([n], 0.5));
        let residual = random([m, n], 1.0);
        let oracle = burn_linear(&x, &w, &b) + residual.clone();
        for tiles in TILES {
            let ours =
                kernels::linear_with(Some(tiles), &x, GemmWeight::Dense(&w), &b, Some(&residual))
                    .expect("kernel applies");
            check(
                &format!("linear {m}x{n}x{k} {tiles:?} f32"),
                ours,
                oracle.clone(),
                F32_TOL,
            );
        }
    }
}

#[test]
fn linear_f16_activations_and_weights() {
    for (m, n, k) in [(1024, 640, 640), (2, 1280, 1280), (154, 1024, 4096)] {
        let x = f16_exact(random([m, k], 1.0));
        let w = f16_exact(random([n, k], 0.03));
        let b = f16_exact(random([n], 0.5));
        let oracle = burn_linear(&x, &w, &b);
        let (xh, wh) = (x.clone().cast(DType::F16), w.clone().cast(DType::F16));
        for tiles in TILES {
            let half = kernels::linear_with(Some(tiles), &xh, GemmWeight::Dense(&wh), &b, None)
                .expect("kernel applies");
            assert_eq!(half.dtype(), DType::F16);
            check(
                &format!("linear {m}x{n}x{k} {tiles:?} f16"),
                half.cast(DType::F32),
                oracle.clone(),
                F16_TOL,
            );
        }
        // f32 activations with an f16 weight (a VAE in f32 next to f16 weights) stay f32.
        let mixed = kernels::linear(&x, GemmWeight::Dense(&wh), &b, None).unwrap();
        assert_eq!(mixed.dtype(), DType::F32);
        check(
            &format!("linear {m}x{n}x{k} f16 weight"),
            mixed,
            oracle,
            F32_TOL,
        );
    }
}

/// sdweb's conv with a dense `[out, in, kh, kw]` weight.
fn conv(
    tiles: Tiles,
    x: &Tensor<4>,
    w: &Tensor<4>,
    b: &Tensor<1>,
    options: &ConvOptions<2>,
    epilogue: ConvEpilogue,
) -> Tensor<4> {
    let [o, i, kh, kw] = w.dims();
    let flat = w.clone().reshape([o, i * kh * kw]);
    kernels::conv2d_with(
        Some(tiles),
        x,
        GemmWeight::Dense(&flat),
        [kh, kw],
        b,
        options,
        epilogue,
    )
    .expect("kernel applies")
}

fn options(stride: usize, padding: [(usize, usize); 2]) -> ConvOptions<2> {
    ConvOptions::new_with_padding([stride, stride], padding, [1, 1], 1)
}

#[test]
fn conv2d_matches_burn_at_sd_shapes() {
    // (batch, in, out, size, kernel, stride, padding): SD 1.5's 2560→1280 3×3 of up_blocks.0
    // (8×8 at 512²), a 1×1 shortcut, the VAE's stride-2 downsample with its (0, 1) padding,
    // the VAE's 3-channel conv_in (K = 27: scalar weight loads).
    let cases = [
        (1, 2560, 1280, 8, 3, 1, [(1, 1), (1, 1)]),
        (2, 640, 320, 16, 1, 1, [(0, 0), (0, 0)]),
        (1, 32, 32, 16, 3, 2, [(0, 1), (0, 1)]),
        (1, 3, 16, 20, 3, 1, [(1, 1), (1, 1)]),
    ];
    for (batch, cin, cout, size, kernel, stride, padding) in cases {
        let x = random([batch, cin, size, size], 1.0);
        let w = random([cout, cin, kernel, kernel], 0.02);
        let b = random([cout], 0.5);
        let options = options(stride, padding);
        let oracle = conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone());
        let plain = ConvEpilogue::default();
        for tiles in TILES {
            let ours = conv(tiles, &x, &w, &b, &options, plain);
            let what =
                format!("conv {cin}->{cout} k{kernel} s{stride} {size}x{size} {tiles:?} f32");
            check(&what, ours, oracle.clone(), F32_TOL);
        }
        if cin == 2560 {
            let (xh, wh) = (f16_exact(x), f16_exact(w));
            let oracle = conv2d(xh.clone(), wh.clone(), Some(b.clone()), options.clone());
            let (xh, wh) = (xh.cast(DType::F16), wh.cast(DType::F16));
            for tiles in TILES {
                let half = conv(tiles, &xh, &wh, &b, &options, plain);
                assert_eq!(half.dtype(), DType::F16);
                let what = format!("conv {cin}->{cout} 3x3 {tiles:?} f16");
                check(&what, half.cast(DType::F32), oracle.clone(), F16_TOL);
            }
        }
    }
}

/// The ResNet/Upsample2D epilogues against the burn ops they replace.
#[test]
fn conv2d_epilogues_match_burn() {
    let (batch, cin, cout, size) = (2, 32, 48, 12);
    let x = random([batch, cin, size, size], 1.0);
    let w = random([cout, cin, 3, 3], 0.05);
    let b = random([cout], 0.5);
    let temb = random([batch, cout], 1.0);
    let options = options(1, [(1, 1), (1, 1)]);
    let up = ConvEpilogue {
        upsample: true,
        ..Default::default()
    };
    let oracle = conv2d(
        upsample_nearest_2x(x.clone()),
        w.clone(),
        Some(b.clone()),
        options.clone(),
    );
    for tiles in TILES {
        let ours = conv(tiles, &x, &w, &b, &options, up);
        check(
            &format!("conv upsample 2x {tiles:?}"),
            ours,
            oracle.clone(),
            F32_TOL,
        );
    }

    let residual = random([batch, cout, size, size], 1.0);
    let both = ConvEpilogue {
        channel_bias: Some(&temb),
        residual: Some(&residual),
        upsample: false,
    };
    let oracle = conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone())
        + temb.clone().reshape([batch, cout, 1, 1])
        + residual.clone();
    for tiles in TILES {
        let ours = conv(tiles, &x, &w, &b, &options, both);
        check(
            &format!("conv + temb + residual {tiles:?}"),
            ours,
            oracle.clone(),
            F32_TOL,
        );
    }
}

fn burn_attention(
    q: &Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
    heads: usize,
    causal: bool,
) -> Tensor<3> {
    let options = AttentionModuleOptions {
        is_causal: causal,
        ..Default::default()
    };
    let split = |t: &Tensor<3>| split_heads(t.clone(), heads);
    merge_heads(attention(split(q), split(k), split(v), None, None, options))
}

/// Both flash-attention kernels (the tiled one GPUs run, the per-row one of CPU adapters), the
/// adapter's choice first.
fn attention_kernels() -> [AttentionKernel; 2] {
    let cpu = kernels::on_cpu_adapter(&random([1], 1.0));
    let first = AttentionKernel::for_adapter(cpu);
    let other = if first == AttentionKernel::Rows {
        AttentionKernel::Tiled
    } else {
        AttentionKernel::Rows
    };
    [first, other]
}

fn flash(
    kernel: AttentionKernel,
    q: Heads,
    k: Heads,
    v: Heads,
    heads: usize,
    dim: usize,
    causal: bool,
) -> Tensor<3> {
    kernels::flash_attention_with(kernel, q, k, v, heads, dim, causal).expect("kernel applies")
}

/// Non-causal attention of random `[batch, sq | sk, heads · dim]` q, k, v against burn's.
fn check_attention(
    kernel: AttentionKernel,
    batch: usize,
    sq: usize,
    sk: usize,
    heads: usize,
    dim: usize,
) {
    let q = random([batch, sq, heads * dim], 1.0);
    let (k, v) = (
        random([batch, sk, heads * dim], 1.0),
        random([batch, sk, heads * dim], 1.0),
    );
    let ours = flash(
        kernel,
        (&q).into(),
        (&k).into(),
        (&v).into(),
        heads,
        dim,
        false,
    );
    let oracle = burn_attention(&q, &k, &v, heads, false);
    let what = format!("{kernel:?} flash attention {heads}x{dim} {sq}x{sk} f32");
    check(&what, ours, oracle, F32_TOL);
}

/// 4096-token self-attention for every head dim of SD 1.x/2.x and the VAE (a slice of the
/// queries against all 4096 keys: each query row is computed alone, and the keys are split
/// into ranges on CPU adapters), then cross-attention over 77 context tokens.
#[test]
fn flash_attention_matches_burn_for_every_sd_head_dim() {
    for kernel in attention_kernels() {
        for (heads, dim) in [(2, 40), (1, 64), (1, 80), (1, 160), (1, 512)] {
            if kernel == AttentionKernel::Rows && dim > kernels::ROWS_MAX_HEAD_DIM {
                // Wider heads run burn's fused attention on CPU adapters.
                let q = random([1, 4, dim], 1.0);
                let declined = kernels::flash_attention_with(
                    kernel,
                    (&q).into(),
                    (&q).into(),
                    (&q).into(),
                    1,
                    dim,
                    false,
                );
                assert!(
                    declined.is_none(),
                    "the rows kernel takes heads up to {}",
                    kernels::ROWS_MAX_HEAD_DIM
                );
                continue;
            }
            check_attention(kernel, 1, 128, 4096, heads, dim);
        }
        check_attention(kernel, 2, 512, 77, 8, 40);
    }
}

#[test]
fn flash_attention_f16_causal_and_fused_qkv_layouts() {
    for kernel in attention_kernels() {
        let (heads, dim) = (5, 64);
        let q = f16_exact(random([2, 256, heads * dim], 1.0));
        let (k, v) = (
            f16_exact(random([2, 2048, heads * dim], 1.0)),
            f16_exact(random([2, 2048, heads * dim], 1.0)),
        );
        let oracle = burn_attention(&q, &k, &v, heads, false);
        let half = |t: &Tensor<3>| t.clone().cast(DType::F16);
        let (qh, kh, vh) = (half(&q), half(&k), half(&v));
        let ours = flash(
            kernel,
            (&qh).into(),
            (&kh).into(),
            (&vh).into(),
            heads,
            dim,
            false,
        );
        assert_eq!(ours.dtype(), DType::F16);
        check(
            &format!("{kernel:?} flash attention d64 f16"),
            ours.cast(DType::F32),
            oracle,
            F16_TOL,
        );

        // CLIP: causal over 77 tokens, 12 heads of 64, q/k/v as column ranges of one [.., 3·768].
        let (heads, dim) = (12, 64);
        let qkv = random([2, 77, 3 * heads * dim], 1.0);
        let part = |i: usize| Heads {
            tokens: &qkv,
            column: i * heads * dim,
        };
        let ours = flash(kernel, part(0), part(1), part(2), heads, dim, true);
        let cols = |i: usize| qkv.clone().narrow(2, i * heads * dim, heads * dim);
        let oracle = burn_attention(&cols(0), &cols(1), &cols(2), heads, true);
        check(
            &format!("{kernel:?} flash attention causal 77 tokens, fused qkv"),
            ours,
            oracle,
            F32_TOL,
        );
    }
}

fn burn_group_norm(
    x: &Tensor<4>,
    groups: usize,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    eps: f64,
) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let g = x.clone().reshape([n, groups, (c / groups) * h * w]);
    let mean = g.clone().mean_dim(2);
    let centered = g - mean;
    let var = centered.clone().square().mean_dim(2);
    let normed = (centered / (var + eps).sqrt()).reshape([n, c, h, w]);
    normed * gamma.clone().reshape([1, c, 1, 1]) + beta.clone().reshape([1, c, 1, 1])
}

/// SD's 320-channel GroupNorm at 64×64 (32 groups, batch 2), with and without the fused SiLU,
/// in f32 and f16; and split into bands of rows (statistics over all of them).
#[test]
fn group_norm_matches_burn_whole_and_in_bands() {
    let x = random([2, 320, 64, 64], 2.0) + 0.5;
    let (gamma, beta) = (random([320], 1.0), random([320], 1.0));
    let oracle = burn_group_norm(&x, 32, &gamma, &beta, 1e-5);
    let norm = |bands: &[Tensor<4>], silu_too: bool| {
        kernels::group_norm(bands, 32, &gamma, &beta, 1e-5, silu_too).expect("kernel applies")
    };
    check(
        "group norm 320ch 64x64",
        norm(&[x.clone()], false).remove(0),
        oracle.clone(),
        F32_TOL,
    );
    check(
        "group norm + silu",
        norm(&[x.clone()], true).remove(0),
        silu(oracle.clone()),
        F32_TOL,
    );
    let bands = vec![
        x.clone().narrow(2, 0, 20),
        x.clone().narrow(2, 20, 30),
        x.clone().narrow(2, 50, 14),
    ];
    let banded = Tensor::cat(norm(&bands, false), 2);
    check("group norm in 3 bands", banded, oracle, F32_TOL);

    let xh = f16_exact(x);
    let oracle = silu(burn_group_norm(&xh, 32, &gamma, &beta, 1e-5));
    let half = norm(&[xh.cast(DType::F16)], true).remove(0);
    assert_eq!(half.dtype(), DType::F16);
    check(
        "group norm + silu f16",
        half.cast(DType::F32),
        oracle,
        F16_TOL,
    );
}

#[test]
fn layer_norm_and_geglu_match_burn() {
    for (rows, dim) in [(8192, 320), (154, 1280), (7, 37)] {
        let x = random([2, rows / 2, dim], 1.5) + 0.3;
        let (gamma, beta) = (random([dim], 1.0), random([dim], 1.0));
        let ours = kernels::layer_norm(&x, &gamma, &beta, 1e-5).expect("kernel applies");
        let oracle = layer_norm(x.clone(), gamma.clone(), Some(beta.clone()), 1e-5);
        check(&format!("layer norm {rows}x{dim}"), ours, oracle, F32_TOL);
        let xh = f16_exact(x);
        let oracle = layer_norm(xh.clone(), gamma.clone(), Some(beta.clone()), 1e-5);
        let half = kernels::layer_norm(&xh.cast(DType::F16), &gamma, &beta, 1e-5).unwrap();
        check(
            &format!("layer norm {rows}x{dim} f16"),
            half.cast(DType::F32),
            oracle,
            F16_TOL,
        );
    }
    let h = random([2, 1024, 2 * 1280], 2.0);
    let ours = kernels::geglu(&h).expect("kernel applies");
    let oracle = h.clone().narrow(2, 0, 1280) * gelu(h.narrow(2, 1280, 1280));
    check("geglu 2x1024x1280", ours, oracle, F32_TOL);
}

/// The feed-forward over chunks of token rows (how large images stay under the binding limit)
/// equals one call, chunk boundaries inside and across the images of a batch.
#[test]
fn feed_forward_in_row_chunks_equals_one_call() {
    use sdweb::models::attention::FeedForward;
    use sdweb::weights::TensorStore;
    let dim = 32;
    let mut store = TensorStore::new(&device(), DType::F32, "random feed-forward");
    for (name, shape) in [
        ("net.0.proj.weight", vec![8 * dim, dim]),
        ("net.0.proj.bias", vec![8 * dim]),
        ("net.2.weight", vec![dim, 4 * dim]),
        ("net.2.bias", vec![dim]),
    ] {
        let n = shape.iter().product();
        store.insert_f32(name, &shape, to_vec(random([n], 0.2)));
    }
    let ff = FeedForward::load(&store.root(), dim).expect("weights as inserted");
    let (x, residual) = (random([2, 45, dim], 1.0), random([2, 45, dim], 1.0));
    let whole = ff.forward_add_in_chunks(x.clone(), residual.clone(), usize::MAX);
    for chunk_rows in [7, 45, 60] {
        let chunked = ff.forward_add_in_chunks(x.clone(), residual.clone(), chunk_rows);
        check(
            &format!("feed-forward in {chunk_rows}-row chunks"),
            chunked,
            whole.clone(),
            1e-6,
        );
    }
}
