//! Tensor names of original LDM / CompVis single-file checkpoints ↔ our diffusers names.
//!
//! A single-file SD checkpoint (`v1-5-pruned-emaonly.safetensors`, stable-diffusion.cpp GGUF
//! files) holds the three models under the names of the original `ldm` code:
//! `model.diffusion_model.*` (UNet), `first_stage_model.*` (VAE), and the text encoders where
//! [`CheckpointLayout`] says (transformers' CLIP for SD 1.x, OpenCLIP for SD 2.x, both for SDXL
//! under `conditioner.embedders.*`, or as stable-diffusion.cpp renames them). diffusers' single-file loader
//! (`convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`, `convert_open_clip_checkpoint`
//! in `loaders/single_file_utils.py`) renames them; this module does the same with a table that
//! is derived from the model configs, so any layout (levels, layers per block, which blocks have
//! attention) maps, not only SD 1.5's.
//!
//! The table is built by walking the configs in the same order the models load their weights,
//! pairing each diffusers module path with its LDM path, and expanding per-module leaf tables
//! (e.g. a UNet ResBlock's `in_layers.0` is diffusers' `norm1`). Three tensors are not 1:1:
//! the VAE mid-block attention's q/k/v/proj_out are 1×1 convs in LDM and Linear weights in
//! diffusers ([`Transform::Conv1x1ToLinear`]), OpenCLIP keeps q, k and v stacked in one
//! `in_proj_weight` / `in_proj_bias` ([`Transform::QkvPart`]), and its `text_projection` is the
//! transpose of transformers' ([`Transform::Transpose`]).

use std::collections::HashMap;
use std::ops::Range;

use crate::models::autoencoder_kl::AutoencoderKLConfig;
use crate::models::clip_text_model::ClipTextConfig;
use crate::models::unet_2d_condition::UNet2DConditionConfig;

pub use crate::pipeline::Component;

pub const UNET_PREFIX: &str = "model.diffusion_model.";
pub const VAE_PREFIX: &str = "first_stage_model.";
/// SD 1.x: transformers' CLIPTextModel wrapped by `FrozenCLIPEmbedder`.
pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
/// SD 2.x: OpenCLIP's text tower wrapped by `FrozenOpenCLIPEmbedder`.
pub const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";
/// SDXL (Stability's `sgm` code, as A1111 / ComfyUI checkpoints ship): CLIP ViT-L.
pub const SDXL_CLIP_PREFIX: &str = "conditioner.embedders.0.transformer.";
/// SDXL: OpenCLIP ViT-bigG with its projection.
pub const SDXL_OPEN_CLIP_PREFIX: &str = "conditioner.embedders.1.model.";
/// SDXL as stable-diffusion.cpp writes it (GGUF): the second encoder in transformers' names.
pub const SDCPP_CLIP_2_PREFIX: &str = "cond_stage_model.1.transformer.";

/// How an LDM tensor becomes the diffusers tensor. Every transform takes a contiguous range of
/// the LDM tensor's elements (row-major) and gives it a new shape, so it applies to raw bytes
/// as well as to f32 values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transform {
    Identity,
    /// LDM `[O, I, 1, 1]` (1×1 conv) ↔ diffusers `[O, I]` (Linear). `[O, I]` is accepted too.
    Conv1x1ToLinear,
    /// LDM stacks q, k, v along dim 0 (`in_proj_weight [3D, D]`, `in_proj_bias [3D]`);
    /// part 0, 1, 2 is q, k, v.
    QkvPart(usize),
    /// A Linear weight `[O, I]` on both sides, also accepted as a 1×1 conv `[O, I, 1, 1]`
    /// (stable-diffusion.cpp stores the UNet's linear proj_in/proj_out so).
    LinearOr1x1Conv,
    /// LDM `[I, O]` (OpenCLIP's `text_projection`, applied as `x @ P`) ↔ diffusers `[O, I]`.
    Transpose,
}

impl Transform {
    /// Whether the diffusers tensor is the LDM tensor's bytes as they are (at most reshaped),
    /// so quantised blocks and f16 bytes can be copied without decoding.
    pub fn keeps_bytes(self) -> bool {
        matches!(
            self,
            Self::Identity | Self::Conv1x1ToLinear | Self::LinearOr1x1Conv
        )
    }
}

/// How a text encoder's tensors are named in a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEncoderLayout {
    /// transformers' names (`text_model.encoder.layers.N.self_attn.q_proj`).
    HfClip,
    /// OpenCLIP's names (`transformer.resblocks.N.attn.in_proj_weight`, q/k/v stacked).
    OpenClip,
}

/// Where a checkpoint keeps its text encoders, and under which names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointLayout {
    /// SD 1.x: transformers' CLIP under `cond_stage_model.transformer.` (stable-diffusion.cpp
    /// writes SD 2.x's OpenCLIP this way too).
    Sd1,
    /// SD 2.x: OpenCLIP under `cond_stage_model.model.`.
    Sd2,
    /// SDXL as `sgm` saves it: CLIP under `conditioner.embedders.0.transformer.`, OpenCLIP
    /// bigG under `conditioner.embedders.1.model.`.
    Sdxl,
    /// SDXL as stable-diffusion.cpp writes GGUF: both encoders in transformers' names, under
    /// `cond_stage_model.transformer.` and `cond_stage_model.1.transformer.`.
    SdxlSdCpp,
}

/// One text encoder's place in a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextEncoderKeys {
    pub component: Component,
    pub layout: TextEncoderLayout,
    pub prefix: &'static str,
}

impl CheckpointLayout {
    /// The layout a checkpoint's tensor names use, for a pipeline with one text encoder or
    /// (`two_encoders`, SDXL) two.
    pub fn detect<'a>(names: impl Iterator<Item = &'a str>, two_encoders: bool) -> Self {
        let prefixes = [
            (SDXL_OPEN_CLIP_PREFIX, Self::Sdxl),
            (SDCPP_CLIP_2_PREFIX, Self::SdxlSdCpp),
            (OPEN_CLIP_PREFIX, Self::Sd2),
        ];
        let mut found = None;
        for name in names {
            if let Some(&(_, layout)) = prefixes.iter().find(|(p, _)| name.starts_with(p)) {
                found = Some(layout);
                break;
            }
        }
        match (found, two_encoders) {
            (Some(layout @ (Self::Sdxl | Self::SdxlSdCpp)), true) => layout,
            // Errors then name the tensors an SDXL checkpoint would have.
            (_, true) => Self::Sdxl,
            (Some(Self::Sd2), false) => Self::Sd2,
            (_, false) => Self::Sd1,
        }
    }

    /// The layout an SD release of this text encoder config would have: OpenCLIP's text tower
    /// uses gelu, OpenAI's CLIP (SD 1.x) quick_gelu.
    pub fn for_config(config: &ClipTextConfig, two_encoders: bool) -> Self {
        match (two_encoders, config.hidden_act) {
            (true, _) => Self::Sdxl,
            (false, crate::models::clip_text_model::HiddenAct::Gelu) => Self::Sd2,
            (false, crate::models::clip_text_model::HiddenAct::QuickGelu) => Self::Sd1,
        }
    }

    /// The text encoders, in pipeline order.
    pub fn text_encoders(self) -> &'static [TextEncoderKeys] {
        use Component::{TextEncoder, TextEncoder2};
        use TextEncoderLayout::{HfClip, OpenClip};
        macro_rules! keys {
            ($component:expr, $layout:expr, $prefix:expr) => {
                TextEncoderKeys {
                    component: $component,
                    layout: $layout,
                    prefix: $prefix,
                }
            };
        }
        match self {
            Self::Sd1 => &[keys!(TextEncoder, HfClip, CLIP_PREFIX)],
            Self::Sd2 => &[keys!(TextEncoder, OpenClip, OPEN_CLIP_PREFIX)],
            Self::Sdxl => &[
                keys!(TextEncoder, HfClip, SDXL_CLIP_PREFIX),
                keys!(TextEncoder2, OpenClip, SDXL_OPEN_CLIP_PREFIX),
            ],
            Self::SdxlSdCpp => &[
                keys!(TextEncoder, HfClip, CLIP_PREFIX),
                keys!(TextEncoder2, HfClip, SDCPP_CLIP_2_PREFIX),
            ],
        }
    }

    /// The checkpoint prefix of a component's tensors.
    pub fn prefix_of(self, component: Component) -> Option<&'static str> {
        match component {
            Component::Unet => Some(UNET_PREFIX),
            Component::Vae => Some(VAE_PREFIX),
            _ => self
                .text_encoders()
                .iter()
                .find(|k| k.component == component)
                .map(|k| k.prefix),
        }
    }
}

/// One diffusers tensor and where it lives in an LDM checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPair {
    pub component: Component,
    /// Name inside the component (`down_blocks.0.resnets.0.norm1.weight`; the text encoder's
    /// names start with `text_model.`).
    pub diffusers: String,
    /// Full checkpoint name (`model.diffusion_model.input_blocks.1.0.in_layers.0.weight`).
    pub ldm: String,
    pub transform: Transform,
}

/// The LDM ↔ diffusers table of one pipeline configuration.
#[derive(Clone, Debug)]
pub struct LdmKeyMap {
    layout: CheckpointLayout,
    pairs: Vec<KeyPair>,
    by_ldm: HashMap<String, Vec<usize>>,
    by_diffusers: HashMap<(Component, String), usize>,
}

// ---------------------------------------------------------------------------------------------
// Leaf tables: (diffusers sub-path, LDM sub-path) inside one module. Entries name modules with a
// weight and a bias unless written with an explicit `.weight` / `.bias` suffix.
// ---------------------------------------------------------------------------------------------

/// UNet `ResnetBlock2D` ↔ LDM `ResBlock` (conv_shortcut only when channels change).
const UNET_RESNET: &[(&str, &str)] = &[
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
];
const UNET_RESNET_SHORTCUT: (&str, &str) = ("conv_shortcut", "skip_connection");

/// VAE `ResnetBlock2D` ↔ LDM `ResnetBlock`.
const VAE_RESNET: &[(&str, &str)] = &[
    ("norm1", "norm1"),
    ("conv1", "conv1"),
    ("norm2", "norm2"),
    ("conv2", "conv2"),
];
const VAE_RESNET_SHORTCUT: (&str, &str) = ("conv_shortcut", "nin_shortcut");

/// VAE mid-block `Attention` ↔ LDM `AttnBlock` (q/k/v/proj_out weights are 1×1 convs there).
const VAE_ATTENTION: &[(&str, &str, Transform)] = &[
    ("group_norm", "norm", Transform::Identity),
    ("to_q", "q", Transform::Conv1x1ToLinear),
    ("to_k", "k", Transform::Conv1x1ToLinear),
    ("to_v", "v", Transform::Conv1x1ToLinear),
    ("to_out.0", "proj_out", Transform::Conv1x1ToLinear),
];

/// `Transformer2DModel` ↔ LDM `SpatialTransformer`: same names on both sides.
const SPATIAL_TRANSFORMER: &[&str] = &["norm", "proj_in", "proj_out"];
/// SDXL's added (text_time) embedding ↔ `sgm`'s `label_emb.0`.
const ADD_EMBEDDING: &[(&str, &str)] = &[
    ("add_embedding.linear_1", "label_emb.0.0"),
    ("add_embedding.linear_2", "label_emb.0.2"),
];
/// `BasicTransformerBlock`: same names on both sides.
const TRANSFORMER_BLOCK: &[&str] = &[
    "norm1",
    "attn1.to_q.weight",
    "attn1.to_k.weight",
    "attn1.to_v.weight",
    "attn1.to_out.0",
    "norm2",
    "attn2.to_q.weight",
    "attn2.to_k.weight",
    "attn2.to_v.weight",
    "attn2.to_out.0",
    "norm3",
    "ff.net.0.proj",
    "ff.net.2",
];

/// transformers `CLIPEncoderLayer` (SD 1.x keeps transformers' names).
const CLIP_LAYER: &[&str] = &[
    "layer_norm1",
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
    "layer_norm2",
    "mlp.fc1",
    "mlp.fc2",
];

/// transformers `CLIPEncoderLayer` ↔ OpenCLIP `ResidualAttentionBlock` (q/k/v apart).
const OPEN_CLIP_LAYER: &[(&str, &str)] = &[
    ("layer_norm1", "ln_1"),
    ("self_attn.out_proj", "attn.out_proj"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
];
const OPEN_CLIP_QKV: [&str; 3] = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"];

struct Builder {
    pairs: Vec<KeyPair>,
}

fn join(prefix: &str, leaf: &str) -> String {
    if prefix.is_empty() {
        leaf.to_string()
    } else {
        format!("{prefix}.{leaf}")
    }
}

impl Builder {
    fn tensor(
        &mut self,
        component: Component,
        diffusers: String,
        ldm: String,
        transform: Transform,
    ) {
        self.pairs.push(KeyPair {
            component,
            diffusers,
            ldm,
            transform,
        });
    }

    /// A module's tensors: `leaf` with an explicit `.weight`/`.bias` suffix is one tensor,
    /// otherwise weight and bias; `weight_transform` applies to the weight only.
    fn module(&mut self, c: Component, d: &str, l: &str, weight_transform: Transform) {
        for (suffix, t) in [("weight", weight_transform), ("bias", Transform::Identity)] {
            self.tensor(c, join(d, suffix), join(l, suffix), t);
        }
    }

    fn leaves(&mut self, c: Component, d: &str, l: &str, table: &[(&str, &str)]) {
        for (dl, ll) in table {
            self.leaf(c, &join(d, dl), &join(l, ll), Transform::Identity);
        }
    }

    fn leaf(&mut self, c: Component, d: &str, l: &str, weight_transform: Transform) {
        if d.ends_with(".weight") || d.ends_with(".bias") {
            self.tensor(c, d.to_string(), l.to_string(), weight_transform);
        } else {
            self.module(c, d, l, weight_transform);
        }
    }

    // ---- UNet -----------------------------------------------------------------------------
    fn unet_resnet(&mut self, d: &str, l: &str, shortcut: bool) {
        self.leaves(Component::Unet, d, l, UNET_RESNET);
        if shortcut {
            self.leaves(Component::Unet, d, l, &[UNET_RESNET_SHORTCUT]);
        }
    }

    /// `linear`: proj_in/proj_out are Linear layers (`use_linear_projection`); a checkpoint may
    /// still store them as 1×1 convs (stable-diffusion.cpp does).
    fn spatial_transformer(&mut self, d: &str, l: &str, layers: usize, linear: bool) {
        for leaf in SPATIAL_TRANSFORMER {
            let transform = if linear && *leaf != "norm" {
                Transform::LinearOr1x1Conv
            } else {
                Transform::Identity
            };
            self.module(Component::Unet, &join(d, leaf), &join(l, leaf), transform);
        }
        for t in 0..layers {
            let (bd, bl) = (
                format!("{d}.transformer_blocks.{t}"),
                format!("{l}.transformer_blocks.{t}"),
            );
            for leaf in TRANSFORMER_BLOCK {
                self.leaf(
                    Component::Unet,
                    &join(&bd, leaf),
                    &join(&bl, leaf),
                    Transform::Identity,
                );
            }
        }
    }

    /// LDM's `input_blocks` / `middle_block` / `output_blocks` numbering, from the config.
    fn unet(&mut self, c: &UNet2DConditionConfig) {
        let u = |s: &str| format!("{UNET_PREFIX}{s}");
        let unet = Component::Unet;
        self.module(
            unet,
            "time_embedding.linear_1",
            &u("time_embed.0"),
            Transform::Identity,
        );
        self.module(
            unet,
            "time_embedding.linear_2",
            &u("time_embed.2"),
            Transform::Identity,
        );
        if c.text_time.is_some() {
            for (d, l) in ADD_EMBEDDING {
                self.module(unet, d, &u(l), Transform::Identity);
            }
        }
        self.module(unet, "conv_in", &u("input_blocks.0.0"), Transform::Identity);

        let ch = &c.block_out_channels;
        let levels = ch.len();
        // input_blocks.0 is conv_in; then one block per resnet (+ its attention), and one per
        // downsampler.
        let mut input = 1;
        let mut out_ch = ch.first().copied().unwrap_or(0);
        for i in 0..levels {
            let in_ch = out_ch;
            out_ch = ch[i];
            let attn = c.down_block_types[i].has_cross_attention();
            for j in 0..c.layers_per_block[i] {
                let res_in = if j == 0 { in_ch } else { out_ch };
                self.unet_resnet(
                    &format!("down_blocks.{i}.resnets.{j}"),
                    &u(&format!("input_blocks.{input}.0")),
                    res_in != out_ch,
                );
                if attn {
                    self.spatial_transformer(
                        &format!("down_blocks.{i}.attentions.{j}"),
                        &u(&format!("input_blocks.{input}.1")),
                        c.transformer_layers_per_block[i],
                        c.use_linear_projection,
                    );
                }
                input += 1;
            }
            if i + 1 < levels {
                self.module(
                    unet,
                    &format!("down_blocks.{i}.downsamplers.0.conv"),
                    &u(&format!("input_blocks.{input}.0.op")),
                    Transform::Identity,
                );
                input += 1;
            }
        }

        if levels > 0 {
            self.unet_resnet("mid_block.resnets.0", &u("middle_block.0"), false);
            self.spatial_transformer(
                "mid_block.attentions.0",
                &u("middle_block.1"),
                c.transformer_layers_per_block[levels - 1],
                c.use_linear_projection,
            );
            self.unet_resnet("mid_block.resnets.1", &u("middle_block.2"), false);
        }

        // output_blocks: one per resnet; the level's upsampler sits in its last block, after
        // the attention if the level has one (`.2.conv`), else right after the resnet (`.1.conv`).
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut output = 0;
        let mut out_ch = rev.first().copied().unwrap_or(0);
        for i in 0..levels {
            let prev_out = out_ch;
            out_ch = rev[i];
            let in_ch = rev[(i + 1).min(levels - 1)];
            let level = levels - 1 - i;
            let attn = c.up_block_types[i].has_cross_attention();
            let n = c.layers_per_block[level] + 1;
            for j in 0..n {
                let skip = if j == n - 1 { in_ch } else { out_ch };
                let res_in = if j == 0 { prev_out } else { out_ch };
                self.unet_resnet(
                    &format!("up_blocks.{i}.resnets.{j}"),
                    &u(&format!("output_blocks.{output}.0")),
                    res_in + skip != out_ch,
                );
                if attn {
                    self.spatial_transformer(
                        &format!("up_blocks.{i}.attentions.{j}"),
                        &u(&format!("output_blocks.{output}.1")),
                        c.transformer_layers_per_block[level],
                        c.use_linear_projection,
                    );
                }
                if j == n - 1 && i + 1 < levels {
                    let slot = if attn { 2 } else { 1 };
                    self.module(
                        unet,
                        &format!("up_blocks.{i}.upsamplers.0.conv"),
                        &u(&format!("output_blocks.{output}.{slot}.conv")),
                        Transform::Identity,
                    );
                }
                output += 1;
            }
        }
        self.module(unet, "conv_norm_out", &u("out.0"), Transform::Identity);
        self.module(unet, "conv_out", &u("out.2"), Transform::Identity);
    }

    // ---- VAE ------------------------------------------------------------------------------
    fn vae_resnet(&mut self, d: &str, l: &str, shortcut: bool) {
        self.leaves(Component::Vae, d, l, VAE_RESNET);
        if shortcut {
            self.leaves(Component::Vae, d, l, &[VAE_RESNET_SHORTCUT]);
        }
    }

    fn vae_mid(&mut self, d: &str, l: &str, attention: bool) {
        self.vae_resnet(
            &format!("{d}.mid_block.resnets.0"),
            &format!("{l}.mid.block_1"),
            false,
        );
        if attention {
            for (dl, ll, t) in VAE_ATTENTION {
                self.module(
                    Component::Vae,
                    &format!("{d}.mid_block.attentions.0.{dl}"),
                    &format!("{l}.mid.attn_1.{ll}"),
                    *t,
                );
            }
        }
        self.vae_resnet(
            &format!("{d}.mid_block.resnets.1"),
            &format!("{l}.mid.block_2"),
            false,
        );
    }

    fn vae(&mut self, c: &AutoencoderKLConfig) {
        let v = |s: &str| format!("{VAE_PREFIX}{s}");
        let vae = Component::Vae;
        let ch = &c.block_out_channels;
        let levels = ch.len();

        self.module(
            vae,
            "encoder.conv_in",
            &v("encoder.conv_in"),
            Transform::Identity,
        );
        let mut out_ch = ch.first().copied().unwrap_or(0);
        for i in 0..levels {
            let in_ch = out_ch;
            out_ch = ch[i];
            for j in 0..c.layers_per_block {
                let res_in = if j == 0 { in_ch } else { out_ch };
                self.vae_resnet(
                    &format!("encoder.down_blocks.{i}.resnets.{j}"),
                    &v(&format!("encoder.down.{i}.block.{j}")),
                    res_in != out_ch,
                );
            }
            if i + 1 < levels {
                self.module(
                    vae,
                    &format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                    &v(&format!("encoder.down.{i}.downsample.conv")),
                    Transform::Identity,
                );
            }
        }
        self.vae_mid("encoder", &v("encoder"), c.mid_block_add_attention);
        self.module(
            vae,
            "encoder.conv_norm_out",
            &v("encoder.norm_out"),
            Transform::Identity,
        );
        self.module(
            vae,
            "encoder.conv_out",
            &v("encoder.conv_out"),
            Transform::Identity,
        );
        if c.use_quant_conv {
            self.module(vae, "quant_conv", &v("quant_conv"), Transform::Identity);
        }
        if c.use_post_quant_conv {
            self.module(
                vae,
                "post_quant_conv",
                &v("post_quant_conv"),
                Transform::Identity,
            );
        }

        self.module(
            vae,
            "decoder.conv_in",
            &v("decoder.conv_in"),
            Transform::Identity,
        );
        self.vae_mid("decoder", &v("decoder"), c.mid_block_add_attention);
        // diffusers numbers the decoder's up blocks from the bottom, LDM from the top.
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut out_ch = rev.first().copied().unwrap_or(0);
        for i in 0..levels {
            let in_ch = out_ch;
            out_ch = rev[i];
            let ldm_level = levels - 1 - i;
            for j in 0..c.layers_per_block + 1 {
                let res_in = if j == 0 { in_ch } else { out_ch };
                self.vae_resnet(
                    &format!("decoder.up_blocks.{i}.resnets.{j}"),
                    &v(&format!("decoder.up.{ldm_level}.block.{j}")),
                    res_in != out_ch,
                );
            }
            if i + 1 < levels {
                self.module(
                    vae,
                    &format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                    &v(&format!("decoder.up.{ldm_level}.upsample.conv")),
                    Transform::Identity,
                );
            }
        }
        self.module(
            vae,
            "decoder.conv_norm_out",
            &v("decoder.norm_out"),
            Transform::Identity,
        );
        self.module(
            vae,
            "decoder.conv_out",
            &v("decoder.conv_out"),
            Transform::Identity,
        );
    }

    // ---- text encoder ---------------------------------------------------------------------
    fn text_encoder(&mut self, c: &ClipTextConfig, keys: TextEncoderKeys) {
        let te = keys.component;
        let id = Transform::Identity;
        let prefix = keys.prefix;
        match keys.layout {
            TextEncoderLayout::HfClip => {
                let l = |s: &str| format!("{prefix}text_model.{s}");
                for name in [
                    "embeddings.token_embedding.weight",
                    "embeddings.position_embedding.weight",
                ] {
                    self.tensor(te, format!("text_model.{name}"), l(name), id);
                }
                for n in 0..c.num_hidden_layers {
                    let layer = format!("encoder.layers.{n}");
                    for leaf in CLIP_LAYER {
                        let name = join(&layer, leaf);
                        self.module(te, &format!("text_model.{name}"), &l(&name), id);
                    }
                }
                self.module(
                    te,
                    "text_model.final_layer_norm",
                    &l("final_layer_norm"),
                    id,
                );
                // stable-diffusion.cpp keeps OpenCLIP's orientation under a transformers name.
                self.text_projection(c, te, l("text_projection"));
            }
            TextEncoderLayout::OpenClip => {
                let l = |s: &str| format!("{prefix}{s}");
                self.tensor(
                    te,
                    "text_model.embeddings.token_embedding.weight".into(),
                    l("token_embedding.weight"),
                    id,
                );
                self.tensor(
                    te,
                    "text_model.embeddings.position_embedding.weight".into(),
                    l("positional_embedding"),
                    id,
                );
                // Layers past num_hidden_layers (SD 2.x's 24th, dropped for the penultimate
                // output), logit_scale and (without projection_dim) text_projection have no
                // diffusers counterpart.
                for n in 0..c.num_hidden_layers {
                    let d = format!("text_model.encoder.layers.{n}");
                    let r = l(&format!("transformer.resblocks.{n}"));
                    self.leaves(te, &d, &r, OPEN_CLIP_LAYER);
                    for (part, leaf) in OPEN_CLIP_QKV.iter().enumerate() {
                        for (suffix, stacked) in
                            [("weight", "in_proj_weight"), ("bias", "in_proj_bias")]
                        {
                            self.tensor(
                                te,
                                format!("{d}.{leaf}.{suffix}"),
                                format!("{r}.attn.{stacked}"),
                                Transform::QkvPart(part),
                            );
                        }
                    }
                }
                self.module(te, "text_model.final_layer_norm", &l("ln_final"), id);
                self.text_projection(c, te, l("text_projection"));
            }
        }
    }

    /// CLIPTextModelWithProjection's `text_projection.weight` (`[projection_dim, hidden]`),
    /// stored `[hidden, projection_dim]` in the checkpoint.
    fn text_projection(&mut self, c: &ClipTextConfig, te: Component, ldm: String) {
        if c.projection_dim.is_some() {
            self.tensor(te, TEXT_PROJECTION.into(), ldm, Transform::Transpose);
        }
    }
}

/// The projection's diffusers name: beside `text_model.`, not inside it.
const TEXT_PROJECTION: &str = "text_projection.weight";

impl LdmKeyMap {
    /// The table for one pipeline configuration. Configs come from the diffusers folder that
    /// accompanies a single-file checkpoint (they are not in the file); `text_encoders` in
    /// pipeline order, one per entry of `layout.text_encoders()`.
    pub fn new(
        unet: &UNet2DConditionConfig,
        vae: &AutoencoderKLConfig,
        text_encoders: &[&ClipTextConfig],
        layout: CheckpointLayout,
    ) -> Self {
        let mut b = Builder { pairs: Vec::new() };
        for (config, keys) in text_encoders.iter().zip(layout.text_encoders()) {
            b.text_encoder(config, *keys);
        }
        b.unet(unet);
        b.vae(vae);
        let mut by_ldm: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_diffusers = HashMap::new();
        for (i, p) in b.pairs.iter().enumerate() {
            by_ldm.entry(p.ldm.clone()).or_default().push(i);
            by_diffusers.insert((p.component, p.diffusers.clone()), i);
        }
        Self {
            layout,
            pairs: b.pairs,
            by_ldm,
            by_diffusers,
        }
    }

    pub fn layout(&self) -> CheckpointLayout {
        self.layout
    }

    /// Every tensor of the three models, in loading order.
    pub fn pairs(&self) -> &[KeyPair] {
        &self.pairs
    }

    /// The diffusers tensors an LDM tensor provides: one, three for a stacked q/k/v, none for
    /// tensors the pipeline does not use (EMA copies, schedule buffers, OpenCLIP's
    /// text_projection, `position_ids`, …).
    pub fn from_ldm(&self, ldm_name: &str) -> Vec<&KeyPair> {
        let name = normalize_ldm_name(ldm_name);
        self.by_ldm
            .get(name.as_ref())
            .map(|ids| ids.iter().map(|&i| &self.pairs[i]).collect())
            .unwrap_or_default()
    }

    /// Where a diffusers tensor lives in an LDM checkpoint. Text encoder names may come with or
    /// without the `text_model.` prefix (transformers 5 saves them without).
    pub fn to_ldm(&self, component: Component, diffusers_name: &str) -> Option<&KeyPair> {
        let text_encoder = matches!(component, Component::TextEncoder | Component::TextEncoder2);
        let name = if text_encoder
            && !diffusers_name.starts_with("text_model.")
            && diffusers_name != TEXT_PROJECTION
        {
            format!("text_model.{diffusers_name}")
        } else {
            diffusers_name.to_string()
        };
        self.by_diffusers
            .get(&(component, name))
            .map(|&i| &self.pairs[i])
    }
}

/// Every UNet tensor as (diffusers name, LDM/SGM name without `model.diffusion_model.`): the
/// names kohya's SDXL LoRAs give the UNet's layers (`input_blocks.4.1.…`).
pub fn unet_ldm_names(unet: &UNet2DConditionConfig) -> Vec<(String, String)> {
    let mut b = Builder { pairs: Vec::new() };
    b.unet(unet);
    b.pairs
        .into_iter()
        .map(|p| {
            let ldm = p
                .ldm
                .strip_prefix(UNET_PREFIX)
                .unwrap_or(&p.ldm)
                .to_string();
            (p.diffusers, ldm)
        })
        .collect()
}

/// Small rules for name variants found in the wild: checkpoints saved with transformers < 4.x
/// have SD 1.x's CLIP without the `text_model.` level.
pub fn normalize_ldm_name(name: &str) -> std::borrow::Cow<'_, str> {
    if let Some(rest) = name.strip_prefix(CLIP_PREFIX)
        && !rest.starts_with("text_model.")
        && (rest.starts_with("embeddings.")
            || rest.starts_with("encoder.")
            || rest.starts_with("final_layer_norm."))
    {
        return format!("{CLIP_PREFIX}text_model.{rest}").into();
    }
    name.into()
}

/// The diffusers shape of an LDM tensor and the range of its (row-major) elements it takes.
pub fn ldm_to_diffusers(
    transform: Transform,
    ldm_shape: &[usize],
) -> Result<(Vec<usize>, Range<usize>), String> {
    let numel: usize = ldm_shape.iter().product();
    match transform {
        Transform::Identity => Ok((ldm_shape.to_vec(), 0..numel)),
        Transform::Conv1x1ToLinear | Transform::LinearOr1x1Conv => match ldm_shape {
            [o, i, 1, 1] | [o, i] => Ok((vec![*o, *i], 0..numel)),
            _ => Err(format!(
                "expected a 1×1 conv weight [O, I, 1, 1] (or a Linear [O, I]), found {ldm_shape:?}"
            )),
        },
        Transform::Transpose => match ldm_shape {
            [i, o] => Ok((vec![*o, *i], 0..numel)),
            _ => Err(format!(
                "expected a 2-D projection [I, O], found {ldm_shape:?}"
            )),
        },
        Transform::QkvPart(part) => {
            let rows = ldm_shape.first().copied().unwrap_or(0);
            if ldm_shape.is_empty() || rows % 3 != 0 || part > 2 {
                return Err(format!(
                    "expected q, k and v stacked along dim 0 (a multiple of 3), found {ldm_shape:?}"
                ));
            }
            let per = numel / 3;
            let mut shape = ldm_shape.to_vec();
            shape[0] = rows / 3;
            Ok((shape, part * per..(part + 1) * per))
        }
    }
}

/// The diffusers tensor (shape, f32 values) an LDM tensor's `values` give under `transform`.
pub fn ldm_to_diffusers_values(
    transform: Transform,
    ldm_shape: &[usize],
    values: &[f32],
) -> Result<(Vec<usize>, Vec<f32>), String> {
    let (shape, range) = ldm_to_diffusers(transform, ldm_shape)?;
    let part = &values[range];
    let values = match (transform, ldm_shape) {
        (Transform::Transpose, [rows, cols]) => (0..rows * cols)
            .map(|i| part[(i % rows) * cols + i / rows])
            .collect(),
        _ => part.to_vec(),
    };
    Ok((shape, values))
}

/// The LDM shape of a diffusers tensor (for QKV: of the stacked tensor).
pub fn diffusers_to_ldm_shape(transform: Transform, diffusers_shape: &[usize]) -> Vec<usize> {
    let mut shape = diffusers_shape.to_vec();
    match transform {
        Transform::Identity | Transform::LinearOr1x1Conv => {}
        Transform::Transpose => shape.reverse(),
        Transform::Conv1x1ToLinear => shape.extend([1, 1]),
        Transform::QkvPart(_) => {
            if let Some(rows) = shape.first_mut() {
                *rows *= 3;
            }
        }
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_take_ranges() {
        assert_eq!(
            ldm_to_diffusers(Transform::QkvPart(1), &[6, 2]).unwrap(),
            (vec![2, 2], 4..8)
        );
        assert_eq!(
            ldm_to_diffusers(Transform::Conv1x1ToLinear, &[4, 4, 1, 1]).unwrap(),
            (vec![4, 4], 0..16)
        );
        assert!(ldm_to_diffusers(Transform::QkvPart(0), &[5, 2]).is_err());
        assert!(ldm_to_diffusers(Transform::Conv1x1ToLinear, &[4, 4, 3, 3]).is_err());
        assert_eq!(
            diffusers_to_ldm_shape(Transform::QkvPart(2), &[2, 2]),
            vec![6, 2]
        );
        assert_eq!(
            diffusers_to_ldm_shape(Transform::Conv1x1ToLinear, &[4, 4]),
            vec![4, 4, 1, 1]
        );
    }

    #[test]
    fn projections_transpose_and_layouts_are_detected() {
        // [I=2, O=3] → [O, I]
        let (shape, values) =
            ldm_to_diffusers_values(Transform::Transpose, &[2, 3], &[1., 2., 3., 4., 5., 6.])
                .unwrap();
        assert_eq!(shape, vec![3, 2]);
        assert_eq!(values, vec![1., 4., 2., 5., 3., 6.]);
        assert_eq!(
            diffusers_to_ldm_shape(Transform::Transpose, &[3, 2]),
            vec![2, 3]
        );
        let detect = |name: &str, two| CheckpointLayout::detect([name].into_iter(), two);
        assert_eq!(
            detect("conditioner.embedders.1.model.ln_final.weight", true),
            CheckpointLayout::Sdxl
        );
        assert_eq!(
            detect(
                "cond_stage_model.1.transformer.text_model.final_layer_norm.weight",
                true
            ),
            CheckpointLayout::SdxlSdCpp
        );
        assert_eq!(
            detect("cond_stage_model.model.ln_final.weight", false),
            CheckpointLayout::Sd2
        );
        assert_eq!(
            detect("model.diffusion_model.out.0.bias", false),
            CheckpointLayout::Sd1
        );
        // a one-encoder file for an SDXL base: errors name the SDXL tensors
        assert_eq!(
            detect("cond_stage_model.model.ln_final.weight", true),
            CheckpointLayout::Sdxl
        );
    }

    #[test]
    fn old_clip_names_are_normalized() {
        assert_eq!(
            normalize_ldm_name("cond_stage_model.transformer.embeddings.position_ids"),
            "cond_stage_model.transformer.text_model.embeddings.position_ids"
        );
        assert_eq!(
            normalize_ldm_name("cond_stage_model.transformer.text_model.final_layer_norm.bias"),
            "cond_stage_model.transformer.text_model.final_layer_norm.bias"
        );
        assert_eq!(
            normalize_ldm_name("model.diffusion_model.out.0.bias"),
            "model.diffusion_model.out.0.bias"
        );
    }
}
