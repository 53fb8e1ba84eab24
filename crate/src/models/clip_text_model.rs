//! transformers' CLIPTextModel (SD 1.x: ViT-L/14 text tower; SD 2.x: OpenCLIP ViT-H/14,
//! exported with its last layer removed). We return `last_hidden_state`, which is what
//! diffusers' StableDiffusionPipeline feeds the UNet.

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
        };
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
            "eos_token_id",
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
        let heads = config.num_attention_heads;
        let attention = MultiHeadAttention::new(&tm, heads, d / heads, true);
        Ok(Self {
            config,
            token_embedding,
            position_embedding,
            layers,
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

    /// `ids`: one row of `max_position_embeddings` token ids per prompt → `[B, S, D]`.
    pub fn forward(&self, ids: &[Vec<u32>]) -> Tensor<3> {
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
        for layer in &self.layers {
            let h = layer.layer_norm1.forward(x.clone());
            let q = layer.q_proj.forward(h.clone());
            let k = layer.k_proj.forward(h.clone());
            let v = layer.v_proj.forward(h);
            let a = self
                .attention
                .forward((&q).into(), (&k).into(), (&v).into());
            x = layer.out_proj.forward_add(a, x);
            let h = layer.fc1.forward(layer.layer_norm2.forward(x.clone()));
            let h = match self.config.hidden_act {
                HiddenAct::QuickGelu => quick_gelu(h),
                HiddenAct::Gelu => gelu(h),
            };
            x = layer.fc2.forward_add(h, x);
        }
        self.final_layer_norm.forward(x)
    }
}
