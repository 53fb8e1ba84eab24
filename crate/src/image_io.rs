//! Reading init images: PNG → RGB8, and resizing to the requested size.

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("not a readable PNG image: {0}")]
    Decode(String),
    #[error(
        "the PNG is {width}x{height}; init images and masks may be at most {MAX_PNG_SIDE} pixels per side"
    )]
    TooLarge { width: u32, height: u32 },
}

/// The largest init image or mask side accepted (it is resized to the generation's size).
pub const MAX_PNG_SIDE: u32 = 8192;
/// What decoding one PNG may allocate: an 8192² RGBA image at 16 bits per channel.
const MAX_PNG_BYTES: usize = 8192 * 8192 * 8;

/// An RGB8 image, rows top to bottom.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl RgbImage {
    /// RGBA8 pixels (a browser's ImageData) of `width` × `height`; alpha is dropped.
    pub fn from_rgba(rgba: &[u8], width: usize, height: usize) -> Result<Self, ImageError> {
        if width == 0
            || height == 0
            || width > MAX_PNG_SIDE as usize
            || height > MAX_PNG_SIDE as usize
        {
            return Err(ImageError::TooLarge {
                width: width as u32,
                height: height as u32,
            });
        }
        if rgba.len() != width * height * 4 {
            return Err(ImageError::Decode(format!(
                "{} bytes of RGBA pixels for {width}x{height}, expected {}",
                rgba.len(),
                width * height * 4
            )));
        }
        let rgb = rgba
            .chunks_exact(4)
            .flat_map(|px| [px[0], px[1], px[2]])
            .collect();
        Ok(Self { width, height, rgb })
    }
}

/// Decodes any PNG (gray, gray+alpha, RGB, RGBA, palette, 16-bit) to RGB8; alpha is dropped.
pub fn decode_png_rgb(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    // The header's size is checked before any pixel buffer exists: a 100-byte file can claim
    // 60000×60000 (10.8 GB).
    let limits = png::Limits {
        bytes: MAX_PNG_BYTES,
    };
    let mut decoder = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let (width, height) = (reader.info().width, reader.info().height);
    if width > MAX_PNG_SIDE || height > MAX_PNG_SIDE {
        return Err(ImageError::TooLarge { width, height });
    }
    // The png crate (0.17 and 0.18) panics expanding a palette whose length is not a multiple
    // of 3 (found by the png_image fuzz target); the PNG spec forbids one.
    if let Some(palette) = &reader.info().palette
        && (palette.len() % 3 != 0 || palette.len() > 768)
    {
        return Err(ImageError::Decode(format!(
            "the PLTE chunk has {} bytes, not 3 per entry (at most 256 entries)",
            palette.len()
        )));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG signature and header claiming `width` × `height`, without pixel data.
    fn header_only(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        let mut writer = encoder.write_header().unwrap();
        // An IDAT with an empty zlib stream: decoders read the header up to the first one.
        writer
            .write_chunk(
                png::chunk::IDAT,
                &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
            )
            .unwrap();
        drop(writer);
        bytes
    }

    #[test]
    fn a_huge_header_is_refused_before_any_pixel_buffer() {
        let bytes = header_only(60000, 60000);
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        let message = decode_png_rgb(&bytes).unwrap_err().to_string();
        assert_eq!(
            message,
            "the PNG is 60000x60000; init images and masks may be at most 8192 pixels per side"
        );
        assert!(matches!(
            decode_png_rgb(&header_only(8193, 4)),
            Err(ImageError::TooLarge { .. })
        ));
        assert!(
            matches!(
                decode_png_rgb(&header_only(64, 64)),
                Err(ImageError::Decode(_))
            ),
            "no pixel data"
        );
    }
}
