// Linear layer with a q8_0 / q4_0 block-quantised weight, dequantised inside the GEMM:
//   out[m, n] = bias[n] + sum_k x[m, k] * weight[n, k]
// The weight is torch's [out, in] matrix in GGUF-style blocks of 32 values along `in`: signed
// integers of BITS bits packed into u32 words (lowest bits first, as burn's PackedU32 layout)
// and one f32 scale per block. Nothing dense of the weight is ever written to memory.
// Template parameters: elem (f32 | f16), enable_f16, bits (8 | 4).
{{ enable_f16 }}
alias Elem = {{ elem }};

struct Info {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<Elem>;
@group(0) @binding(1) var<storage, read_write> weight: array<u32>;
@group(0) @binding(2) var<storage, read_write> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> bias: array<Elem>;
@group(0) @binding(4) var<storage, read_write> out: array<Elem>;
@group(0) @binding(5) var<uniform> info: Info;

const BITS: u32 = {{ bits }}u;
const PER_WORD: u32 = 32u / BITS;
// A 16×16 workgroup computes a 64×64 output tile (4×4 per thread), stepping k by 16:
// two 16×64 f32 tiles = 8 KiB of workgroup memory (WebGPU's default limit is 16 KiB).
const TILE: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> x_tile: array<vec4<f32>, 256>; // [kk][m]
var<workgroup> w_tile: array<vec4<f32>, 256>; // [kk][n]

fn weight_at(row: u32, k: u32) -> f32 {
    let flat = row * info.k + k;
    let word = bitcast<i32>(weight[flat / PER_WORD]);
    let q = extractBits(word, (flat % PER_WORD) * BITS, BITS);
    return f32(q) * scales[flat / 32u];
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let n0 = group.x * TILE;
    let m0 = group.y * TILE;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < info.k; k0 += TK) {
        // Each of the 256 lanes loads 4 values of each tile; consecutive lanes read along k.
        for (var t = 0u; t < 4u; t++) {
            let idx = lane + 256u * t;
            let row = idx / TK;
            let kk = idx % TK;
            let k = k0 + kk;
            let m = m0 + row;
            var xv = 0.0;
            if (m < info.m && k < info.k) {
                xv = f32(x[m * info.k + k]);
            }
            let slot = kk * TILE + row; // tiles are [kk][row] in vec4s of 4 rows
            x_tile[slot / 4u][slot % 4u] = xv;
            let n = n0 + row;
            var wv = 0.0;
            if (n < info.n && k < info.k) {
                wv = weight_at(n, k);
            }
            w_tile[slot / 4u][slot % 4u] = wv;
        }
        workgroupBarrier();
        // Each lane owns 4 consecutive rows × 4 consecutive columns: four vec4 accumulators
        // and vec4 tile reads (CPU drivers such as lavapipe run lanes as SIMD: fewer, wider gathers).
        for (var kk = 0u; kk < TK; kk++) {
            let a = x_tile[kk * (TILE / 4u) + local.y];
            let b = w_tile[kk * (TILE / 4u) + local.x];
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }
    let m_first = m0 + local.y * 4u;
    store_row(m_first, n0 + local.x * 4u, acc0);
    store_row(m_first + 1u, n0 + local.x * 4u, acc1);
    store_row(m_first + 2u, n0 + local.x * 4u, acc2);
    store_row(m_first + 3u, n0 + local.x * 4u, acc3);
}

// Four consecutive outputs of row m, from column n, plus their bias.
fn store_row(m: u32, n: u32, values: vec4<f32>) {
    if (m >= info.m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (n + j < info.n) {
            out[m * info.n + n + j] = Elem(values[j] + f32(bias[n + j]));
        }
    }
}
