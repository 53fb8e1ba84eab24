//! Dense 2-D convolution as an implicit GEMM (`shaders/conv2d.wgsl`), with the epilogues
//! diffusers' blocks need: a per-(image, channel) term (the ResNet time embedding), a residual,
//! and nearest-2× upsampling of the input (Upsample2D) folded into the gather.

use burn::cubecl::CubeDim;
use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;

use super::launch::{ShaderFile, Shader, cube, dispatch, empty, fits_u32, on_cpu_adapter, tensor, wgsl_type};
use super::linear::{vec4_array, vec4_load};
use super::tiles::Tiles;

pub struct Conv2dFile;
impl ShaderFile for Conv2dFile {
    const TEXT: &'static str = include_str!("../../../shaders/conv2d.wgsl");
}

/// What is added to the convolution's output, and how its input is read.
#[derive(Clone, Copy, Default)]
pub struct ConvEpilogue<'a> {
    /// `[N, out_ch]`, added to every pixel of (image, channel).
    pub channel_bias: Option<&'a Tensor<2>>,
    /// Of the output's shape, added elementwise.
    pub residual: Option<&'a Tensor<4>>,
    /// Read the input as if nearest-2× upsampled (output of size 2H × 2W for stride 1).
    pub upsample: bool,
}

/// NCHW conv2d (groups 1, dilation 1, equal strides) with a dense `weight: [out, in, kh, kw]`
/// in f32 or f16 whatever `x`'s dtype. None where the kernel does not apply.
pub fn conv2d(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    bias: &Tensor<1>,
    options: &ConvOptions<2>,
    epilogue: ConvEpilogue,
) -> Option<Tensor<4>> {
    let [batch, in_ch, h, w] = x.dims();
    let [out_ch, w_in, kernel_h, kernel_w] = weight.dims();
    let [stride, stride_w] = options.stride;
    if w_in != in_ch || options.groups != 1 || options.dilation != [1, 1] || stride != stride_w {
        return None;
    }
    let scale = if epilogue.upsample { 2 } else { 1 };
    let (in_h, in_w) = (h * scale, w * scale);
    let [(pad_top, pad_bottom), (pad_left, pad_right)] = options.padding;
    let (span_h, span_w) = (in_h + pad_top + pad_bottom, in_w + pad_left + pad_right);
    if span_h < kernel_h || span_w < kernel_w {
        return None;
    }
    let out_h = (span_h - kernel_h) / stride + 1;
    let out_w = (span_w - kernel_w) / stride + 1;
    let k = in_ch * kernel_h * kernel_w;
    let pixels = batch * out_h * out_w;
    if !fits_u32(&[batch * in_ch * in_h * in_w, out_ch * k, out_ch * pixels]) {
        return None;
    }
    let input = cube(x)?;
    let dtype = input.dtype;
    let weight = cube(&weight.clone().reshape([out_ch, k]))?;
    let mut inputs = vec![input.clone(), weight.clone(), cube(&bias.clone().cast(dtype))?];
    let mut extra = String::new();
    let mut terms = String::new();
    if let Some(t) = epilogue.channel_bias {
        if t.dims() != [batch, out_ch] {
            return None;
        }
        extra += &format!("@group(0) @binding({}) var<storage, read_write> temb: array<Elem>;\n", inputs.len());
        terms += " + f32(temb[image * info.out_ch + oc])";
        inputs.push(cube(&t.clone().cast(dtype))?);
    }
    if let Some(r) = epilogue.residual {
        if r.dims() != [batch, out_ch, out_h, out_w] {
            return None;
        }
        extra += &format!("@group(0) @binding({}) var<storage, read_write> residual: array<Elem>;\n", inputs.len());
        terms += " + f32(residual[at])";
        inputs.push(cube(&r.clone().cast(dtype))?);
    }
    let out = empty(&input, [batch, out_ch, out_h, out_w], dtype);
    let tiles = Tiles::for_gemm(out_ch, pixels, on_cpu_adapter(&input));
    let vectorised = k % 4 == 0;
    let shader = tiles
        .params(Shader::<Conv2dFile>::new(dtype))
        .with_type("welem", weight.dtype)
        .with("w_array", vec4_array(wgsl_type(weight.dtype), vectorised))
        .with("w_load", vec4_load("weight", vectorised))
        .with("kh", kernel_h)
        .with("kw", kernel_w)
        .with("stride", stride)
        .with("upsample", epilogue.upsample)
        .with("extra_bindings", extra)
        .with("epilogue", terms)
        .with("out_binding", inputs.len())
        .with("info_binding", inputs.len() + 1);
    let info = [
        batch, in_ch, in_h, in_w, out_ch, out_h, out_w, pad_top, pad_left, k, pixels, 0,
    ]
    .map(|v| v as u32);
    let groups = [pixels.div_ceil(tiles.cols()), out_ch.div_ceil(tiles.rows()), 1];
    let refs: Vec<&_> = inputs.iter().collect();
    dispatch(shader, CubeDim::new_2d(16, 16), groups, &refs, &[&out], &info)?;
    Some(tensor(out))
}
