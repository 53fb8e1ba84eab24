//! Activations held as bands of rows, so that no single tensor outgrows a WebGPU storage
//! binding (128 MiB by default). The VAE needs this from 512×512 up: in f32 its decoder's
//! 256-channel 512×512 activations are 256 MiB, its encoder's 128-channel ones 128 MiB.
//!
//! Every op gives the result of the same op on the whole tensor: a convolution gathers the
//! halo rows it needs from the neighbouring bands (zero padding only at the image's edges), a
//! group norm reduces its statistics over all bands. Only the summation order of the group
//! norm's statistics changes (fixture VAEs: ≤ 3.6e-6 on outputs of scale ≤ 2.9,
//! `tests/models.rs`).

use burn::tensor::{DType, Tensor};

use super::nn::{Conv2d, GroupNorm};

/// Bands are sized so that the largest activation of a band stays under this: a quarter of
/// the default binding limit leaves room for the temporaries of group norm and halo gathers.
pub const MAX_BAND_BYTES: usize = 32 << 20;

/// `[N, C, H, W]` split along H into consecutive, non-empty bands.
#[derive(Clone)]
pub struct RowBands {
    bands: Vec<Tensor<4>>,
}

/// How many bands keep an activation of `largest_bytes` (the biggest the model will produce
/// at this size) under `max_band_bytes`, without making bands thinner than one row of `rows`.
pub fn band_count(largest_bytes: usize, max_band_bytes: usize, rows: usize) -> usize {
    largest_bytes
        .div_ceil(max_band_bytes.max(1))
        .clamp(1, rows.max(1))
}

/// Bytes of a `[n, c, h, w]` activation of `dtype`.
pub fn activation_bytes(dims: [usize; 4], dtype: DType) -> usize {
    dims.iter().product::<usize>() * dtype.size()
}

impl RowBands {
    /// Splits `x` into `count` bands of nearly equal height (the first ones one row taller).
    pub fn split(x: Tensor<4>, count: usize) -> Self {
        let rows = x.dims()[2];
        let count = count.clamp(1, rows.max(1));
        if count == 1 {
            return Self { bands: vec![x] };
        }
        let (base, extra) = (rows / count, rows % count);
        let mut start = 0;
        let bands = (0..count)
            .map(|i| {
                let len = base + usize::from(i < extra);
                let band = x.clone().narrow(2, start, len);
                start += len;
                band
            })
            .collect();
        Self { bands }
    }

    pub fn len(&self) -> usize {
        self.bands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bands.is_empty()
    }

    /// Rows in all bands together.
    pub fn rows(&self) -> usize {
        self.bands.iter().map(|b| b.dims()[2]).sum()
    }

    /// The whole tensor again (one copy; only for results small enough to bind).
    pub fn concat(self) -> Tensor<4> {
        let mut bands = self.bands;
        if bands.len() == 1 {
            return bands.pop().expect("one band");
        }
        Tensor::cat(bands, 2)
    }

    /// An elementwise op applied band by band.
    pub fn map(self, f: impl Fn(Tensor<4>) -> Tensor<4>) -> Self {
        Self {
            bands: self.bands.into_iter().map(f).collect(),
        }
    }

    /// Rows `[start, end)` across band boundaries.
    fn gather_rows(&self, start: usize, end: usize) -> Tensor<4> {
        let mut parts = Vec::new();
        let mut offset = 0;
        for band in &self.bands {
            let len = band.dims()[2];
            let (lo, hi) = (start.max(offset), end.min(offset + len));
            if lo == offset && hi == offset + len {
                parts.push(band.clone());
            } else if lo < hi {
                parts.push(band.clone().narrow(2, lo - offset, hi - lo));
            }
            offset += len;
        }
        if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(parts, 2)
        }
    }

    /// `conv` on the whole tensor, computed band by band. Output band i covers the output
    /// rows whose receptive field is centred in input band i (so a stride-1 conv keeps the
    /// bands' rows); each reads its halo rows from the neighbours and is zero-padded only
    /// where the whole tensor is.
    pub fn conv(&self, conv: &Conv2d) -> Self {
        let (kernel, stride, (pad_top, pad_bottom)) = conv.row_geometry();
        let rows_in = self.rows();
        assert!(
            rows_in + pad_top + pad_bottom >= kernel,
            "conv kernel taller than its padded input"
        );
        let rows_out = (rows_in + pad_top + pad_bottom - kernel) / stride + 1;
        let mut bands = Vec::with_capacity(self.len());
        let (mut band_end_in, mut start_out) = (0, 0);
        for (i, band) in self.bands.iter().enumerate() {
            band_end_in += band.dims()[2];
            let end_out = if i + 1 == self.len() {
                rows_out
            } else {
                // Row o is centred on input row o·stride − pad_top + (kernel − 1)/2.
                let centre_limit = (band_end_in + pad_top) as isize - ((kernel - 1) / 2) as isize;
                (centre_limit.max(0) as usize)
                    .div_ceil(stride)
                    .min(rows_out)
            };
            if end_out <= start_out {
                continue;
            }
            // Input rows the output rows [start_out, end_out) read, in padded coordinates.
            let first = (start_out * stride) as isize - pad_top as isize;
            let last = ((end_out - 1) * stride + kernel) as isize - pad_top as isize;
            let lo = first.max(0) as usize;
            let hi = (last as usize).min(rows_in);
            let input = self.gather_rows(lo, hi);
            let padding = ((lo as isize - first) as usize, last as usize - hi);
            bands.push(conv.forward_with_row_padding(input, padding));
            start_out = end_out;
        }
        Self { bands }
    }

    /// `norm` with its statistics over every band, as on the whole tensor.
    pub fn group_norm(self, norm: &GroupNorm) -> Self {
        Self {
            bands: norm.forward_bands(self.bands, false),
        }
    }

    /// `silu(norm(x))`, fused where the kernels run.
    pub fn group_norm_silu(self, norm: &GroupNorm) -> Self {
        Self {
            bands: norm.forward_bands(self.bands, true),
        }
    }
}

impl std::ops::Add for RowBands {
    type Output = Self;

    /// Band-wise sum; both sides must be split at the same rows.
    fn add(self, other: Self) -> Self {
        assert_eq!(self.len(), other.len(), "bands split differently");
        let bands = self
            .bands
            .into_iter()
            .zip(other.bands)
            .map(|(a, b)| {
                assert_eq!(a.dims()[2], b.dims()[2], "bands split differently");
                a + b
            })
            .collect();
        Self { bands }
    }
}
