// 2-D convolution (NCHW, groups 1, dilation 1) with a q8_0 / q4_0 block-quantised weight, as an
// implicit GEMM: out[oc, pixel] = bias[oc] + sum_k weight[oc, k] * patch[k, pixel], where
// k runs over (in channel, ky, kx) — torch's weight row order, along which the 32-value blocks
// run — and the patch values are gathered from the input on the fly (zero outside the image:
// padding, also asymmetric). Neither the im2col matrix nor a dense weight is ever materialised.
// Template parameters: elem (f32 | f16), enable_f16, bits (8 | 4).
{{ enable_f16 }}
alias Elem = {{ elem }};

struct Info {
    batch: u32,
    in_ch: u32,
    in_h: u32,
    in_w: u32,
    out_ch: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_top: u32,
    pad_left: u32,
    k: u32,       // in_ch * kernel_h * kernel_w
    pixels: u32,  // batch * out_h * out_w
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> input: array<Elem>;
@group(0) @binding(1) var<storage, read_write> weight: array<u32>;
@group(0) @binding(2) var<storage, read_write> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> bias: array<Elem>;
@group(0) @binding(4) var<storage, read_write> out: array<Elem>;
@group(0) @binding(5) var<uniform> info: Info;

const BITS: u32 = {{ bits }}u;
const PER_WORD: u32 = 32u / BITS;
// 16×16 lanes, 64 out channels × 64 pixels per workgroup, k step 16: 8 KiB of workgroup memory.
const TILE: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> w_tile: array<f32, 1024>; // [kk][oc]
var<workgroup> p_tile: array<f32, 1024>; // [kk][pixel]

fn weight_at(row: u32, k: u32) -> f32 {
    let flat = row * info.k + k;
    let word = bitcast<i32>(weight[flat / PER_WORD]);
    let q = extractBits(word, (flat % PER_WORD) * BITS, BITS);
    return f32(q) * scales[flat / 32u];
}

fn patch_at(k: u32, pixel: u32) -> f32 {
    let plane = info.out_h * info.out_w;
    let b = pixel / plane;
    let rem = pixel % plane;
    let oy = rem / info.out_w;
    let ox = rem % info.out_w;
    let taps = info.kernel_h * info.kernel_w;
    let ic = k / taps;
    let tap = k % taps;
    // Signed: padding makes the first rows/columns read before the image.
    let iy = i32(oy * info.stride_h + tap / info.kernel_w) - i32(info.pad_top);
    let ix = i32(ox * info.stride_w + tap % info.kernel_w) - i32(info.pad_left);
    if (iy < 0 || ix < 0 || iy >= i32(info.in_h) || ix >= i32(info.in_w)) {
        return 0.0;
    }
    return f32(input[((b * info.in_ch + ic) * info.in_h + u32(iy)) * info.in_w + u32(ix)]);
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let p0 = group.x * TILE;
    let oc0 = group.y * TILE;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < info.k; k0 += TK) {
        for (var t = 0u; t < 4u; t++) {
            let idx = lane + 256u * t;
            // Weights: consecutive lanes read along k (one row's words).
            let row = idx / TK;
            let kw = k0 + idx % TK;
            var wv = 0.0;
            if (oc0 + row < info.out_ch && kw < info.k) {
                wv = weight_at(oc0 + row, kw);
            }
            w_tile[(idx % TK) * TILE + row] = wv;
            // Patches: consecutive lanes read consecutive pixels (along x in the input).
            let col = idx % TILE;
            let kk = idx / TILE;
            var pv = 0.0;
            if (p0 + col < info.pixels && k0 + kk < info.k) {
                pv = patch_at(k0 + kk, p0 + col);
            }
            p_tile[kk * TILE + col] = pv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = w_tile[kk * TILE + local.y + 16u * i];
                b[i] = p_tile[kk * TILE + local.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    let plane = info.out_h * info.out_w;
    for (var i = 0u; i < 4u; i++) {
        let oc = oc0 + local.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let pixel = p0 + local.x + 16u * j;
            if (oc < info.out_ch && pixel < info.pixels) {
                let b = pixel / plane;
                out[(b * info.out_ch + oc) * plane + pixel % plane] = Elem(acc[i * 4u + j] + f32(bias[oc]));
            }
        }
    }
}
