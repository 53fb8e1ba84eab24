//! GroupNorm (+ SiLU), LayerNorm and GEGLU: `shaders/group_norm_stats.wgsl`,
//! `shaders/group_norm.wgsl`, `shaders/layer_norm.wgsl`, `shaders/geglu.wgsl`.

use burn::cubecl::CubeDim;
use burn::tensor::{DType, Tensor};

use super::launch::{
    Arg, Shader, ShaderFile, cube, dispatch, empty, fits_u32, grid_1d, on_cpu_adapter, tensor,
};

pub struct GroupNormStatsFile;
impl ShaderFile for GroupNormStatsFile {
    const TEXT: &'static str = include_str!("../../../shaders/group_norm_stats.wgsl");
}

pub struct GroupNormFile;
impl ShaderFile for GroupNormFile {
    const TEXT: &'static str = include_str!("../../../shaders/group_norm.wgsl");
}

pub struct LayerNormFile;
impl ShaderFile for LayerNormFile {
    const TEXT: &'static str = include_str!("../../../shaders/layer_norm.wgsl");
}

pub struct LayerNormRowsFile;
impl ShaderFile for LayerNormRowsFile {
    const TEXT: &'static str = include_str!("../../../shaders/layer_norm_rows.wgsl");
}

pub struct GegluFile;
impl ShaderFile for GegluFile {
    const TEXT: &'static str = include_str!("../../../shaders/geglu.wgsl");
}

/// Values one statistics workgroup reduces at least (64 per lane), and the most triples a group
/// may have (the apply kernel combines them with one lane each).
const VALUES_PER_STATS_GROUP: usize = 16384;
const MAX_TRIPLES: usize = 256;
/// Values one apply workgroup normalises (16 per lane).
const VALUES_PER_APPLY_GROUP: usize = 4096;

/// GroupNorm over bands of rows of one `[N, C, H, W]` tensor (one band: the whole tensor), the
/// statistics over every band, each band normalised (then `silu`'d if asked) on its own.
/// None where the kernels do not apply.
pub fn group_norm(
    bands: &[Tensor<4>],
    groups: usize,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    eps: f64,
    silu: bool,
) -> Option<Vec<Tensor<4>>> {
    let [n, c, _, w] = bands.first()?.dims();
    if groups == 0 || c % groups != 0 || bands.len() > MAX_TRIPLES {
        return None;
    }
    let dtype = bands[0].dtype();
    let same = |b: &Tensor<4>| {
        let [bn, bc, _, bw] = b.dims();
        (bn, bc, bw) == (n, c, w) && b.dtype() == dtype
    };
    if !bands.iter().all(same) {
        return None;
    }
    let cubes = bands.iter().map(cube).collect::<Option<Vec<_>>>()?;
    let per_group = c / groups;
    let lens: Vec<usize> = bands.iter().map(|b| per_group * b.dims()[2] * w).collect();
    let longest = *lens.iter().max()?;
    if !fits_u32(&[n * c * longest / per_group.max(1)]) {
        return None;
    }
    let parts = longest
        .div_ceil(VALUES_PER_STATS_GROUP)
        .clamp(1, MAX_TRIPLES / bands.len());
    let total = n * groups;
    let stats = empty(&cubes[0], [bands.len() * total * parts * 3], DType::F32);
    for (band, (x, &len)) in cubes.iter().zip(&lens).enumerate() {
        let shader = Shader::<GroupNormStatsFile>::new(dtype);
        let info = [len, parts, total, band].map(|v| v as u32);
        let (x, out) = ([Arg::new("x", x)], [Arg::new("stats", &stats)]);
        dispatch(
            shader,
            CubeDim::new_1d(256),
            [parts, total, 1],
            &x,
            &out,
            &info,
        )?;
    }
    let gamma = cube(&gamma.clone().cast(dtype))?;
    let beta = cube(&beta.clone().cast(dtype))?;
    let mut outputs = Vec::with_capacity(bands.len());
    for ((x, &len), band) in cubes.iter().zip(&lens).zip(bands) {
        let out = empty(x, band.dims(), dtype);
        let shader = Shader::<GroupNormFile>::new(dtype).with("silu", silu);
        let info = [
            len as u32,
            (len / per_group) as u32,
            per_group as u32,
            groups as u32,
            total as u32,
            (bands.len() * parts) as u32,
            parts as u32,
            VALUES_PER_APPLY_GROUP as u32,
            (eps as f32).to_bits(),
            0,
            0,
            0,
        ];
        let grid = [len.div_ceil(VALUES_PER_APPLY_GROUP), total, 1];
        let inputs = [
            Arg::new("x", x),
            Arg::new("stats", &stats),
            Arg::new("gamma", &gamma),
            Arg::new("beta", &beta),
        ];
        dispatch(
            shader,
            CubeDim::new_1d(256),
            grid,
            &inputs,
            &[Arg::new("out", &out)],
            &info,
        )?;
        outputs.push(tensor(out));
    }
    Some(outputs)
}

/// Longest row the (GPU) LayerNorm kernel keeps in registers (64 lanes × 32 values).
const MAX_LAYER_NORM_DIM: usize = 2048;

/// LayerNorm over the last dimension, statistics in f32; the result has `x`'s dtype.
pub fn layer_norm<const D: usize>(
    x: &Tensor<D>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    eps: f64,
) -> Option<Tensor<D>> {
    let dims = x.dims();
    let dim = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    if dim == 0 || dim > MAX_LAYER_NORM_DIM || gamma.dims() != [dim] || !fits_u32(&[rows * dim]) {
        return None;
    }
    let input = cube(x)?;
    let dtype = input.dtype;
    let gamma = cube(&gamma.clone().cast(dtype))?;
    let beta = cube(&beta.clone().cast(dtype))?;
    let out = empty(&input, dims, dtype);
    let info = [rows as u32, dim as u32, (eps as f32).to_bits(), 0];
    let inputs = [
        Arg::new("x", &input),
        Arg::new("gamma", &gamma),
        Arg::new("beta", &beta),
    ];
    let outputs = [Arg::new("out", &out)];
    // A workgroup per row on GPUs; a row per invocation on CPU adapters, where a barrier costs
    // a context switch per lane group.
    if on_cpu_adapter(&input) {
        let shader = Shader::<LayerNormRowsFile>::new(dtype);
        dispatch(
            shader,
            CubeDim::new_1d(64),
            grid_1d(rows.div_ceil(64)),
            &inputs,
            &outputs,
            &info,
        )?;
    } else {
        let shader = Shader::<LayerNormFile>::new(dtype);
        dispatch(
            shader,
            CubeDim::new_1d(64),
            grid_1d(rows),
            &inputs,
            &outputs,
            &info,
        )?;
    }
    Some(tensor(out))
}

/// GEGLU on a `[.., 2·inner]` projection: `hidden · gelu(gate)` → `[.., inner]`.
pub fn geglu<const D: usize>(h: &Tensor<D>) -> Option<Tensor<D>> {
    let mut dims = h.dims();
    let width = dims[D - 1];
    if width % 2 != 0 {
        return None;
    }
    let inner = width / 2;
    let rows: usize = dims[..D - 1].iter().product();
    if !fits_u32(&[rows * width]) {
        return None;
    }
    let input = cube(h)?;
    dims[D - 1] = inner;
    let out = empty(&input, dims, input.dtype);
    let info = [rows as u32, inner as u32, 0, 0];
    let shader = Shader::<GegluFile>::new(input.dtype);
    let grid = grid_1d((rows * inner).div_ceil(256));
    dispatch(
        shader,
        CubeDim::new_1d(256),
        grid,
        &[Arg::new("h", &input)],
        &[Arg::new("out", &out)],
        &info,
    )?;
    Some(tensor(out))
}
