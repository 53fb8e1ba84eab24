//! `scheduler_config.json` as written by diffusers, and the errors of this module.
//!
//! Every key is optional: diffusers fills a missing key with the default of the class that is
//! being built, and those defaults differ between classes (e.g. `timestep_spacing` is
//! `leading` for DDIM but `linspace` for Euler). Each scheduler therefore resolves the values
//! it knows with its own defaults and ignores the rest, as `Class.from_config(config)` does.

use serde_json::{Map, Value};
use thiserror::Error;

use super::SchedulerKind;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum SchedulerError {
    #[error("scheduler config is not valid JSON: {0}")]
    Json(String),
    #[error("scheduler config key `{key}` = {value} is invalid: expected {expected}")]
    InvalidValue {
        key: String,
        value: String,
        expected: String,
    },
    #[error("{scheduler}: `{key}` = {value} is not supported")]
    Unsupported {
        scheduler: &'static str,
        key: String,
        value: String,
    },
    #[error("scheduler config has no `_class_name`")]
    MissingClassName,
    #[error("unsupported scheduler class `_class_name` = {0:?}")]
    UnknownClass(String),
    #[error("invalid number of inference steps {steps}: {reason}")]
    InvalidSteps { steps: usize, reason: String },
}

impl SchedulerError {
    pub(crate) fn unsupported(
        scheduler: &'static str,
        key: &str,
        value: impl std::fmt::Debug,
    ) -> Self {
        Self::Unsupported {
            scheduler,
            key: key.to_string(),
            value: format!("{value:?}"),
        }
    }

    pub(crate) fn steps(steps: usize, reason: impl Into<String>) -> Self {
        Self::InvalidSteps {
            steps,
            reason: reason.into(),
        }
    }
}

/// A parsed `scheduler_config.json`. `None` means "not given": the scheduler being built uses
/// its own diffusers default. Keys that no supported scheduler reads are dropped.
/// diffusers' `timestep_spacing`: how inference timesteps are picked from the training ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    Linspace,
    Leading,
    Trailing,
}

impl TimestepSpacing {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "linspace" => Some(Self::Linspace),
            "leading" => Some(Self::Leading),
            "trailing" => Some(Self::Trailing),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerConfig {
    pub class_name: Option<String>,
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<String>,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: Option<String>,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: Option<i64>,
    pub set_alpha_to_one: Option<bool>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub thresholding: Option<bool>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub skip_prk_steps: Option<bool>,
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub interpolation_type: Option<String>,
    pub timestep_type: Option<String>,
    pub final_sigmas_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<String>,
    pub lambda_min_clipped: Option<f64>,
    pub variance_type: Option<String>,
    pub original_inference_steps: Option<usize>,
    pub timestep_scaling: Option<f64>,
}

impl SchedulerConfig {
    /// Parses the text of a `scheduler_config.json`. Python's `Infinity`/`NaN` literals, which
    /// diffusers writes e.g. for `lambda_min_clipped`, are accepted.
    pub fn from_json(text: &str) -> Result<Self, SchedulerError> {
        Self::from_value(&parse_json(text)?)
    }

    /// Reads the config from an already parsed JSON object.
    pub fn from_value(value: &Value) -> Result<Self, SchedulerError> {
        let Some(object) = value.as_object() else {
            return Err(SchedulerError::Json("expected a JSON object".into()));
        };
        // diffusers records keys that were never given (and so hold the *original* class's
        // defaults) in `_use_default_values`; `from_config` drops them so that the target
        // class uses its own defaults.
        let defaulted: Vec<&str> = match object.get("_use_default_values") {
            Some(Value::Array(keys)) => keys.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let r = Reader { object, defaulted };
        Ok(Self {
            class_name: r.string("_class_name")?,
            num_train_timesteps: r.count("num_train_timesteps")?,
            beta_start: r.float("beta_start")?,
            beta_end: r.float("beta_end")?,
            beta_schedule: r.string("beta_schedule")?,
            trained_betas: r.floats("trained_betas")?,
            prediction_type: r.string("prediction_type")?,
            timestep_spacing: r.spacing("timestep_spacing")?,
            steps_offset: r.int("steps_offset")?,
            set_alpha_to_one: r.bool("set_alpha_to_one")?,
            clip_sample: r.bool("clip_sample")?,
            clip_sample_range: r.float("clip_sample_range")?,
            thresholding: r.bool("thresholding")?,
            rescale_betas_zero_snr: r.bool("rescale_betas_zero_snr")?,
            skip_prk_steps: r.bool("skip_prk_steps")?,
            use_karras_sigmas: r.bool("use_karras_sigmas")?,
            use_exponential_sigmas: r.bool("use_exponential_sigmas")?,
            use_beta_sigmas: r.bool("use_beta_sigmas")?,
            use_lu_lambdas: r.bool("use_lu_lambdas")?,
            use_flow_sigmas: r.bool("use_flow_sigmas")?,
            sigma_min: r.float("sigma_min")?,
            sigma_max: r.float("sigma_max")?,
            interpolation_type: r.string("interpolation_type")?,
            timestep_type: r.string("timestep_type")?,
            final_sigmas_type: r.string("final_sigmas_type")?,
            lower_order_final: r.bool("lower_order_final")?,
            euler_at_final: r.bool("euler_at_final")?,
            solver_order: r.count("solver_order")?,
            algorithm_type: r.string("algorithm_type")?,
            solver_type: r.string("solver_type")?,
            lambda_min_clipped: r.float("lambda_min_clipped")?,
            variance_type: r.string("variance_type")?,
            original_inference_steps: r.count("original_inference_steps")?,
            timestep_scaling: r.float("timestep_scaling")?,
        })
    }

    /// The scheduler this config describes, from `_class_name` (and `use_karras_sigmas` for
    /// `DPMSolverMultistepScheduler`).
    pub fn kind(&self) -> Result<SchedulerKind, SchedulerError> {
        let name = self
            .class_name
            .as_deref()
            .ok_or(SchedulerError::MissingClassName)?;
        Ok(match name {
            "DDIMScheduler" => SchedulerKind::Ddim,
            "EulerDiscreteScheduler" => SchedulerKind::Euler,
            "EulerAncestralDiscreteScheduler" => SchedulerKind::EulerAncestral,
            "DPMSolverMultistepScheduler" if self.use_karras_sigmas == Some(true) => {
                SchedulerKind::DpmPp2MKarras
            }
            "DPMSolverMultistepScheduler" => SchedulerKind::DpmPp2M,
            "LCMScheduler" => SchedulerKind::Lcm,
            "PNDMScheduler" => SchedulerKind::Pndm,
            other => return Err(SchedulerError::UnknownClass(other.to_string())),
        })
    }
}

/// Parses JSON that may contain Python's non-standard `NaN`, `Infinity` and `-Infinity`
/// literals (Python's `json.dump` writes them); they become the strings `"NaN"`,
/// `"Infinity"` and `"-Infinity"`, which the numeric config keys accept.
pub fn parse_json(text: &str) -> Result<Value, SchedulerError> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(lit) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|lit| rest.starts_with(lit))
        {
            out.push('"');
            out.push_str(lit);
            out.push('"');
            rest = &rest[lit.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    serde_json::from_str(&out).map_err(|e| SchedulerError::Json(e.to_string()))
}

/// Typed access to the config object; `null` counts as "not given", like `None` in diffusers.
struct Reader<'a> {
    object: &'a Map<String, Value>,
    defaulted: Vec<&'a str>,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        if self.defaulted.contains(&key) {
            return None;
        }
        self.object.get(key).filter(|v| !v.is_null())
    }

    fn invalid(key: &str, value: &Value, expected: &str) -> SchedulerError {
        SchedulerError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, SchedulerError> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Self::invalid(key, v, "a string"))
            })
            .transpose()
    }

    fn spacing(&self, key: &str) -> Result<Option<TimestepSpacing>, SchedulerError> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .and_then(TimestepSpacing::from_name)
                    .ok_or_else(|| {
                        Self::invalid(key, v, "\"linspace\", \"leading\" or \"trailing\"")
                    })
            })
            .transpose()
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, SchedulerError> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| Self::invalid(key, v, "true or false"))
            })
            .transpose()
    }

    fn float(&self, key: &str) -> Result<Option<f64>, SchedulerError> {
        self.get(key)
            .map(|v| as_float(v).ok_or_else(|| Self::invalid(key, v, "a number")))
            .transpose()
    }

    fn int(&self, key: &str) -> Result<Option<i64>, SchedulerError> {
        self.get(key)
            .map(|v| {
                as_float(v)
                    .filter(|x| x.fract() == 0.0 && x.abs() < 1e15)
                    .map(|x| x as i64)
                    .ok_or_else(|| Self::invalid(key, v, "an integer"))
            })
            .transpose()
    }

    fn count(&self, key: &str) -> Result<Option<usize>, SchedulerError> {
        match self.int(key)? {
            Some(n) if n < 0 => Err(Self::invalid(
                key,
                self.get(key).unwrap_or(&Value::Null),
                "a non-negative integer",
            )),
            n => Ok(n.map(|n| n as usize)),
        }
    }

    fn floats(&self, key: &str) -> Result<Option<Vec<f64>>, SchedulerError> {
        self.get(key)
            .map(|v| {
                v.as_array()
                    .and_then(|items| items.iter().map(as_float).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| Self::invalid(key, v, "a list of numbers"))
            })
            .transpose()
    }
}

fn as_float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => None,
        },
        _ => None,
    }
}
