//! Flash attention: softmax(q·kᵀ/√d)·v per head, the score matrix never written, on token rows
//! as the projections produce them. Two kernels, chosen per adapter:
//! - `shaders/flash_attention.wgsl` (GPUs): workgroup tiles of queries × 32-key blocks;
//! - `shaders/flash_attention_rows.wgsl` (CPU adapters): one invocation per query row, no
//!   barriers (each costs a CPU driver a context switch per lane group: the tiled kernel was
//!   40× slower than this one on lavapipe for the fixture UNet).
//!
//! Both may split the keys into ranges whose partials `shaders/flash_attention_combine.wgsl`
//! merges: on lavapipe an invocation may run 65535 loop iterations at most (Mesa's loop
//! limiter), which a long sequence with a wide head exceeds.

use burn::backend::wgpu::CubeTensor;
use burn::cubecl::CubeDim;
use burn::tensor::{DType, Tensor};

use super::launch::{
    Arg, Shader, ShaderFile, cube, dispatch, empty, fits_u32, grid_1d, max_binding_bytes,
    on_cpu_adapter, tensor, wgsl_type,
};
use super::weight::vec4_array;

pub struct FlashAttentionFile;
impl ShaderFile for FlashAttentionFile {
    const TEXT: &'static str = include_str!("../../../shaders/flash_attention.wgsl");
}

pub struct FlashAttentionRowsFile;
impl ShaderFile for FlashAttentionRowsFile {
    const TEXT: &'static str = include_str!("../../../shaders/flash_attention_rows.wgsl");
}

pub struct FlashAttentionCombineFile;
impl ShaderFile for FlashAttentionCombineFile {
    const TEXT: &'static str = include_str!("../../../shaders/flash_attention_combine.wgsl");
}

/// Head dims the kernels take (a q·kᵀ step of the tiled kernel holds at least one dim per row
/// in workgroup memory). SD uses 40, 64, 80, 160 (UNet, CLIP) and 512 (the VAE's single head).
pub const MAX_HEAD_DIM: usize = 1024;

/// Heads `[B, S, heads · head_dim]` of one tensor, starting at column `column` (q, k and v may
/// be column ranges of one fused projection).
#[derive(Clone, Copy)]
pub struct Heads<'a> {
    pub tokens: &'a Tensor<3>,
    pub column: usize,
}

impl<'a> From<&'a Tensor<3>> for Heads<'a> {
    fn from(tokens: &'a Tensor<3>) -> Self {
        Self { tokens, column: 0 }
    }
}

/// Which flash-attention kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// Workgroup tiles (GPUs).
    Tiled,
    /// One invocation per query row (CPU adapters).
    Rows,
}

impl AttentionKernel {
    pub fn for_adapter(cpu_adapter: bool) -> Self {
        if cpu_adapter { Self::Rows } else { Self::Tiled }
    }
}

/// Output dims one tiled workgroup computes: wider heads are split across workgroups, so that a
/// lane accumulates at most 12 vec4.
const MAX_OUTPUT_DIMS: usize = 256;

/// Query rows per lane of the tiled kernel (16× per workgroup): 4 while a lane's accumulator
/// (rows × a 4-dim group per 64 output dims) stays within 12 vec4, else 2.
fn rows_per_lane(output_dims: usize) -> usize {
    if output_dims <= 192 { 4 } else { 2 }
}

/// Head dims per q·kᵀ step of the tiled kernel: as many as fit next to the q rows and the key
/// block in the 1536 floats of workgroup memory it reserves for them.
fn dims_per_step(head_dim: usize, rows: usize) -> usize {
    head_dim.min(1536 / (rows + 32))
}

/// Query rows per invocation of the rows kernel: four, one per vec4 component, sharing each
/// key's and value's loads (a CPU driver gathers every lane's load) and its arithmetic.
const ROWS_PER_INVOCATION: usize = 4;

/// The widest head the rows kernel takes: its per-lane q and output (8 · head dim floats) fit a
/// CPU driver's registers up to here. Wider heads (the VAE's 512) run burn's fused attention on
/// CPU adapters: at 4096 × 4096 the rows kernel took 3.1 s against burn's 0.95 s for 160
/// dims, and over 10 minutes for 512.
pub const ROWS_MAX_HEAD_DIM: usize = 64;

/// The rows kernel's `q4`/`k4`/`v4`: one vec4 load from vec4 bindings when rows are aligned,
/// else straight-line scalar loads for head dims that are multiples of 4 (a CPU driver runs a
/// loop with a dynamic vector index slowly), else a guarded loop.
fn row_loads(head_dim: usize, vectorised: bool) -> String {
    ["q", "k", "v"]
        .map(|name| {
            let body = if vectorised {
                format!("return vec4<f32>({name}[base / 4u + c]);")
            } else if head_dim % 4 == 0 {
                format!("let i = base + 4u * c;\n    return vec4<f32>(f32({name}[i]), f32({name}[i + 1u]), f32({name}[i + 2u]), f32({name}[i + 3u]));")
            } else {
                format!("var r = vec4<f32>(0.0);\n    for (var e = 0u; e < 4u; e++) {{\n        if (4u * c + e < D) {{\n            r[e] = f32({name}[base + 4u * c + e]);\n        }}\n    }}\n    return r;")
            };
            format!("fn {name}4(base: u32, c: u32) -> vec4<f32> {{\n    {body}\n}}\n")
        })
        .join("\n")
}

/// Loop iterations an invocation may spend on its keys: half of llvmpipe's 65535 limit, the
/// rest left to the kernel's other loops.
const KEY_LOOP_BUDGET: usize = 32768;

/// Keys per split: what the loop budget allows on CPU adapters (the tiled kernel spends about
/// 6 iterations per head dim and key block, the rows kernel 2 per 4 dims and key, plus 2), all of
/// them on GPUs.
fn split_keys(kernel: AttentionKernel, cpu_adapter: bool, head_dim: usize, sk: usize) -> usize {
    let per_key = match kernel {
        AttentionKernel::Rows => 2 * head_dim.div_ceil(4) + 2,
        AttentionKernel::Tiled => (6 * head_dim).div_ceil(32) + 4,
    };
    if cpu_adapter {
        (KEY_LOOP_BUDGET / per_key / 32 * 32).max(32)
    } else {
        sk.next_multiple_of(32)
    }
}

/// Bytes of f32 partials one split launch writes at most (and at most a quarter of the
/// device's binding limit): longer query ranges run as several launches.
const MAX_PARTIAL_BYTES: usize = 32 << 20;

/// softmax(q·kᵀ·scale)·v with `heads` heads of `head_dim` (scale 1/√head_dim), causal
/// (CLIP's text encoder) or not, as `[B, Sq, heads · head_dim]` in q's dtype, with the kernel
/// for the adapter. None where the kernels do not apply.
pub fn flash_attention(
    q: Heads,
    k: Heads,
    v: Heads,
    heads: usize,
    head_dim: usize,
    causal: bool,
) -> Option<Tensor<3>> {
    let cpu = q
        .tokens
        .clone()
        .try_into_primitive::<burn::backend::Wgpu>()
        .is_ok_and(|t| on_cpu_adapter(&t));
    flash_attention_with(
        AttentionKernel::for_adapter(cpu),
        q,
        k,
        v,
        heads,
        head_dim,
        causal,
    )
}

/// [`flash_attention`] with a given kernel (tests run both on one adapter).
pub fn flash_attention_with(
    kernel: AttentionKernel,
    q: Heads,
    k: Heads,
    v: Heads,
    heads: usize,
    head_dim: usize,
    causal: bool,
) -> Option<Tensor<3>> {
    if kernel == AttentionKernel::Rows && head_dim > ROWS_MAX_HEAD_DIM {
        return None;
    }
    let [batch, sq, q_width] = q.tokens.dims();
    let [kb, sk, k_width] = k.tokens.dims();
    let [vb, vs, v_width] = v.tokens.dims();
    let inner = heads * head_dim;
    let fits = |h: &Heads, width: usize| h.column + inner <= width;
    if kb != batch
        || vb != batch
        || vs != sk
        || sk == 0
        || sq == 0
        || head_dim == 0
        || head_dim > MAX_HEAD_DIM
        || !(fits(&q, q_width) && fits(&k, k_width) && fits(&v, v_width))
        || (causal && sq != sk)
        || !fits_u32(&[
            batch * sq * q_width,
            batch * sk * k_width,
            batch * sk * v_width,
        ])
    {
        return None;
    }
    let qc = cube(q.tokens)?;
    let dtype = qc.dtype;
    let kc = cube(&k.tokens.clone().cast(dtype))?;
    let vc = cube(&v.tokens.clone().cast(dtype))?;
    let out = empty(&qc, [batch, sq, inner], dtype);
    let split_keys = split_keys(kernel, on_cpu_adapter(&qc), head_dim, sk);
    let splits = sk.div_ceil(split_keys);
    if causal && splits > 1 && kernel == AttentionKernel::Rows {
        // The rows kernel's causal masking needs each row's first key in its range (CLIP's 77
        // tokens never split).
        return None;
    }
    let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
    let info = [
        batch as u32,
        heads as u32,
        sq as u32,
        sk as u32,
        q.column as u32,
        q_width as u32,
        k.column as u32,
        k_width as u32,
        v.column as u32,
        v_width as u32,
        scale.to_bits(),
        causal as u32,
        0,
        sq as u32,
        split_keys as u32,
        splits as u32,
    ];
    let inputs = [Arg::new("q", &qc), Arg::new("k", &kc), Arg::new("v", &vc)];
    match kernel {
        AttentionKernel::Tiled => {
            let output_dims = head_dim.min(MAX_OUTPUT_DIMS);
            let rows = rows_per_lane(output_dims);
            let shader = Shader::<FlashAttentionFile>::new(dtype)
                .with("d", head_dim)
                .with("dv", output_dims)
                .with("rpt", rows)
                .with("dc", dims_per_step(head_dim, 16 * rows));
            let layout = Layout {
                workgroup: CubeDim::new_2d(16, 16),
                rows_per_group: 16 * rows,
                head_groups: heads * head_dim.div_ceil(output_dims),
            };
            run(shader, layout, info, &inputs, &out, head_dim)?;
        }
        AttentionKernel::Rows => {
            // vec4 bindings where every row start is a multiple of 4 values (all of SD's).
            let aligned = [
                head_dim, q.column, k.column, v.column, q_width, k_width, v_width,
            ];
            let vectorised = aligned.iter().all(|v| v % 4 == 0);
            let ty = vec4_array(wgsl_type(dtype), vectorised);
            let inputs = [
                Arg::typed("q", &qc, ty.clone()),
                Arg::typed("k", &kc, ty.clone()),
                Arg::typed("v", &vc, ty),
            ];
            let shader = Shader::<FlashAttentionRowsFile>::new(dtype)
                .with("d", head_dim)
                .with("loads", row_loads(head_dim, vectorised));
            let layout = Layout {
                workgroup: CubeDim::new_1d(64),
                rows_per_group: 64 * ROWS_PER_INVOCATION,
                head_groups: heads,
            };
            run(shader, layout, info, &inputs, &out, head_dim)?;
        }
    }
    Some(tensor(out))
}

/// How a kernel's workgroups cover the queries and heads.
struct Layout {
    workgroup: CubeDim,
    rows_per_group: usize,
    /// Grid y: heads, times the output-dim splits of the tiled kernel.
    head_groups: usize,
}

/// Stores of the whole (normalised, in `Elem`, to `out`) and the split (f32 `partial` and
/// `stats`) forms; the kernels name the accumulated value `value`, the row's softmax sum `total`
/// and its max `best`.
const WHOLE_STORE: &str =
    "out[(b * info.sq + query) * width + head * D + dd] = Elem(value / total);";
const SPLIT_STORE: &str = "partial[((split * info.batch + b) * info.q_count + query - info.q_begin) * width + head * D + dd] = value;";
const SPLIT_STATS: &str =
    "let at = ((split * info.batch + b) * info.heads + head) * info.q_count + query - info.q_begin;
stats[2u * at] = best;
stats[2u * at + 1u] = total;";

/// Launches `shader` over every query row: at once when the keys are not split, else per
/// query range (partials within MAX_PARTIAL_BYTES), each followed by the combine kernel.
fn run<F: ShaderFile>(
    shader: Shader<F>,
    layout: Layout,
    mut info: [u32; 16],
    inputs: &[Arg; 3],
    out: &CubeTensor,
    head_dim: usize,
) -> Option<()> {
    let [batch, heads, sq, .., splits] = info.map(|v| v as usize);
    let groups_z = batch * splits;
    if splits == 1 {
        let shader = shader.with("store", WHOLE_STORE).with("store_stats", "");
        let groups = [
            sq.div_ceil(layout.rows_per_group),
            layout.head_groups,
            groups_z,
        ];
        return dispatch(
            shader,
            layout.workgroup,
            groups,
            inputs,
            &[Arg::new("out", out)],
            &info,
        );
    }
    let shader = shader
        .with("store", SPLIT_STORE)
        .with("store_stats", SPLIT_STATS);
    let inner = heads * head_dim;
    let budget = MAX_PARTIAL_BYTES.min(max_binding_bytes(out) / 4);
    let chunk = (budget / (splits * batch * inner * 4))
        .max(1)
        .next_multiple_of(layout.rows_per_group);
    for q_begin in (0..sq).step_by(chunk) {
        let q_count = chunk.min(sq - q_begin);
        info[12] = q_begin as u32;
        info[13] = q_count as u32;
        let partial = empty(out, [splits * batch * q_count * inner], DType::F32);
        let stats = empty(out, [splits * batch * heads * q_count * 2], DType::F32);
        let groups = [
            q_count.div_ceil(layout.rows_per_group),
            layout.head_groups,
            groups_z,
        ];
        let split_shader = Shader::from(&shader);
        let partials = [Arg::new("partial", &partial), Arg::new("stats", &stats)];
        dispatch(
            split_shader,
            layout.workgroup,
            groups,
            inputs,
            &partials,
            &info,
        )?;
        let combine = Shader::<FlashAttentionCombineFile>::new(out.dtype);
        let combine_info =
            [batch, heads, head_dim, sq, q_begin, q_count, splits, 0].map(|v| v as u32);
        let grid = grid_1d((batch * q_count * inner).div_ceil(256));
        dispatch(
            combine,
            CubeDim::new_1d(256),
            grid,
            &partials,
            &[Arg::new("out", out)],
            &combine_info,
        )?;
    }
    Some(())
}
