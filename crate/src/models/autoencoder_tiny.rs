//! diffusers' AutoencoderTiny: madebyollin's TAESD, a tiny distilled VAE used for live previews.
//!
//! Mirrors `diffusers.models.autoencoders.autoencoder_tiny.AutoencoderTiny` with `EncoderTiny`,
//! `DecoderTiny` (vae.py) and `AutoencoderTinyBlock` (unet_2d_blocks.py); weight names are
//! diffusers' (`decoder.layers.<i>.…`, `encoder.layers.<i>.…`, indices of the `nn.Sequential`
//! including its parameter-free activation and upsampling entries).
//!
//! # Latent scale
//! TAESD works on the latents the UNet sees, i.e. the kl-f8 VAE's latents *already multiplied*
//! by that VAE's scaling_factor (0.18215 for SD 1.x/2.x), roughly unit variance. Its own config
//! has `scaling_factor` 1.0, so diffusers' `StableDiffusionPipeline` with `vae=AutoencoderTiny`
//! calls `vae.decode(latents / 1.0)`: the pipeline's latents go in unchanged. Never divide them
//! by the SD VAE's 0.18215 before [`AutoencoderTiny::decode`]; [`AutoencoderTiny::decode_preview`]
//! does the whole pipeline step (÷ this config's scaling_factor, decode, to [0, 1]).

use burn::tensor::activation::relu;
use burn::tensor::{DType, Tensor};
use serde_json::json;

use super::nn::{Conv2d, upsample_nearest_2x};
use super::row_bands::{MAX_BAND_BYTES, RowBands, activation_bytes, band_count};
use crate::config::{ConfigError, ConfigReader};
use crate::weights::{WeightError, Weights};

#[derive(Clone, Debug)]
pub struct AutoencoderTinyConfig {
    /// Image channels into the encoder.
    pub in_channels: usize,
    /// Image channels out of the decoder.
    pub out_channels: usize,
    pub latent_channels: usize,
    pub encoder_block_out_channels: Vec<usize>,
    pub decoder_block_out_channels: Vec<usize>,
    /// `AutoencoderTinyBlock`s per encoder level (TAESD: 1, 3, 3, 3).
    pub num_encoder_blocks: Vec<usize>,
    /// `AutoencoderTinyBlock`s per decoder level (TAESD: 3, 3, 3, 1).
    pub num_decoder_blocks: Vec<usize>,
    /// Only used by diffusers' `forward`/`scale_latents` (latents ↔ uint8 "RGBA image"
    /// quantisation), never by `encode`/`decode`: `x / (2 · magnitude) + shift`.
    pub latent_magnitude: f64,
    pub latent_shift: f64,
    /// What pipelines divide latents by before `decode` (1.0 for every published TAESD).
    pub scaling_factor: f64,
    /// Read for completeness; SD 1.x/2.x pipelines do not use it (SD3/Flux pipelines add it).
    pub shift_factor: f64,
}

impl AutoencoderTinyConfig {
    pub fn from_reader(mut c: ConfigReader) -> Result<Self, ConfigError> {
        let encoder_block_out_channels = c.usize_list("encoder_block_out_channels", &[64; 4])?;
        let decoder_block_out_channels = c.usize_list("decoder_block_out_channels", &[64; 4])?;
        let num_encoder_blocks = c.usize_list("num_encoder_blocks", &[1, 3, 3, 3])?;
        let num_decoder_blocks = c.usize_list("num_decoder_blocks", &[3, 3, 3, 1])?;
        for (key, channels, blocks) in [
            (
                "encoder_block_out_channels",
                &encoder_block_out_channels,
                &num_encoder_blocks,
            ),
            (
                "decoder_block_out_channels",
                &decoder_block_out_channels,
                &num_decoder_blocks,
            ),
        ] {
            if channels.is_empty() || channels.len() != blocks.len() {
                return Err(c.unsupported(
                    key,
                    format!("{channels:?}"),
                    &format!("needs one entry per level, as {blocks:?}"),
                ));
            }
            // EncoderTiny/DecoderTiny build each level's convs for its own channel count but
            // feed them the previous level's output: torch fails at run time unless all match.
            if channels.iter().any(|&ch| ch != channels[0]) {
                return Err(c.unsupported(
                    key,
                    format!("{channels:?}"),
                    "diffusers' EncoderTiny/DecoderTiny only run with one channel count at every level",
                ));
            }
        }
        let config = Self {
            in_channels: c.usize_or("in_channels", 3)?,
            out_channels: c.usize_or("out_channels", 3)?,
            latent_channels: c.usize_or("latent_channels", 4)?,
            latent_magnitude: c.f64_or("latent_magnitude", 3.0)?,
            latent_shift: c.f64_or("latent_shift", 0.5)?,
            scaling_factor: c.f64_or("scaling_factor", 1.0)?,
            shift_factor: c.f64_or("shift_factor", 0.0)?,
            encoder_block_out_channels,
            decoder_block_out_channels,
            num_encoder_blocks,
            num_decoder_blocks,
        };
        // diffusers' get_activation lower-cases the name; every published TAESD uses relu.
        if let Some(v) = c.raw("act_fn").cloned()
            && v.as_str().map(str::to_lowercase).as_deref() != Some("relu")
        {
            return Err(c.unsupported("act_fn", v, "only relu is implemented"));
        }
        c.require(
            "upsample_fn",
            json!("nearest"),
            "only nearest upsampling is implemented",
        )?;
        c.require(
            "upsampling_scaling_factor",
            json!(2),
            "only 2× upsampling is implemented",
        )?;
        // block_out_channels: AutoencoderTiny registers decoder_block_out_channels under this
        // name too and ignores the key on load. force_upcast: its __init__ overwrites it with
        // false (TAESD runs in f16 as is).
        c.ignore(&["block_out_channels", "force_upcast"]);
        c.finish()?;
        Ok(config)
    }

    /// Image pixels per latent pixel: 2^(levels-1), 8 for TAESD.
    pub fn scale_factor(&self) -> usize {
        1 << (self.decoder_block_out_channels.len() - 1)
    }
}

/// `AutoencoderTinyBlock`: `relu(conv(act(conv(act(conv(x))))) + x)`. The 1×1 skip conv only
/// exists when in ≠ out channels, which EncoderTiny/DecoderTiny never build.
struct Block {
    convs: [Conv2d; 3],
}

impl Block {
    fn load(w: &Weights, ch: usize) -> Result<Self, WeightError> {
        let conv = |i: usize| Conv2d::load(&w.pp("conv").pp(i), ch, ch, 3, 1, 1);
        Ok(Self {
            convs: [conv(0)?, conv(2)?, conv(4)?],
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = relu(self.convs[0].forward(x.clone()));
        let h = relu(self.convs[1].forward(h));
        relu(self.convs[2].forward(h) + x)
    }

    fn forward_bands(&self, x: RowBands) -> RowBands {
        let h = x.conv(&self.convs[0]).map(relu);
        let h = h.conv(&self.convs[1]).map(relu);
        (h.conv(&self.convs[2]) + x).map(relu)
    }
}

/// One entry of the `nn.Sequential` that carries or changes data.
enum Layer {
    Conv(Box<Conv2d>),
    Relu,
    Block(Box<Block>),
    Upsample,
}

impl Layer {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Layer::Conv(conv) => conv.forward(x),
            Layer::Relu => relu(x),
            Layer::Block(block) => block.forward(x),
            Layer::Upsample => upsample_nearest_2x(x),
        }
    }
}

impl Layer {
    fn forward_bands(&self, x: RowBands) -> RowBands {
        match self {
            Layer::Conv(conv) => x.conv(conv),
            Layer::Relu => x.map(relu),
            Layer::Block(block) => block.forward_bands(x),
            Layer::Upsample => x.map(upsample_nearest_2x),
        }
    }
}

/// The layers on bands of rows of `x` when `largest_bytes` (the biggest activation they will
/// produce) exceeds `max_band_bytes`; on the whole tensor otherwise. TAESD at 768×768 holds
/// 64 channels at full resolution: 144 MiB in f32, over WebGPU's default 128 MiB binding.
fn run(layers: &[Layer], x: Tensor<4>, largest_bytes: usize, max_band_bytes: usize) -> Tensor<4> {
    let count = band_count(largest_bytes, max_band_bytes, x.dims()[2]);
    if count == 1 {
        return layers.iter().fold(x, |x, layer| layer.forward(x));
    }
    let bands = layers
        .iter()
        .fold(RowBands::split(x, count), |x, layer| layer.forward_bands(x));
    bands.concat()
}

/// The largest activation of `layers` on `[n, _, rows, cols]` input: `channels` at the
/// resolution after every upsampling (f32, the larger compute dtype).
fn largest_activation(layers: &[Layer], dims: [usize; 4], channels: &[usize]) -> usize {
    let ups = layers
        .iter()
        .filter(|l| matches!(l, Layer::Upsample))
        .count();
    let widest = channels.iter().copied().max().unwrap_or(0);
    activation_bytes(
        [dims[0], widest, dims[2] << ups, dims[3] << ups],
        DType::F32,
    )
}

pub struct AutoencoderTiny {
    config: AutoencoderTinyConfig,
    encoder: Option<Vec<Layer>>,
    decoder: Vec<Layer>,
}

impl AutoencoderTiny {
    /// The decoder only (what previews need); the file's `encoder.*` tensors stay unused
    /// (skip them when loading to save their upload).
    pub fn load(w: &Weights, config: AutoencoderTinyConfig) -> Result<Self, WeightError> {
        Self::load_parts(w, config, false)
    }

    /// Decoder and encoder.
    pub fn load_with_encoder(
        w: &Weights,
        config: AutoencoderTinyConfig,
    ) -> Result<Self, WeightError> {
        Self::load_parts(w, config, true)
    }

    fn load_parts(
        w: &Weights,
        config: AutoencoderTinyConfig,
        with_encoder: bool,
    ) -> Result<Self, WeightError> {
        let c = &config;
        let lat = c.latent_channels;

        // DecoderTiny: conv_in, act, then per level: blocks, [upsample, conv without bias]
        // — the last level's conv has a bias and gives out_channels.
        let dw = w.pp("decoder").pp("layers");
        let ch = &c.decoder_block_out_channels;
        let levels = ch.len();
        let mut decoder = vec![
            Layer::Conv(Box::new(Conv2d::load(&dw.pp(0), lat, ch[0], 3, 1, 1)?)),
            Layer::Relu,
        ];
        for (i, &blocks) in c.num_decoder_blocks.iter().enumerate() {
            for _ in 0..blocks {
                decoder.push(Layer::Block(Box::new(Block::load(
                    &dw.pp(decoder.len()),
                    ch[i],
                )?)));
            }
            let last = i + 1 == levels;
            if !last {
                decoder.push(Layer::Upsample);
            }
            let lw = dw.pp(decoder.len());
            decoder.push(Layer::Conv(Box::new(if last {
                Conv2d::load(&lw, ch[i], c.out_channels, 3, 1, 1)?
            } else {
                Conv2d::load_without_bias(&lw, ch[i], ch[i], 3, 1, 1)?
            })));
        }

        // EncoderTiny: per level: conv (the first with bias, the others stride 2 without),
        // blocks; then a conv with bias to latent_channels.
        let encoder = if with_encoder {
            let ew = w.pp("encoder").pp("layers");
            let ch = &c.encoder_block_out_channels;
            let mut encoder = Vec::new();
            for (i, &blocks) in c.num_encoder_blocks.iter().enumerate() {
                let lw = ew.pp(encoder.len());
                encoder.push(Layer::Conv(Box::new(if i == 0 {
                    Conv2d::load(&lw, c.in_channels, ch[0], 3, 1, 1)?
                } else {
                    Conv2d::load_without_bias(&lw, ch[i], ch[i], 3, 2, 1)?
                })));
                for _ in 0..blocks {
                    encoder.push(Layer::Block(Box::new(Block::load(
                        &ew.pp(encoder.len()),
                        ch[i],
                    )?)));
                }
            }
            let last = ch[ch.len() - 1];
            encoder.push(Layer::Conv(Box::new(Conv2d::load(
                &ew.pp(encoder.len()),
                last,
                lat,
                3,
                1,
                1,
            )?)));
            Some(encoder)
        } else {
            None
        };
        Ok(Self {
            config,
            encoder,
            decoder,
        })
    }

    pub fn config(&self) -> &AutoencoderTinyConfig {
        &self.config
    }

    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// diffusers' `AutoencoderTiny.decode(z).sample`: `[B, latent_channels, h, w]` → image
    /// `[B, out_channels, 8h, 8w]` in about [-1, 1] (unclamped).
    ///
    /// `z` is what a pipeline passes: its latents divided by *this* config's scaling_factor
    /// (1.0), i.e. SD latents in the UNet's scale, not divided by the SD VAE's 0.18215.
    /// The decoder soft-clamps them to (-3, 3) with `tanh(z / 3) · 3` first.
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        self.decode_in_bands(z, MAX_BAND_BYTES)
    }

    /// `decode` on bands of rows (`RowBands`) whose activations stay under `max_band_bytes`.
    pub fn decode_in_bands(&self, z: Tensor<4>, max_band_bytes: usize) -> Tensor<4> {
        let z = (z / 3.0).tanh() * 3.0;
        let largest = largest_activation(
            &self.decoder,
            z.dims(),
            &self.config.decoder_block_out_channels,
        );
        // TAESD's own output is in [0, 1]; diffusers maps it to [-1, 1].
        run(&self.decoder, z, largest, max_band_bytes) * 2.0 - 1.0
    }

    /// A preview image in [0, 1] from the pipeline's latents (the UNet's scale, as
    /// diffusers' pipelines hold them): what `StableDiffusionPipeline` with
    /// `vae=AutoencoderTiny` returns for `output_type="pt"`, i.e.
    /// `(decode(latents / scaling_factor) / 2 + 0.5).clamp(0, 1)`.
    pub fn decode_preview(&self, latents: Tensor<4>) -> Tensor<4> {
        let z = latents / self.config.scaling_factor;
        (self.decode(z) / 2.0 + 0.5).clamp(0.0, 1.0)
    }

    /// diffusers' `AutoencoderTiny.encode(x).latents`: image in [-1, 1] → latents in the
    /// UNet's scale (multiply by scaling_factor, 1.0, for pipeline latents).
    /// Panics if loaded without the encoder.
    pub fn encode(&self, x: Tensor<4>) -> Tensor<4> {
        self.encode_in_bands(x, MAX_BAND_BYTES)
    }

    /// `encode` on bands of rows (`RowBands`) whose activations stay under `max_band_bytes`.
    pub fn encode_in_bands(&self, x: Tensor<4>, max_band_bytes: usize) -> Tensor<4> {
        let encoder = self
            .encoder
            .as_ref()
            .expect("AutoencoderTiny loaded without its encoder");
        let largest =
            largest_activation(encoder, x.dims(), &self.config.encoder_block_out_channels);
        // TAESD's encoder takes images in [0, 1].
        run(encoder, (x + 1.0) / 2.0, largest, max_band_bytes)
    }
}
