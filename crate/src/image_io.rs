//! Reading init images: PNG → RGB8, and resizing to the requested size.

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("not a readable PNG image: {0}")]
    Decode(String),
}

/// An RGB8 image, rows top to bottom.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// Decodes any PNG (gray, gray+alpha, RGB, RGBA, palette, 16-bit) to RGB8; alpha is dropped.
pub fn decode_png_rgb(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let channels = info.color_type.samples();
    let (width, height) = (info.width as usize, info.height as usize);
    let rgb = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .flat_map(|px| match channels {
            1 | 2 => [px[0], px[0], px[0]],
            _ => [px[0], px[1], px[2]],
        })
        .collect();
    Ok(RgbImage { width, height, rgb })
}

/// Bilinear resize (pixel centres aligned, as PIL's BILINEAR when enlarging). For shrinking,
/// diffusers uses PIL's Lanczos, so resized init images differ slightly from diffusers'.
pub fn resize_bilinear(image: &RgbImage, width: usize, height: usize) -> RgbImage {
    if (image.width, image.height) == (width, height) {
        return image.clone();
    }
    let sample = |x: usize, y: usize, c: usize| image.rgb[(y * image.width + x) * 3 + c] as f32;
    let source = |dst: usize, dst_len: usize, src_len: usize| {
        let pos = ((dst as f32 + 0.5) * src_len as f32 / dst_len as f32 - 0.5).max(0.0);
        let lo = (pos.floor() as usize).min(src_len - 1);
        let hi = (lo + 1).min(src_len - 1);
        (lo, hi, pos - lo as f32)
    };
    let mut rgb = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        let (y0, y1, fy) = source(y, height, image.height);
        for x in 0..width {
            let (x0, x1, fx) = source(x, width, image.width);
            for c in 0..3 {
                let top = sample(x0, y0, c) * (1.0 - fx) + sample(x1, y0, c) * fx;
                let bottom = sample(x0, y1, c) * (1.0 - fx) + sample(x1, y1, c) * fx;
                rgb.push((top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    RgbImage { width, height, rgb }
}

/// RGB8 → 8-bit luminance as PIL's `convert("L")` (ITU-R 601-2: 299, 587, 114 per mille).
pub fn to_gray(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| ((p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114) / 1000) as u8)
        .collect()
}
