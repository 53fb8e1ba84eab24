//! sdweb's own WGSL kernels (`shaders/`, one op per file) for SD's hot ops, launched on
//! burn-wgpu's CubeCL client, and the policy that chooses them over burn's ops.
//!
//! None needs the WebGPU `subgroups` feature, and none is autotuned: tile shapes follow shape
//! rules in code (`tiles.rs`, `attention.rs`), so every pipeline a generation needs is known
//! from its shapes and can be compiled before the first step. Each kernel has burn's op as its
//! oracle in the tests (`tests/kernels.rs`; q8_0/q4_0 weights in `tests/quantized.rs`), and returns None where it
//! does not apply (another backend, sizes beyond u32), for the caller to fall back to burn.

mod attention;
mod conv2d;
mod launch;
mod linear;
mod norm;
mod tiles;
mod weight;

pub use attention::{
    AttentionKernel, Heads, MAX_HEAD_DIM, ROWS_MAX_HEAD_DIM, flash_attention, flash_attention_with,
};
pub use conv2d::{ConvEpilogue, conv2d, conv2d_with};
pub use linear::{GEMV_MAX_ROWS, linear, linear_with};
pub use norm::{geglu, group_norm, layer_norm};
pub use tiles::Tiles;
pub use weight::GemmWeight;

/// Which implementation SD's hot ops (linear, conv2d, attention, group/layer norm, GEGLU) use.
/// Chosen per model at load ([`crate::pipeline::PipelineBuilder::set_kernel_policy`]) and held
/// by each layer, so two models in one process may differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KernelPolicy {
    /// sdweb's WGSL kernels (the default).
    #[default]
    Sdweb,
    /// burn's ops: autotuned matmul/conv, quantised weights dequantised first, burn's attention
    /// (its fused kernel on CPU adapters, two GEMMs elsewhere). The oracle and the baseline.
    Burn,
}

impl KernelPolicy {
    pub const NAMES: [&'static str; 2] = ["sdweb", "burn"];

    pub fn name(self) -> &'static str {
        match self {
            Self::Sdweb => "sdweb",
            Self::Burn => "burn",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Sdweb, Self::Burn]
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// Whether the hot ops run sdweb's kernels.
    pub fn runs_ours(self) -> bool {
        self == Self::Sdweb
    }
}

/// Whether `t` lives on an adapter that is no card (a CPU driver: lavapipe, SwiftShader; in
/// the browser, a fallback adapter).
pub fn on_cpu_adapter<const D: usize>(t: &burn::tensor::Tensor<D>) -> bool {
    t.clone()
        .try_into_primitive::<burn::backend::Wgpu>()
        .is_ok_and(|t| launch::on_cpu_adapter(&t))
}

/// The adapter's largest storage-buffer binding (WebGPU's default: 128 MiB).
pub fn device_max_binding_bytes(device: &burn::tensor::Device) -> usize {
    burn::tensor::Tensor::<1>::zeros([1], device)
        .try_into_primitive::<burn::backend::Wgpu>()
        .map(|t| launch::max_binding_bytes(&t))
        .unwrap_or(128 << 20)
}
