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

var<workgroup> w_tile: array<vec4<f32>, 256>; // [kk][oc]
var<workgroup> p_tile: array<vec4<f32>, 256>; // [kk][pixel]

fn weight_at(row: u32, k: u32) -> f32 {
    let flat = row * info.k + k;
    let word = bitcast<i32>(weight[flat / PER_WORD]);
    let q = extractBits(word, (flat % PER_WORD) * BITS, BITS);
    return f32(q) * scales[flat / 32u];
}

// Patch value k of the pixel whose image starts at `image` in `input` and whose window's top-left
// corner is (y0, x0): signed, as padding puts the first rows/columns before the image.
fn patch_at(k: u32, image: u32, y0: i32, x0: i32) -> f32 {
    let taps = info.kernel_h * info.kernel_w;
    let ic = k / taps;
    let tap = k % taps;
    let iy = y0 + i32(tap / info.kernel_w);
    let ix = x0 + i32(tap % info.kernel_w);
    if (iy < 0 || ix < 0 || iy >= i32(info.in_h) || ix >= i32(info.in_w)) {
        return 0.0;
    }
    return f32(input[image + (ic * info.in_h + u32(iy)) * info.in_w + u32(ix)]);
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let p0 = group.x * TILE;
    let oc0 = group.y * TILE;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // A lane always gathers the same pixel (column lane % TILE of the tile): decompose it once.
    let pixel = p0 + lane % TILE;
    let plane = info.out_h * info.out_w;
    let image = (pixel / plane) * info.in_ch * info.in_h * info.in_w;
    let oy = (pixel % plane) / info.out_w;
    let ox = (pixel % plane) % info.out_w;
    let y0 = i32(oy * info.stride_h) - i32(info.pad_top);
    let x0 = i32(ox * info.stride_w) - i32(info.pad_left);
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
            let w_slot = (idx % TK) * TILE + row; // tiles are [kk][row] in vec4s of 4 rows
            w_tile[w_slot / 4u][w_slot % 4u] = wv;
            // Patches: consecutive lanes read consecutive pixels (along x in the input).
            let kk = idx / TILE;
            var pv = 0.0;
            if (pixel < info.pixels && k0 + kk < info.k) {
                pv = patch_at(k0 + kk, image, y0, x0);
            }
            let p_slot = kk * TILE + lane % TILE;
            p_tile[p_slot / 4u][p_slot % 4u] = pv;
        }
        workgroupBarrier();
        // Each lane owns 4 consecutive rows × 4 consecutive columns: four vec4 accumulators
        // and vec4 tile reads (CPU drivers such as lavapipe run lanes as SIMD: fewer, wider gathers).
        for (var kk = 0u; kk < TK; kk++) {
            let a = w_tile[kk * (TILE / 4u) + local.y];
            let b = p_tile[kk * (TILE / 4u) + local.x];
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }
    let oc_first = oc0 + local.y * 4u;
    store_channel(oc_first, p0 + local.x * 4u, acc0);
    store_channel(oc_first + 1u, p0 + local.x * 4u, acc1);
    store_channel(oc_first + 2u, p0 + local.x * 4u, acc2);
    store_channel(oc_first + 3u, p0 + local.x * 4u, acc3);
}

// Four consecutive pixels of channel oc (they may straddle two images), plus the bias.
fn store_channel(oc: u32, pixel: u32, values: vec4<f32>) {
    if (oc >= info.out_ch) {
        return;
    }
    let plane = info.out_h * info.out_w;
    for (var j = 0u; j < 4u; j++) {
        let p = pixel + j;
        if (p < info.pixels) {
            out[((p / plane) * info.out_ch + oc) * plane + p % plane] = Elem(values[j] + f32(bias[oc]));
        }
    }
}
