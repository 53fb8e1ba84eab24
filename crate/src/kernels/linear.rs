//! Dense linear layers: `shaders/linear.wgsl` (register-tiled GEMM) and
//! `shaders/linear_gemv.wgsl` (a few rows).

use burn::cubecl::CubeDim;
use burn::tensor::{DType, Tensor};

use super::launch::{ShaderFile, Shader, cube, dispatch, empty, fits_u32, on_cpu_adapter, tensor};
use super::tiles::Tiles;

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

/// Body of a WGSL `fn name_at(row, k) -> vec4<f32>` reading 4 values of `array` along k:
/// one vec4 load when every row is vec4-aligned (K % 4 == 0), else four checked scalar loads.
pub fn vec4_load(array: &str, vectorised: bool) -> String {
    if vectorised {
        format!(
            "if (k >= info.k) {{ return vec4<f32>(0.0); }} return vec4<f32>({array}[(row * info.k + k) / 4u]);"
        )
    } else {
        format!(
            "var v = vec4<f32>(0.0); for (var j = 0u; j < 4u; j++) {{ if (k + j < info.k) {{ v[j] = f32({array}[row * info.k + k + j]); }} }} return v;"
        )
    }
}

/// The WGSL element type of an array read by [`vec4_load`].
pub fn vec4_array(elem: &str, vectorised: bool) -> String {
    if vectorised { format!("vec4<{elem}>") } else { elem.to_string() }
}

/// `x · weightᵀ + bias (+ residual)` for `x: [M, K]`, a dense `weight: [N, K]` (torch's layout,
/// f32 or f16, whatever `x`'s dtype) and `bias: [N]`; `residual` is `[M, N]`. The result has
/// `x`'s dtype. None where the kernels do not apply (another backend, sizes beyond u32).
pub fn linear(
    x: &Tensor<2>,
    weight: &Tensor<2>,
    bias: &Tensor<1>,
    residual: Option<&Tensor<2>>,
) -> Option<Tensor<2>> {
    let [m, k] = x.dims();
    let [n, wk] = weight.dims();
    if wk != k || bias.dims() != [n] || !fits_u32(&[m * k, n * k, m * n]) {
        return None;
    }
    let input = cube(x)?;
    let weight = cube(weight)?;
    let dtype = input.dtype;
    let bias = cube(&bias.clone().cast(dtype))?;
    let residual = match residual {
        Some(r) if r.dims() != [m, n] => return None,
        Some(r) => Some(cube(&r.clone().cast(dtype))?),
        None => None,
    };
    let out = empty(&input, [m, n], dtype);
    let vectorised = k % 4 == 0;
    let elem = super::launch::wgsl_type(dtype);
    let welem = super::launch::wgsl_type(weight.dtype);
    let gemv = m <= GEMV_MAX_ROWS;
    let (tiles, groups) = if gemv {
        (None, [n.div_ceil(8), 1, 1])
    } else {
        let tiles = Tiles::for_gemm(m, n, on_cpu_adapter(&input));
        (Some(tiles), [n.div_ceil(tiles.cols()), m.div_ceil(tiles.rows()), 1])
    };
    let mut inputs = vec![&input, &weight, &bias];
    if let Some(r) = &residual {
        inputs.push(r);
    }
    let info = [m as u32, n as u32, k as u32, 0];
    let params = LoadParams {
        residual: residual.is_some(),
        weight: weight.dtype,
        x_array: vec4_array(elem, vectorised),
        w_array: vec4_array(welem, vectorised),
        x_load: vec4_load("x", vectorised),
        w_load: vec4_load("weight", vectorised),
    };
    if let Some(tiles) = tiles {
        let shader = tiles.params(params.apply(Shader::<LinearFile>::new(dtype)));
        dispatch(shader, CubeDim::new_2d(16, 16), groups, &inputs, &[&out], &info)?;
    } else {
        let shader = params.apply(Shader::<LinearGemvFile>::new(dtype));
        dispatch(shader, CubeDim::new_1d(256), groups, &inputs, &[&out], &info)?;
    }
    debug_assert_eq!(out.dtype, dtype);
    Some(tensor(out))
}

/// The template parameters both linear kernels share.
struct LoadParams {
    residual: bool,
    weight: DType,
    x_array: String,
    w_array: String,
    x_load: String,
    w_load: String,
}

impl LoadParams {
    fn apply<F: ShaderFile>(&self, shader: Shader<F>) -> Shader<F> {
        residual_bindings(shader, self.residual, 3)
            .with_type("welem", self.weight)
            .with("x_array", &self.x_array)
            .with("w_array", &self.w_array)
            .with("x_load", &self.x_load)
            .with("w_load", &self.w_load)
    }
}

/// The `residual_binding`/`residual_add`/`out_binding`/`info_binding` parameters of a kernel
/// whose optional residual input would be binding `at`.
pub fn residual_bindings<F: ShaderFile>(shader: Shader<F>, residual: bool, at: u32) -> Shader<F> {
    let (binding, add, out) = if residual {
        (
            format!("@group(0) @binding({at}) var<storage, read_write> residual: array<Elem>;"),
            " + f32(residual[at])".to_string(),
            at + 1,
        )
    } else {
        (String::new(), String::new(), at)
    };
    shader
        .with("residual_binding", binding)
        .with("residual_add", add)
        .with("out_binding", out)
        .with("info_binding", out + 1)
}
