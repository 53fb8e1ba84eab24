//! One model part's LoRA layers, matched to its weights by name and merged into them.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{LoraLayer, module_key};
use crate::pipeline::Component;

/// One LoRA layer at its final scale (user weight × alpha / rank), for one target weight.
#[derive(Clone, Debug)]
pub struct Factor {
    /// The LoRA file and its layer name, for errors.
    pub file: Arc<str>,
    pub tensor: String,
    pub rank: usize,
    /// The target's rows (output features).
    pub out: usize,
    /// The target's shape after its first dimension, as the down weight gives it
    /// (`[in]` or `[in, kh, kw]`).
    pub inner: Vec<usize>,
    /// `[out, rank]`, already multiplied by the scale.
    pub up_scaled: Vec<f32>,
    /// `[rank, inner...]` flattened.
    pub down: Arc<[f32]>,
}

impl Factor {
    fn row_len(&self) -> usize {
        self.inner.iter().product()
    }

    /// Whether a weight of `shape` is what this layer patches: same rows and row length, and
    /// the same kernel where both are convs (a linear LoRA also fits a 1×1 conv; quantised
    /// weights are held as `[rows, row length]`).
    fn fits(&self, shape: &[usize]) -> bool {
        let trailing = &shape[1.min(shape.len())..];
        shape.first() == Some(&self.out)
            && trailing.iter().product::<usize>() == self.row_len()
            && (trailing.len() == 1 || self.inner.len() == 1 || trailing == self.inner.as_slice())
    }

    /// The weight shape this layer expects, for errors.
    fn expected(&self) -> Vec<usize> {
        std::iter::once(self.out)
            .chain(self.inner.iter().copied())
            .collect()
    }
}

#[derive(Default)]
struct Progress {
    applied: BTreeSet<String>,
    /// The first target whose shape does not fit (the merge is skipped; loading fails).
    mismatch: Option<String>,
}

/// The LoRA layers patching one model part, by module key.
pub struct ComponentLora {
    component: Component,
    targets: BTreeMap<String, Vec<Factor>>,
    /// A second key per model weight name (the UNet's LDM/SGM names, which kohya's SDXL
    /// LoRAs use), tried when its diffusers key patches nothing.
    aliases: HashMap<String, String>,
    progress: RefCell<Progress>,
}

impl ComponentLora {
    pub(super) fn new(component: Component) -> Self {
        Self {
            component,
            targets: BTreeMap::new(),
            aliases: HashMap::new(),
            progress: RefCell::default(),
        }
    }

    pub(super) fn add(&mut self, file: &str, layer: &LoraLayer, weight: f32) {
        let scale = weight * layer.scale();
        self.targets
            .entry(layer.key.clone())
            .or_default()
            .push(Factor {
                file: file.into(),
                tensor: layer.tensor.clone(),
                rank: layer.rank(),
                out: layer.up_shape[0],
                inner: layer.down_shape[1..].to_vec(),
                up_scaled: layer.up.iter().map(|u| u * scale).collect(),
                down: layer.down.clone().into(),
            });
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Also match layers by other names of the model's weights: `(weight name, other path)`,
    /// e.g. [`crate::weights::ldm_keys::unet_ldm_names`].
    pub fn set_aliases(&mut self, names: impl IntoIterator<Item = (String, String)>) {
        self.aliases = names
            .into_iter()
            .filter_map(|(name, other)| {
                let path = other.strip_suffix(".weight")?;
                let key = module_key(self.component, path);
                self.targets.contains_key(&key).then_some((name, key))
            })
            .collect();
    }

    /// The key of the layers patching the model tensor `name` (a `.weight`).
    fn target_key(&self, name: &str) -> Option<String> {
        let key = module_key(self.component, name.strip_suffix(".weight")?);
        if self.targets.contains_key(&key) {
            return Some(key);
        }
        self.aliases.get(name).cloned()
    }

    /// The layers patching the model tensor `name` (a `.weight`), None when none does.
    pub fn factors(&self, name: &str) -> Option<&[Factor]> {
        self.targets.get(&self.target_key(name)?).map(Vec::as_slice)
    }

    /// Checks that the layers patching `name` fit its (logical) `shape`; Err names both.
    pub fn check_shape(&self, name: &str, shape: &[usize]) -> Result<(), String> {
        for factor in self.factors(name).unwrap_or(&[]) {
            if !factor.fits(shape) {
                return Err(format!(
                    "LoRA {}: layer {} (rank {}) patches a weight of shape {:?}, but the model's {} {name} has shape {shape:?}: is the LoRA for another model architecture?",
                    factor.file,
                    factor.tensor,
                    factor.rank,
                    factor.expected(),
                    self.component.folder(),
                ));
            }
        }
        Ok(())
    }

    /// Starts merging into `name` of `shape`: Some(layers) when they patch it and fit (marked
    /// applied), None otherwise (a misfit is recorded for [`Self::finish`]).
    pub fn begin(&self, name: &str, shape: &[usize]) -> Option<&[Factor]> {
        let factors = self.factors(name)?;
        let mut progress = self.progress.borrow_mut();
        if let Err(why) = self.check_shape(name, shape) {
            progress.mismatch.get_or_insert(why);
            return None;
        }
        progress.applied.extend(self.target_key(name));
        Some(factors)
    }

    /// After every tensor is in: Err when a layer misfit its target or found none (naming the
    /// model names nearest to it, from `model_names`).
    pub fn finish<'a>(&self, model_names: impl Iterator<Item = &'a String>) -> Result<(), String> {
        let progress = self.progress.borrow();
        if let Some(why) = &progress.mismatch {
            return Err(why.clone());
        }
        let Some((key, factors)) = self
            .targets
            .iter()
            .find(|(key, _)| !progress.applied.contains(*key))
        else {
            return Ok(());
        };
        let nearest = nearest_names(key, self.component, model_names);
        Err(format!(
            "LoRA {}: layer {} targets no {} weight (looked for a weight named like {key}); nearest model names: {}",
            factors[0].file,
            factors[0].tensor,
            self.component.folder(),
            if nearest.is_empty() {
                "none".into()
            } else {
                nearest.join(", ")
            }
        ))
    }
}

/// Adds Σ up_scaled @ down to `values`, rows `row_start..` of a weight whose rows are
/// `row_len` long (f32, on the CPU: cost rows × row_len × rank per layer).
pub fn add_delta(factors: &[Factor], row_start: usize, row_len: usize, values: &mut [f32]) {
    for factor in factors {
        debug_assert_eq!(factor.row_len(), row_len);
        for (i, row) in values.chunks_exact_mut(row_len).enumerate() {
            let o = row_start + i;
            let up = &factor.up_scaled[o * factor.rank..(o + 1) * factor.rank];
            for (j, &a) in up.iter().enumerate() {
                let down = &factor.down[j * row_len..(j + 1) * row_len];
                for (w, &d) in row.iter_mut().zip(down) {
                    *w += a * d;
                }
            }
        }
    }
}

/// Up to three model `.weight` names closest to `key` (longest shared start, then end).
fn nearest_names<'a>(
    key: &str,
    component: Component,
    names: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    let shared = |a: &str, b: &str| {
        let start = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        let end = a
            .bytes()
            .rev()
            .zip(b.bytes().rev())
            .take_while(|(x, y)| x == y)
            .count();
        (start, end)
    };
    let mut scored: Vec<((usize, usize), String)> = names
        .filter_map(|n| {
            let path = n.strip_suffix(".weight")?;
            Some((shared(key, &module_key(component, path)), n.clone()))
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().take(3).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::{LoraFile, LoraSet};

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
    }

    /// A LoCon conv layer (down [r, I, 3, 3], up [O, r, 1, 1]) patching `key`.
    fn conv_layer(key: &str, alpha: Option<f32>) -> LoraLayer {
        let (rank, out, inner) = (2, 3, [4, 3, 3]);
        LoraLayer {
            component: Component::Unet,
            key: key.into(),
            tensor: format!("lora_unet_{key}"),
            down_shape: [rank].into_iter().chain(inner).collect(),
            down: values(rank * 36, 1.0),
            up_shape: vec![out, rank, 1, 1],
            up: values(out * rank, 2.0),
            alpha,
        }
    }

    fn lora(layers: Vec<(LoraLayer, f32)>) -> ComponentLora {
        let mut set = LoraSet::default();
        for (layer, weight) in layers {
            let file = LoraFile {
                name: "test.safetensors".into(),
                short_hash: String::new(),
                layers: vec![layer],
            };
            set.push(Arc::new(file), weight);
        }
        set.for_component(Component::Unet).unwrap()
    }

    #[test]
    fn merged_delta_is_the_scaled_sum_of_up_times_down_in_any_row_shards() {
        let a = conv_layer("down_blocks_0_resnets_0_conv1", Some(1.0));
        let b = conv_layer("down_blocks_0_resnets_0_conv1", None);
        let lora = lora(vec![(a.clone(), 0.5), (b.clone(), -2.0)]);
        let name = "down_blocks.0.resnets.0.conv1.weight";
        let factors = lora.begin(name, &[3, 4, 3, 3]).expect("fits");
        let mut whole = vec![0.0; 3 * 36];
        add_delta(factors, 0, 36, &mut whole);
        // Two shards (rows 0..1, 1..3) give the same values.
        let (mut first, mut rest) = (vec![0.0; 36], vec![0.0; 72]);
        add_delta(factors, 0, 36, &mut first);
        add_delta(factors, 1, 36, &mut rest);
        assert_eq!([first, rest].concat(), whole);
        for o in 0..3 {
            for k in 0..36 {
                let product = |l: &LoraLayer| {
                    (0..2)
                        .map(|j| l.up[o * 2 + j] * l.down[j * 36 + k])
                        .sum::<f32>()
                };
                // alpha 1 / rank 2 at weight 0.5; no alpha (= rank) at weight -2.
                let want = 0.5 * 0.5 * product(&a) - 2.0 * product(&b);
                assert!((whole[o * 36 + k] - want).abs() < 1e-5, "{o} {k}");
            }
        }
        lora.finish([name.to_string()].iter()).unwrap();
    }

    #[test]
    fn a_layer_without_target_names_the_nearest_weights() {
        let lora = lora(vec![(
            conv_layer("down_blocks_0_resnets_0_conv9", None),
            1.0,
        )]);
        let names: Vec<String> = [
            "down_blocks.0.resnets.0.conv1.weight",
            "up_blocks.1.attentions.0.proj_in.weight",
            "down_blocks.0.resnets.0.conv2.weight",
        ]
        .map(String::from)
        .into();
        let err = lora.finish(names.iter()).unwrap_err();
        assert!(
            err.contains("lora_unet_down_blocks_0_resnets_0_conv9")
                && err.contains("test.safetensors")
                && err.contains("nearest model names: down_blocks.0.resnets.0.conv1.weight, down_blocks.0.resnets.0.conv2.weight"),
            "{err}"
        );
    }

    #[test]
    fn shapes_must_fit_and_quantised_matrices_and_1x1_convs_do() {
        let lora = lora(vec![(conv_layer("conv_in", None), 1.0)]);
        assert!(
            lora.check_shape("conv_in.weight", &[3, 36]).is_ok(),
            "quantised [rows, row length]"
        );
        let err = lora
            .check_shape("conv_in.weight", &[3, 4, 1, 1])
            .unwrap_err();
        assert!(
            err.contains("[3, 4, 3, 3]")
                && err.contains("[3, 4, 1, 1]")
                && err.contains("another model architecture"),
            "{err}"
        );
        assert!(lora.begin("conv_in.weight", &[4, 4, 3, 3]).is_none());
        assert!(
            lora.finish(std::iter::empty())
                .unwrap_err()
                .contains("[4, 4, 3, 3]"),
            "the misfit is reported at the end"
        );
        let mut linear = conv_layer("proj_in", None);
        linear.down_shape = vec![2, 4];
        linear.down.truncate(8);
        linear.up_shape = vec![3, 2];
        let lora = super::tests::lora(vec![(linear, 1.0)]);
        assert!(
            lora.check_shape("proj_in.weight", &[3, 4, 1, 1]).is_ok(),
            "a linear LoRA on a 1×1 conv"
        );
    }
}

/// The merge's CPU cost, for the README: `cargo test -p sdweb --lib merge_throughput --
/// --ignored --nocapture`.
#[cfg(test)]
#[test]
#[ignore]
fn merge_throughput() {
    let (out, inner, rank) = (1280usize, 1280usize, 32usize);
    let factor = Factor {
        file: "bench".into(),
        tensor: "bench".into(),
        rank,
        out,
        inner: vec![inner],
        up_scaled: vec![0.01; out * rank],
        down: vec![0.01; rank * inner].into(),
    };
    let mut values = vec![0.0f32; out * inner];
    let start = std::time::Instant::now();
    let runs = 20;
    for _ in 0..runs {
        add_delta(std::slice::from_ref(&factor), 0, inner, &mut values);
    }
    let seconds = start.elapsed().as_secs_f64() / runs as f64;
    let gmac = (out * inner * rank) as f64 / 1e9;
    eprintln!(
        "merge: {:.1} ms per 1280×1280 rank-32 layer, {:.2} GMAC/s (checksum {})",
        seconds * 1e3,
        gmac / seconds,
        values[0]
    );
}
