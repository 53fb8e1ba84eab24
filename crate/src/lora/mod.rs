//! LoRA: low-rank weight updates from `.safetensors` files, merged into the model's weights
//! as they load. Layers are matched to the model's weight names (kohya's flattened names and
//! diffusers' paths alike, see [`module_key`]), and for the UNet also to its LDM/SGM names,
//! which kohya's SDXL LoRAs use.
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

    /// The prompt as A1111 records it: `prompt` (its tags kept) with a `<lora:NAME:WEIGHT>` tag
    /// for each LoRA no tag names, so A1111 reading the parameters loads the same LoRAs.
    pub fn prompt_with_tags(&self, prompt: &str, tags: &[prompt_tags::LoraTag]) -> String {
        let mut text = prompt.to_string();
        for entry in &self.entries {
            let stem = entry.file.stem();
            if !tags.iter().any(|t| t.name == stem) {
                text.push_str(&format!(" <lora:{stem}:{}>", entry.weight));
            }
        }
        text
    }

    /// Prompt tags for a model whose LoRAs are already merged (the browser's generator): each
    /// must name one of them at its loaded weight; Err says which are loaded.
    pub fn check_tags(&self, tags: &[prompt_tags::LoraTag]) -> Result<(), String> {
        for tag in tags {
            match self.entries.iter().find(|e| e.file.stem() == tag.name) {
                Some(e) if e.weight == tag.weight => {}
                Some(e) => {
                    return Err(format!(
                        "<lora:{}:{}>: this LoRA was loaded at weight {} (LoRAs are merged into the weights at load: create the generator with the new weight)",
                        tag.name, tag.weight, e.weight
                    ));
                }
                None => {
                    let loaded: Vec<&str> = self.entries.iter().map(|e| e.file.stem()).collect();
                    return Err(format!(
                        "<lora:{}>: no such LoRA is loaded (loaded: {}; add it with createGenerator({{ loras }}))",
                        tag.name,
                        if loaded.is_empty() {
                            "none".to_string()
                        } else {
                            loaded.join(", ")
                        }
                    ));
                }
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::prompt_tags::LoraTag;
    use super::*;

    fn set() -> LoraSet {
        let mut set = LoraSet::default();
        for (name, hash, weight) in [
            ("a/film:grain.safetensors", "0806055fda62", 0.7),
            ("ink.safetensors", "630757e50d77", 1.0),
        ] {
            let file = LoraFile {
                name: name.into(),
                short_hash: hash.into(),
                layers: Vec::new(),
            };
            set.push(Arc::new(file), weight);
        }
        set
    }

    fn tag(name: &str, weight: f32) -> LoraTag {
        LoraTag {
            name: name.into(),
            weight,
        }
    }

    #[test]
    fn parameters_record_loras_as_a1111_does() {
        let set = set();
        assert_eq!(
            set.a1111_hashes().unwrap(),
            (
                "Lora hashes".to_string(),
                "filmgrain: 0806055fda62, ink: 630757e50d77".to_string()
            )
        );
        assert_eq!(
            set.prompt_with_tags("a cat <lora:ink:1>", &[tag("ink", 1.0)]),
            "a cat <lora:ink:1> <lora:film:grain:0.7>"
        );
        assert_eq!(LoraSet::default().a1111_hashes(), None);
    }

    #[test]
    fn tags_on_merged_loras_must_match_name_and_weight() {
        let set = set();
        set.check_tags(&[tag("ink", 1.0), tag("film:grain", 0.7)])
            .unwrap();
        let err = set.check_tags(&[tag("ink", 0.5)]).unwrap_err();
        assert!(err.contains("loaded at weight 1"), "{err}");
        let err = set.check_tags(&[tag("inc", 1.0)]).unwrap_err();
        assert!(err.contains("loaded: film:grain, ink"), "{err}");
    }
}
