//! Linear layers: `shaders/linear.wgsl` (register-tiled GEMM) and `shaders/linear_gemv.wgsl`
//! (a few rows), for dense and q8_0/q4_0 weights alike (`weight.rs`).

use burn::cubecl::CubeDim;
use burn::tensor::Tensor;

use super::launch::{
    Arg, Shader, ShaderFile, cube, dispatch, empty, fits_u32, on_cpu_adapter, tensor, wgsl_type,
};
use super::tiles::Tiles;
use super::weight::{GemmWeight, bind, vec4_array, vec4_load};

pub struct LinearFile;
impl ShaderFile for LinearFile {
    const TEXT: &'static str = include_str!("../../../shaders/linear.wgsl");
}

pub struct LinearGemvFile;
impl ShaderFile for LinearGemvFile {
    const TEXT: &'static str = include_str!("../../../shaders/linear_gemv.wgsl");
}

/// Rows up to which the GEMV kernel runs (its accumulator array's size).
pub const GEMV_MAX_ROWS: usize = 8;

/// `x · weightᵀ + bias (+ residual)` for `x: [M, K]`, a weight `[N, K]` (torch's layout; dense
/// f32/f16 whatever `x`'s dtype, or q8_0/q4_0) and `bias: [N]`; `residual` is `[M, N]`. The
/// result has `x`'s dtype. None where the kernels do not apply (another backend, sizes beyond
/// u32, a quantised row that is not whole blocks).
pub fn linear(
    x: &Tensor<2>,
    weight: GemmWeight,
    bias: &Tensor<1>,
    residual: Option<&Tensor<2>>,
) -> Option<Tensor<2>> {
    linear_with(None, x, weight, bias, residual)
}

/// [`linear`] with given GEMM tiles (None: the shape rule; tests run every tile on one adapter).
/// The GEMV kernel takes M ≤ [`GEMV_MAX_ROWS`] either way.
pub fn linear_with(
    tiles: Option<Tiles>,
    x: &Tensor<2>,
    weight: GemmWeight,
    bias: &Tensor<1>,
    residual: Option<&Tensor<2>>,
) -> Option<Tensor<2>> {
    let [m, k] = x.dims();
    let [n, wk] = weight.dims();
    if wk != k || bias.dims() != [n] || !fits_u32(&[m * k, n * k, m * n]) {
        return None;
    }
    let input = cube(x)?;
    let dtype = input.dtype;
    let weight = bind(weight)?;
    let bias = cube(&bias.clone().cast(dtype))?;
    let residual = match residual {
        Some(r) if r.dims() != [m, n] => return None,
        Some(r) => Some(cube(&r.clone().cast(dtype))?),
        None => None,
    };
    let out = empty(&input, [m, n], dtype);
    let vectorised = k % 4 == 0;
    let mut inputs = vec![Arg::typed(
        "x",
        &input,
        vec4_array(wgsl_type(dtype), vectorised),
    )];
    inputs.extend(weight.args());
    inputs.push(Arg::new("bias", &bias));
    if let Some(r) = &residual {
        inputs.push(Arg::new("residual", r));
    }
    let residual_add = if residual.is_some() {
        " + f32(residual[at])"
    } else {
        ""
    };
    let info = [m as u32, n as u32, k as u32, 0];
    let outputs = [Arg::new("out", &out)];
    if m <= GEMV_MAX_ROWS {
        let shader = Shader::<LinearGemvFile>::new(dtype)
            .with("x_load", vec4_load("x", vectorised))
            .with("w_load", &weight.load)
            .with("residual_add", residual_add);
        dispatch(
            shader,
            CubeDim::new_1d(256),
            [n.div_ceil(8), 1, 1],
            &inputs,
            &outputs,
            &info,
        )?;
    } else {
        let tiles = tiles.unwrap_or_else(|| Tiles::for_gemm(m, n, on_cpu_adapter(&input)));
        let shader = tiles
            .params(Shader::<LinearFile>::new(dtype))
            .with("x_load", vec4_load("x", vectorised))
            .with("w_load", &weight.load)
            .with("residual_add", residual_add);
        let groups = [n.div_ceil(tiles.cols()), m.div_ceil(tiles.rows()), 1];
        dispatch(
            shader,
            CubeDim::new_2d(16, 16),
            groups,
            &inputs,
            &outputs,
            &info,
        )?;
    }
    Some(tensor(out))
}
