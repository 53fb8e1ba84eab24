//! diffusers' `DDIMScheduler`, deterministic (`eta = 0`).

use super::schedule::{
    DDPM_BETAS, Prediction, Spacing, TrainSchedule, check_step_args, check_steps, leading,
    linspace_rounded, prediction, reject_true, trailing,
};
use super::{Scheduler, SchedulerConfig, SchedulerError, axpby};
use crate::noise::NoiseGenerator;

const NAME: &str = "DDIMScheduler";

#[derive(Debug, Clone)]
pub struct DdimScheduler {
    alphas_cumprod: Vec<f32>,
    /// ᾱ used after the last step (`set_alpha_to_one`).
    final_alpha_cumprod: f64,
    timesteps: Vec<i64>,
    timesteps_f64: Vec<f64>,
    /// `num_train_timesteps // num_inference_steps`: DDIM always steps back by this much,
    /// whatever the spacing.
    step_ratio: i64,
    prediction: Prediction,
    clip_range: Option<f64>,
}

impl DdimScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let train = TrainSchedule::new(NAME, config, &DDPM_BETAS, true)?;
        reject_true(NAME, "thresholding", config.thresholding)?;
        let prediction = prediction(
            NAME,
            config,
            &[
                ("epsilon", Prediction::Epsilon),
                ("sample", Prediction::Sample),
                ("v_prediction", Prediction::Velocity),
            ],
        )?;
        let clip_range = config
            .clip_sample
            .unwrap_or(true)
            .then(|| config.clip_sample_range.unwrap_or(1.0));
        let n_train = train.num_train_timesteps;
        check_steps(steps, n_train)?;
        let timesteps = match config.timestep_spacing.unwrap_or(Spacing::Leading) {
            Spacing::Linspace => linspace_rounded(n_train, steps),
            Spacing::Leading => leading(n_train, steps, config.steps_offset.unwrap_or(0)),
            Spacing::Trailing => trailing(n_train, n_train, steps),
        };
        train.check_timesteps(steps, &timesteps)?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            train.alpha_cumprod(0)
        };
        Ok(Self {
            timesteps_f64: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps,
            final_alpha_cumprod,
            step_ratio: (n_train / steps) as i64,
            prediction,
            clip_range,
            alphas_cumprod: train.alphas_cumprod,
        })
    }

    fn alpha_cumprod(&self, t: i64) -> f64 {
        if t >= 0 {
            self.alphas_cumprod[t as usize] as f64
        } else {
            self.final_alpha_cumprod
        }
    }
}

impl Scheduler for DdimScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps_f64
    }

    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        _noise: &mut NoiseGenerator,
    ) -> Vec<f32> {
        check_step_args(NAME, model_output, sample, step_index, self.timesteps.len());
        let t = self.timesteps[step_index];
        let alpha_t = self.alpha_cumprod(t);
        let alpha_prev = self.alpha_cumprod(t - self.step_ratio);
        let (sqrt_a, sqrt_b) = (alpha_t.sqrt(), (1.0 - alpha_t).sqrt());
        // With eta = 0 the noise direction keeps all of the remaining variance.
        let (x0_coef, eps_coef) = (alpha_prev.sqrt(), (1.0 - alpha_prev).sqrt());
        model_output
            .iter()
            .zip(sample)
            .map(|(&m, &x)| {
                let (m, x) = (m as f64, x as f64);
                let (mut x0, eps) = match self.prediction {
                    Prediction::Epsilon => ((x - sqrt_b * m) / sqrt_a, m),
                    Prediction::Sample => (m, (x - sqrt_a * m) / sqrt_b),
                    Prediction::Velocity => (sqrt_a * x - sqrt_b * m, sqrt_a * m + sqrt_b * x),
                };
                // The noise estimate is not recomputed from the clipped x0
                // (`use_clipped_model_output = False` in diffusers' pipelines).
                if let Some(r) = self.clip_range {
                    x0 = x0.clamp(-r, r);
                }
                (x0_coef * x0 + eps_coef * eps) as f32
            })
            .collect()
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Vec<f32> {
        check_step_args(NAME, original, noise, step_index, self.timesteps.len());
        let a = self.alpha_cumprod(self.timesteps[step_index]);
        axpby(a.sqrt(), original, (1.0 - a).sqrt(), noise)
    }
}
