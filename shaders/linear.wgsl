// Linear layer as a register-tiled GEMM with f32 accumulation:
//   out[m, n] = bias[n] + sum_k x[m, k] * weight[n, k]  (+ residual[m, n])
// x is [M, K] and the weight torch's [N, K]: both run along k, so both tiles load the same way.
// The weight is dense f32/f16 or q8_0/q4_0 blocks dequantised as they load (`w_load`, see
// crate/src/kernels/weight.rs): no dense copy of a quantised weight is ever written.
// A 16×16 workgroup computes a (16·TM)×(16·TN) output tile; each lane owns TM×TN outputs in
// groups of 4×4 spaced 64 apart (vec4 reads of the workgroup tiles, no bank-conflicting strides).
// The k loop is double-buffered: the next tile is read from memory into registers while the
// current one is multiplied, so each step needs one barrier. TM·TN·BK is chosen so that the two
// buffered tile pairs take 16 KiB at most (WebGPU's default workgroup storage).
// Bindings (declared by the launcher): x, weight (+ scales), bias (+ residual), out.
// Template parameters: enable_f16, elem, tm, tn, bk, x_load / w_load (4 values along k: a vec4
// load, four scalar ones when K % 4 != 0, or dequantised blocks), residual_add.
{{ enable_f16 }}
alias Elem = {{ elem }};

struct Info {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

{{ bindings }}

const TM: u32 = {{ tm }}u;
const TN: u32 = {{ tn }}u;
const BK: u32 = {{ bk }}u;
const BM: u32 = 16u * TM;
const BN: u32 = 16u * TN;
// vec4s of one [BK][BM] (or [BK][BN]) tile.
const XV: u32 = BK * BM / 4u;
const WV: u32 = BK * BN / 4u;
// 4-value groups of k each lane loads per tile.
const X_LOADS: u32 = (XV + 255u) / 256u;
const W_LOADS: u32 = (WV + 255u) / 256u;

var<workgroup> x_tile: array<vec4<f32>, 2u * XV>; // two buffers of [kk][m]
var<workgroup> w_tile: array<vec4<f32>, 2u * WV>; // two buffers of [kk][n]

// x[row, k..k+4] (zeros past the matrix): one vec4 load, or four scalar ones when K % 4 != 0.
fn x_at(row: u32, k: u32) -> vec4<f32> {
    if (row >= info.m) {
        return vec4<f32>(0.0);
    }
    {{ x_load }}
}

fn w_at(row: u32, k: u32) -> vec4<f32> {
    if (row >= info.n) {
        return vec4<f32>(0.0);
    }
    {{ w_load }}
}

// Writes 4 consecutive k values of one row into buffer `buf` of a [kk][row] tile.
fn put_x(buf: u32, row: u32, kq: u32, v: vec4<f32>) {
    let base = buf * XV * 4u + kq * 4u * BM + row;
    for (var j = 0u; j < 4u; j++) {
        let slot = base + j * BM;
        x_tile[slot / 4u][slot % 4u] = v[j];
    }
}

fn put_w(buf: u32, row: u32, kq: u32, v: vec4<f32>) {
    let base = buf * WV * 4u + kq * 4u * BN + row;
    for (var j = 0u; j < 4u; j++) {
        let slot = base + j * BN;
        w_tile[slot / 4u][slot % 4u] = v[j];
    }
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let n0 = group.x * BN;
    let m0 = group.y * BM;
    // acc[r][c][i] is row ty·4 + i + 64·r, columns tx·4 + 64·c .. + 4 of the tile.
    var acc: array<array<array<vec4<f32>, 4>, TN / 4u>, TM / 4u>;
    var x_next: array<vec4<f32>, X_LOADS>;
    var w_next: array<vec4<f32>, W_LOADS>;

    let tiles = (info.k + BK - 1u) / BK;
    // Tile 0 straight into buffer 0.
    for (var t = 0u; t < X_LOADS; t++) {
        let idx = lane + 256u * t;
        if (idx < XV) {
            put_x(0u, idx / (BK / 4u), idx % (BK / 4u), x_at(m0 + idx / (BK / 4u), (idx % (BK / 4u)) * 4u));
        }
    }
    for (var t = 0u; t < W_LOADS; t++) {
        let idx = lane + 256u * t;
        if (idx < WV) {
            put_w(0u, idx / (BK / 4u), idx % (BK / 4u), w_at(n0 + idx / (BK / 4u), (idx % (BK / 4u)) * 4u));
        }
    }
    workgroupBarrier();

    for (var tile = 0u; tile < tiles; tile++) {
        let buf = tile % 2u;
        let more = tile + 1u < tiles;
        if (more) {
            let k0 = (tile + 1u) * BK;
            for (var t = 0u; t < X_LOADS; t++) {
                let idx = min(lane + 256u * t, XV - 1u);
                x_next[t] = x_at(m0 + idx / (BK / 4u), k0 + (idx % (BK / 4u)) * 4u);
            }
            for (var t = 0u; t < W_LOADS; t++) {
                let idx = min(lane + 256u * t, WV - 1u);
                w_next[t] = w_at(n0 + idx / (BK / 4u), k0 + (idx % (BK / 4u)) * 4u);
            }
        }
        let xb = buf * XV;
        let wb = buf * WV;
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<vec4<f32>, TM / 4u>;
            var b: array<vec4<f32>, TN / 4u>;
            for (var r = 0u; r < TM / 4u; r++) {
                a[r] = x_tile[xb + kk * (BM / 4u) + local.y + 16u * r];
            }
            for (var c = 0u; c < TN / 4u; c++) {
                b[c] = w_tile[wb + kk * (BN / 4u) + local.x + 16u * c];
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
            for (var t = 0u; t < X_LOADS; t++) {
                let idx = lane + 256u * t;
                if (idx < XV) {
                    put_x(next, idx / (BK / 4u), idx % (BK / 4u), x_next[t]);
                }
            }
            for (var t = 0u; t < W_LOADS; t++) {
                let idx = lane + 256u * t;
                if (idx < WV) {
                    put_w(next, idx / (BK / 4u), idx % (BK / 4u), w_next[t]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var r = 0u; r < TM / 4u; r++) {
        for (var c = 0u; c < TN / 4u; c++) {
            let n = n0 + local.x * 4u + 64u * c;
            for (var i = 0u; i < 4u; i++) {
                store(m0 + local.y * 4u + i + 64u * r, n, acc[r][c][i]);
            }
        }
    }
}

// Four consecutive outputs of row m from column n: + bias (+ residual).
fn store(m: u32, n: u32, values: vec4<f32>) {
    if (m >= info.m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (n + j < info.n) {
            let at = m * info.n + n + j;
            out[at] = Elem(values[j] + f32(bias[n + j]){{ residual_add }});
        }
    }
}
