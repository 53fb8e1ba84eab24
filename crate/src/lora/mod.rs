//! LoRA: low-rank weight updates from `.safetensors` files, merged into the model's weights
//! as they load.
//!
//! **Merge at load, not a side path.** Each targeted weight becomes W' = W + Σ s·(up @ down)
//! (s = user weight × alpha / rank) on the CPU, in f32, as its bytes enter the
//! [`crate::weights::TensorStore`] and *before* quantise-on-load, so dense f16/f32, q8_0/q4_0
//! quantise-on-load, and every loader (diffusers folder, single file, browser streams) get the
//! LoRA with no change to any layer; weights that arrive already as q8_0/q4_0 blocks are
//! dequantised, merged and requantised to their type. Measured on sd1_tiny (README, "LoRA"):
//! sampling steps cost exactly what they cost without the LoRA (the layers are the same), and
//! the load grows by the CPU merge only. A low-rank side path would let LoRAs change without a
//! reload but adds two small matmuls per targeted layer to every step and a second code path
//! through every linear and conv layer; since a model here is loaded once per session and
//! LoRAs are chosen with it, merging is the better trade.

mod merge;
mod parse;
pub mod prompt_tags;
pub mod select;

use std::path::Path;
use std::sync::Arc;

pub use merge::{ComponentLora, Factor, add_delta};
pub use parse::parse_lora;

use crate::pipeline::Component;
use crate::weights::WeightError;

/// One low-rank layer of a LoRA file: `up @ down`, scaled by `alpha / rank`.
#[derive(Clone, Debug)]
pub struct LoraLayer {
    pub component: Component,
    /// The normalised module key its target must have ([`module_key`]).
    pub key: String,
    /// The layer's name in the file (without the `.lora_down.weight` ending), for errors.
    pub tensor: String,
    /// `[rank, in]` (linear) or `[rank, in, kh, kw]` (conv, LoCon).
    pub down_shape: Vec<usize>,
    pub down: Vec<f32>,
    /// `[out, rank]` or `[out, rank, 1, 1]`.
    pub up_shape: Vec<usize>,
    pub up: Vec<f32>,
    /// Absent: alpha = rank (scale 1), as kohya, A1111 and diffusers read it.
    pub alpha: Option<f32>,
}

impl LoraLayer {
    pub fn rank(&self) -> usize {
        self.down_shape[0]
    }

    /// alpha / rank.
    pub fn scale(&self) -> f32 {
        self.alpha.unwrap_or(self.rank() as f32) / self.rank() as f32
    }
}

/// A parsed LoRA file.
#[derive(Clone, Debug)]
pub struct LoraFile {
    /// What errors call it (the file path or name).
    pub name: String,
    /// A1111's short hash (12 hex digits) for the parameters text's `Lora hashes`.
    pub short_hash: String,
    pub layers: Vec<LoraLayer>,
}

impl LoraFile {
    /// The name prompts call it by: the file name without folder and `.safetensors`.
    pub fn stem(&self) -> &str {
        let base = self.name.rsplit(['/', '\\']).next().unwrap_or(&self.name);
        base.strip_suffix(".safetensors").unwrap_or(base)
    }

    /// Reads and parses a LoRA `.safetensors` file (LoRAs are small: read whole).
    pub fn read(path: &Path) -> Result<Self, WeightError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| WeightError::io(&name, e))?;
        parse_lora(&bytes, &name)
    }
}

/// A LoRA file at a user weight.
#[derive(Clone, Debug)]
pub struct WeightedLora {
    pub file: Arc<LoraFile>,
    pub weight: f32,
}

/// The LoRAs a model loads with (several at once: their deltas add up).
#[derive(Clone, Debug, Default)]
pub struct LoraSet {
    pub entries: Vec<WeightedLora>,
}

impl LoraSet {
    pub fn push(&mut self, file: Arc<LoraFile>, weight: f32) {
        self.entries.push(WeightedLora { file, weight });
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The model parts some LoRA layer patches.
    pub fn components(&self) -> Vec<Component> {
        let mut parts: Vec<Component> = self
            .entries
            .iter()
            .flat_map(|e| e.file.layers.iter().map(|l| l.component))
            .collect();
        parts.sort_by_key(|c| c.folder());
        parts.dedup();
        parts
    }

    /// A1111's `Lora hashes` field (`name: hash, …`, names without `:` and `,`), None
    /// without LoRAs.
    pub fn a1111_hashes(&self) -> Option<(String, String)> {
        let hashes: Vec<String> = self
            .entries
            .iter()
            .map(|e| {
                let name: String = e
                    .file
                    .stem()
                    .chars()
                    .filter(|c| !matches!(c, ':' | ','))
                    .collect();
                format!("{name}: {}", e.file.short_hash)
            })
            .collect();
        (!hashes.is_empty()).then(|| ("Lora hashes".to_string(), hashes.join(", ")))
    }

    /// The layers that patch `component`, ready for its store (None: no layer does).
    pub fn for_component(&self, component: Component) -> Option<ComponentLora> {
        let mut lora = ComponentLora::new(component);
        for entry in &self.entries {
            for layer in entry
                .file
                .layers
                .iter()
                .filter(|l| l.component == component)
            {
                lora.add(&entry.file.name, layer, entry.weight);
            }
        }
        (!lora.is_empty()).then_some(lora)
    }
}

/// The key a module path is matched by: dots as underscores (kohya's flattening, so kohya
/// and diffusers names meet), and text encoders without transformers' `text_model` level
/// (files and models name it or not, independently).
pub fn module_key(component: Component, path: &str) -> String {
    let key = path.replace('.', "_");
    match component {
        Component::TextEncoder | Component::TextEncoder2 => key
            .strip_prefix("text_model_")
            .map(str::to_string)
            .unwrap_or(key),
        _ => key,
    }
}
