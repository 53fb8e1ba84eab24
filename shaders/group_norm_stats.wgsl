// GroupNorm's statistics, first half of the op (group_norm.wgsl applies them): a group of an
// NCHW tensor is one contiguous run of (C / groups) · H · W values, split into `parts` slices,
// one workgroup each. A workgroup reduces its slice to (count, mean, M2) with Welford's update
// per lane and Chan's pairwise combination across lanes (f32, no cancellation of E[x²] − E[x]²),
// and writes the triple to stats[(band · groups_total + group) · parts + part]. Several bands of
// rows of one tensor (see models/row_bands.rs) write their own triples; the apply kernel combines
// every band's, so the statistics are the whole tensor's.
// Bindings: x, stats. Template parameters: enable_f16, elem.
{{ enable_f16 }}
alias Elem = {{ elem }};

struct Info {
    group_len: u32,    // values of one group in this tensor (or band)
    parts: u32,
    groups_total: u32, // batch · groups
    band: u32,
}

{{ bindings }}

var<workgroup> counts: array<f32, 256>;
var<workgroup> means: array<f32, 256>;
var<workgroup> m2s: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let part = wg.x;
    let group = wg.y;
    let slice = (info.group_len + info.parts - 1u) / info.parts;
    let start = part * slice;
    let end = min(start + slice, info.group_len);
    let base = group * info.group_len;
    var count = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var i = start + lane; i < end; i += 256u) {
        let value = f32(x[base + i]);
        count += 1.0;
        let delta = value - mean;
        mean += delta / count;
        m2 += delta * (value - mean);
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
    if (lane == 0u) {
        let at = ((info.band * info.groups_total + group) * info.parts + part) * 3u;
        stats[at] = counts[0];
        stats[at + 1u] = means[0];
        stats[at + 2u] = m2s[0];
    }
}
