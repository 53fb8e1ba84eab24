// GEGLU, the activation of diffusers' transformer feed-forward: the projection's output
// [rows, 2·inner] is (hidden, gate) along the last axis, and
//   out[r, j] = hidden[r, j] · gelu(gate[r, j])   with torch's exact (erf) GELU
// erf is Abramowitz & Stegun 7.1.26 (max error 1.5e-7), the polynomial CubeCL's erf uses.
// Bindings: h, out. Template parameters: enable_f16, elem.
{{ enable_f16 }}
alias Elem = {{ elem }};

struct Info {
    rows: u32,
    inner: u32,
    _pad0: u32,
    _pad1: u32,
}

{{ bindings }}

fn erf(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = ((((1.0614054 * t - 1.453152) * t + 1.4214137) * t - 0.28449674) * t + 0.2548296) * t;
    let value = 1.0 - poly * exp(-a * a);
    return select(value, -value, x < 0.0);
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let index = (wg.y * groups.x + wg.x) * 256u + lane;
    if (index >= info.rows * info.inner) {
        return;
    }
    let row = index / info.inner;
    let j = index % info.inner;
    let hidden = f32(h[row * 2u * info.inner + j]);
    let gate = f32(h[row * 2u * info.inner + info.inner + j]);
    out[index] = Elem(hidden * (0.5 * gate * (1.0 + erf(gate * 0.70710678118654752))));
}
