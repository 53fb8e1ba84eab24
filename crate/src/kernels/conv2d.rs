//! 2-D convolution as an implicit GEMM (`shaders/conv2d.wgsl`), for dense and q8_0/q4_0
//! weights (`weight.rs`), with the epilogues diffusers' blocks need: a per-(image, channel) term
//! (the ResNet time embedding), a residual, and nearest-2× upsampling of the input (Upsample2D)
//! folded into the gather.

use burn::cubecl::CubeDim;
use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;

use super::launch::{
    Arg, Shader, ShaderFile, cube, dispatch, empty, fits_u32, on_cpu_adapter, tensor,
};
use super::tiles::Tiles;
use super::weight::{GemmWeight, bind};

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

/// NCHW conv2d (groups 1, dilation 1, equal strides) with a weight `[out, in · kh · kw]` (torch's
/// `[out, in, kh, kw]` flattened; dense f32/f16 whatever `x`'s dtype, or q8_0/q4_0) and
/// `bias: [out]`. None where the kernel does not apply.
pub fn conv2d(
    x: &Tensor<4>,
    weight: GemmWeight,
    kernel: [usize; 2],
    bias: &Tensor<1>,
    options: &ConvOptions<2>,
    epilogue: ConvEpilogue,
) -> Option<Tensor<4>> {
    conv2d_with(None, x, weight, kernel, bias, options, epilogue)
}

/// [`conv2d`] with given tiles (None: the shape rule; tests run every tile on one adapter).
pub fn conv2d_with(
    tiles: Option<Tiles>,
    x: &Tensor<4>,
    weight: GemmWeight,
    [kernel_h, kernel_w]: [usize; 2],
    bias: &Tensor<1>,
    options: &ConvOptions<2>,
    epilogue: ConvEpilogue,
) -> Option<Tensor<4>> {
    let [batch, in_ch, h, w] = x.dims();
    let [out_ch, k] = weight.dims();
    let [stride, stride_w] = options.stride;
    if k != in_ch * kernel_h * kernel_w
        || options.groups != 1
        || options.dilation != [1, 1]
        || stride != stride_w
    {
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
    let pixels = batch * out_h * out_w;
    if !fits_u32(&[batch * in_ch * in_h * in_w, out_ch * k, out_ch * pixels]) {
        return None;
    }
    let input = cube(x)?;
    let dtype = input.dtype;
    let weight = bind(weight)?;
    let bias = cube(&bias.clone().cast(dtype))?;
    let channel_bias = match epilogue.channel_bias {
        Some(t) if t.dims() != [batch, out_ch] => return None,
        Some(t) => Some(cube(&t.clone().cast(dtype))?),
        None => None,
    };
    let residual = match epilogue.residual {
        Some(r) if r.dims() != [batch, out_ch, out_h, out_w] => return None,
        Some(r) => Some(cube(&r.clone().cast(dtype))?),
        None => None,
    };
    let mut inputs = vec![Arg::new("input", &input)];
    inputs.extend(weight.args());
    inputs.push(Arg::new("bias", &bias));
    let mut terms = String::new();
    if let Some(t) = &channel_bias {
        inputs.push(Arg::new("temb", t));
        terms += " + f32(temb[image * info.out_ch + oc])";
    }
    if let Some(r) = &residual {
        inputs.push(Arg::new("residual", r));
        terms += " + f32(residual[at])";
    }
    let out = empty(&input, [batch, out_ch, out_h, out_w], dtype);
    let tiles = tiles.unwrap_or_else(|| Tiles::for_gemm(out_ch, pixels, on_cpu_adapter(&input)));
    let shader = tiles
        .params(Shader::<Conv2dFile>::new(dtype))
        .with("w_load", &weight.load)
        .with("kh", kernel_h)
        .with("kw", kernel_w)
        .with("stride", stride)
        .with("upsample", epilogue.upsample)
        .with("epilogue", terms);
    let info = [
        batch, in_ch, in_h, in_w, out_ch, out_h, out_w, pad_top, pad_left, k, pixels, 0,
    ]
    .map(|v| v as u32);
    let groups = [
        pixels.div_ceil(tiles.cols()),
        out_ch.div_ceil(tiles.rows()),
        1,
    ];
    dispatch(
        shader,
        CubeDim::new_2d(16, 16),
        groups,
        &inputs,
        &[Arg::new("out", &out)],
        &info,
    )?;
    Some(tensor(out))
}
