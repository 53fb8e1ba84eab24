// Scaled dot-product attention with an online softmax (flash attention): for each query row,
//   out = softmax(q · kᵀ · scale [causal mask]) · v
// computed one block of 32 keys at a time, so the score matrix never reaches memory. f32
// statistics and accumulation whatever the input type.
// Layout: token rows of [B, S, H·D] (as the q/k/v projections write them, each read at its own
// offset and row stride, so a fused qkv projection needs no copy); out is [B, Sq, H·D].
// A 16×16 workgroup owns BQ = 16·RPT query rows of one (batch, head) and one range of keys;
// lane (tx, ty) computes the scores of rows ty·RPT.. for keys 2·tx, 2·tx+1 of a block, and
// accumulates those rows' output for head dims v0 + 4·tx + 64·g + (0..4). Workgroup memory
// (≤ 15 KiB): q/k chunks of DC dims (reused for KS rows of v), the block's scores, and each
// row's running max, sum and rescale factor.
// With `split`, the keys are split into ranges (grid z = batch · splits) and each workgroup
// writes its unnormalised output and (max, sum) as f32 partials, which
// flash_attention_combine.wgsl merges. lavapipe needs this for long sequences: llvmpipe stops
// every loop of an invocation once 65535 loop iterations have run in it (Mesa's loop limiter),
// and a 4096-key row with a wide head exceeds that.
// Template parameters: enable_f16, elem, d (head dim), dv (output dims per workgroup), rpt
// (rows per lane), dc (dims per q·k step), store / store_stats (whole or split).
// Bindings (declared by the launcher): q, k, v, then out (whole) or partial, stats (split).
{{ enable_f16 }}
alias Elem = {{ elem }};

struct Info {
    batch: u32,
    heads: u32,
    sq: u32,        // query rows per batch item
    sk: u32,
    q_offset: u32,
    q_stride: u32,
    k_offset: u32,
    k_stride: u32,
    v_offset: u32,
    v_stride: u32,
    scale_bits: u32,
    causal: u32,
    q_begin: u32,   // first query row of this launch
    q_count: u32,   // query rows of this launch
    split_keys: u32, // keys per split (a multiple of 32)
    splits: u32,
}

{{ bindings }}

const D: u32 = {{ d }}u;
// Output dims per workgroup: a head wider than this (the VAE's 512) is split across VSPLIT
// workgroups, each computing all of q·kᵀ but only its DV dims of p·v, so that a lane's
// accumulator stays within 12 vec4.
const DV: u32 = {{ dv }}u;
const VSPLIT: u32 = (D + DV - 1u) / DV;
const RPT: u32 = {{ rpt }}u;
const DC: u32 = {{ dc }}u;
const BQ: u32 = 16u * RPT;
const BKEYS: u32 = 32u;
// Groups of 4 output dims per lane: v0 + 4·tx + 64·g + (0..4).
const G: u32 = (DV + 63u) / 64u;
// A masked score: exp(MASKED - max) is 0 for any real max; a row with nothing but masked
// scores so far keeps MASKED as its max and contributes nothing.
const MASKED: f32 = -1e30;

// Region A: [DC][BQ] q chunk then [DC][BKEYS] k chunk; in the p·v phase KS rows of v.
const A_SIZE: u32 = 1536u;
const KS: u32 = min(BKEYS, A_SIZE / DV);
var<workgroup> a_mem: array<f32, A_SIZE>;
var<workgroup> scores: array<f32, BQ * BKEYS>; // [row][key]
var<workgroup> row_max: array<f32, BQ>;
var<workgroup> row_sum: array<f32, BQ>;
var<workgroup> row_alpha: array<f32, BQ>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let q0 = info.q_begin + group.x * BQ; // first query row of this workgroup
    let q_end = info.q_begin + info.q_count;
    let head = group.y / VSPLIT;
    let v0 = (group.y % VSPLIT) * DV;
    let b = group.z / info.splits;
    let split = group.z % info.splits;
    let scale = bitcast<f32>(info.scale_bits);
    let q_base = info.q_offset + b * info.sq * info.q_stride + head * D;
    let k_base = info.k_offset + b * info.sk * info.k_stride + head * D;
    let v_base = info.v_offset + b * info.sk * info.v_stride + head * D;
    let tx = local.x;
    let ty = local.y;

    if (lane < BQ) {
        row_max[lane] = MASKED;
        row_sum[lane] = 0.0;
    }
    // o[i · G + g]: row ty·RPT + i, dims v0 + 4·tx + 64·g + (0..4).
    var o: array<vec4<f32>, RPT * G>;

    let key_begin = split * info.split_keys;
    var key_end = min(info.sk, key_begin + info.split_keys);
    if (info.causal != 0u) {
        key_end = min(key_end, q0 + BQ);
    }
    for (var k0 = key_begin; k0 < key_end; k0 += BKEYS) {
        // s = (q · scale) · kᵀ for this block, DC dims at a time.
        var s = array<vec2<f32>, RPT>();
        for (var d0 = 0u; d0 < D; d0 += DC) {
            for (var idx = lane; idx < BQ * DC; idx += 256u) {
                let row = idx / DC;
                let dd = idx % DC;
                var value = 0.0;
                if (q0 + row < q_end && d0 + dd < D) {
                    value = f32(q[q_base + (q0 + row) * info.q_stride + d0 + dd]) * scale;
                }
                a_mem[dd * BQ + row] = value;
            }
            for (var idx = lane; idx < BKEYS * DC; idx += 256u) {
                let key = idx / DC;
                let dd = idx % DC;
                var value = 0.0;
                if (k0 + key < key_end && d0 + dd < D) {
                    value = f32(k[k_base + (k0 + key) * info.k_stride + d0 + dd]);
                }
                a_mem[DC * BQ + dd * BKEYS + key] = value;
            }
            workgroupBarrier();
            for (var dd = 0u; dd < DC; dd++) {
                let kv = vec2<f32>(
                    a_mem[DC * BQ + dd * BKEYS + 2u * tx],
                    a_mem[DC * BQ + dd * BKEYS + 2u * tx + 1u],
                );
                for (var i = 0u; i < RPT; i++) {
                    s[i] = fma(vec2<f32>(a_mem[dd * BQ + ty * RPT + i]), kv, s[i]);
                }
            }
            workgroupBarrier();
        }
        for (var i = 0u; i < RPT; i++) {
            let row = ty * RPT + i;
            for (var j = 0u; j < 2u; j++) {
                let key = k0 + 2u * tx + j;
                var value = s[i][j];
                if (key >= key_end || (info.causal != 0u && key > q0 + row)) {
                    value = MASKED;
                }
                scores[row * BKEYS + 2u * tx + j] = value;
            }
        }
        workgroupBarrier();
        // Online softmax, one lane per row: new max, probabilities, running sum, rescale factor.
        if (lane < BQ) {
            let old_max = row_max[lane];
            var block_max = MASKED;
            for (var j = 0u; j < BKEYS; j++) {
                block_max = max(block_max, scores[lane * BKEYS + j]);
            }
            let new_max = max(old_max, block_max);
            var alpha = 1.0;
            var sum = 0.0;
            if (new_max > MASKED) {
                alpha = exp(old_max - new_max);
                for (var j = 0u; j < BKEYS; j++) {
                    let p = exp(scores[lane * BKEYS + j] - new_max);
                    scores[lane * BKEYS + j] = p;
                    sum += p;
                }
            } else {
                for (var j = 0u; j < BKEYS; j++) {
                    scores[lane * BKEYS + j] = 0.0;
                }
            }
            row_sum[lane] = row_sum[lane] * alpha + sum;
            row_max[lane] = new_max;
            row_alpha[lane] = alpha;
        }
        workgroupBarrier();
        // o = o · alpha + p · v, KS keys of v at a time.
        for (var i = 0u; i < RPT; i++) {
            let alpha = row_alpha[ty * RPT + i];
            for (var g = 0u; g < G; g++) {
                o[i * G + g] *= alpha;
            }
        }
        for (var k1 = 0u; k1 < BKEYS; k1 += KS) {
            let keys = min(KS, BKEYS - k1);
            for (var idx = lane; idx < keys * DV; idx += 256u) {
                let key = k0 + k1 + idx / DV;
                let dd = v0 + idx % DV;
                var value = 0.0;
                if (key < key_end && dd < D) {
                    value = f32(v[v_base + key * info.v_stride + dd]);
                }
                a_mem[idx] = value;
            }
            workgroupBarrier();
            for (var kk = 0u; kk < keys; kk++) {
                var vv: array<vec4<f32>, G>;
                for (var g = 0u; g < G; g++) {
                    let at = kk * DV + 4u * tx + 64u * g;
                    let last = kk * DV + DV - 1u;
                    vv[g] = vec4<f32>(
                        a_mem[min(at, last)],
                        a_mem[min(at + 1u, last)],
                        a_mem[min(at + 2u, last)],
                        a_mem[min(at + 3u, last)],
                    );
                }
                for (var i = 0u; i < RPT; i++) {
                    let p = scores[(ty * RPT + i) * BKEYS + k1 + kk];
                    for (var g = 0u; g < G; g++) {
                        o[i * G + g] = fma(vec4<f32>(p), vv[g], o[i * G + g]);
                    }
                }
            }
            workgroupBarrier();
        }
    }

    let width = info.heads * D;
    for (var i = 0u; i < RPT; i++) {
        let row = ty * RPT + i;
        let query = q0 + row;
        if (query < q_end) {
            if (tx == 0u && v0 == 0u) {
                let best = row_max[row];
                let total = row_sum[row];
                {{ store_stats }}
            }
            for (var g = 0u; g < G; g++) {
                for (var e = 0u; e < 4u; e++) {
                    let local_dim = 4u * tx + 64u * g + e;
                    let dd = v0 + local_dim;
                    if (local_dim < DV && dd < D) {
                        let value = o[i * G + g][e];
                        let total = row_sum[row];
                        {{ store }}
                    }
                }
            }
        }
    }
}
