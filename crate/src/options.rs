//! The options every front end takes (CLI flags, the wasm/JS API), parsed in one place: each
//! has `FromStr` whose error names the valid values, so the CLI (clap parses with it) and the
//! browser say the same thing. Defaults that both apply live here too.

use std::fmt;
use std::str::FromStr;

use burn::tensor::DType;

use crate::kernels::KernelPolicy;
use crate::schedulers::SchedulerKind;
use crate::weights::QuantType;

/// "a, b or c".
fn choices(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// The compute precision asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// f16 where the adapter has shader-f16, else f32.
    #[default]
    Auto,
    F32,
    F16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Self::Auto, Self::F32, Self::F16];

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }

    /// The dtype on an adapter that has (or lacks) shader-f16.
    pub fn resolve(self, adapter_has_f16: bool) -> Result<DType, String> {
        match self {
            Self::F32 => Ok(DType::F32),
            Self::F16 if !adapter_has_f16 => {
                Err("this adapter has no shader-f16 support; use precision f32 (or auto)".into())
            }
            Self::F16 => Ok(DType::F16),
            Self::Auto if adapter_has_f16 => Ok(DType::F16),
            Self::Auto => Ok(DType::F32),
        }
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names = Self::ALL.map(Self::name);
                format!("unknown precision {s}; choose {}", choices(&names))
            })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SchedulerKind::from_name(s).ok_or_else(|| {
            let names = SchedulerKind::ALL.map(|k| k.name());
            format!("unknown scheduler {s}; choose {}", choices(&names))
        })
    }
}

impl FromStr for QuantType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        QuantType::parse(s).ok_or_else(|| {
            let names = QuantType::ALL.map(QuantType::name);
            format!("unknown quantisation {s}; choose {}", choices(&names))
        })
    }
}

impl FromStr for KernelPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        KernelPolicy::from_name(s).ok_or_else(|| {
            format!(
                "unknown kernels {s}; choose {}",
                choices(&KernelPolicy::NAMES)
            )
        })
    }
}

/// The browser's "none" (and empty) quantisation, else [`QuantType`]'s names.
pub fn parse_quantize(s: Option<&str>) -> Result<Option<QuantType>, String> {
    match s {
        None | Some("") | Some("none") => Ok(None),
        Some(name) => name.parse().map(Some),
    }
}

/// diffusers' default strength: 0.8 for img2img, 1.0 for inpainting.
pub fn default_strength(inpainting: bool) -> f64 {
    if inpainting { 1.0 } else { 0.8 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_every_valid_value() {
        assert_eq!(
            "heun".parse::<SchedulerKind>().unwrap_err(),
            "unknown scheduler heun; choose ddim, euler, euler-a, dpmpp-2m, dpmpp-2m-karras, lcm or pndm"
        );
        assert_eq!(
            "f64".parse::<Precision>().unwrap_err(),
            "unknown precision f64; choose auto, f32 or f16"
        );
        assert_eq!(
            "q2_k".parse::<QuantType>().unwrap_err(),
            "unknown quantisation q2_k; choose q8_0 or q4_0"
        );
        assert_eq!("burn".parse::<KernelPolicy>(), Ok(KernelPolicy::Burn));
        assert_eq!(parse_quantize(Some("none")), Ok(None));
    }

    #[test]
    fn precision_resolves_per_adapter() {
        assert_eq!(Precision::Auto.resolve(true), Ok(DType::F16));
        assert_eq!(Precision::Auto.resolve(false), Ok(DType::F32));
        assert!(
            Precision::F16
                .resolve(false)
                .unwrap_err()
                .contains("no shader-f16")
        );
    }
}
