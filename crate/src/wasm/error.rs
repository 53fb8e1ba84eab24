//! Errors for JS: an `Error` whose `code` names its kind (the worker switches on the code,
//! never on the message); a cancelled generation is an `AbortError`.

use wasm_bindgen::JsValue;

use crate::pipeline::PipelineError;

#[derive(Debug)]
pub struct CodedError {
    code: &'static str,
    message: String,
}

impl CodedError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A caller's mistake (bad options, calls out of order).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("invalid-request", message)
    }
}

impl From<PipelineError> for CodedError {
    fn from(e: PipelineError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

/// Any pipeline-stage error (weights, config, tokenizer, scheduler), with its kind.
pub fn coded(e: impl Into<PipelineError>) -> CodedError {
    CodedError::from(e.into())
}

/// Errors of no pipeline kind (a failed conversion at the boundary), by their message.
pub fn internal(e: impl std::fmt::Display) -> CodedError {
    CodedError::new("internal", e.to_string())
}

impl From<CodedError> for JsValue {
    fn from(e: CodedError) -> Self {
        let error = js_sys::Error::new(&e.message);
        if e.code == "cancelled" {
            error.set_name("AbortError");
        }
        let _ = js_sys::Reflect::set(
            &error,
            &JsValue::from_str("code"),
            &JsValue::from_str(e.code),
        );
        error.into()
    }
}
