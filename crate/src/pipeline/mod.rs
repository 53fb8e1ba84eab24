//! StableDiffusionPipeline and StableDiffusionXLPipeline: a diffusers model folder → prompt → image, as diffusers does it.
//! By stage, as diffusers' pipeline reads:
//! - `builder`: [`PipelineBuilder`] (the one constructor); `folder`: the folder loaders;
//! - `prompt`: tokenising and encoding the prompt (SD's one encoder, SDXL's two);
//! - `request`: what a generation takes and reports ([`GenerateRequest`], [`InitImage`], [`Progress`]);
//! - `denoise`: the denoising loop and classifier-free guidance;
//! - `latents`: `prepare_latents` / `get_timesteps` / `prepare_mask_latents` per mode;
//! - `vae`: encode, decode, previews, and the compile pass.
//!
//! One generation per process at a time: the compile pass puts CubeCL into a process-wide dry
//! run (launches dropped), so a second generation on another thread during it computes garbage
//! (seen with `cargo test` on several threads; CI runs test threads one at a time, the CLI and
//! each browser worker run one generation).

mod builder;
mod denoise;
mod folder;
mod latents;
mod prompt;
mod request;
mod vae;

pub use builder::{ComponentConfig, ComponentLoad, LoadOptions, PipelineBuilder};
pub use request::{
    Clock, CompileKey, CompileReport, DenoisedLatents, GenerateOutput, GenerateRequest, InitImage,
    Progress, StdClock, Timings,
};

use burn::tensor::{DType, Device, Tensor};

use crate::checks;
use crate::config::ConfigError;
use crate::kernels::KernelPolicy;
use crate::models::autoencoder_kl::AutoencoderKL;
use crate::models::autoencoder_tiny::AutoencoderTiny;
use crate::models::clip_text_model::ClipTextModel;
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::schedulers::{SchedulerConfig, SchedulerError, SchedulerKind, TimestepSpacing};
use crate::tokenizer::{ClipTokenizer, TokenizerError};
use crate::weights::WeightError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("{0}")]
    Invalid(String),
    /// A stage produced NaN or infinity (the message names the stage).
    #[error("{0}")]
    NonFinite(String),
    #[error("GPU execution failed: {0}")]
    Execution(String),
    #[error("generation cancelled")]
    Cancelled,
}

impl PipelineError {
    /// A stable name for the kind of failure (the wasm boundary hands it to JS as `code`).
    pub fn code(&self) -> &'static str {
        match self {
            PipelineError::Config(_) => "config",
            PipelineError::Weights(e) => e.code(),
            PipelineError::Tokenizer(_) => "tokenizer",
            PipelineError::Scheduler(_) => "scheduler",
            PipelineError::Invalid(_) => "invalid-request",
            PipelineError::NonFinite(_) => "non-finite",
            PipelineError::Execution(_) => "gpu",
            PipelineError::Cancelled => "cancelled",
        }
    }
}

/// Everything loaded from a diffusers `StableDiffusionPipeline` folder.
/// Made only by [`PipelineBuilder::build`].
pub struct StableDiffusion {
    name: String,
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextModel,
    /// SDXL's second tokenizer and text encoder.
    xl: Option<SdxlEncoder>,
    /// SDXL: an empty negative prompt is zeros (model_index.json).
    force_zeros_for_empty_prompt: bool,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    scheduler_config: SchedulerConfig,
    device: Device,
    dtype: DType,
    /// TAESD for step previews (optional; without it previews use a latent projection).
    preview_decoder: Option<AutoencoderTiny>,
    kernels: KernelPolicy,
    /// The request shapes whose pipelines [`StableDiffusion::compile`] has compiled.
    compiled: std::sync::Mutex<Vec<CompileKey>>,
}

/// SDXL's second text encoder (OpenCLIP bigG with projection) and its tokenizer.
pub struct SdxlEncoder {
    tokenizer_2: ClipTokenizer,
    text_encoder_2: ClipTextModel,
}

/// The weight-carrying components of a pipeline, by their diffusers folder names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    TextEncoder,
    /// SDXL's second text encoder (CLIPTextModelWithProjection).
    TextEncoder2,
    Unet,
    Vae,
    /// Optional TAESD for previews (its own repository, e.g. madebyollin/taesd).
    PreviewDecoder,
}

impl Component {
    /// What every pipeline folder has.
    pub const ALL: [Component; 3] = [Component::TextEncoder, Component::Unet, Component::Vae];
    /// What every SDXL pipeline folder has.
    pub const ALL_XL: [Component; 4] = [
        Component::TextEncoder,
        Component::TextEncoder2,
        Component::Unet,
        Component::Vae,
    ];

    pub fn from_folder(name: &str) -> Option<Self> {
        [
            Self::TextEncoder,
            Self::TextEncoder2,
            Self::Unet,
            Self::Vae,
            Self::PreviewDecoder,
        ]
        .into_iter()
        .find(|c| c.folder() == name)
    }

    pub fn folder(self) -> &'static str {
        match self {
            Self::TextEncoder => "text_encoder",
            Self::TextEncoder2 => "text_encoder_2",
            Self::Unet => "unet",
            Self::Vae => "vae",
            Self::PreviewDecoder => "taesd",
        }
    }

    /// The weights file stem (`model.safetensors`, `diffusion_pytorch_model.fp16.safetensors`).
    pub fn weights_stem(self) -> &'static str {
        match self {
            Self::TextEncoder | Self::TextEncoder2 => "model",
            Self::Unet | Self::Vae | Self::PreviewDecoder => "diffusion_pytorch_model",
        }
    }
}

impl StableDiffusion {
    /// The model's name (its folder or file stem), as the A1111 parameters give it.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text_encoder(&self) -> &ClipTextModel {
        &self.text_encoder
    }

    /// SDXL's second text encoder.
    pub fn text_encoder_2(&self) -> Option<&ClipTextModel> {
        self.xl.as_ref().map(|xl| &xl.text_encoder_2)
    }

    pub fn unet(&self) -> &UNet2DConditionModel {
        &self.unet
    }

    pub fn vae(&self) -> &AutoencoderKL {
        &self.vae
    }

    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler_config
    }

    /// The compute dtype (the VAE may compute in f32 regardless: force_upcast).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn kernels(&self) -> KernelPolicy {
        self.kernels
    }

    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config().scale_factor()
    }

    /// The model's native resolution: UNet sample_size × VAE factor (512 for SD 1.5, 768 for 2.1).
    pub fn default_size(&self) -> usize {
        self.unet.config().sample_size * self.vae_scale_factor()
    }

    /// Steps and guidance suited to the model, from its scheduler and UNet configs: an
    /// LCM-distilled UNet 4 steps at its pipeline's guidance 8.5 (embedded, not CFG), LCM
    /// schedulers otherwise (LCM-LoRA) 4 at guidance 1, trailing-timestep (SD-Turbo-style)
    /// models 1 step without guidance, everything else diffusers' 20 steps at 7.5.
    pub fn recommended_steps_guidance(&self) -> (usize, f64) {
        recommended_steps_guidance(
            &self.scheduler_config,
            self.unet.config().time_cond_proj_dim.is_some(),
        )
    }

    /// Everything about `req` that can be wrong, checked before any GPU work: steps, guidance,
    /// size (a multiple of the VAE factor up to `checks::MAX_SIDE`, activations within the
    /// adapter's binding limit), strength, the init noise's length and values.
    pub fn check_request(&self, req: &GenerateRequest) -> Result<(), PipelineError> {
        let f = self.vae_scale_factor();
        checks::check_steps(req.steps).map_err(PipelineError::Invalid)?;
        checks::check_guidance(req.guidance).map_err(PipelineError::Invalid)?;
        checks::check_side("width", req.width, f).map_err(PipelineError::Invalid)?;
        checks::check_side("height", req.height, f).map_err(PipelineError::Invalid)?;
        if self.unet.config().time_cond_proj_dim.is_some() && !req.negative_prompt.is_empty() {
            return Err(PipelineError::Invalid(
                "this LCM-distilled UNet takes its guidance as an embedding, without a negative prompt; leave the negative prompt empty".into(),
            ));
        }
        let batch = if self.uses_cfg(req.guidance) { 2 } else { 1 };
        let max_binding = crate::kernels::device_max_binding_bytes(&self.device);
        let channels = &self.unet.config().block_out_channels;
        checks::check_activations(
            req.width,
            req.height,
            f,
            channels,
            batch,
            self.dtype.size(),
            max_binding,
        )
        .map_err(PipelineError::Invalid)?;
        if let Some(init) = &req.init_image {
            checks::check_strength(init.strength).map_err(PipelineError::Invalid)?;
        }
        if let Some(noise) = &req.init_noise {
            let n = self.vae.config().latent_channels * (req.width / f) * (req.height / f);
            if noise.len() != n {
                return Err(PipelineError::Invalid(format!(
                    "initial noise has {} values, expected {n} for {}x{}",
                    noise.len(),
                    req.width,
                    req.height
                )));
            }
            checks::check_finite("initial noise", noise).map_err(PipelineError::Invalid)?;
        }
        Ok(())
    }
}

/// A NaN/inf result, with what usually causes it at `dtype`.
fn non_finite(message: String, dtype: DType) -> PipelineError {
    let hint = if dtype == DType::F16 {
        "f16 overflows easily here (the classic case is the SD VAE); generate in f32 precision"
    } else {
        "the weights or the inputs hold NaN/inf values, or they are not this model's"
    };
    PipelineError::NonFinite(format!("{message}: {hint}"))
}

/// See [`StableDiffusion::recommended_steps_guidance`]; `guidance_embedded`: the UNet has
/// `time_cond_proj_dim`.
pub fn recommended_steps_guidance(
    config: &SchedulerConfig,
    guidance_embedded: bool,
) -> (usize, f64) {
    let trailing = config.timestep_spacing == Some(TimestepSpacing::Trailing);
    match config.kind() {
        _ if guidance_embedded => (4, 8.5),
        Ok(SchedulerKind::Lcm) => (4, 1.0),
        _ if trailing => (1, 0.0),
        _ => (20, 7.5),
    }
}

/// Reads a tensor back as f32; the only way to read in a browser is asynchronously.
pub async fn read_back<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, PipelineError> {
    let data = t
        .cast(DType::F32)
        .into_data_async()
        .await
        .map_err(|e| PipelineError::Execution(format!("{e:?}")))?;
    data.try_into_vec::<f32>()
        .map_err(|e| PipelineError::Execution(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(json: &str) -> (usize, f64) {
        recommended_steps_guidance(&SchedulerConfig::from_json(json).unwrap(), false)
    }

    #[test]
    fn few_step_defaults_come_from_the_scheduler_config() {
        // stabilityai/sd-turbo's scheduler_config.json (abridged): Euler, trailing timesteps.
        let turbo = r#"{"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "num_train_timesteps": 1000, "prediction_type": "epsilon",
            "steps_offset": 1, "timestep_spacing": "trailing"}"#;
        assert_eq!(defaults(turbo), (1, 0.0));
        // An LCM-distilled model ships LCMScheduler.
        let lcm = r#"{"_class_name": "LCMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "num_train_timesteps": 1000, "original_inference_steps": 50}"#;
        assert_eq!(defaults(lcm), (4, 1.0));
        // An LCM-distilled UNet (time_cond_proj_dim): LatentConsistencyModelPipeline's defaults.
        let config = SchedulerConfig::from_json(lcm).unwrap();
        assert_eq!(recommended_steps_guidance(&config, true), (4, 8.5));
        // SD 1.5: PNDM, leading.
        let sd15 = r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "num_train_timesteps": 1000, "skip_prk_steps": true, "steps_offset": 1}"#;
        assert_eq!(defaults(sd15), (20, 7.5));
    }
}
