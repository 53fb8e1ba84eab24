//! transformers' CLIPTextModel (SD 1.x: ViT-L/14 text tower; SD 2.x: OpenCLIP ViT-H/14,
//! exported with its last layer removed) and CLIPTextModelWithProjection (SDXL's second
//! encoder, OpenCLIP ViT-bigG/14). SD 1.x/2.x feed the UNet `last_hidden_state`; SDXL feeds it
//! both encoders' penultimate hidden states and the second one's projected pooled output.

use burn::tensor::{Int, Tensor, TensorData};

use super::nn::{LayerNorm, Linear, MultiHeadAttention, gelu, quick_gelu};
use crate::config::{ConfigError, ConfigReader};
use crate::weights::{WeightError, Weights};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HiddenAct {
    QuickGelu,
    Gelu,
}

#[derive(Clone, Debug)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: HiddenAct,
    pub layer_norm_eps: f64,
    /// `projection_dim` of a CLIPTextModelWithProjection (its `text_projection`), else None.
    pub projection_dim: Option<usize>,
    /// Which token's state is pooled: the first `eos_token_id`, or (id 2, old configs) the
    /// highest id, as transformers picks it.
    pub eos_token_id: u32,
}

impl ClipTextConfig {
    pub fn from_reader(mut c: ConfigReader) -> Result<Self, ConfigError> {
        let hidden_act = match c.string_or("hidden_act", "quick_gelu")?.as_str() {
            "quick_gelu" => HiddenAct::QuickGelu,
            "gelu" => HiddenAct::Gelu,
            other => {
                return Err(c.unsupported(
                    "hidden_act",
                    other,
                    "quick_gelu and gelu are implemented",
                ));
            }
        };
        let config = Self {
            vocab_size: c.usize_or("vocab_size", 49408)?,
            hidden_size: c.usize_or("hidden_size", 512)?,
            intermediate_size: c.usize_or("intermediate_size", 2048)?,
            num_hidden_layers: c.usize_or("num_hidden_layers", 12)?,
            num_attention_heads: c.usize_or("num_attention_heads", 8)?,
            max_position_embeddings: c.usize_or("max_position_embeddings", 77)?,
            hidden_act,
            layer_norm_eps: c.f64_or("layer_norm_eps", 1e-5)?,
            projection_dim: None,
            eos_token_id: c.usize_or("eos_token_id", 2)? as u32,
        };
        let mut config = config;
        let with_projection = c
            .raw("architectures")
            .and_then(|a| a.as_array())
            .is_some_and(|a| a.iter().any(|n| n == "CLIPTextModelWithProjection"));
        if with_projection {
            config.projection_dim = Some(c.usize_or("projection_dim", 512)?);
        }
        if config.num_attention_heads == 0 || config.hidden_size % config.num_attention_heads != 0 {
            return Err(c.unsupported(
                "num_attention_heads",
                config.num_attention_heads,
                "must divide hidden_size",
            ));
        }
        c.ignore(&[
            "architectures",
            "attention_dropout",
            "dropout",
            "initializer_factor",
            "initializer_range",
            "model_type",
            "torch_dtype",
            "dtype",
            "transformers_version",
            "projection_dim",
            "bos_token_id",
            "pad_token_id",
            "num_channels",
            "patch_size",
            "image_size",
            "output_attentions",
            "output_hidden_states",
            "return_dict",
        ]);
        c.finish()?;
        Ok(config)
    }
}

struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct ClipTextModel {
    config: ClipTextConfig,
    /// Row shards: SD's 49408-row embedding exceeds a WebGPU storage binding in f32.
    token_embedding: Vec<Tensor<2>>,
    position_embedding: Tensor<2>,
    layers: Vec<EncoderLayer>,
    /// `text_projection` (no bias) of a CLIPTextModelWithProjection.
    text_projection: Option<Linear>,
    /// Causal self-attention, shared by every layer.
    attention: MultiHeadAttention,
    final_layer_norm: LayerNorm,
}

impl ClipTextModel {
    /// `w` is the root of the text_encoder weights: keys `text_model.*` as published
    /// checkpoints have them, or without that prefix as transformers 5 saves them.
    pub fn load(w: &Weights, config: ClipTextConfig) -> Result<Self, WeightError> {
        let d = config.hidden_size;
        let tm = if w.contains("embeddings.token_embedding.weight") {
            w.clone()
        } else {
            w.pp("text_model")
        };
        let emb = tm.pp("embeddings");
        let token_embedding = emb
            .pp("token_embedding")
            .get_row_shards("weight", [config.vocab_size, d])?;
        let position_embedding = emb
            .pp("position_embedding")
            .get::<2>("weight", [config.max_position_embeddings, d])?;
        let eps = config.layer_norm_eps;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = tm.pp("encoder").pp("layers").pp(i);
                let attn = l.pp("self_attn");
                Ok(EncoderLayer {
                    layer_norm1: LayerNorm::load(&l.pp("layer_norm1"), d, eps)?,
                    q_proj: Linear::load(&attn.pp("q_proj"), d, d, true)?,
                    k_proj: Linear::load(&attn.pp("k_proj"), d, d, true)?,
                    v_proj: Linear::load(&attn.pp("v_proj"), d, d, true)?,
                    out_proj: Linear::load(&attn.pp("out_proj"), d, d, true)?,
                    layer_norm2: LayerNorm::load(&l.pp("layer_norm2"), d, eps)?,
                    fc1: Linear::load(&l.pp("mlp").pp("fc1"), d, config.intermediate_size, true)?,
                    fc2: Linear::load(&l.pp("mlp").pp("fc2"), config.intermediate_size, d, true)?,
                })
            })
            .collect::<Result<Vec<_>, WeightError>>()?;
        let final_layer_norm = LayerNorm::load(&tm.pp("final_layer_norm"), d, eps)?;
        let text_projection = config
            .projection_dim
            .map(|p| Linear::load(&w.pp("text_projection"), d, p, false))
            .transpose()?;
        let heads = config.num_attention_heads;
        let attention = MultiHeadAttention::new(&tm, heads, d / heads, true);
        Ok(Self {
            config,
            token_embedding,
            position_embedding,
            layers,
            text_projection,
            attention,
            final_layer_norm,
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Looks token rows up across the embedding shards.
    fn embed_tokens(&self, ids: &[u32]) -> Tensor<2> {
        let rows_per_shard = self.token_embedding[0].dims()[0];
        let device = self.position_embedding.device();
        let mut parts = Vec::new();
        // Group consecutive tokens by shard so a one-shard embedding is a single select.
        let mut start = 0;
        while start < ids.len() {
            let shard = ids[start] as usize / rows_per_shard;
            let mut end = start + 1;
            while end < ids.len() && ids[end] as usize / rows_per_shard == shard {
                end += 1;
            }
            let local: Vec<i32> = ids[start..end]
                .iter()
                .map(|&id| (id as usize % rows_per_shard) as i32)
                .collect();
            let n = local.len();
            let index = Tensor::<1, Int>::from_data(TensorData::new(local, [n]), &device);
            parts.push(self.token_embedding[shard].clone().select(0, index));
            start = end;
        }
        Tensor::cat(parts, 0)
    }

    /// `ids`: one row of `max_position_embeddings` token ids per prompt → `last_hidden_state`
    /// `[B, S, D]`.
    pub fn forward(&self, ids: &[Vec<u32>]) -> Tensor<3> {
        self.encode(ids).last_hidden_state
    }

    /// Every output a pipeline uses (see [`ClipTextOutput`]).
    pub fn encode(&self, ids: &[Vec<u32>]) -> ClipTextOutput {
        let seq = ids[0].len();
        for row in ids {
            assert_eq!(
                row.len(),
                seq,
                "all prompts must be padded to the same length"
            );
            assert!(
                row.iter().all(|&id| (id as usize) < self.config.vocab_size),
                "token id out of range"
            );
        }
        let positions = self.position_embedding.clone().narrow(0, 0, seq);
        let embedded: Vec<Tensor<2>> = ids
            .iter()
            .map(|row| self.embed_tokens(row) + positions.clone())
            .collect();
        let mut x: Tensor<3> = Tensor::stack(embedded, 0);
        let mut penultimate = x.clone();
        for layer in &self.layers {
            penultimate = x.clone();
            x = self.layer_forward(layer, x);
        }
        let last_hidden_state = self.final_layer_norm.forward(x);
        let text_embeds = self
            .text_projection
            .as_ref()
            .map(|projection| projection.forward(self.pooled(&last_hidden_state, ids)));
        ClipTextOutput {
            last_hidden_state,
            penultimate_hidden_state: penultimate,
            text_embeds,
        }
    }

    fn layer_forward(&self, layer: &EncoderLayer, x: Tensor<3>) -> Tensor<3> {
        let h = layer.layer_norm1.forward(x.clone());
        let q = layer.q_proj.forward(h.clone());
        let k = layer.k_proj.forward(h.clone());
        let v = layer.v_proj.forward(h);
        let a = self
            .attention
            .forward((&q).into(), (&k).into(), (&v).into());
        let x = layer.out_proj.forward_add(a, x);
        let h = layer.fc1.forward(layer.layer_norm2.forward(x.clone()));
        let h = match self.config.hidden_act {
            HiddenAct::QuickGelu => quick_gelu(h),
            HiddenAct::Gelu => gelu(h),
        };
        layer.fc2.forward_add(h, x)
    }

    /// Each prompt's state at its end-of-text token `[B, D]`, as transformers' `pooler_output`.
    fn pooled(&self, states: &Tensor<3>, ids: &[Vec<u32>]) -> Tensor<2> {
        let [_, _, d] = states.dims();
        let rows = ids
            .iter()
            .enumerate()
            .map(|(b, row)| {
                let at = eos_position(row, self.config.eos_token_id);
                states
                    .clone()
                    .narrow(0, b, 1)
                    .narrow(1, at, 1)
                    .reshape([1, d])
            })
            .collect();
        Tensor::cat(rows, 0)
    }
}

/// The pooled token: the first `eos_token_id`, or the (first) highest id when the config's
/// eos id is the legacy 2, as transformers' CLIPTextTransformer chooses.
fn eos_position(row: &[u32], eos_token_id: u32) -> usize {
    if eos_token_id == 2 {
        let max = row.iter().copied().max().unwrap_or(0);
        return row.iter().position(|&id| id == max).unwrap_or(0);
    }
    row.iter().position(|&id| id == eos_token_id).unwrap_or(0)
}

/// What a text encoder computes for a batch of prompts.
pub struct ClipTextOutput {
    /// `final_layer_norm` of the last layer's output (SD 1.x/2.x's UNet condition).
    pub last_hidden_state: Tensor<3>,
    /// `hidden_states[-2]`: the output of the layer before the last, without the final norm
    /// (SDXL's condition, from both encoders).
    pub penultimate_hidden_state: Tensor<3>,
    /// `text_projection` of the pooled state `[B, projection_dim]` (CLIPTextModelWithProjection).
    pub text_embeds: Option<Tensor<2>>,
}
