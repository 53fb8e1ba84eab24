//! Diffusion schedulers, numerically matching Hugging Face diffusers.
//!
//! They run on the CPU on flat latents (`&[f32]`, any shape, batch included): SD latents are
//! small and the pipeline reads the UNet output back every step anyway. Scalar coefficients are
//! computed in f64 from the same f32 noise schedule diffusers builds; element-wise arithmetic is
//! done in f64 and rounded to f32 once.
//!
//! Usage, as diffusers' pipelines do it:
//! ```text
//! let mut s = build(kind, &config, steps)?;
//! let mut latents: Vec<f32> = noise.normal(n).iter().map(|&x| x * s.init_noise_sigma() as f32).collect();
//! for i in 0..s.timesteps().len() {
//!     let input = latents * s.input_scale(i);           // scale_model_input
//!     let out = unet(input, s.timesteps()[i]);
//!     latents = s.step(&out, i, &latents, &mut noise);
//! }
//! ```

mod config;
mod ddim;
mod dpm_solver_multistep;
mod euler;
mod euler_ancestral;
mod lcm;
mod pndm;
mod schedule;

pub use config::{SchedulerConfig, SchedulerError, TimestepSpacing, parse_json};
pub use ddim::DdimScheduler;
pub use dpm_solver_multistep::DpmSolverMultistepScheduler;
pub use euler::EulerDiscreteScheduler;
pub use euler_ancestral::EulerAncestralDiscreteScheduler;
pub use lcm::LcmScheduler;
pub use pndm::PndmScheduler;

use crate::noise::NoiseGenerator;

/// The samplers on offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    Ddim,
    Euler,
    EulerAncestral,
    DpmPp2M,
    DpmPp2MKarras,
    Lcm,
    Pndm,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 7] = [
        Self::Ddim,
        Self::Euler,
        Self::EulerAncestral,
        Self::DpmPp2M,
        Self::DpmPp2MKarras,
        Self::Lcm,
        Self::Pndm,
    ];

    /// Parses a command-line name (`ddim`, `euler`, `euler-a`, `dpmpp-2m`, `dpmpp-2m-karras`,
    /// `lcm`, `pndm`); A1111 names ("Euler a", "PLMS", ...) are accepted as well.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s || k.a1111_name() == s)
    }

    /// The command-line name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Euler => "euler",
            Self::EulerAncestral => "euler-a",
            Self::DpmPp2M => "dpmpp-2m",
            Self::DpmPp2MKarras => "dpmpp-2m-karras",
            Self::Lcm => "lcm",
            Self::Pndm => "pndm",
        }
    }

    /// The name AUTOMATIC1111's web UI uses for this sampler (e.g. in PNG infotext).
    pub fn a1111_name(&self) -> &'static str {
        match self {
            Self::Ddim => "DDIM",
            Self::Euler => "Euler",
            Self::EulerAncestral => "Euler a",
            Self::DpmPp2M => "DPM++ 2M",
            Self::DpmPp2MKarras => "DPM++ 2M Karras",
            Self::Lcm => "LCM",
            Self::Pndm => "PLMS",
        }
    }

    /// The diffusers class implementing it.
    pub fn class_name(&self) -> &'static str {
        match self {
            Self::Ddim => "DDIMScheduler",
            Self::Euler => "EulerDiscreteScheduler",
            Self::EulerAncestral => "EulerAncestralDiscreteScheduler",
            Self::DpmPp2M | Self::DpmPp2MKarras => "DPMSolverMultistepScheduler",
            Self::Lcm => "LCMScheduler",
            Self::Pndm => "PNDMScheduler",
        }
    }
}

impl std::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A scheduler prepared for a fixed number of inference steps (diffusers' `set_timesteps`).
///
/// Call `step` with `step_index` 0, 1, 2, ... in order. Multistep schedulers keep history
/// between calls; a call whose index does not follow the previous one starts afresh (so a
/// scheduler can be reused, or an img2img run can start at a later index).
pub trait Scheduler: Send {
    /// The timesteps given to the UNet, in order; one `step` per entry.
    fn timesteps(&self) -> &[f64];

    /// Standard deviation of the initial noise (multiply `N(0, 1)` latents by it).
    /// 1 for the alpha-parameterised schedulers (DDIM, DPM, LCM, PNDM); sigma-based ones override.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The factor `scale_model_input` applies to the sample before the UNet at this step
    /// (identity unless the scheduler works in sigma space).
    fn input_scale(&self, _step_index: usize) -> f64 {
        1.0
    }

    /// One denoising step: the sample at `timesteps()[step_index + 1]` (or the final sample)
    /// from the UNet output at `timesteps()[step_index]`. Stochastic schedulers draw their
    /// noise from `noise`, as diffusers draws from its generator.
    ///
    /// # Panics
    /// If `step_index` is out of range or the slices differ in length.
    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        noise: &mut NoiseGenerator,
    ) -> Vec<f32>;

    /// diffusers' `add_noise(original, noise, timesteps[step_index])`: the forward process,
    /// e.g. to start img2img at a later step.
    ///
    /// # Panics
    /// If `step_index` is out of range or the slices differ in length.
    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Vec<f32>;
}

/// Builds `kind` from `config` for `num_inference_steps` steps, like diffusers'
/// `Kind.from_config(config)` followed by `set_timesteps(num_inference_steps)`: keys the
/// target class does not know are ignored and missing keys take that class's defaults.
/// `DpmPp2M` and `DpmPp2MKarras` set `use_karras_sigmas` to false and true respectively.
pub fn build(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    num_inference_steps: usize,
) -> Result<Box<dyn Scheduler>, SchedulerError> {
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(DdimScheduler::new(config, num_inference_steps)?),
        SchedulerKind::Euler => Box::new(EulerDiscreteScheduler::new(config, num_inference_steps)?),
        SchedulerKind::EulerAncestral => Box::new(EulerAncestralDiscreteScheduler::new(
            config,
            num_inference_steps,
        )?),
        SchedulerKind::DpmPp2M | SchedulerKind::DpmPp2MKarras => {
            let config = SchedulerConfig {
                use_karras_sigmas: Some(kind == SchedulerKind::DpmPp2MKarras),
                ..config.clone()
            };
            Box::new(DpmSolverMultistepScheduler::new(
                &config,
                num_inference_steps,
            )?)
        }
        SchedulerKind::Lcm => Box::new(LcmScheduler::new(config, num_inference_steps)?),
        SchedulerKind::Pndm => Box::new(PndmScheduler::new(config, num_inference_steps)?),
    })
}

/// Element-wise `a * x + b * y` in f64, rounded to f32.
fn axpby(a: f64, x: &[f32], b: f64, y: &[f32]) -> Vec<f32> {
    x.iter()
        .zip(y)
        .map(|(&x, &y)| (a * x as f64 + b * y as f64) as f32)
        .collect()
}
