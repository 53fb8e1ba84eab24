//! How the GEMM-like kernels (`linear.wgsl`, `linear_gemv.wgsl`, `conv2d.wgsl`) read a layer
//! weight: dense f32/f16 rows, or q8_0/q4_0 blocks as they sit in GPU memory (burn's packed u32
//! words, lowest bits first, + one f32 scale per 32 values along a row), dequantised as they
//! load, so that no dense copy of a quantised weight is ever written.

use burn::backend::wgpu::CubeTensor;
use burn::backend::{BackendTensor, DispatchKindConversion, DispatchTensor, Wgpu};
use burn::tensor::{DType, Tensor};

use super::launch::{Arg, cube, wgsl_type};
use crate::weights::QuantType;
use crate::weights::quant::BLOCK;

/// A layer weight `[N, K]` (rows = output features, torch's layout).
#[derive(Clone, Copy)]
pub enum GemmWeight<'a> {
    Dense(&'a Tensor<2>),
    Quantized(&'a Tensor<2>, QuantType),
}

impl GemmWeight<'_> {
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Self::Dense(t) | Self::Quantized(t, _) => t.dims(),
        }
    }
}

/// A weight ready to bind: its tensors and the kernels' `w_load` body.
pub struct BoundWeight {
    values: CubeTensor,
    array: String,
    scales: Option<CubeTensor>,
    /// Body of `fn w_at(row, k) -> vec4<f32>` past the row check: 4 values along k.
    pub load: String,
}

impl BoundWeight {
    /// The weight's bindings: `weight` (and `scales` for quantised blocks).
    pub fn args(&self) -> Vec<Arg<'_>> {
        let mut args = vec![Arg::typed("weight", &self.values, self.array.clone())];
        if let Some(scales) = &self.scales {
            args.push(Arg::new("scales", scales));
        }
        args
    }
}

/// Binds `weight`; None where the kernels cannot read it (another backend, a quantised row
/// that is not whole blocks, a non-contiguous packing).
pub fn bind(weight: GemmWeight) -> Option<BoundWeight> {
    let [_, k] = weight.dims();
    match weight {
        GemmWeight::Dense(t) => {
            let values = cube(t)?;
            let vectorised = k % 4 == 0;
            Some(BoundWeight {
                array: vec4_array(wgsl_type(values.dtype), vectorised),
                load: vec4_load("weight", vectorised),
                values,
                scales: None,
            })
        }
        GemmWeight::Quantized(t, ty) => {
            if k % BLOCK != 0 {
                return None;
            }
            let (values, scales) = quantized_parts(t)?;
            Some(BoundWeight {
                array: "u32".into(),
                load: block_load(ty),
                values,
                scales: Some(scales),
            })
        }
    }
}

/// Body of a WGSL `fn name_at(row, k) -> vec4<f32>` reading 4 values of `array` along k (a
/// multiple of 4): one vec4 load when every row is vec4-aligned (K % 4 == 0), else four
/// checked scalar loads.
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
    if vectorised {
        format!("vec4<{elem}>")
    } else {
        elem.to_string()
    }
}

/// 4 consecutive values of a q8_0/q4_0 row (k % 4 == 0, so they share a word and a block):
/// signed BITS-bit integers times the block's scale.
fn block_load(ty: QuantType) -> String {
    let bits = match ty {
        QuantType::Q8_0 => 8,
        QuantType::Q4_0 => 4,
    };
    let per_word = 32 / bits;
    format!(
        "if (k >= info.k) {{ return vec4<f32>(0.0); }} \
         let flat = row * info.k + k; \
         let word = bitcast<i32>(weight[flat / {per_word}u]); \
         let first = (flat % {per_word}u) * {bits}u; \
         return vec4<f32>(f32(extractBits(word, first, {bits}u)), f32(extractBits(word, first + {bits}u, {bits}u)), \
         f32(extractBits(word, first + {b2}u, {bits}u)), f32(extractBits(word, first + {b3}u, {bits}u))) * scales[flat / {BLOCK}u];",
        b2 = 2 * bits,
        b3 = 3 * bits,
    )
}

/// The weight's packed values and block scales, or None off the wgpu backend.
fn quantized_parts(weight: &Tensor<2>) -> Option<(CubeTensor, CubeTensor)> {
    let backend = <DispatchTensor as DispatchKindConversion<Wgpu>>::try_into_backend(
        weight.clone().into_dispatch(),
    )
    .ok()?;
    let BackendTensor::Quantized(q) = backend else {
        return None;
    };
    // The kernels index the packed words row-major (a transposed view would not be).
    let (values, scales) = q.quantized_handles()?;
    (values.is_contiguous() && scales.is_contiguous() && scales.dtype == DType::F32)
        .then_some((values, scales))
}
