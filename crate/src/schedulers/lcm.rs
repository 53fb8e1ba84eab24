//! diffusers' `LCMScheduler` (latent consistency models): each step predicts the clean sample
//! through the consistency-model boundary condition, then re-noises it to the next timestep.

use super::schedule::{
    BetaDefaults, Prediction, TrainSchedule, check_step_args, check_steps, np_linspace, prediction,
    reject_true,
};
use super::{Scheduler, SchedulerConfig, SchedulerError, axpby};
use crate::noise::NoiseGenerator;

const NAME: &str = "LCMScheduler";

const LCM_BETAS: BetaDefaults = BetaDefaults {
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: "scaled_linear",
};

/// `sigma_data` of the consistency-model parametrisation.
const SIGMA_DATA: f64 = 0.5;

#[derive(Debug, Clone)]
pub struct LcmScheduler {
    alphas_cumprod: Vec<f32>,
    timesteps: Vec<i64>,
    timesteps_f64: Vec<f64>,
    timestep_scaling: f64,
    prediction: Prediction,
    clip_range: Option<f64>,
}

impl LcmScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let train = TrainSchedule::new(NAME, config, &LCM_BETAS, true)?;
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
            .unwrap_or(false)
            .then(|| config.clip_sample_range.unwrap_or(1.0));
        let n_train = train.num_train_timesteps;
        check_steps(steps, n_train)?;
        // LCM ignores timestep_spacing and steps_offset: it picks `steps` evenly spaced
        // entries of the distillation schedule (`original_inference_steps` timesteps
        // k-1, 2k-1, ..., with k = T / original_inference_steps).
        let original = config.original_inference_steps.unwrap_or(50);
        if original == 0 || original > n_train {
            return Err(SchedulerError::InvalidValue {
                key: "original_inference_steps".into(),
                value: original.to_string(),
                expected: format!("1..={n_train} (num_train_timesteps)"),
            });
        }
        if steps > original {
            return Err(SchedulerError::steps(
                steps,
                format!("more than original_inference_steps = {original}"),
            ));
        }
        let k = (n_train / original) as i64;
        let origin: Vec<i64> = (1..=original as i64).rev().map(|i| i * k - 1).collect();
        let timesteps: Vec<i64> = np_linspace(0.0, original as f64, steps, false)
            .into_iter()
            .map(|x| origin[x.floor() as usize])
            .collect();
        Ok(Self {
            timesteps_f64: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps,
            timestep_scaling: config.timestep_scaling.unwrap_or(10.0),
            prediction,
            clip_range,
            alphas_cumprod: train.alphas_cumprod,
        })
    }
}

impl Scheduler for LcmScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps_f64
    }

    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        noise: &mut NoiseGenerator,
    ) -> Vec<f32> {
        check_step_args(NAME, model_output, sample, step_index, self.timesteps.len());
        let t = self.timesteps[step_index];
        let alpha_t = self.alphas_cumprod[t as usize] as f64;
        let (sqrt_a, sqrt_b) = (alpha_t.sqrt(), (1.0 - alpha_t).sqrt());
        // Boundary condition: c_skip -> 1 and c_out -> 0 as t -> 0.
        let scaled = t as f64 * self.timestep_scaling;
        let c_skip = SIGMA_DATA * SIGMA_DATA / (scaled * scaled + SIGMA_DATA * SIGMA_DATA);
        let c_out = scaled / (scaled * scaled + SIGMA_DATA * SIGMA_DATA).sqrt();
        let denoised: Vec<f32> = model_output
            .iter()
            .zip(sample)
            .map(|(&m, &x)| {
                let (m, x) = (m as f64, x as f64);
                let mut x0 = match self.prediction {
                    Prediction::Epsilon => (x - sqrt_b * m) / sqrt_a,
                    Prediction::Sample => m,
                    Prediction::Velocity => sqrt_a * x - sqrt_b * m,
                };
                if let Some(r) = self.clip_range {
                    x0 = x0.clamp(-r, r);
                }
                (c_out * x0 + c_skip * x) as f32
            })
            .collect();
        match self.timesteps.get(step_index + 1) {
            // Re-noise the estimate to the next timestep; the last step returns it as is.
            Some(&prev) => {
                let alpha_prev = self.alphas_cumprod[prev as usize] as f64;
                let z = noise.normal(sample.len());
                axpby(alpha_prev.sqrt(), &denoised, (1.0 - alpha_prev).sqrt(), &z)
            }
            None => denoised,
        }
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Vec<f32> {
        check_step_args(NAME, original, noise, step_index, self.timesteps.len());
        let a = self.alphas_cumprod[self.timesteps[step_index] as usize] as f64;
        axpby(a.sqrt(), original, (1.0 - a).sqrt(), noise)
    }
}
