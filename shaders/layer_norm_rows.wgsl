// LayerNorm for CPU adapters: one invocation per row, no workgroup memory or barriers (see
// flash_attention_rows.wgsl for why), statistics in f32 in two passes as torch.
// Same bindings and `Info` as layer_norm.wgsl. Template parameters: enable_f16, elem.
{{ enable_f16 }}
alias Elem = {{ elem }};

struct Info {
    rows: u32,
    dim: u32,
    eps_bits: u32,
    _pad: u32,
}

{{ bindings }}

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let row = (wg.y * groups.x + wg.x) * 64u + lane;
    if (row >= info.rows) {
        return;
    }
    let base = row * info.dim;
    var sum = 0.0;
    for (var i = 0u; i < info.dim; i++) {
        sum += f32(x[base + i]);
    }
    let mean = sum / f32(info.dim);
    var squares = 0.0;
    for (var i = 0u; i < info.dim; i++) {
        let d = f32(x[base + i]) - mean;
        squares += d * d;
    }
    let rstd = inverseSqrt(squares / f32(info.dim) + bitcast<f32>(info.eps_bits));
    for (var i = 0u; i < info.dim; i++) {
        out[base + i] = Elem((f32(x[base + i]) - mean) * rstd * f32(gamma[i]) + f32(beta[i]));
    }
}
