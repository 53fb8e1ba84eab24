//! diffusers' UNet2DConditionModel, for the configurations SD 1.x and 2.x use.

use burn::tensor::{Tensor, TensorData};
use serde_json::json;

use super::attention::{Transformer2DModel, TransformerConfig};
use super::nn::{Conv2d, GroupNorm, Linear, silu};
use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::config::{ConfigError, ConfigReader};
use crate::weights::{WeightError, Weights};

/// A UNet level's block, from `down_block_types` / `up_block_types`: with cross-attention
/// transformers (`CrossAttnDownBlock2D`, `CrossAttnUpBlock2D`) or resnets only (`DownBlock2D`,
/// `UpBlock2D`), the two kinds SD 1.x/2.x use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockType {
    CrossAttention,
    Plain,
}

impl BlockType {
    /// diffusers' class name for a down (`up = false`) or up block of this kind.
    pub fn class_name(self, up: bool) -> &'static str {
        match (self, up) {
            (Self::CrossAttention, false) => "CrossAttnDownBlock2D",
            (Self::Plain, false) => "DownBlock2D",
            (Self::CrossAttention, true) => "CrossAttnUpBlock2D",
            (Self::Plain, true) => "UpBlock2D",
        }
    }

    fn parse(name: &str, up: bool) -> Option<Self> {
        [Self::CrossAttention, Self::Plain]
            .into_iter()
            .find(|b| b.class_name(up) == name)
    }

    pub fn has_cross_attention(self) -> bool {
        self == Self::CrossAttention
    }
}

#[derive(Clone, Debug)]
pub struct UNet2DConditionConfig {
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<BlockType>,
    pub up_block_types: Vec<BlockType>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: Vec<usize>,
    pub downsample_padding: usize,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    pub transformer_layers_per_block: Vec<usize>,
    /// Heads per level (diffusers' `attention_head_dim` means heads for SD, a naming quirk).
    pub num_attention_heads: Vec<usize>,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
    /// SDXL's `addition_embed_type: "text_time"`; None for SD 1.x/2.x.
    pub text_time: Option<TextTimeConfig>,
    /// `time_cond_proj_dim` of an LCM-distilled UNet: the width of the guidance-scale
    /// embedding its time embedding takes (`cond_proj`); None for every other UNet.
    pub time_cond_proj_dim: Option<usize>,
}

/// SDXL's added conditions: pooled text embeddings and the six size/crop numbers, embedded
/// and added to the time embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextTimeConfig {
    /// `addition_time_embed_dim`: the sinusoidal width of each of the six time ids.
    pub time_embed_dim: usize,
    /// `projection_class_embeddings_input_dim`: pooled text width + 6 · time_embed_dim.
    pub input_dim: usize,
}

impl UNet2DConditionConfig {
    pub fn from_reader(mut c: ConfigReader) -> Result<Self, ConfigError> {
        let block_out_channels = c.usize_list("block_out_channels", &[320, 640, 1280, 1280])?;
        let levels = block_out_channels.len();
        let down_block_types = c.string_list(
            "down_block_types",
            &[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ],
        )?;
        let up_block_types = c.string_list(
            "up_block_types",
            &[
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ],
        )?;
        let block_types = |key: &str, names: &[String], up: bool| {
            if names.len() != levels {
                return Err(c.unsupported(
                    key,
                    names.len(),
                    "must have one entry per block_out_channels level",
                ));
            }
            names
                .iter()
                .map(|n| {
                    BlockType::parse(n, up).ok_or_else(|| {
                        c.unsupported(key, n, "only the SD 1.x/2.x block types are implemented")
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let down_block_types = block_types("down_block_types", &down_block_types, false)?;
        let up_block_types = block_types("up_block_types", &up_block_types, true)?;
        let attention_head_dim = c.usize_per_level("attention_head_dim", levels, 8)?;
        let num_attention_heads = match c.raw("num_attention_heads").cloned() {
            None => attention_head_dim,
            Some(_) => c.usize_per_level("num_attention_heads", levels, 8)?,
        };
        let text_time = text_time_config(&mut c)?;
        let time_cond_proj_dim = c.usize_opt("time_cond_proj_dim")?;
        let config = Self {
            text_time,
            time_cond_proj_dim,
            sample_size: c.usize_or("sample_size", 64)?,
            in_channels: c.usize_or("in_channels", 4)?,
            out_channels: c.usize_or("out_channels", 4)?,
            flip_sin_to_cos: c.bool_or("flip_sin_to_cos", true)?,
            freq_shift: c.f64_or("freq_shift", 0.0)?,
            layers_per_block: c.usize_per_level("layers_per_block", levels, 2)?,
            downsample_padding: c.usize_or("downsample_padding", 1)?,
            norm_num_groups: c.usize_or("norm_num_groups", 32)?,
            norm_eps: c.f64_or("norm_eps", 1e-5)?,
            cross_attention_dim: c.usize_or("cross_attention_dim", 1280)?,
            transformer_layers_per_block: c.usize_per_level(
                "transformer_layers_per_block",
                levels,
                1,
            )?,
            use_linear_projection: c.bool_or("use_linear_projection", false)?,
            upcast_attention: c.bool_or("upcast_attention", false)?,
            down_block_types,
            up_block_types,
            block_out_channels,
            num_attention_heads,
        };
        let math = "changes the UNet's computation and is not implemented";
        c.require("center_input_sample", json!(false), math)?;
        c.require("mid_block_type", json!("UNetMidBlock2DCrossAttn"), math)?;
        c.require("only_cross_attention", json!(false), math)?;
        c.require("mid_block_scale_factor", json!(1), math)?;
        c.require("act_fn", json!("silu"), math)?;
        c.require("dual_cross_attention", json!(false), math)?;
        c.require("resnet_time_scale_shift", json!("default"), math)?;
        c.require("resnet_skip_time_act", json!(false), math)?;
        c.require("resnet_out_scale_factor", json!(1.0), math)?;
        c.require("time_embedding_type", json!("positional"), math)?;
        c.require("conv_in_kernel", json!(3), math)?;
        c.require("conv_out_kernel", json!(3), math)?;
        c.require("attention_type", json!("default"), math)?;
        c.require("class_embeddings_concat", json!(false), math)?;
        c.require(
            "addition_embed_type_num_heads",
            json!(64),
            "only used by addition embeddings",
        )?;
        for key in [
            "class_embed_type",
            "num_class_embeds",
            "encoder_hid_dim",
            "encoder_hid_dim_type",
            "time_embedding_dim",
            "time_embedding_act_fn",
            "timestep_post_act",
            "mid_block_only_cross_attention",
            "cross_attention_norm",
            "reverse_transformer_layers_per_block",
        ] {
            if let Some(v) = c.raw(key).cloned() {
                return Err(c.unsupported(key, v, math));
            }
        }
        c.ignore(&["dropout"]);
        c.finish()?;
        Ok(config)
    }

    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }
}

/// `addition_embed_type` and its two sizes: "text_time" (SDXL) or absent.
fn text_time_config(c: &mut ConfigReader) -> Result<Option<TextTimeConfig>, ConfigError> {
    let kind = c.raw("addition_embed_type").cloned();
    match kind.as_ref().and_then(|v| v.as_str()) {
        None if kind.is_none() => {
            for key in [
                "addition_time_embed_dim",
                "projection_class_embeddings_input_dim",
            ] {
                if let Some(v) = c.raw(key).cloned() {
                    return Err(c.unsupported(key, v, "is only used with addition_embed_type"));
                }
            }
            Ok(None)
        }
        Some("text_time") => {
            let time_embed_dim = c.usize_or("addition_time_embed_dim", 256)?;
            let input_dim = c.usize_or("projection_class_embeddings_input_dim", 2816)?;
            if input_dim <= 6 * time_embed_dim {
                return Err(c.unsupported(
                    "projection_class_embeddings_input_dim",
                    input_dim,
                    "must exceed 6 × addition_time_embed_dim (it adds the pooled text embedding)",
                ));
            }
            Ok(Some(TextTimeConfig {
                time_embed_dim,
                input_dim,
            }))
        }
        _ => Err(c.unsupported(
            "addition_embed_type",
            kind.unwrap_or_default(),
            "only \"text_time\" (SDXL) is implemented",
        )),
    }
}

/// SDXL's added conditions for one batch: `text_embeds` `[B, pooled]` (text_encoder_2's
/// projected pooled output) and `time_ids` `[B, 6]` (original size, crop top-left, target size).
pub struct AddedConditions {
    pub text_embeds: Tensor<2>,
    pub time_ids: Vec<[f64; 6]>,
}

/// What a UNet takes besides sample, timestep and text context; each is required exactly when
/// its config says so.
#[derive(Clone, Copy, Default)]
pub struct ExtraConditions<'a> {
    /// SDXL's text_time conditions.
    pub added: Option<&'a AddedConditions>,
    /// An LCM-distilled UNet's `timestep_cond` `[B, time_cond_proj_dim]`: the guidance scale's
    /// embedding ([`guidance_scale_embedding`]).
    pub timestep_cond: Option<&'a Tensor<2>>,
}

/// `LatentConsistencyModelPipeline.get_guidance_scale_embedding(w)` for one `w` (its guidance
/// scale − 1), in f32 as diffusers computes it: `[sin(1000·w·f_i), cos(1000·w·f_i)]` with
/// `f_i = exp(−i·ln(10000)/(dim/2 − 1))`, zero-padded to an odd `dim`.
pub fn guidance_scale_embedding(w: f64, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let step = 10000f32.ln() / (half as f32 - 1.0);
    let w = (w * 1000.0) as f32;
    let args: Vec<f32> = (0..half).map(|i| w * (i as f32 * -step).exp()).collect();
    let mut row: Vec<f32> = args.iter().map(|a| a.sin()).collect();
    row.extend(args.iter().map(|a| a.cos()));
    row.resize(dim, 0.0);
    row
}

struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

pub struct UNet2DConditionModel {
    config: UNet2DConditionConfig,
    time_linear_1: Linear,
    time_linear_2: Linear,
    /// `add_embedding.linear_1/2` (SDXL's text_time).
    add_embedding: Option<(Linear, Linear)>,
    /// `time_embedding.cond_proj` (no bias) of an LCM-distilled UNet.
    cond_proj: Option<Linear>,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_resnets: [ResnetBlock2D; 2],
    mid_attention: Transformer2DModel,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DConditionModel {
    pub fn load(w: &Weights, config: UNet2DConditionConfig) -> Result<Self, WeightError> {
        let c = &config;
        let ch = &c.block_out_channels;
        let levels = ch.len();
        let temb = c.time_embed_dim();
        let groups = c.norm_num_groups;
        let resnet = |w: &Weights, i: usize, o: usize| {
            ResnetBlock2D::load(w, i, o, Some(temb), groups, c.norm_eps)
        };
        let transformer = |w: &Weights, channels: usize, heads: usize, layers: usize| {
            Transformer2DModel::load(
                w,
                &TransformerConfig {
                    heads,
                    head_dim: channels / heads,
                    in_channels: channels,
                    norm_groups: groups,
                    cross_attention_dim: c.cross_attention_dim,
                    use_linear_projection: c.use_linear_projection,
                    layers,
                },
            )
        };

        let mut down_blocks = Vec::new();
        let mut out_ch = ch[0];
        for i in 0..levels {
            let bw = w.pp("down_blocks").pp(i);
            let in_ch = out_ch;
            out_ch = ch[i];
            let has_attn = c.down_block_types[i].has_cross_attention();
            let n = c.layers_per_block[i];
            down_blocks.push(DownBlock {
                resnets: (0..n)
                    .map(|j| {
                        resnet(
                            &bw.pp("resnets").pp(j),
                            if j == 0 { in_ch } else { out_ch },
                            out_ch,
                        )
                    })
                    .collect::<Result<_, _>>()?,
                attentions: if has_attn {
                    (0..n)
                        .map(|j| {
                            transformer(
                                &bw.pp("attentions").pp(j),
                                out_ch,
                                c.num_attention_heads[i],
                                c.transformer_layers_per_block[i],
                            )
                        })
                        .collect::<Result<_, _>>()?
                } else {
                    Vec::new()
                },
                downsampler: (i + 1 < levels)
                    .then(|| {
                        Downsample2D::load(
                            &bw.pp("downsamplers").pp(0),
                            out_ch,
                            out_ch,
                            c.downsample_padding,
                        )
                    })
                    .transpose()?,
            });
        }

        let mw = w.pp("mid_block");
        let mid = ch[levels - 1];
        let mid_resnets = [
            resnet(&mw.pp("resnets").pp(0), mid, mid)?,
            resnet(&mw.pp("resnets").pp(1), mid, mid)?,
        ];
        let mid_attention = transformer(
            &mw.pp("attentions").pp(0),
            mid,
            c.num_attention_heads[levels - 1],
            c.transformer_layers_per_block[levels - 1],
        )?;

        let rev_ch: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut out_ch = rev_ch[0];
        for i in 0..levels {
            let bw = w.pp("up_blocks").pp(i);
            let prev_out = out_ch;
            out_ch = rev_ch[i];
            let in_ch = rev_ch[(i + 1).min(levels - 1)];
            let level = levels - 1 - i;
            let has_attn = c.up_block_types[i].has_cross_attention();
            let n = c.layers_per_block[level] + 1;
            up_blocks.push(UpBlock {
                resnets: (0..n)
                    .map(|j| {
                        let skip = if j == n - 1 { in_ch } else { out_ch };
                        let res_in = if j == 0 { prev_out } else { out_ch };
                        resnet(&bw.pp("resnets").pp(j), res_in + skip, out_ch)
                    })
                    .collect::<Result<_, _>>()?,
                attentions: if has_attn {
                    (0..n)
                        .map(|j| {
                            transformer(
                                &bw.pp("attentions").pp(j),
                                out_ch,
                                c.num_attention_heads[level],
                                c.transformer_layers_per_block[level],
                            )
                        })
                        .collect::<Result<_, _>>()?
                } else {
                    Vec::new()
                },
                upsampler: (i + 1 < levels)
                    .then(|| Upsample2D::load(&bw.pp("upsamplers").pp(0), out_ch))
                    .transpose()?,
            });
        }

        let add_embedding = c
            .text_time
            .map(|tt| {
                let aw = w.pp("add_embedding");
                Ok::<_, WeightError>((
                    Linear::load(&aw.pp("linear_1"), tt.input_dim, temb, true)?,
                    Linear::load(&aw.pp("linear_2"), temb, temb, true)?,
                ))
            })
            .transpose()?;
        let cond_proj = c
            .time_cond_proj_dim
            .map(|dim| Linear::load(&w.pp("time_embedding").pp("cond_proj"), dim, ch[0], false))
            .transpose()?;
        Ok(Self {
            add_embedding,
            cond_proj,
            time_linear_1: Linear::load(&w.pp("time_embedding").pp("linear_1"), ch[0], temb, true)?,
            time_linear_2: Linear::load(&w.pp("time_embedding").pp("linear_2"), temb, temb, true)?,
            conv_in: Conv2d::load(&w.pp("conv_in"), c.in_channels, ch[0], 3, 1, 1)?,
            conv_norm_out: GroupNorm::load(&w.pp("conv_norm_out"), groups, ch[0], c.norm_eps)?,
            conv_out: Conv2d::load(&w.pp("conv_out"), ch[0], c.out_channels, 3, 1, 1)?,
            down_blocks,
            mid_resnets,
            mid_attention,
            up_blocks,
            config,
        })
    }

    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// diffusers' `get_timestep_embedding` of `timestep`, computed in f32 like torch does.
    pub fn timestep_embedding(&self, timestep: f64, batch: usize) -> Vec<f32> {
        self.sinusoidal(timestep, self.config.block_out_channels[0])
            .repeat(batch)
    }

    /// `get_timestep_embedding(value)` of width `dim` with this UNet's flip and shift.
    fn sinusoidal(&self, value: f64, dim: usize) -> Vec<f32> {
        let half = dim / 2;
        let mut row = vec![0f32; dim];
        let log_period = -(10000f64.ln());
        for i in 0..half {
            let exponent =
                (log_period * i as f64) as f32 / (half as f64 - self.config.freq_shift) as f32;
            let arg = value as f32 * exponent.exp();
            let (sin, cos) = (arg.sin(), arg.cos());
            if self.config.flip_sin_to_cos {
                row[i] = cos;
                row[half + i] = sin;
            } else {
                row[i] = sin;
                row[half + i] = cos;
            }
        }
        row
    }

    /// The time embedding (before its SiLU), with an LCM UNet's guidance embedding and
    /// SDXL's added-condition embedding.
    fn time_embedding(
        &self,
        timestep: f64,
        batch: usize,
        dtype: burn::tensor::DType,
        device: &burn::tensor::Device,
        extra: ExtraConditions,
    ) -> Tensor<2> {
        let dim = self.config.block_out_channels[0];
        let mut t_emb = Tensor::<2>::from_data(
            TensorData::new(self.timestep_embedding(timestep, batch), [batch, dim]),
            device,
        )
        .cast(dtype);
        if let (Some(cond_proj), Some(cond)) = (&self.cond_proj, extra.timestep_cond) {
            t_emb = t_emb + cond_proj.forward(cond.clone().cast(dtype));
        }
        let added = extra.added;
        let temb = self
            .time_linear_2
            .forward(silu(self.time_linear_1.forward(t_emb)));
        let (Some((linear_1, linear_2)), Some(tt), Some(added)) =
            (&self.add_embedding, self.config.text_time, added)
        else {
            return temb;
        };
        // add_time_proj of each id, flattened per image: [B, 6 · time_embed_dim].
        let ids: Vec<f32> = added
            .time_ids
            .iter()
            .flat_map(|row| {
                row.iter()
                    .flat_map(|&v| self.sinusoidal(v, tt.time_embed_dim))
            })
            .collect();
        let time_embeds =
            Tensor::<2>::from_data(TensorData::new(ids, [batch, 6 * tt.time_embed_dim]), device)
                .cast(dtype);
        let add = Tensor::cat(vec![added.text_embeds.clone().cast(dtype), time_embeds], 1);
        temb + linear_2.forward(silu(linear_1.forward(add)))
    }

    /// `sample`: `[B, in_channels, h, w]`; `context`: `[B, 77, cross_attention_dim]`.
    pub fn forward(&self, sample: Tensor<4>, timestep: f64, context: Tensor<3>) -> Tensor<4> {
        self.forward_with(sample, timestep, context, None)
    }

    /// [`Self::forward`] with SDXL's added conditions (required when the config has text_time).
    pub fn forward_with(
        &self,
        sample: Tensor<4>,
        timestep: f64,
        context: Tensor<3>,
        added: Option<&AddedConditions>,
    ) -> Tensor<4> {
        let extra = ExtraConditions {
            added,
            timestep_cond: None,
        };
        self.forward_conditioned(sample, timestep, context, extra)
    }

    /// [`Self::forward`] with every extra condition a UNet may take.
    pub fn forward_conditioned(
        &self,
        sample: Tensor<4>,
        timestep: f64,
        context: Tensor<3>,
        extra: ExtraConditions,
    ) -> Tensor<4> {
        let [batch, ..] = sample.dims();
        assert_eq!(
            self.add_embedding.is_some(),
            extra.added.is_some(),
            "SDXL's added conditions are given exactly when the UNet has text_time"
        );
        assert!(
            extra.timestep_cond.is_none() || self.cond_proj.is_some(),
            "a timestep condition is given only to a UNet with time_cond_proj_dim"
        );
        let temb = self.time_embedding(timestep, batch, sample.dtype(), &sample.device(), extra);
        // Every ResNet block starts with silu(temb): computed once here.
        let temb = silu(temb);

        let mut h = self.conv_in.forward(sample);
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                h = resnet.forward(h, Some(&temb));
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(h, context.clone());
                }
                skips.push(h.clone());
            }
            if let Some(down) = &block.downsampler {
                h = down.forward(h);
                skips.push(h.clone());
            }
        }

        h = self.mid_resnets[0].forward(h, Some(&temb));
        h = self.mid_attention.forward(h, context.clone());
        h = self.mid_resnets[1].forward(h, Some(&temb));

        for block in &self.up_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips
                    .pop()
                    .expect("skip connections match the block layout");
                h = resnet.forward(Tensor::cat(vec![h, skip], 1), Some(&temb));
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(h, context.clone());
                }
            }
            if let Some(up) = &block.upsampler {
                // Upsample to the next skip's size: latents not divisible by 2^levels stay exact.
                let size = skips.last().map(|s| {
                    let [_, _, sh, sw] = s.dims();
                    [sh, sw]
                });
                h = up.forward(h, size);
            }
        }
        self.conv_out.forward(self.conv_norm_out.forward_silu(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<UNet2DConditionConfig, ConfigError> {
        UNet2DConditionConfig::from_reader(ConfigReader::parse(json, "unet/config.json").unwrap())
    }

    #[test]
    fn block_types_are_parsed_at_the_edge() {
        let config = parse(r#"{"block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": 8}"#)
        .unwrap();
        assert_eq!(
            config.down_block_types,
            [BlockType::CrossAttention, BlockType::Plain]
        );
        assert_eq!(
            config.up_block_types,
            [BlockType::Plain, BlockType::CrossAttention]
        );
        let err = parse(r#"{"block_out_channels": [32, 64], "down_block_types": ["SimpleCrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}"#)
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("SimpleCrossAttnDownBlock2D")
                && err.contains("only the SD 1.x/2.x block types"),
            "{err}"
        );
        // SDXL's added conditions: "text_time" with its two sizes; other kinds are named.
        let base = r#""block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "attention_head_dim": [2, 4]"#;
        let xl = parse(&format!(
            r#"{{{base}, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 80, "addition_embed_type_num_heads": 64}}"#
        ))
        .unwrap();
        assert_eq!(
            xl.text_time,
            Some(TextTimeConfig {
                time_embed_dim: 8,
                input_dim: 80
            })
        );
        for (extra, expected) in [
            (
                r#""addition_embed_type": "image""#,
                "only \"text_time\" (SDXL)",
            ),
            (
                r#""addition_time_embed_dim": 8"#,
                "is only used with addition_embed_type",
            ),
            (
                r#""addition_embed_type": "text_time", "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 48"#,
                "must exceed 6 × addition_time_embed_dim",
            ),
        ] {
            let err = parse(&format!("{{{base}, {extra}}}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{extra}: {err}");
        }
        // A down-block name in the up list is no up block.
        assert!(parse(r#"{"block_out_channels": [32], "down_block_types": ["DownBlock2D"], "up_block_types": ["DownBlock2D"]}"#).is_err());
    }
}
