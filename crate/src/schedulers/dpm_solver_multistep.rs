//! diffusers' `DPMSolverMultistepScheduler`: DPM-Solver++ (default) or DPM-Solver, multistep,
//! orders 1–3, optionally on Karras sigmas. The SDE variants are not implemented.

use super::schedule::{
    DDPM_BETAS, Prediction, Spacing, TrainSchedule, check_step_args, check_steps, interp,
    karras_sigmas, log_sigmas, np_linspace, prediction, reject_true, sigma_to_t, trailing,
};
use super::{Scheduler, SchedulerConfig, SchedulerError, axpby};
use crate::noise::NoiseGenerator;

const NAME: &str = "DPMSolverMultistepScheduler";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    /// DPM-Solver++: the model output is converted to a data (x0) prediction.
    DpmSolverPp,
    /// DPM-Solver: the model output is converted to a noise prediction.
    DpmSolver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler {
    timesteps: Vec<f64>,
    /// One sigma per timestep plus the final one.
    sigmas: Vec<f32>,
    prediction: Prediction,
    algorithm: Algorithm,
    solver_type: SolverType,
    solver_order: usize,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_zero: bool,
    /// Converted model outputs of the latest steps, oldest first (at most `solver_order`).
    history: Vec<Vec<f32>>,
    /// The index the next `step` should have to continue the current run.
    next_index: Option<usize>,
}

/// `(alpha_t, sigma_t, lambda_t)` of the variance-preserving process at noise level `sigma`.
fn alpha_sigma_lambda(sigma: f32) -> (f64, f64, f64) {
    let sigma = sigma as f64;
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha;
    // sigma = 0 (the final step) gives lambda = +inf, which the first-order update handles.
    (alpha, sigma_t, alpha.ln() - sigma_t.ln())
}

impl DpmSolverMultistepScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let train = TrainSchedule::new(NAME, config, &DDPM_BETAS, true)?;
        let prediction = prediction(
            NAME,
            config,
            &[
                ("epsilon", Prediction::Epsilon),
                ("sample", Prediction::Sample),
                ("v_prediction", Prediction::Velocity),
            ],
        )?;
        reject_true(NAME, "thresholding", config.thresholding)?;
        for (key, value) in [
            ("use_exponential_sigmas", config.use_exponential_sigmas),
            ("use_beta_sigmas", config.use_beta_sigmas),
            ("use_lu_lambdas", config.use_lu_lambdas),
            ("use_flow_sigmas", config.use_flow_sigmas),
        ] {
            reject_true(NAME, key, value)?;
        }
        if let Some(v @ ("learned" | "learned_range")) = config.variance_type.as_deref() {
            return Err(SchedulerError::unsupported(NAME, "variance_type", v));
        }
        // diffusers maps the algorithms it dropped onto the ones it kept.
        let algorithm = match config.algorithm_type.as_deref() {
            None | Some("dpmsolver++") | Some("deis") => Algorithm::DpmSolverPp,
            Some("dpmsolver") => Algorithm::DpmSolver,
            Some(other) => return Err(SchedulerError::unsupported(NAME, "algorithm_type", other)),
        };
        let solver_type = match config.solver_type.as_deref() {
            None | Some("midpoint") | Some("logrho") | Some("bh1") | Some("bh2") => {
                SolverType::Midpoint
            }
            Some("heun") => SolverType::Heun,
            Some(other) => return Err(SchedulerError::unsupported(NAME, "solver_type", other)),
        };
        let solver_order = config.solver_order.unwrap_or(2);
        if !(1..=3).contains(&solver_order) {
            return Err(SchedulerError::unsupported(
                NAME,
                "solver_order",
                solver_order,
            ));
        }
        let table = train.sigmas();
        let final_sigma_zero = match config.final_sigmas_type.as_deref() {
            None | Some("zero") => true,
            Some("sigma_min") => false,
            Some(other) => {
                return Err(SchedulerError::unsupported(
                    NAME,
                    "final_sigmas_type",
                    other,
                ));
            }
        };
        let algorithm_name = config.algorithm_type.as_deref().unwrap_or("dpmsolver++");
        if final_sigma_zero && algorithm_name != "dpmsolver++" {
            // diffusers refuses this (checking the name as given, so "deis" too): only the
            // data-prediction form can step to sigma = 0.
            return Err(SchedulerError::unsupported(
                NAME,
                "final_sigmas_type",
                format!("zero (with algorithm_type {algorithm_name})"),
            ));
        }

        let n_train = train.num_train_timesteps;
        check_steps(steps, n_train)?;
        let last_timestep = n_train - clipped_index(&train, config.lambda_min_clipped);
        let mut timesteps: Vec<i64> = match config.timestep_spacing.unwrap_or(Spacing::Linspace) {
            // Spaced over steps + 1 points, dropping the last (t = 0).
            Spacing::Linspace => np_linspace(0.0, last_timestep as f64 - 1.0, steps + 1, true)
                .into_iter()
                .rev()
                .take(steps)
                .map(|t| t.round_ties_even() as i64)
                .collect(),
            Spacing::Leading => {
                let ratio = (last_timestep / (steps + 1)) as i64;
                let offset = config.steps_offset.unwrap_or(0);
                (1..=steps as i64)
                    .rev()
                    .map(|i| i * ratio + offset)
                    .collect()
            }
            Spacing::Trailing => trailing(last_timestep, n_train, steps),
        };

        let sigmas: Vec<f64> = if config.use_karras_sigmas == Some(true) {
            let sigma_min = config.sigma_min.unwrap_or(table[0] as f64);
            let sigma_max = config.sigma_max.unwrap_or(table[n_train - 1] as f64);
            let sigmas = karras_sigmas(sigma_min, sigma_max, steps);
            let log_table = log_sigmas(&table);
            // diffusers rounds the fractional timesteps, except for the cosine schedule where
            // the conversion to int64 truncates them.
            let cosine = train.beta_schedule == "squaredcos_cap_v2";
            timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_table);
                    (if cosine {
                        t.trunc()
                    } else {
                        t.round_ties_even()
                    }) as i64
                })
                .collect();
            sigmas
        } else {
            if timesteps.windows(2).any(|w| w[1] >= w[0]) || timesteps.is_empty() {
                return Err(SchedulerError::steps(
                    steps,
                    format!("too many for this spacing: timesteps {timesteps:?} repeat"),
                ));
            }
            timesteps
                .iter()
                .map(|&t| interp(t as f64, &table))
                .collect()
        };
        let sigma_last = if final_sigma_zero { 0.0 } else { table[0] };
        let sigmas: Vec<f32> = sigmas
            .iter()
            .map(|&s| s as f32)
            .chain([sigma_last])
            .collect();

        Ok(Self {
            timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            sigmas,
            prediction,
            algorithm,
            solver_type,
            solver_order,
            lower_order_final: config.lower_order_final.unwrap_or(true),
            euler_at_final: config.euler_at_final.unwrap_or(false),
            final_sigma_zero,
            history: Vec::new(),
            next_index: None,
        })
    }

    /// diffusers' `convert_model_output`: x0 for DPM-Solver++, epsilon for DPM-Solver.
    fn convert(&self, model_output: &[f32], sample: &[f32], step_index: usize) -> Vec<f32> {
        let (alpha, sigma, _) = alpha_sigma_lambda(self.sigmas[step_index]);
        let f = |m: f64, x: f64| match (self.algorithm, self.prediction) {
            (Algorithm::DpmSolverPp, Prediction::Epsilon) => (x - sigma * m) / alpha,
            (Algorithm::DpmSolverPp, Prediction::Sample) => m,
            (Algorithm::DpmSolverPp, Prediction::Velocity) => alpha * x - sigma * m,
            (Algorithm::DpmSolver, Prediction::Epsilon) => m,
            (Algorithm::DpmSolver, Prediction::Sample) => (x - alpha * m) / sigma,
            (Algorithm::DpmSolver, Prediction::Velocity) => alpha * m + sigma * x,
        };
        model_output
            .iter()
            .zip(sample)
            .map(|(&m, &x)| f(m as f64, x as f64) as f32)
            .collect()
    }

    /// The order diffusers uses at this step: warm-up with lower orders, and lower orders at
    /// the end of short schedules (`lower_order_final`) or when stepping to sigma = 0.
    fn order(&self, step_index: usize) -> usize {
        let n = self.timesteps.len();
        let short = self.lower_order_final && n < 15;
        let lower_final =
            step_index == n - 1 && (self.euler_at_final || short || self.final_sigma_zero);
        let lower_second = step_index + 2 == n && short;
        let warm = self.history.len() - 1; // previous steps available ("lower_order_nums")
        if self.solver_order == 1 || warm < 1 || lower_final {
            1
        } else if self.solver_order == 2 || warm < 2 || lower_second {
            2
        } else {
            3
        }
    }
}

/// Index of the first timestep (counted from t = T-1 downwards, i.e. in increasing
/// log-SNR order) whose log-SNR reaches `lambda_min_clipped`; 0 when unset.
fn clipped_index(train: &TrainSchedule, lambda_min_clipped: Option<f64>) -> usize {
    let Some(limit) = lambda_min_clipped else {
        return 0;
    };
    let limit = limit as f32;
    // log(sqrt(ᾱ)) - log(sqrt(1 - ᾱ)) in f32, as the tensor diffusers searches.
    train
        .alphas_cumprod
        .iter()
        .rev()
        .map(|&a| a.sqrt().ln() - (1.0 - a).sqrt().ln())
        .take_while(|&l| l < limit)
        .count()
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &[f32],
        step_index: usize,
        sample: &[f32],
        _noise: &mut NoiseGenerator,
    ) -> Vec<f32> {
        check_step_args(NAME, model_output, sample, step_index, self.timesteps.len());
        if self.next_index != Some(step_index) {
            self.history.clear();
        }
        self.next_index = Some(step_index + 1);
        let converted = self.convert(model_output, sample, step_index);
        if self.history.len() == self.solver_order {
            self.history.remove(0);
        }
        self.history.push(converted);
        let order = self.order(step_index);

        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[step_index + 1]);
        let (alpha_s0, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[step_index]);
        // log-SNR of earlier steps; an order-k step has k - 1 consecutive previous steps.
        let lambda_back = |k: usize| alpha_sigma_lambda(self.sigmas[step_index - k]).2;
        let h = lambda_t - lambda_s0;
        let len = self.history.len();
        let m0 = &self.history[len - 1];

        // x_t = a * sample + c0 * D0 + c1 * D1 + c2 * D2 (D1, D2: finite differences).
        let pp = self.algorithm == Algorithm::DpmSolverPp;
        let a = if pp {
            sigma_t / sigma_s0
        } else {
            alpha_t / alpha_s0
        };
        // phi_1 = -(e^{-h} - 1) for ++, and -(e^{h} - 1) for the noise form (with sigma_t).
        let phi1 = if pp {
            -(alpha_t * ((-h).exp() - 1.0))
        } else {
            -(sigma_t * (h.exp() - 1.0))
        };
        let c1_heun = if pp {
            alpha_t * (((-h).exp() - 1.0) / h + 1.0)
        } else {
            -(sigma_t * ((h.exp() - 1.0) / h - 1.0))
        };

        match order {
            1 => m0
                .iter()
                .zip(sample)
                .map(|(&d0, &x)| (a * x as f64 + phi1 * d0 as f64) as f32)
                .collect(),
            2 => {
                let lambda_s1 = lambda_back(1);
                let m1 = &self.history[len - 2];
                let r0 = (lambda_s0 - lambda_s1) / h;
                let c1 = match self.solver_type {
                    SolverType::Midpoint => 0.5 * phi1,
                    SolverType::Heun => c1_heun,
                };
                m0.iter()
                    .zip(m1)
                    .zip(sample)
                    .map(|((&d0, &d1), &x)| {
                        let (d0, d1) = (d0 as f64, d1 as f64);
                        let d1 = (1.0 / r0) * (d0 - d1);
                        (a * x as f64 + phi1 * d0 + c1 * d1) as f32
                    })
                    .collect()
            }
            _ => {
                let (lambda_s1, lambda_s2) = (lambda_back(1), lambda_back(2));
                let (m1, m2) = (&self.history[len - 2], &self.history[len - 3]);
                let r0 = (lambda_s0 - lambda_s1) / h;
                let r1 = (lambda_s1 - lambda_s2) / h;
                let c2 = if pp {
                    -(alpha_t * (((-h).exp() - 1.0 + h) / (h * h) - 0.5))
                } else {
                    -(sigma_t * ((h.exp() - 1.0 - h) / (h * h) - 0.5))
                };
                m0.iter()
                    .zip(m1)
                    .zip(m2)
                    .zip(sample)
                    .map(|(((&d0, &d1), &d2), &x)| {
                        let (m0, m1, m2) = (d0 as f64, d1 as f64, d2 as f64);
                        let d1_0 = (1.0 / r0) * (m0 - m1);
                        let d1_1 = (1.0 / r1) * (m1 - m2);
                        let d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1);
                        let d2 = (1.0 / (r0 + r1)) * (d1_0 - d1_1);
                        (a * x as f64 + phi1 * m0 + c1_heun * d1 + c2 * d2) as f32
                    })
                    .collect()
            }
        }
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Vec<f32> {
        check_step_args(NAME, original, noise, step_index, self.timesteps.len());
        let (alpha, sigma, _) = alpha_sigma_lambda(self.sigmas[step_index]);
        axpby(alpha, original, sigma, noise)
    }
}
