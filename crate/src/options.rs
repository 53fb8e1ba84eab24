//! The options every front end takes (CLI flags, the wasm/JS API), parsed in one place: each
//! has `FromStr` whose error names the valid values ([`Choice`]), so the CLI (clap parses with
//! [`ChoiceParser`], which also lists the values in `--help`) and the
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

/// How the prompt text is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PromptSyntax {
    /// AUTOMATIC1111's: `(emphasis)`, `(text:1.3)`, `[less]`, `BREAK`, any length in 75-token
    /// chunks (see [`crate::prompt_syntax`]).
    #[default]
    A1111,
    /// diffusers': the text as written, one 77-token row, the rest cut.
    Plain,
}

impl Choice for PromptSyntax {
    const WHAT: &'static str = "prompt syntax";
    fn all() -> Vec<Self> {
        vec![Self::A1111, Self::Plain]
    }
    fn name(&self) -> &'static str {
        match self {
            Self::A1111 => "a1111",
            Self::Plain => "plain",
        }
    }
}

/// An option whose values are a fixed list of names: one `FromStr` (whose error lists them) and
/// one clap parser ([`ChoiceParser`], which lists them in `--help`) for all of them.
pub trait Choice: Sized + Clone + Send + Sync + 'static {
    /// What the option is, in errors ("unknown scheduler heun; choose …").
    const WHAT: &'static str;
    fn all() -> Vec<Self>;
    fn name(&self) -> &'static str;

    fn parse_choice(s: &str) -> Result<Self, String> {
        Self::all()
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::all().iter().map(Self::name).collect();
                format!("unknown {} {s}; choose {}", Self::WHAT, choices(&names))
            })
    }
}

impl Choice for Precision {
    const WHAT: &'static str = "precision";
    fn all() -> Vec<Self> {
        Self::ALL.to_vec()
    }
    fn name(&self) -> &'static str {
        Precision::name(*self)
    }
}

impl Choice for SchedulerKind {
    const WHAT: &'static str = "scheduler";
    fn all() -> Vec<Self> {
        Self::ALL.to_vec()
    }
    fn name(&self) -> &'static str {
        SchedulerKind::name(self)
    }
}

impl Choice for QuantType {
    const WHAT: &'static str = "quantisation";
    fn all() -> Vec<Self> {
        Self::ALL.to_vec()
    }
    fn name(&self) -> &'static str {
        QuantType::name(*self)
    }
}

impl Choice for KernelPolicy {
    const WHAT: &'static str = "kernels";
    fn all() -> Vec<Self> {
        KernelPolicy::NAMES
            .iter()
            .filter_map(|n| KernelPolicy::from_name(n))
            .collect()
    }
    fn name(&self) -> &'static str {
        KernelPolicy::name(*self)
    }
}

macro_rules! from_str_by_choice {
    ($($t:ty),*) => {$(
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$t as Choice>::parse_choice(s)
            }
        }
    )*};
}
from_str_by_choice!(
    Precision,
    SchedulerKind,
    QuantType,
    KernelPolicy,
    PromptSyntax
);

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// clap's parser for a [`Choice`]: `--help` lists the values, a wrong one fails with the
/// option's own message.
#[derive(Clone)]
pub struct ChoiceParser<T>(std::marker::PhantomData<T>);

impl<T> Default for ChoiceParser<T> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T: Choice> clap::builder::TypedValueParser for ChoiceParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        T::parse_choice(&text).map_err(|why| {
            let arg = arg.map_or_else(|| "the option".to_string(), |a| format!("'{a}'"));
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value '{text}' for {arg}: {why}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        let values = T::all()
            .iter()
            .map(|c| clap::builder::PossibleValue::new(c.name()))
            .collect::<Vec<_>>();
        Some(Box::new(values.into_iter()))
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

    /// clap's `--help` lists what `FromStr` accepts.
    #[test]
    fn the_cli_lists_each_options_values() {
        use clap::builder::TypedValueParser;
        let names = |values: Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>| {
            values.map(|v| v.get_name().to_string()).collect::<Vec<_>>()
        };
        let schedulers = ChoiceParser::<SchedulerKind>::default();
        assert_eq!(
            names(schedulers.possible_values().unwrap()),
            SchedulerKind::ALL.map(|k| k.name().to_string())
        );
        let kernels = ChoiceParser::<KernelPolicy>::default();
        assert_eq!(names(kernels.possible_values().unwrap()), ["sdweb", "burn"]);
    }

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
        assert_eq!(
            "sdxl".parse::<PromptSyntax>().unwrap_err(),
            "unknown prompt syntax sdxl; choose a1111 or plain"
        );
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
