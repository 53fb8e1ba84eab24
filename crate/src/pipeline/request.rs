//! What a generation is asked for and what it reports: the request, the init image, progress
//! events, timings and outputs.

use super::PipelineError;
use crate::checks;
use crate::image_io::{self, RgbImage};
use crate::options::PromptSyntax;
use crate::png_meta::GenerationParams;
use crate::schedulers::SchedulerKind;

/// Per-stage wall times in milliseconds (GPU work included: each stage ends with a readback)
/// and GPU dispatch counts.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timings {
    pub tokenize_ms: f64,
    /// The compile pass before the first step (0 when these shapes were compiled before).
    pub compile_ms: f64,
    /// Distinct pipelines that pass launched (0 when it did not run).
    pub compiled_pipelines: usize,
    pub text_encoder_ms: f64,
    pub text_encoder_dispatches: usize,
    pub unet_steps_ms: Vec<f64>,
    /// GPU dispatches of each step (UNet, guidance, readback).
    pub unet_step_dispatches: Vec<usize>,
    pub vae_decode_ms: f64,
    pub vae_decode_dispatches: usize,
    pub total_ms: f64,
}

/// What decides the pipelines a generation needs: its shapes and stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileKey {
    pub width: usize,
    pub height: usize,
    pub cfg: bool,
    /// SDXL's negative condition is zeros (not encoded).
    pub zero_negative: bool,
    /// An init image (the VAE encoder runs).
    pub init_image: bool,
    /// 77-token chunks of the context (every encoded prompt has as many).
    pub prompt_chunks: usize,
}

#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: String,
    pub negative_prompt: String,
    /// How both prompts are read.
    pub prompt_syntax: PromptSyntax,
    pub steps: usize,
    pub guidance: f64,
    /// None: the model's own scheduler_config.json class.
    pub scheduler: Option<SchedulerKind>,
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    /// Unit-normal initial latents `[1, C, H/f, W/f]`, like diffusers' `latents=`.
    pub init_noise: Option<Vec<f32>>,
    /// img2img: start from this image instead of pure noise.
    pub init_image: Option<InitImage>,
    /// A [`Progress::Preview`] after every this many steps (and after the last); None: none.
    pub preview_every: Option<usize>,
}

/// The image img2img starts from, already at the request's width × height.
impl GenerateRequest {
    /// The A1111 parameters text's fields for an image made from this request, the same for
    /// the CLI and the browser. `noise_source`: where `init_noise` came from (a file name), so
    /// the text says the seed alone does not reproduce the image.
    pub fn a1111_parameters(
        &self,
        scheduler: SchedulerKind,
        model: &str,
        noise_source: Option<&str>,
    ) -> GenerationParams {
        let mut extra = Vec::new();
        if let Some(init) = &self.init_image {
            extra.push(("Denoising strength".to_string(), init.strength.to_string()));
        }
        if let (Some(source), None) = (noise_source, &self.init_image) {
            extra.push(("Initial noise".to_string(), source.to_string()));
        }
        GenerationParams {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps,
            sampler: scheduler.a1111_name().to_string(),
            cfg_scale: self.guidance,
            seed: self.seed,
            width: self.width as u32,
            height: self.height as u32,
            model: model.to_string(),
            extra,
        }
    }
}

#[derive(Clone, Debug)]
pub struct InitImage {
    /// RGB8, row-major, `width * height * 3`.
    pub rgb: Vec<u8>,
    /// How much to change it, in (0, 1]: the share of the schedule that is run (diffusers'
    /// `strength`); 1 ignores the image's content (inpainting's default).
    pub strength: f64,
    /// Inpainting: grayscale `width * height`, white (≥ 128) = repaint, black = keep.
    pub mask: Option<Vec<u8>>,
}

impl InitImage {
    /// The init image (and mask) at the generation size, prepared by the same code natively
    /// and in the browser (which hands over the pixels at their own size), so one input gives
    /// one image everywhere. `strength`: None takes [`crate::options::default_strength`].
    pub fn prepare(
        image: &RgbImage,
        mask: Option<&RgbImage>,
        width: usize,
        height: usize,
        strength: Option<f64>,
    ) -> Self {
        let mask =
            mask.map(|m| image_io::to_gray(&image_io::resize_bilinear(m, width, height).rgb));
        InitImage {
            rgb: image_io::resize_bilinear(image, width, height).rgb,
            strength: strength.unwrap_or(crate::options::default_strength(mask.is_some())),
            mask,
        }
    }

    /// diffusers' `get_timesteps`: the first step of the schedule that runs for `strength`.
    pub fn first_step(&self, steps: usize) -> Result<usize, PipelineError> {
        checks::check_strength(self.strength).map_err(PipelineError::Invalid)?;
        // Python's int() truncates, as diffusers does.
        let run = ((steps as f64 * self.strength) as usize).min(steps);
        if run == 0 {
            return Err(PipelineError::Invalid(format!(
                "strength {} with {steps} steps runs no step; raise the strength or the steps (at least {:.3})",
                self.strength,
                1.0 / steps as f64
            )));
        }
        Ok(steps - run)
    }
}

/// What [`StableDiffusion::compile`] did.
#[derive(Clone, Debug)]
pub struct CompileReport {
    pub pipelines: usize,
    pub ms: f64,
}

/// The final latents of [`StableDiffusion::denoise`], before the VAE.
pub struct DenoisedLatents {
    pub latents: Vec<f32>,
    pub shape: [usize; 4],
    pub scheduler: SchedulerKind,
    pub timings: Timings,
}

pub struct GenerateOutput {
    /// RGB8, row-major, `width * height * 3`.
    pub rgb: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub scheduler: SchedulerKind,
    pub timings: Timings,
}

/// Serialised as the JS API's progress events (`{type: "step", step, steps, ms}`; a preview's
/// pixels travel beside the event).
#[derive(Clone, Debug, serde::Serialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Progress {
    /// The compile pass starts: it compiles every pipeline the generation needs (first
    /// generation at a size only).
    Compiling,
    /// It ended: `pipelines` distinct compute pipelines in `ms`.
    Compiled {
        pipelines: usize,
        ms: f64,
    },
    Tokenized {
        truncated: bool,
        #[serde(rename = "tokens")]
        token_count: usize,
        #[serde(rename = "maxTokens")]
        max_length: usize,
    },
    TextEncoded,
    Step {
        #[serde(rename = "step")]
        index: usize,
        #[serde(rename = "steps")]
        total: usize,
        ms: f64,
    },
    /// A preview of the image after step `index`: TAESD's decode at image size when a
    /// preview decoder is loaded, else the cheap latent projection at latent size.
    Preview {
        #[serde(rename = "step")]
        index: usize,
        #[serde(rename = "steps")]
        total: usize,
        /// RGB8, `width * height * 3`.
        #[serde(skip)]
        rgb: Vec<u8>,
        width: usize,
        height: usize,
    },
    Decoded,
}

/// A monotonic clock that also works in wasm (where `std::time::Instant` panics).
pub trait Clock {
    fn now_ms(&self) -> f64;
}

pub struct StdClock(std::time::Instant);

impl Default for StdClock {
    fn default() -> Self {
        Self(std::time::Instant::now())
    }
}

impl Clock for StdClock {
    fn now_ms(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;
    use serde_json::json;

    /// The JS API's progress event names (README, `onProgress`; `www/sdweb.js` types them).
    #[test]
    fn progress_serialises_as_the_js_events() {
        let cases = [
            (Progress::Compiling, json!({"type": "compiling"})),
            (
                Progress::Tokenized {
                    truncated: true,
                    token_count: 80,
                    max_length: 77,
                },
                json!({"type": "tokenized", "truncated": true, "tokens": 80, "maxTokens": 77}),
            ),
            (
                Progress::Step {
                    index: 3,
                    total: 20,
                    ms: 1.5,
                },
                json!({"type": "step", "step": 3, "steps": 20, "ms": 1.5}),
            ),
            (
                Progress::Preview {
                    index: 3,
                    total: 20,
                    rgb: vec![1, 2, 3],
                    width: 1,
                    height: 1,
                },
                json!({"type": "preview", "step": 3, "steps": 20, "width": 1, "height": 1}),
            ),
            (Progress::TextEncoded, json!({"type": "text-encoded"})),
        ];
        for (progress, expected) in cases {
            assert_eq!(serde_json::to_value(&progress).unwrap(), expected);
        }
    }
}
