//! diffusers' Transformer2DModel (continuous input) with BasicTransformerBlock and Attention,
//! as used by the UNet's CrossAttn blocks.

use burn::tensor::Tensor;

use super::nn::{Conv2d, GroupNorm, LayerNorm, Linear, MultiHeadAttention, gelu};
use crate::kernels::{self, ConvEpilogue, KernelPolicy};
use crate::weights::{WeightError, Weights};

/// diffusers `Attention` (to_q/to_k/to_v without bias, to_out.0 with bias).
pub struct Attention {
    attention: MultiHeadAttention,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

impl Attention {
    pub fn load(
        w: &Weights,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
    ) -> Result<Self, WeightError> {
        let inner = heads * head_dim;
        Ok(Self {
            attention: MultiHeadAttention::new(w, heads, head_dim, false),
            to_q: Linear::load(&w.pp("to_q"), query_dim, inner, qkv_bias)?,
            to_k: Linear::load(&w.pp("to_k"), context_dim, inner, qkv_bias)?,
            to_v: Linear::load(&w.pp("to_v"), context_dim, inner, qkv_bias)?,
            to_out: Linear::load(&w.pp("to_out").pp(0), inner, query_dim, true)?,
        })
    }

    /// `x`: `[B, S, query_dim]`; `context`: `[B, S_k, context_dim]` (None = self-attention).
    /// Returns `residual + attention(x)`: the add is fused into the output projection.
    pub fn forward_add(
        &self,
        x: Tensor<3>,
        context: Option<Tensor<3>>,
        residual: Tensor<3>,
    ) -> Tensor<3> {
        let context = context.unwrap_or_else(|| x.clone());
        let q = self.to_q.forward(x);
        let k = self.to_k.forward(context.clone());
        let v = self.to_v.forward(context);
        let attended = self
            .attention
            .forward((&q).into(), (&k).into(), (&v).into());
        self.to_out.forward_add(attended, residual)
    }
}

/// The most GEGLU input (`net.0.proj`'s output) one call holds: half the default binding.
pub const FF_HIDDEN_CHUNK_BYTES: usize = 64 << 20;

/// GEGLU feed-forward: `net.0.proj` → hidden * gelu(gate) → `net.2`.
pub struct FeedForward {
    proj: Linear,
    out: Linear,
    inner: usize,
    kernels: KernelPolicy,
}

impl FeedForward {
    pub fn load(w: &Weights, dim: usize) -> Result<Self, WeightError> {
        let inner = dim * 4;
        Ok(Self {
            proj: Linear::load(&w.pp("net").pp(0).pp("proj"), dim, inner * 2, true)?,
            out: Linear::load(&w.pp("net").pp(2), inner, dim, true)?,
            inner,
            kernels: w.kernels(),
        })
    }

    /// `residual + ff(x)`, the add fused into the output projection. The GEGLU input is 8×
    /// the block's width (SD 1.5 at 768×768 with CFG: 189 MB in f32), so large inputs run in
    /// chunks of token rows to keep every binding under WebGPU's 128 MiB default.
    pub fn forward_add(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        let hidden_row_bytes = 2 * self.inner * x.dtype().size();
        self.forward_add_in_chunks(
            x,
            residual,
            (FF_HIDDEN_CHUNK_BYTES / hidden_row_bytes).max(1),
        )
    }

    /// [`Self::forward_add`] over at most `chunk_rows` token rows (of all images) per call.
    pub fn forward_add_in_chunks(
        &self,
        x: Tensor<3>,
        residual: Tensor<3>,
        chunk_rows: usize,
    ) -> Tensor<3> {
        let [batch, tokens, dim] = x.dims();
        let rows = batch * tokens;
        if rows <= chunk_rows {
            return self.forward_rows(x, residual);
        }
        let (x, residual) = (x.reshape([1, rows, dim]), residual.reshape([1, rows, dim]));
        let parts = (0..rows)
            .step_by(chunk_rows)
            .map(|start| {
                let len = chunk_rows.min(rows - start);
                self.forward_rows(
                    x.clone().narrow(1, start, len),
                    residual.clone().narrow(1, start, len),
                )
            })
            .collect();
        Tensor::cat(parts, 1).reshape([batch, tokens, dim])
    }

    fn forward_rows(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        let h = self.proj.forward(x);
        let fused = self.kernels.runs_ours().then(|| kernels::geglu(&h));
        let activated = match fused.flatten() {
            Some(a) => a,
            None => {
                let hidden = h.clone().narrow(2, 0, self.inner);
                hidden * gelu(h.narrow(2, self.inner, self.inner))
            }
        };
        self.out.forward_add(activated, residual)
    }
}

struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn load(
        w: &Weights,
        dim: usize,
        heads: usize,
        head_dim: usize,
        cross_dim: usize,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            norm1: LayerNorm::load(&w.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::load(&w.pp("attn1"), dim, dim, heads, head_dim, false)?,
            norm2: LayerNorm::load(&w.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::load(&w.pp("attn2"), dim, cross_dim, heads, head_dim, false)?,
            norm3: LayerNorm::load(&w.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::load(&w.pp("ff"), dim)?,
        })
    }

    fn forward(&self, x: Tensor<3>, context: Tensor<3>) -> Tensor<3> {
        let x = self
            .attn1
            .forward_add(self.norm1.forward(x.clone()), None, x);
        let x = self
            .attn2
            .forward_add(self.norm2.forward(x.clone()), Some(context), x);
        self.ff.forward_add(self.norm3.forward(x.clone()), x)
    }
}

enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// diffusers' Transformer2DModel for continuous (latent image) input.
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

pub struct TransformerConfig {
    pub heads: usize,
    pub head_dim: usize,
    pub in_channels: usize,
    pub norm_groups: usize,
    pub cross_attention_dim: usize,
    pub use_linear_projection: bool,
    pub layers: usize,
}

impl Transformer2DModel {
    pub fn load(w: &Weights, c: &TransformerConfig) -> Result<Self, WeightError> {
        let inner = c.heads * c.head_dim;
        let projection = |name: &str, from: usize, to: usize| -> Result<Projection, WeightError> {
            Ok(if c.use_linear_projection {
                Projection::Linear(Linear::load(&w.pp(name), from, to, true)?)
            } else {
                Projection::Conv(Conv2d::load(&w.pp(name), from, to, 1, 1, 0)?)
            })
        };
        Ok(Self {
            norm: GroupNorm::load(&w.pp("norm"), c.norm_groups, c.in_channels, 1e-6)?,
            proj_in: projection("proj_in", c.in_channels, inner)?,
            blocks: (0..c.layers)
                .map(|i| {
                    BasicTransformerBlock::load(
                        &w.pp("transformer_blocks").pp(i),
                        inner,
                        c.heads,
                        c.head_dim,
                        c.cross_attention_dim,
                    )
                })
                .collect::<Result<_, _>>()?,
            proj_out: projection("proj_out", inner, c.in_channels)?,
        })
    }

    pub fn forward(&self, x: Tensor<4>, context: Tensor<3>) -> Tensor<4> {
        let [b, _, h, w] = x.dims();
        let residual = x.clone();
        let x = self.norm.forward(x);
        let to_tokens = |x: Tensor<4>| {
            let c = x.dims()[1];
            x.permute([0, 2, 3, 1]).reshape([b, h * w, c])
        };
        let to_image = |x: Tensor<3>| {
            let c = x.dims()[2];
            x.reshape([b, h, w, c]).permute([0, 3, 1, 2])
        };
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(x)),
            Projection::Linear(lin) => lin.forward(to_tokens(x)),
        };
        for block in &self.blocks {
            tokens = block.forward(tokens, context.clone());
        }
        match &self.proj_out {
            Projection::Conv(conv) => conv.forward_fused(
                to_image(tokens),
                ConvEpilogue {
                    residual: Some(&residual),
                    ..Default::default()
                },
            ),
            Projection::Linear(lin) => to_image(lin.forward(tokens)) + residual,
        }
    }
}
