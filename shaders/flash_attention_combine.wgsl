// Merges the key-range partials of flash_attention.wgsl (split mode): for each query row and
// head, with (m_s, l_s) the max and sum of split s and o_s its unnormalised output,
//   out = sum_s o_s · exp(m_s − m) / sum_s l_s · exp(m_s − m),   m = max_s m_s.
// Bindings: partial [split][b][row][heads·D], stats [split][b][head][row][max, sum], out
// [b][sq][heads·D]. Template parameters: enable_f16, elem.
{{ enable_f16 }}
alias Elem = {{ elem }};

struct Info {
    batch: u32,
    heads: u32,
    head_dim: u32,
    sq: u32,       // query rows per batch item in `out`
    q_begin: u32,
    q_count: u32,
    splits: u32,
    _pad: u32,
}

{{ bindings }}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let width = info.heads * info.head_dim;
    let index = (wg.y * groups.x + wg.x) * 256u + lane;
    if (index >= info.batch * info.q_count * width) {
        return;
    }
    let col = index % width;
    let row = (index / width) % info.q_count;
    let b = index / (width * info.q_count);
    let head = col / info.head_dim;
    var m = -1e30;
    for (var s = 0u; s < info.splits; s++) {
        m = max(m, stats[2u * (((s * info.batch + b) * info.heads + head) * info.q_count + row)]);
    }
    var sum = 0.0;
    var acc = 0.0;
    for (var s = 0u; s < info.splits; s++) {
        let at = ((s * info.batch + b) * info.heads + head) * info.q_count + row;
        let weight = exp(stats[2u * at] - m);
        sum += stats[2u * at + 1u] * weight;
        acc += partial[((s * info.batch + b) * info.q_count + row) * width + col] * weight;
    }
    out[(b * info.sq + info.q_begin + row) * width + col] = Elem(acc / sum);
}
