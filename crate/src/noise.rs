//! Seeded Gaussian noise that is bit-identical on every platform, natively and in wasm.
//!
//! Algorithm (documented so other implementations, e.g. the fixture script, can reproduce it):
//! - state: u64 = seed; each draw advances SplitMix64:
//!   `state += 0x9E3779B97F4A7C15; z = state;`
//!   `z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;`
//!   `z ^= z >> 31` (all wrapping u64 arithmetic).
//! - uniform in (0, 1]: `u = ((z >> 11) + 1) as f64 * 2^-53`.
//! - Box–Muller, two uniforms u1, u2 per pair, in f64:
//!   `r = sqrt(-2 ln u1)`, `a = 2π u2`, values `r cos a` then `r sin a`, each rounded to f32.
//! - A tensor of N values takes the next N values of the stream in row-major order; an odd N
//!   discards the unused second value of the last pair, so every request starts on a fresh pair.
//!
//! One generator serves a whole generation: initial latents first, then any per-step noise
//! (Euler ancestral, LCM) in step order, exactly as diffusers consumes its `generator`.

/// SplitMix64-driven Box–Muller normal generator. See the module docs for the exact algorithm.
#[derive(Clone, Debug)]
pub struct NoiseGenerator {
    state: u64,
}

impl NoiseGenerator {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1], never 0 so that `ln` is finite.
    fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `n` standard-normal values as f32.
    pub fn normal(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let u1 = self.next_unit();
            let u2 = self.next_unit();
            let r = (-2.0 * u1.ln()).sqrt();
            let a = 2.0 * std::f64::consts::PI * u2;
            out.push((r * a.cos()) as f32);
            out.push((r * a.sin()) as f32);
        }
        out.truncate(n);
        out
    }

    /// A standard-normal tensor of the given shape on `device`.
    pub fn tensor<const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &burn::tensor::Device,
    ) -> burn::tensor::Tensor<D> {
        let n = shape.iter().product();
        let data = burn::tensor::TensorData::new(self.normal(n), shape);
        burn::tensor::Tensor::from_data(data, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_moments_are_normal() {
        let a = NoiseGenerator::new(42).normal(100_001);
        let b = NoiseGenerator::new(42).normal(100_001);
        assert_eq!(a, b);
        assert_ne!(a, NoiseGenerator::new(43).normal(100_001));
        let n = a.len() as f64;
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn matches_the_fixture_scripts_python_port() {
        // Bit patterns from tests/fixtures/reference/noise.json (the Python port's output).
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(NoiseGenerator::new(0).normal(4)),
            vec![0xbee7cfdd, 0x3e54c09f, 0x4029a387, 0xbefb18b3]
        );
        assert_eq!(
            bits(NoiseGenerator::new(42).normal(4)),
            vec![0x3ed45626, 0x3f27161e, 0xbf6452a8, 0x3fa9d5af]
        );
    }

    #[test]
    fn odd_requests_start_the_next_request_on_a_fresh_pair() {
        let all = NoiseGenerator::new(0).normal(4);
        let mut g = NoiseGenerator::new(0);
        assert_eq!(g.normal(1)[0], all[0]);
        assert_eq!(g.normal(1)[0], all[2]);
    }
}
