//! diffusers' `EulerAncestralDiscreteScheduler`: an Euler step to a lower noise level, then
//! fresh noise back up to the next sigma.

use super::euler::{denoised, euler_init_noise_sigma, euler_timesteps};
use super::schedule::{DDPM_BETAS, Prediction, TrainSchedule, check_step_args, interp, prediction};
use super::{Scheduler, SchedulerConfig, SchedulerError, axpby};
use crate::noise::NoiseGenerator;

const NAME: &str = "EulerAncestralDiscreteScheduler";

#[derive(Debug, Clone)]
pub struct EulerAncestralDiscreteScheduler {
    timesteps: Vec<f64>,
    /// One sigma per timestep, then 0.
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    prediction: Prediction,
}

impl EulerAncestralDiscreteScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let train = TrainSchedule::new(NAME, config, &DDPM_BETAS, true)?;
        let prediction = prediction(
            NAME,
            config,
            &[
                ("epsilon", Prediction::Epsilon),
                ("v_prediction", Prediction::Velocity),
            ],
        )?;
        let (timesteps, spacing) = euler_timesteps(config, &train, steps)?;
        let table = train.sigmas();
        let sigmas: Vec<f32> = timesteps
            .iter()
            .map(|&t| interp(t as f64, &table) as f32)
            .chain([0.0])
            .collect();
        Ok(Self {
            timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            init_noise_sigma: euler_init_noise_sigma(&sigmas, spacing),
            sigmas,
            prediction,
        })
    }
}

impl Scheduler for EulerAncestralDiscreteScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn input_scale(&self, step_index: usize) -> f64 {
        let sigma = self.sigmas[step_index] as f64;
        1.0 / (sigma * sigma + 1.0).sqrt()
    }

    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        noise: &mut NoiseGenerator,
    ) -> Vec<f32> {
        check_step_args(NAME, model_output, sample, step_index, self.timesteps.len());
        let sigma = self.sigmas[step_index] as f64;
        let sigma_to = self.sigmas[step_index + 1] as f64;
        // Split the move to sigma_to into a deterministic part down to sigma_down and fresh
        // noise of size sigma_up, with sigma_down² + sigma_up² = sigma_to².
        let sigma_up = (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to)
            / (sigma * sigma))
            .max(0.0)
            .sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();
        let dt = sigma_down - sigma;
        // diffusers draws the noise at every step, the last one (sigma_up = 0) included.
        let eps = noise.normal(sample.len());
        model_output
            .iter()
            .zip(sample)
            .zip(&eps)
            .map(|((&m, &x), &z)| {
                let (m, x) = (m as f64, x as f64);
                let derivative = (x - denoised(self.prediction, sigma, m, x)) / sigma;
                (x + derivative * dt + z as f64 * sigma_up) as f32
            })
            .collect()
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Vec<f32> {
        check_step_args(NAME, original, noise, step_index, self.timesteps.len());
        axpby(1.0, original, self.sigmas[step_index] as f64, noise)
    }
}
