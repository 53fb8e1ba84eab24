//! Flash attention (`shaders/flash_attention.wgsl`): softmax(q·kᵀ/√d)·v per head, the score
//! matrix never written, on token rows as the projections produce them.

use burn::cubecl::CubeDim;
use burn::tensor::Tensor;

use burn::backend::wgpu::CubeTensor;
use burn::tensor::DType;

use super::launch::{ShaderFile, Shader, cube, dispatch, empty, fits_u32, grid_1d, on_cpu_adapter, tensor};

pub struct FlashAttentionFile;
impl ShaderFile for FlashAttentionFile {
    const TEXT: &'static str = include_str!("../../../shaders/flash_attention.wgsl");
}

/// Head dims the kernel takes (a q·kᵀ step holds at least one dim per row in workgroup
/// memory). SD uses 40, 64, 80, 160 (UNet, CLIP) and 512 (the VAE's single head).
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

/// Output dims one workgroup computes: wider heads are split across workgroups (each lane
/// then accumulates at most 8 vec4: see the kernel's `o`).
const MAX_OUTPUT_DIMS: usize = 256;

/// Query rows per lane (and so per workgroup: 16×): 4 while a lane's accumulator (rows × a
/// 4-dim group per 64 output dims) stays at most 12 vec4, else 2.
fn rows_per_lane(output_dims: usize) -> usize {
    if output_dims <= 192 { 4 } else { 2 }
}

/// Head dims per q·kᵀ step: as many as fit next to the q rows and the k block in the 1536
/// floats of workgroup memory the kernel reserves for them.
fn dims_per_step(head_dim: usize, rows: usize) -> usize {
    head_dim.min(1536 / (rows + 32))
}

/// Keys one workgroup covers on CPU adapters. llvmpipe (lavapipe) ends every loop of an
/// invocation once 65535 loop iterations have run in it (Mesa's loop limiter); a workgroup of
/// 512 keys stays under a third of that for every head dim up to MAX_HEAD_DIM. GPUs take
/// all keys in one workgroup.
const CPU_SPLIT_KEYS: usize = 512;

/// Bytes of f32 partials one split launch writes at most (well within a 128 MiB binding):
/// longer query ranges run as several launches.
const MAX_PARTIAL_BYTES: usize = 32 << 20;

pub struct FlashAttentionCombineFile;
impl ShaderFile for FlashAttentionCombineFile {
    const TEXT: &'static str = include_str!("../../../shaders/flash_attention_combine.wgsl");
}

/// softmax(q·kᵀ·scale)·v with `heads` heads of `head_dim` (scale 1/√head_dim), causal
/// (CLIP's text encoder) or not, as `[B, Sq, heads · head_dim]` in q's dtype. None where the
/// kernel does not apply.
pub fn flash_attention(
    q: Heads,
    k: Heads,
    v: Heads,
    heads: usize,
    head_dim: usize,
    causal: bool,
) -> Option<Tensor<3>> {
    let [batch, sq, q_width] = q.tokens.dims();
    let [kb, sk, k_width] = k.tokens.dims();
    let [vb, vs, v_width] = v.tokens.dims();
    let inner = heads * head_dim;
    let fits = |h: &Heads, width: usize| h.column + inner <= width;
    if kb != batch || vb != batch || vs != sk || sk == 0 || sq == 0 || head_dim == 0
        || head_dim > MAX_HEAD_DIM
        || !(fits(&q, q_width) && fits(&k, k_width) && fits(&v, v_width))
        || (causal && sq != sk)
        || !fits_u32(&[batch * sq * q_width, batch * sk * k_width, batch * sk * v_width])
    {
        return None;
    }
    let qc = cube(q.tokens)?;
    let dtype = qc.dtype;
    let kc = cube(&k.tokens.clone().cast(dtype))?;
    let vc = cube(&v.tokens.clone().cast(dtype))?;
    let out = empty(&qc, [batch, sq, inner], dtype);
    let output_dims = head_dim.min(MAX_OUTPUT_DIMS);
    let rows = rows_per_lane(output_dims);
    let split_keys = if on_cpu_adapter(&qc) { CPU_SPLIT_KEYS } else { sk.next_multiple_of(32) };
    let splits = sk.div_ceil(split_keys);
    let launch = Launch {
        shader: Shader::<FlashAttentionFile>::new(dtype)
            .with("d", head_dim)
            .with("dv", output_dims)
            .with("rpt", rows)
            .with("dc", dims_per_step(head_dim, 16 * rows)),
        info: [
            batch,
            heads,
            sq,
            sk,
            q.column,
            q_width,
            k.column,
            k_width,
            v.column,
            v_width,
            0,
            causal as usize,
            0,
            sq,
            split_keys,
            splits,
        ]
        .map(|v| v as u32),
        groups: [0, heads * head_dim.div_ceil(output_dims), batch * splits],
        rows_per_group: 16 * rows,
    };
    let mut launch = launch;
    launch.info[10] = ((1.0 / (head_dim as f64).sqrt()) as f32).to_bits();
    let inputs = [&qc, &kc, &vc];
    if splits == 1 {
        launch.whole(&inputs, &out)?;
    } else {
        let row_bytes = splits * batch * inner * 4;
        let chunk = (MAX_PARTIAL_BYTES / row_bytes).max(1).next_multiple_of(launch.rows_per_group);
        for q_begin in (0..sq).step_by(chunk) {
            launch.split(&inputs, &out, q_begin, chunk.min(sq - q_begin), head_dim)?;
        }
    }
    Some(tensor(out))
}

/// One flash-attention launch configuration; `info` is the kernel's uniform.
struct Launch {
    shader: Shader<FlashAttentionFile>,
    info: [u32; 16],
    groups: [usize; 3],
    rows_per_group: usize,
}

impl Launch {
    fn whole(self, inputs: &[&CubeTensor; 3], out: &CubeTensor) -> Option<()> {
        let [_, _, sq, ..] = self.info;
        let shader = self
            .shader
            .with("out_bindings", "@group(0) @binding(3) var<storage, read_write> out: array<Elem>;\n@group(0) @binding(4) var<uniform> info: Info;")
            .with("store", "out[(b * info.sq + query) * width + head * D + dd] = Elem(o[i * G + g][e] / row_sum[row]);")
            .with("store_stats", "");
        let groups = [(sq as usize).div_ceil(self.rows_per_group), self.groups[1], self.groups[2]];
        dispatch(shader, CubeDim::new_2d(16, 16), groups, inputs, &[out], &self.info)
    }

    /// Query rows `[q_begin, q_begin + q_count)`: partials per key range, then their merge.
    fn split(
        &self,
        inputs: &[&CubeTensor; 3],
        out: &CubeTensor,
        q_begin: usize,
        q_count: usize,
        head_dim: usize,
    ) -> Option<()> {
        let [batch, heads, sq, .., splits] = self.info.map(|v| v as usize);
        let mut info = self.info;
        info[12] = q_begin as u32;
        info[13] = q_count as u32;
        let inner = heads * head_dim;
        let partial = empty(out, [splits * batch * q_count * inner], DType::F32);
        let stats = empty(out, [splits * batch * heads * q_count * 2], DType::F32);
        let shader = Shader::<FlashAttentionFile>::from(&self.shader)
            .with("out_bindings", "@group(0) @binding(3) var<storage, read_write> partial: array<f32>;\n@group(0) @binding(4) var<storage, read_write> stats: array<f32>;\n@group(0) @binding(5) var<uniform> info: Info;")
            .with("store", "partial[((split * info.batch + b) * info.q_count + query - info.q_begin) * width + head * D + dd] = o[i * G + g][e];")
            .with("store_stats", "let at = ((split * info.batch + b) * info.heads + head) * info.q_count + query - info.q_begin; stats[2u * at] = row_max[row]; stats[2u * at + 1u] = row_sum[row];");
        let groups = [q_count.div_ceil(self.rows_per_group), self.groups[1], self.groups[2]];
        dispatch(shader, CubeDim::new_2d(16, 16), groups, inputs, &[&partial, &stats], &info)?;
        let combine = Shader::<FlashAttentionCombineFile>::new(out.dtype);
        let combine_info = [batch, heads, head_dim, sq, q_begin, q_count, splits, 0].map(|v| v as u32);
        let grid = grid_1d((batch * q_count * inner).div_ceil(256));
        dispatch(combine, CubeDim::new_1d(256), grid, &[&partial, &stats], &[out], &combine_info)
    }
}
