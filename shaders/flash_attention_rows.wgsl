// Flash attention for CPU adapters (lavapipe, SwiftShader): the same online-softmax attention
// as flash_attention.wgsl, but four query rows per invocation, without workgroup memory or
// barriers. CPU drivers run a workgroup's invocations as SIMD lanes and each barrier as a
// context switch of every lane group, which makes the tiled kernel slow there; here the lanes
// of a SIMD group are consecutive query rows reading the same key and value rows (broadcast
// loads), with the row's q and output in registers (f32).
// Keys are split into ranges of `split_keys` (grid z = batch · splits), each small enough for
// llvmpipe's loop limiter (65535 loop iterations per invocation); with more than one range the
// unnormalised output and (max, sum) go to f32 partials that flash_attention_combine.wgsl
// merges. Layouts and `Info` as flash_attention.wgsl.
// Bindings as flash_attention.wgsl. Template parameters: enable_f16, elem, d (head dim),
// loads, store / store_stats.
{{ enable_f16 }}
alias Elem = {{ elem }};

struct Info {
    batch: u32,
    heads: u32,
    sq: u32,
    sk: u32,
    q_offset: u32,
    q_stride: u32,
    k_offset: u32,
    k_stride: u32,
    v_offset: u32,
    v_stride: u32,
    scale_bits: u32,
    causal: u32,
    q_begin: u32,
    q_count: u32,
    split_keys: u32,
    splits: u32,
}

{{ bindings }}

const D: u32 = {{ d }}u;
const D4: u32 = (D + 3u) / 4u;
const MASKED: f32 = -1e30;

// q4 / k4 / v4: 4 values of a row of q / k / v from `base`, dims 4c..4c+3 (zero past the
// head dim): unrolled loads when the head dim is a multiple of 4, else a guarded loop.
{{ loads }}

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let end = info.q_begin + info.q_count;
    let first = info.q_begin + (group.x * 64u + lane) * 4u;
    if (first >= end) {
        return;
    }
    let head = group.y;
    let b = group.z / info.splits;
    let split = group.z % info.splits;
    let scale = bitcast<f32>(info.scale_bits);
    let k_base = info.k_offset + b * info.sk * info.k_stride + head * D;
    let v_base = info.v_offset + b * info.sk * info.v_stride + head * D;
    // Four query rows per invocation, one per vec4 component: qt[d] holds dim d of each row
    // (rows past the end repeat the last one and are not stored), so a key costs vector
    // arithmetic only, its loads shared by the four rows.
    var qt: array<vec4<f32>, 4u * D4>;
    for (var r = 0u; r < 4u; r++) {
        let row = min(first + r, end - 1u);
        let q_base = info.q_offset + (b * info.sq + row) * info.q_stride + head * D;
        for (var c = 0u; c < D4; c++) {
            let part = q4(q_base, c) * scale;
            qt[4u * c][r] = part.x;
            qt[4u * c + 1u][r] = part.y;
            qt[4u * c + 2u][r] = part.z;
            qt[4u * c + 3u][r] = part.w;
        }
    }
    let rows = vec4<u32>(first, first + 1u, first + 2u, first + 3u);
    var o: array<vec4<f32>, 4u * D4>;
    var row_max = vec4<f32>(MASKED);
    var row_sum = vec4<f32>(0.0);
    let key_begin = split * info.split_keys;
    var key_end = min(info.sk, key_begin + info.split_keys);
    if (info.causal != 0u) {
        // Key 0 comes first and is every row's (causal attention runs unsplit), so a masked
        // score's weight below is exp(-1e30 - max) = 0.
        key_end = min(key_end, min(first + 4u, end));
    }
    // Four keys per iteration: one rescale of the output (and one loop step) per four keys.
    var key = key_begin;
    for (; key + 4u <= key_end; key += 4u) {
        var s: array<vec4<f32>, 4>;
        for (var j = 0u; j < 4u; j++) {
            var acc = vec4<f32>(0.0);
            for (var c = 0u; c < D4; c++) {
                let kk = k4(k_base + (key + j) * info.k_stride, c);
                acc += qt[4u * c] * kk.x + qt[4u * c + 1u] * kk.y + qt[4u * c + 2u] * kk.z + qt[4u * c + 3u] * kk.w;
            }
            if (info.causal != 0u) {
                acc = select(acc, vec4<f32>(MASKED), vec4<u32>(key + j) > rows);
            }
            s[j] = acc;
        }
        let new_max = max(row_max, max(max(s[0], s[1]), max(s[2], s[3])));
        let alpha = exp(row_max - new_max);
        let p0 = exp(s[0] - new_max);
        let p1 = exp(s[1] - new_max);
        let p2 = exp(s[2] - new_max);
        let p3 = exp(s[3] - new_max);
        row_sum = row_sum * alpha + (p0 + p1) + (p2 + p3);
        row_max = new_max;
        for (var c = 0u; c < D4; c++) {
            let v0 = v4(v_base + key * info.v_stride, c);
            let v1 = v4(v_base + (key + 1u) * info.v_stride, c);
            let v2 = v4(v_base + (key + 2u) * info.v_stride, c);
            let v3 = v4(v_base + (key + 3u) * info.v_stride, c);
            o[4u * c] = o[4u * c] * alpha + p0 * v0.x + p1 * v1.x + p2 * v2.x + p3 * v3.x;
            o[4u * c + 1u] = o[4u * c + 1u] * alpha + p0 * v0.y + p1 * v1.y + p2 * v2.y + p3 * v3.y;
            o[4u * c + 2u] = o[4u * c + 2u] * alpha + p0 * v0.z + p1 * v1.z + p2 * v2.z + p3 * v3.z;
            o[4u * c + 3u] = o[4u * c + 3u] * alpha + p0 * v0.w + p1 * v1.w + p2 * v2.w + p3 * v3.w;
        }
    }
    for (; key < key_end; key++) {
        var s = vec4<f32>(0.0);
        for (var c = 0u; c < D4; c++) {
            let kk = k4(k_base + key * info.k_stride, c);
            s += qt[4u * c] * kk.x + qt[4u * c + 1u] * kk.y + qt[4u * c + 2u] * kk.z + qt[4u * c + 3u] * kk.w;
        }
        if (info.causal != 0u) {
            s = select(s, vec4<f32>(MASKED), vec4<u32>(key) > rows);
        }
        // One exp per key and row: the new score's weight, or the old max's rescale factor.
        let e = exp(-abs(s - row_max));
        let grows = s > row_max;
        let alpha = select(vec4<f32>(1.0), e, grows);
        let p = select(e, vec4<f32>(1.0), grows);
        row_sum = row_sum * alpha + p;
        row_max = max(row_max, s);
        for (var c = 0u; c < D4; c++) {
            let vv = v4(v_base + key * info.v_stride, c);
            o[4u * c] = o[4u * c] * alpha + p * vv.x;
            o[4u * c + 1u] = o[4u * c + 1u] * alpha + p * vv.y;
            o[4u * c + 2u] = o[4u * c + 2u] * alpha + p * vv.z;
            o[4u * c + 3u] = o[4u * c + 3u] * alpha + p * vv.w;
        }
    }
    let width = info.heads * D;
    for (var r = 0u; r < 4u; r++) {
        let query = first + r;
        if (query >= end) {
            break;
        }
        {
            let best = row_max[r];
            let total = row_sum[r];
            {{ store_stats }}
        }
        for (var dd = 0u; dd < D; dd++) {
            let value = o[dd][r];
            let total = row_sum[r];
            {{ store }}
        }
    }
}
