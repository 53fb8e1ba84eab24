//! Live previews without the VAE: SD's 4 latent channels map almost linearly to RGB, so a
//! fixed 4×3 projection gives a recognisable thumbnail at latent resolution for free. Used when
//! no tiny autoencoder (TAESD) is loaded.

/// Latent channel → RGB weights for SD 1.x/2.x latents (the kl-f8 VAE's latent space), as
/// fitted by the community for "approx cheap" previews (A1111, ComfyUI).
pub const SD_LATENT_RGB: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// The same for SDXL's VAE (its own latent space; ComfyUI's fit).
pub const SDXL_LATENT_RGB: [[f32; 3]; 4] = [
    [0.3920, 0.4054, 0.4549],
    [-0.2634, -0.0196, 0.0653],
    [0.0568, 0.1687, -0.0755],
    [-0.3112, -0.2359, -0.2076],
];

/// An RGB8 preview of `[1, 4, h, w]` latents at latent resolution through `factors`
/// (channel → RGB): (rgb, w, h).
pub fn latents_to_rgb(
    latents: &[f32],
    shape: [usize; 4],
    factors: &[[f32; 3]; 4],
) -> (Vec<u8>, usize, usize) {
    let [_, channels, h, w] = shape;
    let plane = h * w;
    let mut rgb = Vec::with_capacity(plane * 3);
    for p in 0..plane {
        for c in 0..3 {
            let v: f32 = (0..channels.min(4))
                .map(|k| latents[k * plane + p] * factors[k][c])
                .sum();
            rgb.push((((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    (rgb, w, h)
}

/// Nearest-neighbour enlargement by an integer factor (latent → image size).
pub fn upscale_nearest(rgb: &[u8], width: usize, height: usize, factor: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len() * factor * factor);
    for y in 0..height * factor {
        for x in 0..width * factor {
            let i = ((y / factor) * width + x / factor) * 3;
            out.extend_from_slice(&rgb[i..i + 3]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_each_pixel_and_upscales() {
        // Two pixels: zero latents → mid grey; a strong channel-0 latent → bright.
        let latents = [0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let (rgb, w, h) = latents_to_rgb(&latents, [1, 4, 1, 2], &SD_LATENT_RGB);
        assert_eq!((w, h), (2, 1));
        assert_eq!(&rgb[..3], &[128, 128, 128]);
        assert_eq!(&rgb[3..], &[217, 186, 210]);
        let big = upscale_nearest(&rgb, 2, 1, 2);
        assert_eq!(big.len(), 4 * 2 * 3);
        let grey = [128u8; 3];
        let bright = [217u8, 186, 210];
        let row: Vec<u8> = [grey, grey, bright, bright].concat();
        assert_eq!(&big[..12], &row[..]);
        assert_eq!(&big[12..], &row[..]);
    }
}
