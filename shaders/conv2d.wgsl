// 2-D convolution (NCHW, groups 1, dilation 1) as a register-tiled implicit GEMM with f32
// accumulation:
//   out[n, oc, p] = bias[oc] + sum_k weight[oc, k] * patch[n, k, p]  (+ temb[n, oc]) (+ residual)
// k runs over (in channel, ky, kx), torch's weight row order; patch values are gathered from the
// input on the fly (zero outside the image: padding, also asymmetric). With `upsample` the input
// is read as if nearest-2× upsampled first (diffusers' Upsample2D), without materialising it.
// The weight is dense f32/f16 or q8_0/q4_0 blocks (`w_load`, as linear.wgsl).
// A 16×16 workgroup computes (16·TM) out channels × (16·TN) pixels, each lane TM×TN of them in
// 4×4 groups spaced 64 apart; the k loop is double-buffered as in linear.wgsl (≤ 16 KiB).
// The epilogue adds a per-(image, channel) term (the ResNet's time embedding) and/or a residual
// of the output's shape, so those are not extra passes over the activation.
// Bindings (declared by the launcher): input, weight (+ scales), bias (+ temb) (+ residual), out.
// Template parameters: enable_f16, elem, tm, tn, bk, kh, kw, stride, upsample, w_load, epilogue.
{{ enable_f16 }}
alias Elem = {{ elem }};

struct Info {
    batch: u32,
    in_ch: u32,
    in_h: u32,    // rows of the (virtual, when upsampling) input
    in_w: u32,
    out_ch: u32,
    out_h: u32,
    out_w: u32,
    pad_top: u32,
    pad_left: u32,
    k: u32,       // in_ch * KH * KW
    pixels: u32,  // batch * out_h * out_w
    _pad: u32,
}

{{ bindings }}

const TM: u32 = {{ tm }}u;
const TN: u32 = {{ tn }}u;
const BK: u32 = {{ bk }}u;
const KH: u32 = {{ kh }}u;
const KW: u32 = {{ kw }}u;
const STRIDE: u32 = {{ stride }}u;
const UPSAMPLE: bool = {{ upsample }};
const BM: u32 = 16u * TM; // out channels per tile
const BN: u32 = 16u * TN; // pixels per tile
const WV: u32 = BK * BM / 4u;
const PV: u32 = BK * BN / 4u;
const W_LOADS: u32 = (WV + 255u) / 256u;
// Patch values each lane gathers per tile (always the same pixel: 256 is a multiple of BN).
const P_LOADS: u32 = BK * BN / 256u;

var<workgroup> w_tile: array<vec4<f32>, 2u * WV>; // two buffers of [kk][oc]
var<workgroup> p_tile: array<vec4<f32>, 2u * PV>; // two buffers of [kk][pixel]

fn w_at(row: u32, k: u32) -> vec4<f32> {
    if (row >= info.out_ch) {
        return vec4<f32>(0.0);
    }
    {{ w_load }}
}

fn put_w(buf: u32, row: u32, kq: u32, v: vec4<f32>) {
    let base = buf * WV * 4u + kq * 4u * BM + row;
    for (var j = 0u; j < 4u; j++) {
        let slot = base + j * BM;
        w_tile[slot / 4u][slot % 4u] = v[j];
    }
}

// Patch value k of a pixel whose image starts at `image` and whose window's top-left corner is
// (y0, x0), signed: padding puts the first rows/columns before the image.
fn patch_at(k: u32, image: u32, y0: i32, x0: i32) -> f32 {
    if (k >= info.k) {
        return 0.0;
    }
    let ic = k / (KH * KW);
    let tap = k % (KH * KW);
    let iy = y0 + i32(tap / KW);
    let ix = x0 + i32(tap % KW);
    if (iy < 0 || ix < 0 || iy >= i32(info.in_h) || ix >= i32(info.in_w)) {
        return 0.0;
    }
    if (UPSAMPLE) {
        let h = info.in_h / 2u;
        let w = info.in_w / 2u;
        return f32(input[image + (ic * h + u32(iy) / 2u) * w + u32(ix) / 2u]);
    }
    return f32(input[image + (ic * info.in_h + u32(iy)) * info.in_w + u32(ix)]);
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let p0 = group.x * BN;
    let oc0 = group.y * BM;
    var acc: array<array<array<vec4<f32>, 4>, TN / 4u>, TM / 4u>;
    var w_next: array<vec4<f32>, W_LOADS>;
    var p_next: array<f32, P_LOADS>;

    // The pixel this lane gathers, decomposed once.
    let column = lane % BN;
    let first_kk = lane / BN;
    let pixel = p0 + column;
    let valid = pixel < info.pixels;
    let plane = info.out_h * info.out_w;
    var in_plane = info.in_h * info.in_w;
    if (UPSAMPLE) {
        in_plane = in_plane / 4u;
    }
    let image = (pixel / plane) * info.in_ch * in_plane;
    let oy = (pixel % plane) / info.out_w;
    let ox = (pixel % plane) % info.out_w;
    let y0 = i32(oy * STRIDE) - i32(info.pad_top);
    let x0 = i32(ox * STRIDE) - i32(info.pad_left);

    let tiles = (info.k + BK - 1u) / BK;
    for (var t = 0u; t < W_LOADS; t++) {
        let idx = lane + 256u * t;
        if (idx < WV) {
            put_w(0u, idx / (BK / 4u), idx % (BK / 4u), w_at(oc0 + idx / (BK / 4u), (idx % (BK / 4u)) * 4u));
        }
    }
    for (var t = 0u; t < P_LOADS; t++) {
        let kk = first_kk + t * (256u / BN);
        var value = 0.0;
        if (valid) {
            value = patch_at(kk, image, y0, x0);
        }
        let slot = kk * BN + column;
        p_tile[slot / 4u][slot % 4u] = value;
    }
    workgroupBarrier();

    for (var tile = 0u; tile < tiles; tile++) {
        let buf = tile % 2u;
        let more = tile + 1u < tiles;
        if (more) {
            let k0 = (tile + 1u) * BK;
            for (var t = 0u; t < W_LOADS; t++) {
                let idx = min(lane + 256u * t, WV - 1u);
                w_next[t] = w_at(oc0 + idx / (BK / 4u), k0 + (idx % (BK / 4u)) * 4u);
            }
            for (var t = 0u; t < P_LOADS; t++) {
                var value = 0.0;
                if (valid) {
                    value = patch_at(k0 + first_kk + t * (256u / BN), image, y0, x0);
                }
                p_next[t] = value;
            }
        }
        let wb = buf * WV;
        let pb = buf * PV;
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<vec4<f32>, TM / 4u>;
            var b: array<vec4<f32>, TN / 4u>;
            for (var r = 0u; r < TM / 4u; r++) {
                a[r] = w_tile[wb + kk * (BM / 4u) + local.y + 16u * r];
            }
            for (var c = 0u; c < TN / 4u; c++) {
                b[c] = p_tile[pb + kk * (BN / 4u) + local.x + 16u * c];
            }
            for (var r = 0u; r < TM / 4u; r++) {
                for (var c = 0u; c < TN / 4u; c++) {
                    acc[r][c][0] = fma(vec4<f32>(a[r].x), b[c], acc[r][c][0]);
                    acc[r][c][1] = fma(vec4<f32>(a[r].y), b[c], acc[r][c][1]);
                    acc[r][c][2] = fma(vec4<f32>(a[r].z), b[c], acc[r][c][2]);
                    acc[r][c][3] = fma(vec4<f32>(a[r].w), b[c], acc[r][c][3]);
                }
            }
        }
        if (more) {
            let next = 1u - buf;
            for (var t = 0u; t < W_LOADS; t++) {
                let idx = lane + 256u * t;
                if (idx < WV) {
                    put_w(next, idx / (BK / 4u), idx % (BK / 4u), w_next[t]);
                }
            }
            for (var t = 0u; t < P_LOADS; t++) {
                let slot = next * PV * 4u + (first_kk + t * (256u / BN)) * BN + column;
                p_tile[slot / 4u][slot % 4u] = p_next[t];
            }
        }
        workgroupBarrier();
    }

    for (var r = 0u; r < TM / 4u; r++) {
        for (var c = 0u; c < TN / 4u; c++) {
            let p = p0 + local.x * 4u + 64u * c;
            for (var i = 0u; i < 4u; i++) {
                store(oc0 + local.y * 4u + i + 64u * r, p, acc[r][c][i]);
            }
        }
    }
}

// Four consecutive pixels of channel oc (they may straddle two images): + bias and the
// epilogue's terms.
fn store(oc: u32, pixel: u32, values: vec4<f32>) {
    if (oc >= info.out_ch) {
        return;
    }
    let plane = info.out_h * info.out_w;
    for (var j = 0u; j < 4u; j++) {
        let p = pixel + j;
        if (p < info.pixels) {
            let image = p / plane;
            let at = (image * info.out_ch + oc) * plane + p % plane;
            out[at] = Elem(values[j] + f32(bias[oc]){{ epilogue }});
        }
    }
}
