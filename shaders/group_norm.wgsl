// GroupNorm applied (group_norm_stats.wgsl computes the statistics), with the SiLU that
// diffusers' ResNet blocks apply right after it fused in:
//   y = (x − mean) / sqrt(var + eps) · gamma[c] + beta[c],   then y · sigmoid(y) with `silu`
// A workgroup takes a slice of one group's values: it first combines that group's statistics
// triples (every band, every part; Chan's formula, in workgroup memory), then normalises.
// Bindings: x, stats, gamma, beta, out. Template parameters: enable_f16, elem, silu.
{{ enable_f16 }}
alias Elem = {{ elem }};

struct Info {
    group_len: u32,      // values of one group in this tensor (or band)
    channel_len: u32,    // H · W of this tensor (or band)
    channels_per_group: u32,
    groups: u32,
    groups_total: u32,   // batch · groups
    triples: u32,        // bands · parts statistics triples per group
    parts: u32,          // statistics triples per group and band
    slice: u32,          // values per workgroup
    eps_bits: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

{{ bindings }}

const SILU: bool = {{ silu }};

var<workgroup> counts: array<f32, 256>;
var<workgroup> means: array<f32, 256>;
var<workgroup> m2s: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let group = wg.y;
    // Triple t of this group: band t / parts, part t % parts.
    var count = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var t = lane; t < info.triples; t += 256u) {
        let band = t / info.parts;
        let at = ((band * info.groups_total + group) * info.parts + t % info.parts) * 3u;
        let n_b = stats[at];
        let n = count + n_b;
        if (n > 0.0) {
            let delta = stats[at + 1u] - mean;
            mean += delta * (n_b / n);
            m2 += stats[at + 2u] + delta * delta * (count * n_b / n);
            count = n;
        }
    }
    counts[lane] = count;
    means[lane] = mean;
    m2s[lane] = m2;
    workgroupBarrier();
    for (var half = 128u; half > 0u; half /= 2u) {
        if (lane < half) {
            let n_a = counts[lane];
            let n_b = counts[lane + half];
            let n = n_a + n_b;
            if (n > 0.0) {
                let delta = means[lane + half] - means[lane];
                means[lane] = means[lane] + delta * (n_b / n);
                m2s[lane] = m2s[lane] + m2s[lane + half] + delta * delta * (n_a * n_b / n);
                counts[lane] = n;
            }
        }
        workgroupBarrier();
    }
    let group_mean = means[0];
    let rstd = inverseSqrt(m2s[0] / counts[0] + bitcast<f32>(info.eps_bits));
    let base = group * info.group_len;
    let first_channel = (group % info.groups) * info.channels_per_group;
    let start = wg.x * info.slice;
    let end = min(start + info.slice, info.group_len);
    for (var i = start + lane; i < end; i += 256u) {
        let c = first_channel + i / info.channel_len;
        var y = (f32(x[base + i]) - group_mean) * rstd * f32(gamma[c]) + f32(beta[c]);
        if (SILU) {
            y = y / (1.0 + exp(-y));
        }
        out[base + i] = Elem(y);
    }
}
