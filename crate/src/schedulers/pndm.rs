//! diffusers' `PNDMScheduler`: pseudo linear multistep (PLMS, with `skip_prk_steps`) or
//! pseudo Runge–Kutta warm-up steps followed by PLMS (the class default).

use super::schedule::{
    DDPM_BETAS, Prediction, Spacing, TrainSchedule, check_step_args, check_steps, leading,
    linspace_rounded, prediction, trailing,
};
use super::{Scheduler, SchedulerConfig, SchedulerError, axpby};
use crate::noise::NoiseGenerator;

const NAME: &str = "PNDMScheduler";

#[derive(Debug, Clone)]
pub struct PndmScheduler {
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f64,
    timesteps: Vec<i64>,
    timesteps_f64: Vec<f64>,
    /// Number of leading Runge–Kutta timesteps (0 with `skip_prk_steps`).
    prk_len: usize,
    /// `num_train_timesteps // num_inference_steps`.
    step_ratio: i64,
    prediction: Prediction,
    state: State,
}

/// diffusers' mutable PNDM state (`counter`, `ets`, `cur_sample`, `cur_model_output`).
#[derive(Debug, Clone, Default)]
struct State {
    counter: usize,
    /// Recent model outputs, oldest first (at most 4 are used).
    ets: Vec<Vec<f32>>,
    cur_sample: Option<Vec<f32>>,
    /// Runge–Kutta accumulator of the weighted model outputs.
    cur_model_output: Option<Vec<f32>>,
    next_index: Option<usize>,
}

impl PndmScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        // PNDM has no `rescale_betas_zero_snr`, `clip_sample` or `thresholding`: diffusers
        // ignores those keys for this class, so we do too.
        let train = TrainSchedule::new(NAME, config, &DDPM_BETAS, false)?;
        let prediction = prediction(
            NAME,
            config,
            &[
                ("epsilon", Prediction::Epsilon),
                ("v_prediction", Prediction::Velocity),
            ],
        )?;
        let n_train = train.num_train_timesteps;
        check_steps(steps, n_train)?;
        // Ascending, as diffusers' `_timesteps`.
        let mut base = match config.timestep_spacing.unwrap_or(Spacing::Leading) {
            Spacing::Linspace => linspace_rounded(n_train, steps),
            Spacing::Leading => leading(n_train, steps, config.steps_offset.unwrap_or(0)),
            Spacing::Trailing => trailing(n_train, n_train, steps),
        };
        base.reverse();
        let step_ratio = (n_train / steps) as i64;

        let (timesteps, prk_len) = if config.skip_prk_steps.unwrap_or(false) {
            // PLMS starts with a Heun-like step: evaluate at t0, step to t1, evaluate there,
            // then redo the step t0 -> t1 from the first sample with the averaged outputs.
            // Hence t1 appears twice: [t0, t1, t1, t2, ...].
            // (With a single step there is no second timestep and nothing is repeated.)
            let mut t = base.clone();
            if base.len() >= 2 {
                t.insert(base.len() - 1, base[base.len() - 2]);
            }
            t.reverse();
            (t, 0)
        } else {
            if steps < 4 {
                return Err(SchedulerError::steps(
                    steps,
                    "PNDM's Runge-Kutta warm-up needs at least 4 (or skip_prk_steps = true)",
                ));
            }
            // Four RK4 steps over the last four base timesteps, each with half-step midpoints.
            let half = step_ratio / 2;
            let last4 = &base[base.len() - 4..];
            let prk: Vec<i64> = last4.iter().flat_map(|&t| [t, t + half]).collect();
            let mut prk: Vec<i64> = prk[..prk.len() - 1].iter().flat_map(|&t| [t, t]).collect();
            prk = prk[1..prk.len() - 1].to_vec();
            prk.reverse();
            let prk_len = prk.len();
            let plms = base[..base.len() - 3].iter().rev().copied();
            (prk.into_iter().chain(plms).collect(), prk_len)
        };
        train.check_timesteps(steps, &timesteps)?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(false) {
            1.0
        } else {
            train.alpha_cumprod(0)
        };
        Ok(Self {
            timesteps_f64: timesteps.iter().map(|&t| t as f64).collect(),
            timesteps,
            prk_len,
            step_ratio,
            prediction,
            final_alpha_cumprod,
            alphas_cumprod: train.alphas_cumprod,
            state: State::default(),
        })
    }

    fn alpha_cumprod(&self, t: i64) -> f64 {
        if t < 0 {
            self.final_alpha_cumprod
        } else {
            // Clamped: only an img2img start in the middle of the warm-up could go past the end.
            let i = (t as usize).min(self.alphas_cumprod.len() - 1);
            self.alphas_cumprod[i] as f64
        }
    }

    /// DDIM-like transfer from `t` to `t_prev` (formula (9) of the PNDM paper).
    fn prev_sample(&self, sample: &[f32], t: i64, t_prev: i64, model_output: &[f32]) -> Vec<f32> {
        let alpha_t = self.alpha_cumprod(t);
        let alpha_prev = self.alpha_cumprod(t_prev);
        let (beta_t, beta_prev) = (1.0 - alpha_t, 1.0 - alpha_prev);
        let sample_coeff = (alpha_prev / alpha_t).sqrt();
        let denom = alpha_t * beta_prev.sqrt() + (alpha_t * beta_t * alpha_prev).sqrt();
        let eps_coeff = (alpha_prev - alpha_t) / denom;
        let v = self.prediction == Prediction::Velocity;
        model_output
            .iter()
            .zip(sample)
            .map(|(&m, &x)| {
                let (m, x) = (m as f64, x as f64);
                // v-prediction is turned into epsilon first, in f32 as diffusers stores it.
                let eps = if v {
                    (alpha_t.sqrt() * m + beta_t.sqrt() * x) as f32 as f64
                } else {
                    m
                };
                (sample_coeff * x - eps_coeff * eps) as f32
            })
            .collect()
    }

    fn step_prk(&mut self, model_output: &[f32], t: i64, sample: &[f32]) -> Vec<f32> {
        let counter = self.state.counter;
        let diff_to_prev = if counter % 2 == 1 {
            0
        } else {
            self.step_ratio / 2
        };
        let t_prev = t - diff_to_prev;
        // All four evaluations of one RK step start from the sample at its first timestep.
        let t = self.timesteps[counter / 4 * 4];
        let acc = self.state.cur_model_output.take();
        let add = |acc: Option<Vec<f32>>, w: f64| -> Vec<f32> {
            match acc {
                Some(a) => axpby(1.0, &a, w, model_output),
                None => model_output
                    .iter()
                    .map(|&m| (w * m as f64) as f32)
                    .collect(),
            }
        };
        let eps = match counter % 4 {
            0 => {
                self.state.cur_model_output = Some(add(acc, 1.0 / 6.0));
                self.state.ets.push(model_output.to_vec());
                self.state.cur_sample = Some(sample.to_vec());
                model_output.to_vec()
            }
            1 | 2 => {
                self.state.cur_model_output = Some(add(acc, 1.0 / 3.0));
                model_output.to_vec()
            }
            _ => add(acc, 1.0 / 6.0),
        };
        let cur_sample = self.state.cur_sample.clone();
        let from = cur_sample.as_deref().unwrap_or(sample);
        self.prev_sample(from, t, t_prev, &eps)
    }

    fn step_plms(&mut self, model_output: &[f32], t: i64, sample: &[f32]) -> Vec<f32> {
        let counter = self.state.counter;
        let mut t = t;
        let mut t_prev = t - self.step_ratio;
        if counter != 1 {
            let ets = &mut self.state.ets;
            if ets.len() > 3 {
                ets.drain(..ets.len() - 3);
            }
            ets.push(model_output.to_vec());
        } else {
            // The repeated second timestep: redo the first step (t + ratio -> t) from the first
            // sample, with the two outputs averaged below.
            t_prev = t;
            t += self.step_ratio;
        }
        let ets = &self.state.ets;
        let n = ets.len();
        let combine = |weights: &[f64], scale: f64| -> Vec<f32> {
            (0..model_output.len())
                .map(|i| {
                    let s: f64 = weights
                        .iter()
                        .enumerate()
                        .map(|(k, w)| w * ets[n - 1 - k][i] as f64)
                        .sum();
                    (s * scale) as f32
                })
                .collect()
        };
        let mut from = sample.to_vec();
        let eps: Vec<f32> = if n == 1 && counter == 0 {
            self.state.cur_sample = Some(sample.to_vec());
            model_output.to_vec()
        } else if n == 1 && counter == 1 {
            if let Some(first) = self.state.cur_sample.take() {
                from = first;
            }
            axpby(0.5, model_output, 0.5, &ets[0])
        } else if n == 2 {
            combine(&[3.0, -1.0], 0.5)
        } else if n == 3 {
            combine(&[23.0, -16.0, 5.0], 1.0 / 12.0)
        } else {
            combine(&[55.0, -59.0, 37.0, -9.0], 1.0 / 24.0)
        };
        self.prev_sample(&from, t, t_prev, &eps)
    }
}

impl Scheduler for PndmScheduler {
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
        if self.state.next_index != Some(step_index) {
            self.state = State::default();
        }
        self.state.next_index = Some(step_index + 1);
        let t = self.timesteps[step_index];
        let out = if self.state.counter < self.prk_len {
            self.step_prk(model_output, t, sample)
        } else {
            self.step_plms(model_output, t, sample)
        };
        self.state.counter += 1;
        out
    }

    fn add_noise(&self, original: &[f32], noise: &[f32], step_index: usize) -> Vec<f32> {
        check_step_args(NAME, original, noise, step_index, self.timesteps.len());
        let a = self.alpha_cumprod(self.timesteps[step_index]);
        axpby(a.sqrt(), original, (1.0 - a).sqrt(), noise)
    }
}
