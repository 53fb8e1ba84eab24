// Flash attention for CPU adapters (lavapipe, SwiftShader): the same online-softmax attention
// as flash_attention.wgsl, but one invocation per query row, without workgroup memory or
// barriers. CPU drivers run a workgroup's invocations as SIMD lanes and each barrier as a
// context switch of every lane group, which makes the tiled kernel slow there; here the lanes
// of a SIMD group are consecutive query rows reading the same key and value rows (broadcast
// loads), with the row's q and output in registers (f32).
// Keys are split into ranges of `split_keys` (grid z = batch · splits), each small enough for
// llvmpipe's loop limiter (65535 loop iterations per invocation); with more than one range the
// unnormalised output and (max, sum) go to f32 partials that flash_attention_combine.wgsl
// merges. Layouts and `Info` as flash_attention.wgsl.
// Bindings as flash_attention.wgsl. Template parameters: enable_f16, elem, d (head dim),
// store / store_stats.
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

// 4 values of a row from `base`, zero past the head dim.
fn q4(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (4u * c + e < D) {
            r[e] = f32(q[base + 4u * c + e]);
        }
    }
    return r;
}

fn k4(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (4u * c + e < D) {
            r[e] = f32(k[base + 4u * c + e]);
        }
    }
    return r;
}

fn v4(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (4u * c + e < D) {
            r[e] = f32(v[base + 4u * c + e]);
        }
    }
    return r;
}

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let query = info.q_begin + group.x * 64u + lane;
    if (query >= info.q_begin + info.q_count) {
        return;
    }
    let head = group.y;
    let b = group.z / info.splits;
    let split = group.z % info.splits;
    let scale = bitcast<f32>(info.scale_bits);
    let q_base = info.q_offset + (b * info.sq + query) * info.q_stride + head * D;
    let k_base = info.k_offset + b * info.sk * info.k_stride + head * D;
    let v_base = info.v_offset + b * info.sk * info.v_stride + head * D;
    var qv: array<vec4<f32>, D4>;
    for (var c = 0u; c < D4; c++) {
        qv[c] = q4(q_base, c) * scale;
    }
    var o: array<vec4<f32>, D4>;
    var row_max = MASKED;
    var row_sum = 0.0;
    let key_begin = split * info.split_keys;
    var key_end = min(info.sk, key_begin + info.split_keys);
    if (info.causal != 0u) {
        key_end = min(key_end, query + 1u);
    }
    for (var key = key_begin; key < key_end; key++) {
        var s = 0.0;
        for (var c = 0u; c < D4; c++) {
            s += dot(qv[c], k4(k_base + key * info.k_stride, c));
        }
        // One exp per key: the new score's weight, or the old max's rescale factor.
        let e = exp(-abs(s - row_max));
        let alpha = select(1.0, e, s > row_max);
        let p = select(e, 1.0, s > row_max);
        row_sum = row_sum * alpha + p;
        row_max = max(row_max, s);
        for (var c = 0u; c < D4; c++) {
            o[c] = o[c] * alpha + p * v4(v_base + key * info.v_stride, c);
        }
    }
    let width = info.heads * D;
    {
        let best = row_max;
        let total = row_sum;
        {{ store_stats }}
    }
    for (var c = 0u; c < D4; c++) {
        for (var e = 0u; e < 4u; e++) {
            let dd = 4u * c + e;
            if (dd < D) {
                let value = o[c][e];
                let total = row_sum;
                {{ store }}
            }
        }
    }
}
