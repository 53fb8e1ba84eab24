//! Pieces shared by the schedulers: the training noise schedule (betas, `alphas_cumprod`),
//! timestep spacings and sigma helpers, reproducing the numerics of diffusers (torch f32
//! tensors, numpy f64 arrays) closely enough that the schedules match to the last bit in
//! nearly every case.

use super::SchedulerConfig;
use super::SchedulerError;

/// Resolved training-schedule settings; the defaults differ per scheduler class.
pub(crate) struct BetaDefaults {
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: &'static str,
}

/// The default of most diffusers classes: DDPM's linear 1e-4 .. 0.02.
pub(crate) const DDPM_BETAS: BetaDefaults = BetaDefaults {
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: "linear",
};

/// The training schedule: `alphas_cumprod` exactly as diffusers' f32 tensor holds it.
pub(crate) struct TrainSchedule {
    pub num_train_timesteps: usize,
    pub alphas_cumprod: Vec<f32>,
    /// `beta_schedule` as configured (DPM-Solver rounds karras timesteps unless it is
    /// `squaredcos_cap_v2`, even when `trained_betas` overrides it).
    pub beta_schedule: String,
}

impl TrainSchedule {
    /// `rescale_known`: whether the class has a `rescale_betas_zero_snr` option (only then is
    /// a `true` there an error; classes without it ignore the key, as diffusers does).
    pub fn new(
        scheduler: &'static str,
        config: &SchedulerConfig,
        defaults: &BetaDefaults,
        rescale_known: bool,
    ) -> Result<Self, SchedulerError> {
        let n = config.num_train_timesteps.unwrap_or(1000);
        if !(2..=1_000_000).contains(&n) {
            return Err(SchedulerError::InvalidValue {
                key: "num_train_timesteps".into(),
                value: n.to_string(),
                expected: "2..=1000000".into(),
            });
        }
        if rescale_known && config.rescale_betas_zero_snr == Some(true) {
            return Err(SchedulerError::unsupported(
                scheduler,
                "rescale_betas_zero_snr",
                true,
            ));
        }
        let beta_start = config.beta_start.unwrap_or(defaults.beta_start);
        let beta_end = config.beta_end.unwrap_or(defaults.beta_end);
        let beta_schedule = config
            .beta_schedule
            .clone()
            .unwrap_or_else(|| defaults.beta_schedule.to_string());
        let betas: Vec<f32> = if let Some(trained) = &config.trained_betas {
            if trained.len() != n {
                return Err(SchedulerError::InvalidValue {
                    key: "trained_betas".into(),
                    value: format!("a list of {} values", trained.len()),
                    expected: format!("num_train_timesteps = {n} values"),
                });
            }
            trained.iter().map(|&b| b as f32).collect()
        } else {
            match beta_schedule.as_str() {
                "linear" => torch_linspace_f32(beta_start, beta_end, n),
                "scaled_linear" => torch_linspace_f32(beta_start.sqrt(), beta_end.sqrt(), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect(),
                "squaredcos_cap_v2" => cosine_betas(n),
                other => {
                    return Err(SchedulerError::unsupported(
                        scheduler,
                        "beta_schedule",
                        other,
                    ));
                }
            }
        };
        // torch.cumprod on CPU accumulates in f64 and stores each partial product as f32.
        let mut acc = 1.0f64;
        let alphas_cumprod = betas
            .iter()
            .map(|&b| {
                acc *= (1.0f32 - b) as f64;
                acc as f32
            })
            .collect();
        Ok(Self {
            num_train_timesteps: n,
            alphas_cumprod,
            beta_schedule,
        })
    }

    /// `alphas_cumprod[t]` for a timestep known to be in range.
    pub fn alpha_cumprod(&self, t: i64) -> f64 {
        self.alphas_cumprod[t as usize] as f64
    }

    /// `((1 - ᾱ) / ᾱ) ** 0.5` per training timestep, as the f32 tensor diffusers builds.
    pub fn sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect()
    }

    /// Checks that every timestep indexes `alphas_cumprod`.
    pub fn check_timesteps(&self, steps: usize, timesteps: &[i64]) -> Result<(), SchedulerError> {
        match timesteps
            .iter()
            .find(|&&t| t < 0 || t as usize >= self.num_train_timesteps)
        {
            Some(t) => Err(SchedulerError::steps(
                steps,
                format!(
                    "it gives timestep {t}, outside the trained range 0..{} (check steps_offset)",
                    self.num_train_timesteps
                ),
            )),
            None => Ok(()),
        }
    }
}

/// `torch.linspace(start, end, n, dtype=float32)` on the CPU: f32 start, end and step, each
/// value one fused multiply-add from the nearer end.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (a, b) = (start as f32, end as f32);
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, a)
            } else {
                (-step).mul_add((n - 1 - i) as f32, b)
            }
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` with the cosine ("squaredcos_cap_v2") transform.
fn cosine_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `np.linspace(start, stop, num, endpoint)` in f64, with numpy's exact arithmetic.
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize, endpoint: bool) -> Vec<f64> {
    let div = if endpoint { num.saturating_sub(1) } else { num };
    if div == 0 {
        return (0..num).map(|_| start).collect();
    }
    let step = (stop - start) / div as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if endpoint && num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// `np.arange(start, stop, step)` for floats: numpy computes the length as
/// `ceil((stop - start) / step)` and fills `start + i * ((start + step) - start)`.
fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let delta = (start + step) - start;
    (0..len as usize)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

pub(crate) use super::config::TimestepSpacing as Spacing;

/// `leading`: `arange(n) * (T // n) + steps_offset`, descending.
pub(crate) fn leading(num_train: usize, n: usize, offset: i64) -> Vec<i64> {
    let ratio = (num_train / n) as i64;
    (0..n as i64).rev().map(|i| i * ratio + offset).collect()
}

/// `trailing`: `round(arange(T, 0, -T / n)) - 1`, descending.
///
/// For some `n` (61, 103, ...) numpy's float `arange` yields `n + 1` values, the last one
/// rounding to timestep -1; diffusers then runs a bogus extra step. We keep the first `n`.
pub(crate) fn trailing(start: usize, num_train: usize, n: usize) -> Vec<i64> {
    let mut t: Vec<i64> = np_arange(start as f64, 0.0, -(num_train as f64 / n as f64))
        .into_iter()
        .map(|x| x.round_ties_even() as i64 - 1)
        .collect();
    t.truncate(n);
    t
}

/// `linspace` rounded to integers (DDIM, PNDM), descending.
pub(crate) fn linspace_rounded(num_train: usize, n: usize) -> Vec<i64> {
    np_linspace(0.0, (num_train - 1) as f64, n, true)
        .into_iter()
        .rev()
        .map(|x| x.round_ties_even() as i64)
        .collect()
}

/// `np.interp(x, arange(len(fp)), fp)`: piecewise-linear lookup, clamped at both ends.
pub(crate) fn interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return fp[j] as f64;
    }
    // numpy: slope / (xp[j+1] - xp[j]) with unit spacing.
    let slope = fp[j + 1] as f64 - fp[j] as f64;
    slope * (x - j as f64) + fp[j] as f64
}

/// Karras et al. (2022) sigmas: `rho = 7` interpolation between `sigma_max` and `sigma_min`.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n, true)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional training timestep whose log-sigma matches,
/// by linear interpolation in log-sigma between neighbouring timesteps.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // Last index whose log-sigma is <= log_sigma (0 if none), kept below the final index.
    let low_idx = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l as f64 >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    // numpy evaluates `low - high` in f32 (both operands are f32), the rest in f64.
    let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// `np.log` of the f32 sigma table.
pub(crate) fn log_sigmas(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|&s| (s as f64).ln() as f32).collect()
}

/// Checks the number of inference steps common to all schedulers.
pub(crate) fn check_steps(steps: usize, num_train: usize) -> Result<(), SchedulerError> {
    if steps == 0 {
        return Err(SchedulerError::steps(steps, "must be at least 1"));
    }
    if steps > num_train {
        return Err(SchedulerError::steps(
            steps,
            format!("more than num_train_timesteps = {num_train}"),
        ));
    }
    Ok(())
}

/// Resolves `prediction_type` against the values a scheduler supports.
pub(crate) fn prediction(
    scheduler: &'static str,
    config: &SchedulerConfig,
    supported: &[(&str, Prediction)],
) -> Result<Prediction, SchedulerError> {
    let name = config.prediction_type.as_deref().unwrap_or("epsilon");
    supported
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .ok_or_else(|| SchedulerError::unsupported(scheduler, "prediction_type", name))
}

/// What the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prediction {
    Epsilon,
    Sample,
    /// "v_prediction": v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x0.
    Velocity,
}

/// Rejects a boolean option that is set but not implemented.
pub(crate) fn reject_true(
    scheduler: &'static str,
    key: &str,
    value: Option<bool>,
) -> Result<(), SchedulerError> {
    match value {
        Some(true) => Err(SchedulerError::unsupported(scheduler, key, true)),
        _ => Ok(()),
    }
}

/// Asserts the shapes of a `step` call.
pub(crate) fn check_step_args(
    scheduler: &str,
    model_output: &[f32],
    sample: &[f32],
    step_index: usize,
    len: usize,
) {
    assert!(
        step_index < len,
        "{scheduler}: step index {step_index} out of range ({len} timesteps)"
    );
    assert_eq!(
        model_output.len(),
        sample.len(),
        "{scheduler}: model output and sample differ in length"
    );
}
