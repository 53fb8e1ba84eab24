//! sdweb: Stable Diffusion (SD 1.x / 2.x) on burn-wgpu, matching diffusers numerically.
//!
//! Modules mirror diffusers by name: `models::clip_text_model` (transformers' CLIPTextModel),
//! `models::unet_2d_condition`, `models::autoencoder_kl`, `schedulers::*`.

pub mod checkpoint;
pub mod checks;
pub mod config;
pub mod files;
pub mod fuzzing;
pub mod image_io;
pub mod kernels;
pub mod launches;
pub mod layout;
pub mod lora;
pub mod model_index;
pub mod models;
pub mod noise;
pub mod npy;
pub mod options;
pub mod pipeline;
pub mod png_meta;
pub mod preview;
pub mod prompt_syntax;
pub mod schedulers;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod wasm;
pub mod weights;
