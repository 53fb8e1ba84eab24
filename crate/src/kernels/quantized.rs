//! Linear and conv2d layers with q8_0/q4_0 weights (`shaders/quantized_linear.wgsl`,
//! `shaders/quantized_conv2d.wgsl`): they read the weights as they sit in GPU memory (burn's
//! packed-u32 values + f32 block scales) and dequantise inside the GEMM, so no dense copy of a
//! weight is ever written. burn's dequantise-then-matmul/conv is their oracle in
//! `tests/quantized.rs` and the path of `KernelPolicy::Burn`.

use burn::backend::wgpu::{
    CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::backend::{BackendTensor, DispatchKindConversion, DispatchTensor, Wgpu};
use burn::cubecl::ir::attributes::BufferIOAttr;
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::{KernelArguments, MetadataBindingInfo};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Shape, Tensor};

use super::launch::{fits_u32, info_words};
use crate::weights::QuantType;

/// Output tile of both kernels (64×64 per 16×16 workgroup).
const TILE: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    Linear,
    Conv2d,
}

/// One WGSL file specialised for a weight type and an activation dtype.
struct QuantizedKernel {
    op: Op,
    ty: QuantType,
    f16: bool,
}

impl KernelSource for QuantizedKernel {
    fn source(&self) -> SourceTemplate {
        let text = match self.op {
            Op::Linear => include_str!("../../../shaders/quantized_linear.wgsl"),
            Op::Conv2d => include_str!("../../../shaders/quantized_conv2d.wgsl"),
        };
        let bits = match self.ty {
            QuantType::Q8_0 => "8",
            QuantType::Q4_0 => "4",
        };
        SourceTemplate::new(text)
            .register("enable_f16", if self.f16 { "enable f16;" } else { "" })
            .register("elem", if self.f16 { "f16" } else { "f32" })
            .register("bits", bits)
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.op, self.ty, self.f16))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
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
    (values.is_contiguous() && scales.is_contiguous()).then_some((values, scales))
}

fn activation(x: Tensor<2>) -> Option<CubeTensor> {
    if !matches!(x.dtype(), DType::F32 | DType::F16) {
        return None;
    }
    Some(into_contiguous(x.try_into_primitive::<Wgpu>().ok()?))
}

/// The layer's bias as `[1, n]` in the activations' dtype (zeros for `bias=False` layers).
fn bias_or_zeros<const D: usize>(bias: Option<&Tensor<1>>, n: usize, x: &Tensor<D>) -> Tensor<2> {
    match bias {
        Some(b) => b.clone().cast(x.dtype()).reshape([1, n]),
        None => Tensor::<2>::zeros([1, n], &x.device()).cast(x.dtype()),
    }
}

/// Output shape, uniform sizes and workgroup count of one launch.
struct Dispatch {
    out_shape: Shape,
    info: Vec<u64>,
    groups: (usize, usize),
}

/// Binds input, packed values, scales, bias and a new output (bindings 0–4; CubeCL appends
/// the uniform `info` as binding 5) and enqueues the kernel.
fn launch(
    op: Op,
    ty: QuantType,
    input: &CubeTensor,
    (values, scales): &(CubeTensor, CubeTensor),
    bias: CubeTensor,
    Dispatch {
        out_shape,
        info,
        groups,
    }: Dispatch,
) -> CubeTensor {
    let client = input.client.clone();
    let elem_bytes = if input.dtype == DType::F16 { 2 } else { 4 };
    let out_handle = client.empty(out_shape.num_elements() * elem_bytes);
    let out = CubeTensor::new_contiguous(
        client.clone(),
        input.device.clone(),
        out_shape,
        out_handle,
        input.dtype,
    );
    let args = KernelArguments::new()
        .with_buffer_io(input.handle.clone().binding(), BufferIOAttr::ReadOnly)
        .with_buffer_io(values.handle.clone().binding(), BufferIOAttr::ReadOnly)
        .with_buffer_io(scales.handle.clone().binding(), BufferIOAttr::ReadOnly)
        .with_buffer_io(bias.handle.clone().binding(), BufferIOAttr::ReadOnly)
        .with_buffer_io(out.handle.clone().binding(), BufferIOAttr::WriteOnly)
        .with_info(MetadataBindingInfo::custom(info));
    let kernel = QuantizedKernel {
        op,
        ty,
        f16: input.dtype == DType::F16,
    };
    client.launch(
        Box::new(SourceKernel::new(kernel, CubeDim::new_2d(16, 16))),
        CubeCount::Static(groups.0 as u32, groups.1 as u32, 1),
        args,
    );
    out
}

/// `x · weightᵀ + bias` for `x: [M, K]` and a quantised `weight: [N, K]` (torch's Linear
/// layout). `bias` has N values in `x`'s dtype. None where the kernel does not apply (another
/// backend, sizes beyond u32): the caller falls back to dequantise + matmul.
pub fn quantized_linear(
    x: &Tensor<2>,
    weight: &Tensor<2>,
    ty: QuantType,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<2>> {
    let [m, k] = x.dims();
    let [n, wk] = weight.dims();
    if wk != k || k % crate::weights::quant::BLOCK != 0 || !fits_u32(&[m * k, n * k, m * n]) {
        return None;
    }
    let parts = quantized_parts(weight)?;
    let bias = activation(bias_or_zeros(bias, n, x))?;
    let input = activation(x.clone())?;
    let groups = (n.div_ceil(TILE), m.div_ceil(TILE));
    if groups.0 > 65535 || groups.1 > 65535 {
        return None;
    }
    let out = launch(
        Op::Linear,
        ty,
        &input,
        &parts,
        bias,
        Dispatch {
            out_shape: Shape::new([m, n]),
            info: info_words(&[m as u32, n as u32, k as u32]),
            groups,
        },
    );
    Some(Tensor::<2>::from_primitive::<Wgpu>(out))
}

/// NCHW conv2d (groups 1, dilation 1) with a quantised weight `[out, in·kh·kw]` whose logical
/// shape is `[out, in, kh, kw]`. None where the kernel does not apply.
pub fn quantized_conv2d(
    x: &Tensor<4>,
    weight: &Tensor<2>,
    weight_shape: [usize; 4],
    ty: QuantType,
    bias: Option<&Tensor<1>>,
    options: &ConvOptions<2>,
) -> Option<Tensor<4>> {
    let [batch, in_ch, in_h, in_w] = x.dims();
    let [out_ch, w_in, kernel_h, kernel_w] = weight_shape;
    if w_in != in_ch || options.groups != 1 || options.dilation != [1, 1] {
        return None;
    }
    let [(pad_top, pad_bottom), (pad_left, pad_right)] = options.padding;
    let [stride_h, stride_w] = options.stride;
    let span_h = in_h + pad_top + pad_bottom;
    let span_w = in_w + pad_left + pad_right;
    if span_h < kernel_h || span_w < kernel_w {
        return None;
    }
    let out_h = (span_h - kernel_h) / stride_h + 1;
    let out_w = (span_w - kernel_w) / stride_w + 1;
    let k = in_ch * kernel_h * kernel_w;
    let pixels = batch * out_h * out_w;
    if k % crate::weights::quant::BLOCK != 0
        || !fits_u32(&[batch * in_ch * in_h * in_w, out_ch * k, out_ch * pixels])
    {
        return None;
    }
    if !matches!(x.dtype(), DType::F32 | DType::F16) {
        return None;
    }
    let parts = quantized_parts(weight)?;
    let bias = activation(bias_or_zeros(bias, out_ch, x))?;
    let input = into_contiguous(x.clone().try_into_primitive::<Wgpu>().ok()?);
    let groups = (pixels.div_ceil(TILE), out_ch.div_ceil(TILE));
    if groups.0 > 65535 || groups.1 > 65535 {
        return None;
    }
    let info = info_words(&[
        batch, in_ch, in_h, in_w, out_ch, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w,
        pad_top, pad_left, k, pixels, 0,
    ]
    .map(|v| v as u32));
    let out = launch(
        Op::Conv2d,
        ty,
        &input,
        &parts,
        bias,
        Dispatch {
            out_shape: Shape::new([batch, out_ch, out_h, out_w]),
            info,
            groups,
        },
    );
    Some(Tensor::<4>::from_primitive::<Wgpu>(out))
}
