//! diffusers' `EulerDiscreteScheduler` (Karras et al. Algorithm 2 without churn).

use super::schedule::{
    DDPM_BETAS, Prediction, Spacing, TrainSchedule, check_step_args, check_steps, interp,
    karras_sigmas, leading, log_sigmas, np_linspace, prediction, reject_true, sigma_to_t, trailing,
};
use super::{Scheduler, SchedulerConfig, SchedulerError, axpby};
use crate::noise::NoiseGenerator;

const NAME: &str = "EulerDiscreteScheduler";

#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler {
    timesteps: Vec<f64>,
    /// One sigma per timestep plus the final one (0 or the smallest training sigma).
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    prediction: Prediction,
}

/// Timesteps (as the f32 values diffusers stores) for the Euler-family spacings, and the
/// training-sigma table; shared with the ancestral variant.
pub(crate) fn euler_timesteps(
    config: &SchedulerConfig,
    train: &TrainSchedule,
    steps: usize,
) -> Result<(Vec<f32>, Spacing), SchedulerError> {
    let n_train = train.num_train_timesteps;
    check_steps(steps, n_train)?;
    let spacing = config.timestep_spacing.unwrap_or(Spacing::Linspace);
    let timesteps = match spacing {
        // Fractional timesteps: linspace is not rounded for the Euler family.
        Spacing::Linspace => np_linspace(0.0, (n_train - 1) as f64, steps, true)
            .into_iter()
            .rev()
            .map(|t| t as f32)
            .collect(),
        Spacing::Leading => leading(n_train, steps, config.steps_offset.unwrap_or(0))
            .into_iter()
            .map(|t| t as f32)
            .collect(),
        Spacing::Trailing => trailing(n_train, n_train, steps)
            .into_iter()
            .map(|t| t as f32)
            .collect(),
    };
    Ok((timesteps, spacing))
}

/// `init_noise_sigma` of the Euler family: the largest sigma, or the standard deviation of
/// `x_T = x_0 + sigma * noise` for `leading` spacing (computed in f32 like diffusers).
pub(crate) fn euler_init_noise_sigma(sigmas: &[f32], spacing: Spacing) -> f64 {
    let max = sigmas.iter().copied().fold(0.0f32, f32::max);
    match spacing {
        Spacing::Linspace | Spacing::Trailing => max as f64,
        Spacing::Leading => (max * max + 1.0).sqrt() as f64,
    }
}

impl EulerDiscreteScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let train = TrainSchedule::new(NAME, config, &DDPM_BETAS, true)?;
        let prediction = prediction(
            NAME,
            config,
            &[
                ("epsilon", Prediction::Epsilon),
                ("v_prediction", Prediction::Velocity),
                ("sample", Prediction::Sample),
                ("original_sample", Prediction::Sample),
            ],
        )?;
        reject_true(
            NAME,
            "use_exponential_sigmas",
            config.use_exponential_sigmas,
        )?;
        reject_true(NAME, "use_beta_sigmas", config.use_beta_sigmas)?;
        match config.interpolation_type.as_deref() {
            None | Some("linear") => {}
            Some(other) => {
                return Err(SchedulerError::unsupported(
                    NAME,
                    "interpolation_type",
                    other,
                ));
            }
        }
        // "continuous" only changes anything together with v_prediction.
        if config.timestep_type.as_deref() == Some("continuous")
            && prediction == Prediction::Velocity
        {
            return Err(SchedulerError::unsupported(
                NAME,
                "timestep_type",
                "continuous",
            ));
        }

        let (mut timesteps, spacing) = euler_timesteps(config, &train, steps)?;
        let table = train.sigmas();
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| interp(t as f64, &table))
            .collect();
        if config.use_karras_sigmas == Some(true) {
            let sigma_min = config.sigma_min.unwrap_or(sigmas[steps - 1]);
            let sigma_max = config.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras_sigmas(sigma_min, sigma_max, steps);
            let log_table = log_sigmas(&table);
            timesteps = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &log_table) as f32)
                .collect();
        }
        let sigma_last = match config.final_sigmas_type.as_deref() {
            None | Some("zero") => 0.0,
            Some("sigma_min") => table[0],
            Some(other) => {
                return Err(SchedulerError::unsupported(
                    NAME,
                    "final_sigmas_type",
                    other,
                ));
            }
        };
        let sigmas: Vec<f32> = sigmas
            .iter()
            .map(|&s| s as f32)
            .chain([sigma_last])
            .collect();
        Ok(Self {
            timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            init_noise_sigma: euler_init_noise_sigma(&sigmas, spacing),
            sigmas,
            prediction,
        })
    }
}

impl Scheduler for EulerDiscreteScheduler {
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
        _noise: &mut NoiseGenerator,
    ) -> Vec<f32> {
        check_step_args(NAME, model_output, sample, step_index, self.timesteps.len());
        let sigma = self.sigmas[step_index] as f64;
        let dt = self.sigmas[step_index + 1] as f64 - sigma;
        model_output
            .iter()
            .zip(sample)
            .map(|(&m, &x)| {
                let (m, x) = (m as f64, x as f64);
                let x0 = denoised(self.prediction, sigma, m, x);
                let derivative = (x - x0) / sigma;
                (x + derivative * dt) as f32
            })
            .collect()
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Vec<f32> {
        check_step_args(NAME, original, noise, step_index, self.timesteps.len());
        axpby(1.0, original, self.sigmas[step_index] as f64, noise)
    }
}

/// The model's estimate of the clean sample in the sigma (variance-exploding) parametrisation.
pub(crate) fn denoised(prediction: Prediction, sigma: f64, model_output: f64, sample: f64) -> f64 {
    match prediction {
        Prediction::Epsilon => sample - sigma * model_output,
        Prediction::Sample => model_output,
        Prediction::Velocity => {
            let s2 = sigma * sigma + 1.0;
            model_output * (-sigma / s2.sqrt()) + sample / s2
        }
    }
}
