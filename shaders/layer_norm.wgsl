// LayerNorm over the last dimension: y = (x − mean) / sqrt(var + eps) · gamma + beta, one
// workgroup of 64 lanes per row, statistics in f32 (two passes: mean, then squared deviations,
// as torch). Rows of SD are 320–1280 values: each lane keeps at most MAX_PER_LANE of them in
// registers, so the row is read from memory once.
// Bindings: x, gamma, beta, out. Template parameters: enable_f16, elem.
{{ enable_f16 }}
alias Elem = {{ elem }};

struct Info {
    rows: u32,
    dim: u32,
    eps_bits: u32,
    _pad: u32,
}

{{ bindings }}

const LANES: u32 = 64u;
const MAX_PER_LANE: u32 = 32u; // rows up to 2048 values

var<workgroup> partial: array<f32, LANES>;

// The sum of every lane's `value`, in every lane.
fn workgroup_sum(lane: u32, value: f32) -> f32 {
    partial[lane] = value;
    workgroupBarrier();
    for (var half = LANES / 2u; half > 0u; half /= 2u) {
        if (lane < half) {
            partial[lane] += partial[lane + half];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let row = wg.y * groups.x + wg.x;
    if (row >= info.rows) {
        return;
    }
    let base = row * info.dim;
    var values: array<f32, MAX_PER_LANE>;
    var sum = 0.0;
    for (var j = 0u; j < MAX_PER_LANE; j++) {
        let i = lane + j * LANES;
        if (i < info.dim) {
            values[j] = f32(x[base + i]);
            sum += values[j];
        }
    }
    let mean = workgroup_sum(lane, sum) / f32(info.dim);
    var squares = 0.0;
    for (var j = 0u; j < MAX_PER_LANE; j++) {
        if (lane + j * LANES < info.dim) {
            let d = values[j] - mean;
            squares += d * d;
        }
    }
    let rstd = inverseSqrt(workgroup_sum(lane, squares) / f32(info.dim) + bitcast<f32>(info.eps_bits));
    for (var j = 0u; j < MAX_PER_LANE; j++) {
        let i = lane + j * LANES;
        if (i < info.dim) {
            out[base + i] = Elem((values[j] - mean) * rstd * f32(gamma[i]) + f32(beta[i]));
        }
    }
}
