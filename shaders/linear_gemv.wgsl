// Linear layer for a few rows (M ≤ 8: the time embedding's batch, a single prompt's pooled
// state): out[m, n] = bias[n] + sum_k x[m, k] * weight[n, k]  (+ residual[m, n]).
// Such a product is a pass over the weight; a tiled GEMM would leave most of its tile idle and
// launch few workgroups. Here a workgroup takes 8 output columns, 32 lanes per column split k
// (consecutive lanes read consecutive vec4s of one weight row), and the 32 partial sums per
// output are added in workgroup memory (8 KiB). f32 accumulation.
// Bindings and template parameters as linear.wgsl (without the tile sizes).
{{ enable_f16 }}
alias Elem = {{ elem }};

struct Info {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

{{ bindings }}

const MAX_M: u32 = 8u;
const COLUMNS: u32 = 8u;
const SPLIT: u32 = 32u;

var<workgroup> partial: array<f32, 2048>; // [column][m][split]

fn x_at(row: u32, k: u32) -> vec4<f32> {
    {{ x_load }}
}

fn w_at(row: u32, k: u32) -> vec4<f32> {
    {{ w_load }}
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let column = lane / SPLIT;
    let part = lane % SPLIT;
    let n = group.x * COLUMNS + column;
    var acc: array<f32, MAX_M>;
    if (n < info.n) {
        for (var k = part * 4u; k < info.k; k += SPLIT * 4u) {
            let w = w_at(n, k);
            for (var m = 0u; m < MAX_M; m++) {
                if (m < info.m) {
                    acc[m] += dot(x_at(m, k), w);
                }
            }
        }
    }
    for (var m = 0u; m < MAX_M; m++) {
        partial[(column * MAX_M + m) * SPLIT + part] = acc[m];
    }
    workgroupBarrier();
    // One lane per (column, row) adds the 32 partial sums.
    if (lane < COLUMNS * MAX_M) {
        let c = lane / MAX_M;
        let m = lane % MAX_M;
        let on = group.x * COLUMNS + c;
        if (m < info.m && on < info.n) {
            var sum = 0.0;
            for (var p = 0u; p < SPLIT; p++) {
                sum += partial[(c * MAX_M + m) * SPLIT + p];
            }
            let at = m * info.n + on;
            out[at] = Elem(sum + f32(bias[on]){{ residual_add }});
        }
    }
}
