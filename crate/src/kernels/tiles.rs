//! Output-tile shapes of the GEMM-like kernels (`linear.wgsl`, `conv2d.wgsl`), chosen by shape
//! rules rather than autotuning, so that every pipeline is known before the first step.

use super::launch::{Shader, ShaderFile};

/// A 16×16 workgroup's output tile; each lane computes (rows/16)×(cols/16) outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiles {
    /// 64×64, 4×4 per lane, k step 16.
    Small,
    /// 128×128, 8×8 per lane, k step 8: four times the arithmetic per loaded value.
    Large,
}

/// Large tiles only when they still give this many workgroups: a GPU needs a few per compute
/// unit to hide memory latency (an H100 has 132 SMs), and small tiles win below that.
const MIN_LARGE_TILES: usize = 128;

impl Tiles {
    /// The tile for a `rows × cols` output. CPU adapters (lavapipe, SwiftShader) run a lane's
    /// registers as SIMD vectors and gain nothing from bigger tiles: small ones there.
    pub fn for_gemm(rows: usize, cols: usize, cpu_adapter: bool) -> Self {
        let large = rows.div_ceil(128) * cols.div_ceil(128);
        if !cpu_adapter && large >= MIN_LARGE_TILES {
            Self::Large
        } else {
            Self::Small
        }
    }

    pub fn rows(self) -> usize {
        16 * self.per_lane()
    }

    pub fn cols(self) -> usize {
        16 * self.per_lane()
    }

    fn per_lane(self) -> usize {
        match self {
            Self::Small => 4,
            Self::Large => 8,
        }
    }

    /// The `tm`, `tn`, `bk` template parameters (two double-buffered tile pairs: 16 KiB).
    pub fn params<F: ShaderFile>(self, shader: Shader<F>) -> Shader<F> {
        let bk = match self {
            Self::Small => 16,
            Self::Large => 8,
        };
        shader
            .with("tm", self.per_lane())
            .with("tn", self.per_lane())
            .with("bk", bk)
    }
}
