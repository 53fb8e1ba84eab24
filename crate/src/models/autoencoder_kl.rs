//! diffusers' AutoencoderKL: Encoder, Decoder, quant/post-quant convs.

use burn::tensor::{DType, Tensor};
use serde_json::json;

use super::nn::{Conv2d, GroupNorm, Linear, MultiHeadAttention};
use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use super::row_bands::{MAX_BAND_BYTES, RowBands, activation_bytes, band_count};
use crate::config::{ConfigError, ConfigReader};
use crate::weights::{WeightError, Weights};

#[derive(Clone, Debug)]
pub struct AutoencoderKLConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub sample_size: usize,
    pub scaling_factor: f64,
    pub shift_factor: f64,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
    /// diffusers runs the VAE in f32 even in f16 pipelines when set (SD 1.x's VAE overflows f16).
    pub force_upcast: bool,
}

impl AutoencoderKLConfig {
    /// The dtype the VAE computes in when the pipeline asks for `requested`: f32 when the
    /// config says `force_upcast` (f16 overflows in SD's decoder), as diffusers does.
    pub fn compute_dtype(&self, requested: DType) -> DType {
        if self.force_upcast {
            DType::F32
        } else {
            requested
        }
    }

    pub fn from_reader(mut c: ConfigReader) -> Result<Self, ConfigError> {
        let block_out_channels = c.usize_list("block_out_channels", &[64])?;
        let levels = block_out_channels.len();
        for (key, known) in [
            ("down_block_types", "DownEncoderBlock2D"),
            ("up_block_types", "UpDecoderBlock2D"),
        ] {
            let types = c.string_list(key, &vec![known; levels])?;
            if types.len() != levels || types.iter().any(|t| t != known) {
                return Err(c.unsupported(
                    key,
                    format!("{types:?}"),
                    &format!("expected {levels} × {known}"),
                ));
            }
        }
        let config = Self {
            in_channels: c.usize_or("in_channels", 3)?,
            out_channels: c.usize_or("out_channels", 3)?,
            layers_per_block: c.usize_or("layers_per_block", 1)?,
            latent_channels: c.usize_or("latent_channels", 4)?,
            norm_num_groups: c.usize_or("norm_num_groups", 32)?,
            sample_size: c.usize_or("sample_size", 32)?,
            scaling_factor: c.f64_or("scaling_factor", 0.18215)?,
            shift_factor: c.f64_or("shift_factor", 0.0)?,
            use_quant_conv: c.bool_or("use_quant_conv", true)?,
            use_post_quant_conv: c.bool_or("use_post_quant_conv", true)?,
            mid_block_add_attention: c.bool_or("mid_block_add_attention", true)?,
            force_upcast: c.bool_or("force_upcast", true)?,
            block_out_channels,
        };
        c.require("act_fn", json!("silu"), "only silu is implemented")?;
        for key in ["latents_mean", "latents_std"] {
            if let Some(v) = c.raw(key).cloned() {
                return Err(c.unsupported(
                    key,
                    v,
                    "per-channel latent normalisation is not implemented",
                ));
            }
        }
        c.finish()?;
        Ok(config)
    }

    /// Image pixels per latent pixel: 2^(levels-1), 8 for SD.
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// Single-head spatial self-attention of the VAE mid block.
struct VaeAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    attention: MultiHeadAttention,
}

impl VaeAttention {
    fn load(w: &Weights, ch: usize, groups: usize) -> Result<Self, WeightError> {
        Ok(Self {
            group_norm: GroupNorm::load(&w.pp("group_norm"), groups, ch, 1e-6)?,
            to_q: Linear::load(&w.pp("to_q"), ch, ch, true)?,
            to_k: Linear::load(&w.pp("to_k"), ch, ch, true)?,
            to_v: Linear::load(&w.pp("to_v"), ch, ch, true)?,
            to_out: Linear::load(&w.pp("to_out").pp(0), ch, ch, true)?,
            attention: MultiHeadAttention::new(w, 1, ch, false),
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let tokens = self
            .group_norm
            .forward(x.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let q = self.to_q.forward(tokens.clone());
        let k = self.to_k.forward(tokens.clone());
        let v = self.to_v.forward(tokens);
        let attended = self
            .attention
            .forward((&q).into(), (&k).into(), (&v).into());
        let out = self.to_out.forward(attended);
        out.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }
}

struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Option<VaeAttention>,
}

impl MidBlock {
    fn load(w: &Weights, ch: usize, groups: usize, attention: bool) -> Result<Self, WeightError> {
        let r = |j: usize| ResnetBlock2D::load(&w.pp("resnets").pp(j), ch, ch, None, groups, 1e-6);
        Ok(Self {
            resnets: [r(0)?, r(1)?],
            attention: attention
                .then(|| VaeAttention::load(&w.pp("attentions").pp(0), ch, groups))
                .transpose()?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = self.resnets[0].forward(x, None);
        if let Some(attn) = &self.attention {
            h = attn.forward(h);
        }
        self.resnets[1].forward(h, None)
    }
}

struct Level<S> {
    resnets: Vec<ResnetBlock2D>,
    sampler: Option<S>,
}

pub struct Encoder {
    conv_in: Conv2d,
    down: Vec<Level<Downsample2D>>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

pub struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    up: Vec<Level<Upsample2D>>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

pub struct AutoencoderKL {
    config: AutoencoderKLConfig,
    encoder: Option<Encoder>,
    quant_conv: Option<Conv2d>,
    decoder: Decoder,
    post_quant_conv: Option<Conv2d>,
}

impl AutoencoderKL {
    /// `with_encoder`: txt2img needs only the decoder; skipping the encoder saves memory.
    pub fn load(
        w: &Weights,
        config: AutoencoderKLConfig,
        with_encoder: bool,
    ) -> Result<Self, WeightError> {
        let c = &config;
        let ch = &c.block_out_channels;
        let levels = ch.len();
        let g = c.norm_num_groups;
        let lat = c.latent_channels;
        let resnet = |w: &Weights, i: usize, o: usize| ResnetBlock2D::load(w, i, o, None, g, 1e-6);

        let encoder = if with_encoder {
            let ew = w.pp("encoder");
            let mut down = Vec::new();
            let mut out_ch = ch[0];
            for i in 0..levels {
                let bw = ew.pp("down_blocks").pp(i);
                let in_ch = out_ch;
                out_ch = ch[i];
                down.push(Level {
                    resnets: (0..c.layers_per_block)
                        .map(|j| {
                            resnet(
                                &bw.pp("resnets").pp(j),
                                if j == 0 { in_ch } else { out_ch },
                                out_ch,
                            )
                        })
                        .collect::<Result<_, _>>()?,
                    sampler: (i + 1 < levels)
                        .then(|| {
                            Downsample2D::load(&bw.pp("downsamplers").pp(0), out_ch, out_ch, 0)
                        })
                        .transpose()?,
                });
            }
            Some(Encoder {
                conv_in: Conv2d::load(&ew.pp("conv_in"), c.in_channels, ch[0], 3, 1, 1)?,
                down,
                mid: MidBlock::load(
                    &ew.pp("mid_block"),
                    ch[levels - 1],
                    g,
                    c.mid_block_add_attention,
                )?,
                norm_out: GroupNorm::load(&ew.pp("conv_norm_out"), g, ch[levels - 1], 1e-6)?,
                conv_out: Conv2d::load(&ew.pp("conv_out"), ch[levels - 1], 2 * lat, 3, 1, 1)?,
            })
        } else {
            None
        };

        let dw = w.pp("decoder");
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::new();
        let mut out_ch = rev[0];
        for i in 0..levels {
            let bw = dw.pp("up_blocks").pp(i);
            let in_ch = out_ch;
            out_ch = rev[i];
            up.push(Level {
                resnets: (0..c.layers_per_block + 1)
                    .map(|j| {
                        resnet(
                            &bw.pp("resnets").pp(j),
                            if j == 0 { in_ch } else { out_ch },
                            out_ch,
                        )
                    })
                    .collect::<Result<_, _>>()?,
                sampler: (i + 1 < levels)
                    .then(|| Upsample2D::load(&bw.pp("upsamplers").pp(0), out_ch))
                    .transpose()?,
            });
        }
        let decoder = Decoder {
            conv_in: Conv2d::load(&dw.pp("conv_in"), lat, rev[0], 3, 1, 1)?,
            mid: MidBlock::load(&dw.pp("mid_block"), rev[0], g, c.mid_block_add_attention)?,
            up,
            norm_out: GroupNorm::load(&dw.pp("conv_norm_out"), g, ch[0], 1e-6)?,
            conv_out: Conv2d::load(&dw.pp("conv_out"), ch[0], c.out_channels, 3, 1, 1)?,
        };
        Ok(Self {
            quant_conv: (with_encoder && c.use_quant_conv)
                .then(|| Conv2d::load(&w.pp("quant_conv"), 2 * lat, 2 * lat, 1, 1, 0))
                .transpose()?,
            post_quant_conv: c
                .use_post_quant_conv
                .then(|| Conv2d::load(&w.pp("post_quant_conv"), lat, lat, 1, 1, 0))
                .transpose()?,
            encoder,
            decoder,
            config,
        })
    }

    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// Latents (already divided by scaling_factor) → image in about [-1, 1].
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        self.decode_in_bands(z, MAX_BAND_BYTES)
    }

    /// `decode`, running the up blocks on bands of rows (`RowBands`) so that no activation
    /// exceeds `max_band_bytes` (one band when everything fits). Same result either way.
    pub fn decode_in_bands(&self, z: Tensor<4>, max_band_bytes: usize) -> Tensor<4> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z),
            None => z,
        };
        let d = &self.decoder;
        let h = d.mid.forward(d.conv_in.forward(z));
        let [n, _, rows, cols] = h.dims();
        // Channels at each up level, and the channels leaving it (upsampled 2× unless last).
        let rev: Vec<usize> = self
            .config
            .block_out_channels
            .iter()
            .rev()
            .copied()
            .collect();
        let largest = (0..rev.len())
            .map(|i| {
                let entering = if i == 0 { rev[0] } else { rev[i - 1] };
                let scale = 1 << (i + usize::from(i + 1 < rev.len()));
                // f32: group norm computes in f32 whatever the activations' dtype.
                activation_bytes(
                    [n, entering.max(rev[i]), rows * scale, cols * scale],
                    DType::F32,
                )
            })
            .max()
            .unwrap_or(0);
        let mut h = RowBands::split(h, band_count(largest, max_band_bytes, rows));
        for level in &d.up {
            for r in &level.resnets {
                h = r.forward_bands(h);
            }
            if let Some(up) = &level.sampler {
                h = up.forward_bands(h);
            }
        }
        h.group_norm_silu(&d.norm_out).conv(&d.conv_out).concat()
    }

    /// Image in [-1, 1] → (mean, logvar) of the latent distribution (before scaling_factor).
    /// Panics if loaded without the encoder.
    pub fn encode(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        self.encode_in_bands(x, MAX_BAND_BYTES)
    }

    /// `encode`, running conv_in and the down blocks on bands of rows (see `decode_in_bands`).
    pub fn encode_in_bands(&self, x: Tensor<4>, max_band_bytes: usize) -> (Tensor<4>, Tensor<4>) {
        let e = self
            .encoder
            .as_ref()
            .expect("AutoencoderKL loaded without its encoder");
        let [n, _, rows, cols] = x.dims();
        let largest = (self.config.block_out_channels.iter().enumerate())
            .map(|(i, &ch)| activation_bytes([n, ch, rows >> i, cols >> i], DType::F32))
            .max()
            .unwrap_or(0);
        let mut h = RowBands::split(x, band_count(largest, max_band_bytes, rows)).conv(&e.conv_in);
        for level in &e.down {
            for r in &level.resnets {
                h = r.forward_bands(h);
            }
            if let Some(down) = &level.sampler {
                h = down.forward_bands(h);
            }
        }
        // The lowest resolution (1/8 of the image) is small enough to bind whole.
        let h = e
            .conv_out
            .forward(e.norm_out.forward_silu(e.mid.forward(h.concat())));
        let moments = match &self.quant_conv {
            Some(conv) => conv.forward(h),
            None => h,
        };
        let lat = self.config.latent_channels;
        let mean = moments.clone().narrow(1, 0, lat);
        let logvar = moments.narrow(1, lat, lat).clamp(-30.0, 20.0);
        (mean, logvar)
    }
}
