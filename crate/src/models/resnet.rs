//! diffusers' ResnetBlock2D (pre-norm, "default" time embedding), Downsample2D, Upsample2D.

use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;

use super::nn::{Conv2d, GroupNorm, Linear, upsample_nearest_2x};
use super::row_bands::RowBands;
use crate::kernels::ConvEpilogue;
use crate::weights::{WeightError, Weights};

pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    /// `temb_channels` None for the VAE's blocks, which have no time embedding.
    pub fn load(
        w: &Weights,
        in_ch: usize,
        out_ch: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            norm1: GroupNorm::load(&w.pp("norm1"), groups, in_ch, eps)?,
            conv1: Conv2d::load(&w.pp("conv1"), in_ch, out_ch, 3, 1, 1)?,
            time_emb_proj: temb_channels
                .map(|t| Linear::load(&w.pp("time_emb_proj"), t, out_ch, true))
                .transpose()?,
            norm2: GroupNorm::load(&w.pp("norm2"), groups, out_ch, eps)?,
            conv2: Conv2d::load(&w.pp("conv2"), out_ch, out_ch, 3, 1, 1)?,
            conv_shortcut: (in_ch != out_ch)
                .then(|| Conv2d::load(&w.pp("conv_shortcut"), in_ch, out_ch, 1, 1, 0))
                .transpose()?,
        })
    }

    /// `temb_act` is `silu(temb)`, which every block of a UNet shares (diffusers applies the
    /// SiLU in each block; the UNet computes it once).
    pub fn forward(&self, x: Tensor<4>, temb_act: Option<&Tensor<2>>) -> Tensor<4> {
        let t = match (&self.time_emb_proj, temb_act) {
            (Some(proj), Some(temb_act)) => Some(proj.forward(temb_act.clone())),
            _ => None,
        };
        let with_temb = ConvEpilogue {
            channel_bias: t.as_ref(),
            ..Default::default()
        };
        let h = self
            .conv1
            .forward_fused(self.norm1.forward_silu(x.clone()), with_temb);
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        let plus_shortcut = ConvEpilogue {
            residual: Some(&shortcut),
            ..Default::default()
        };
        self.conv2
            .forward_fused(self.norm2.forward_silu(h), plus_shortcut)
    }

    /// `forward` without time embedding (the VAE's blocks) on bands of rows.
    pub fn forward_bands(&self, x: RowBands) -> RowBands {
        let h = x.clone().group_norm_silu(&self.norm1).conv(&self.conv1);
        let h = h.group_norm_silu(&self.norm2).conv(&self.conv2);
        let shortcut = match &self.conv_shortcut {
            Some(conv) => x.conv(conv),
            None => x,
        };
        shortcut + h
    }
}

/// Strided 3×3 conv. The VAE encoder uses padding 0 with an asymmetric (0, 1) pad, as diffusers.
pub struct Downsample2D {
    conv: Conv2d,
}

impl Downsample2D {
    pub fn load(
        w: &Weights,
        channels: usize,
        out_ch: usize,
        padding: usize,
    ) -> Result<Self, WeightError> {
        let options = if padding == 0 {
            ConvOptions::new_with_padding([2, 2], [(0, 1), (0, 1)], [1, 1], 1)
        } else {
            ConvOptions::new([2, 2], [padding, padding], [1, 1], 1)
        };
        Ok(Self {
            conv: Conv2d::load_with(&w.pp("conv"), channels, out_ch, 3, options)?,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(x)
    }

    pub fn forward_bands(&self, x: RowBands) -> RowBands {
        x.conv(&self.conv)
    }
}

/// Nearest upsampling then 3×3 conv; `size` overrides 2× when the skip connection is odd-sized.
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn load(w: &Weights, channels: usize) -> Result<Self, WeightError> {
        Ok(Self {
            conv: Conv2d::load(&w.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, x: Tensor<4>, size: Option<[usize; 2]>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let up = match size {
            Some(size) if size != [h * 2, w * 2] => burn::tensor::module::interpolate(
                x,
                burn::tensor::ops::InterpolateOptions::new(
                    burn::tensor::ops::InterpolateMode::Nearest,
                )
                .with_output_size(size),
            ),
            _ => {
                let upsampled = ConvEpilogue {
                    upsample: true,
                    ..Default::default()
                };
                return self.conv.forward_fused(x, upsampled);
            }
        };
        self.conv.forward(up)
    }
    /// 2× nearest upsampling then the conv, on bands of rows (each band doubles in place).
    pub fn forward_bands(&self, x: RowBands) -> RowBands {
        x.map(upsample_nearest_2x).conv(&self.conv)
    }
}
