//! PNG output with AUTOMATIC1111-style generation parameters and an "AI generated" label.
//!
//! [`encode_png`] writes an RGB8 PNG with three text chunks:
//!
//! * `parameters`: [`GenerationParams::to_a1111`], the text A1111 / Forge / ComfyUI importers /
//!   Civitai read (`tEXt` when Latin-1 can hold it, else `iTXt` UTF-8);
//! * `XML:com.adobe.xmp` (`iTXt`): an XMP packet labelling the image with the IPTC digital
//!   source type `trainedAlgorithmicMedia` (what C2PA-unaware tools such as Google Images,
//!   Meta and IPTC-aware DAMs look for);
//! * `Software` (`tEXt`): `sdweb`.
//!
//! [`read_png_text`] returns every text chunk of a PNG, [`GenerationParams::parse_a1111`] parses
//! the `parameters` text (ours or A1111's).

use std::fmt::Write as _;

/// Keyword of the chunk holding the A1111 parameters text.
pub const PARAMETERS_KEYWORD: &str = "parameters";
/// Keyword of the XMP packet chunk (XMP specification part 3, PNG).
pub const XMP_KEYWORD: &str = "XML:com.adobe.xmp";
/// The IPTC digital source type for images made by a generative model.
pub const TRAINED_ALGORITHMIC_MEDIA: &str =
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia";
/// The `Iptc4xmpExt` XMP namespace.
pub const IPTC_EXT_NS: &str = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/";
/// Value of the `Software` chunk.
pub const SOFTWARE: &str = "sdweb";

/// Largest decompressed zTXt / iTXt text [`read_png_text`] accepts.
const TEXT_LIMIT: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PngMetaError {
    #[error("png: invalid input: {0}")]
    InvalidInput(String),
    #[error("png: encoding failed: {0}")]
    Encode(String),
    #[error("png: decoding failed: {0}")]
    Decode(String),
    #[error("A1111 parameters: {0}")]
    Parse(String),
}

/// What produced an image, in the terms of AUTOMATIC1111's "parameters" text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerationParams {
    pub prompt: String,
    /// Empty: no `Negative prompt:` line.
    pub negative_prompt: String,
    pub steps: usize,
    /// A1111 sampler name, e.g. `Euler a`, `DPM++ 2M`, `DDIM`.
    pub sampler: String,
    pub cfg_scale: f64,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    /// Model name; empty: no `Model:` field.
    pub model: String,
    /// Further `key: value` fields in order, e.g. `("Denoising strength", "0.75")`,
    /// `("Schedule type", "Karras")`. On parsing, every field other than the six above.
    pub extra: Vec<(String, String)>,
}

/// A1111's `quote`, also quoting values with `"` or outer whitespace (A1111 reads both back the
/// same way; a bare value that happened to start and end with `"` would otherwise be unquoted,
/// and one with outer whitespace trimmed, on reading).
fn quote(v: &str) -> String {
    // Also values with outer whitespace, which a bare value would lose on reading.
    if v.contains([',', '\n', ':', '"']) || v.trim() != v {
        serde_json::to_string(v).unwrap_or_else(|_| v.to_string())
    } else {
        v.to_string()
    }
}

/// A1111's `unquote`: a `"…"` value is JSON-decoded when it decodes.
fn unquote(v: &str) -> String {
    if v.len() >= 2
        && v.starts_with('"')
        && v.ends_with('"')
        && let Ok(s) = serde_json::from_str::<String>(v)
    {
        return s;
    }
    v.to_string()
}

/// A float as Python's `repr` writes it (what A1111 puts in the text): `7.0`, `7.5`.
fn py_float(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// A1111's `re_param`: `key: value` pairs of the last line.
fn param_regex() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    // Mirrors modules/infotext_utils.py; a literal pattern, so `new` cannot fail.
    RE.get_or_init(|| {
        regex::Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#)
            .expect("valid regex")
    })
}

impl GenerationParams {
    /// The A1111 "parameters" text:
    /// `{prompt}\nNegative prompt: {neg}\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1,
    /// Size: 512x512, Model: name[, extra…]`, the Negative prompt line only when there is one,
    /// values with `,` `:` `"` or a newline JSON-quoted, the whole trimmed (as A1111 does).
    pub fn to_a1111(&self) -> String {
        let mut fields: Vec<(&str, String)> = vec![
            ("Steps", self.steps.to_string()),
            ("Sampler", self.sampler.clone()),
            ("CFG scale", py_float(self.cfg_scale)),
            ("Seed", self.seed.to_string()),
            ("Size", format!("{}x{}", self.width, self.height)),
        ];
        if !self.model.is_empty() {
            fields.push(("Model", self.model.clone()));
        }
        for (k, v) in &self.extra {
            fields.push((k.as_str(), v.clone()));
        }
        let params = fields
            .iter()
            .map(|(k, v)| {
                if k == v {
                    k.to_string()
                } else {
                    format!("{k}: {}", quote(v))
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut text = self.prompt.clone();
        if !self.negative_prompt.is_empty() {
            let _ = write!(text, "\nNegative prompt: {}", self.negative_prompt);
        }
        let _ = write!(text, "\n{params}");
        text.trim().to_string()
    }

    /// Parse an A1111 "parameters" text the way A1111's `parse_generation_parameters` does:
    /// the last line holds the fields (if it has at least three), the lines before are the
    /// prompt, up to a line starting with `Negative prompt:`; every line is trimmed. `Steps`,
    /// `Sampler`, `CFG scale`, `Seed` and `Size` are required; `Model` is optional; all other
    /// fields go to `extra`.
    ///
    /// Round trip with [`GenerationParams::to_a1111`] is exact unless a prompt line has
    /// leading/trailing whitespace or starts with `Negative prompt:`, or a field's value equals
    /// its key (written bare, then not read as a field): A1111 has the same limits.
    pub fn parse_a1111(text: &str) -> Result<Self, PngMetaError> {
        let re = param_regex();
        let trimmed = text.trim();
        let mut lines: Vec<&str> = trimmed.split('\n').collect();
        let mut last = lines.pop().unwrap_or("");
        if re.captures_iter(last).count() < 3 {
            lines.push(last);
            last = "";
        }
        let (mut prompt, mut negative) = (String::new(), String::new());
        let mut done_with_prompt = false;
        for line in lines {
            let mut line = line.trim();
            if let Some(rest) = line.strip_prefix("Negative prompt:") {
                done_with_prompt = true;
                line = rest.trim();
            }
            let target = if done_with_prompt {
                &mut negative
            } else {
                &mut prompt
            };
            if !target.is_empty() {
                target.push('\n');
            }
            target.push_str(line);
        }

        let mut out = GenerationParams {
            prompt,
            negative_prompt: negative,
            ..Default::default()
        };
        let (mut steps, mut sampler, mut cfg, mut seed, mut size) = (None, None, None, None, None);
        for cap in re.captures_iter(last) {
            let key = cap.get(1).map_or("", |m| m.as_str()).to_string();
            let raw = cap.get(2).map_or("", |m| m.as_str());
            let value = unquote(raw);
            let bad = |what: &str| PngMetaError::Parse(format!("{key}: {what}: {value:?}"));
            match key.as_str() {
                "Steps" => {
                    steps = Some(
                        value
                            .trim()
                            .parse::<usize>()
                            .map_err(|_| bad("not a count"))?,
                    )
                }
                "Sampler" => sampler = Some(value),
                "CFG scale" => {
                    cfg = Some(
                        value
                            .trim()
                            .parse::<f64>()
                            .map_err(|_| bad("not a number"))?,
                    )
                }
                "Seed" => seed = Some(value.trim().parse::<u64>().map_err(|_| bad("not a seed"))?),
                "Size" => {
                    let (w, h) = value
                        .trim()
                        .split_once('x')
                        .ok_or_else(|| bad("expected WxH"))?;
                    let w = w.parse::<u32>().map_err(|_| bad("bad width"))?;
                    let h = h.parse::<u32>().map_err(|_| bad("bad height"))?;
                    size = Some((w, h));
                }
                "Model" => out.model = value,
                _ => out.extra.push((key, value)),
            }
        }
        let missing = |k: &str| PngMetaError::Parse(format!("no {k:?} field"));
        out.steps = steps.ok_or_else(|| missing("Steps"))?;
        out.sampler = sampler.ok_or_else(|| missing("Sampler"))?;
        out.cfg_scale = cfg.ok_or_else(|| missing("CFG scale"))?;
        out.seed = seed.ok_or_else(|| missing("Seed"))?;
        (out.width, out.height) = size.ok_or_else(|| missing("Size"))?;
        Ok(out)
    }
}

/// The XMP packet labelling the image as made by a trained algorithm (IPTC digital source
/// type), with `xmp:CreatorTool`.
pub fn xmp_packet() -> String {
    format!(
        concat!(
            "<?xpacket begin=\"\u{FEFF}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n",
            "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n",
            " <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n",
            "  <rdf:Description rdf:about=\"\"\n",
            "    xmlns:Iptc4xmpExt=\"{ns}\"\n",
            "    xmlns:xmp=\"http://ns.adobe.com/xap/1.0/\"\n",
            "    Iptc4xmpExt:DigitalSourceType=\"{dst}\"\n",
            "    xmp:CreatorTool=\"{sw}\"/>\n",
            " </rdf:RDF>\n",
            "</x:xmpmeta>\n",
            "<?xpacket end=\"r\"?>"
        ),
        ns = IPTC_EXT_NS,
        dst = TRAINED_ALGORITHMIC_MEDIA,
        sw = SOFTWARE,
    )
}

fn is_latin1(s: &str) -> bool {
    s.chars().all(|c| (c as u32) <= 0xFF)
}

/// Encode an RGB8 image (`rgb.len() == width * height * 3`, rows top to bottom) as PNG with the
/// `parameters`, XMP and `Software` chunks (see the module docs). NUL characters, which PNG
/// text chunks cannot hold, are dropped from the parameters text.
pub fn encode_png(
    rgb: &[u8],
    width: u32,
    height: u32,
    params: &GenerationParams,
) -> Result<Vec<u8>, PngMetaError> {
    if width == 0 || height == 0 {
        return Err(PngMetaError::InvalidInput(format!(
            "image size {width}x{height}"
        )));
    }
    let expected = (width as u64) * (height as u64) * 3;
    if rgb.len() as u64 != expected {
        return Err(PngMetaError::InvalidInput(format!(
            "{} bytes of pixels for a {width}x{height} RGB8 image (expected {expected})",
            rgb.len()
        )));
    }
    let text: String = params.to_a1111().chars().filter(|&c| c != '\0').collect();
    let enc_err = |e: png::EncodingError| PngMetaError::Encode(e.to_string());

    let mut out = Vec::with_capacity(rgb.len() / 2 + 4096);
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if is_latin1(&text) {
            encoder
                .add_text_chunk(PARAMETERS_KEYWORD.to_string(), text)
                .map_err(enc_err)?;
        } else {
            encoder
                .add_itxt_chunk(PARAMETERS_KEYWORD.to_string(), text)
                .map_err(enc_err)?;
        }
        encoder
            .add_itxt_chunk(XMP_KEYWORD.to_string(), xmp_packet())
            .map_err(enc_err)?;
        encoder
            .add_text_chunk("Software".to_string(), SOFTWARE.to_string())
            .map_err(enc_err)?;
        let mut writer = encoder.write_header().map_err(enc_err)?;
        writer.write_image_data(rgb).map_err(enc_err)?;
        writer.finish().map_err(enc_err)?;
    }
    Ok(out)
}

/// Every text chunk of a PNG as `(keyword, text)`: tEXt, then zTXt, then iTXt chunks, each
/// kind in file order (compressed ones inflated, at most 8 MiB each).
pub fn read_png_text(png: &[u8]) -> Result<Vec<(String, String)>, PngMetaError> {
    let dec_err = |e: png::DecodingError| PngMetaError::Decode(e.to_string());
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().map_err(dec_err)?;
    // Reads (and discards) the image data and every chunk after it.
    reader.finish().map_err(dec_err)?;
    let info = reader.info();
    let mut out = Vec::new();
    for c in &info.uncompressed_latin1_text {
        out.push((c.keyword.clone(), c.text.clone()));
    }
    for c in &info.compressed_latin1_text {
        let mut c = c.clone();
        c.decompress_text_with_limit(TEXT_LIMIT).map_err(dec_err)?;
        out.push((c.keyword.clone(), c.get_text().map_err(dec_err)?));
    }
    for c in &info.utf8_text {
        let mut c = c.clone();
        c.decompress_text_with_limit(TEXT_LIMIT).map_err(dec_err)?;
        out.push((c.keyword.clone(), c.get_text().map_err(dec_err)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> GenerationParams {
        GenerationParams {
            prompt: "a cat".into(),
            negative_prompt: String::new(),
            steps: 20,
            sampler: "Euler a".into(),
            cfg_scale: 7.0,
            seed: 1,
            width: 512,
            height: 512,
            model: "v1-5".into(),
            extra: vec![],
        }
    }

    #[test]
    fn a1111_text_layout() {
        let mut p = params();
        assert_eq!(
            p.to_a1111(),
            "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 1, Size: 512x512, Model: v1-5"
        );
        p.negative_prompt = "blurry".into();
        p.cfg_scale = 7.5;
        p.model.clear();
        p.extra = vec![
            ("Denoising strength".into(), "0.75".into()),
            ("Note".into(), "a, b".into()),
        ];
        assert_eq!(
            p.to_a1111(),
            "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1, \
             Size: 512x512, Denoising strength: 0.75, Note: \"a, b\""
        );
    }

    #[test]
    fn parses_a1111_written_text() {
        // As written by AUTOMATIC1111 v1.10.
        let text = "masterpiece, 1girl, (smile:1.2)\nNegative prompt: lowres, bad hands\n\
            Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3923525049, \
            Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, \
            Lora hashes: \"add_detail: 7c6bad76eb54\", Version: v1.10.1";
        let p = GenerationParams::parse_a1111(text).unwrap();
        assert_eq!(p.prompt, "masterpiece, 1girl, (smile:1.2)");
        assert_eq!(p.negative_prompt, "lowres, bad hands");
        assert_eq!(
            (p.steps, p.sampler.as_str(), p.cfg_scale),
            (28, "DPM++ 2M", 7.0)
        );
        assert_eq!((p.seed, p.width, p.height), (3923525049, 512, 768));
        assert_eq!(p.model, "v1-5-pruned-emaonly");
        assert_eq!(
            p.extra,
            vec![
                ("Schedule type".to_string(), "Karras".to_string()),
                ("Model hash".to_string(), "6ce0161689".to_string()),
                (
                    "Lora hashes".to_string(),
                    "add_detail: 7c6bad76eb54".to_string()
                ),
                ("Version".to_string(), "v1.10.1".to_string()),
            ]
        );
    }

    #[test]
    fn parse_errors_are_errors() {
        assert!(GenerationParams::parse_a1111("").is_err());
        assert!(GenerationParams::parse_a1111("just a prompt").is_err());
        let e = GenerationParams::parse_a1111(
            "p\nSteps: x, Sampler: a, CFG scale: 7, Seed: 1, Size: 1x1",
        )
        .unwrap_err();
        assert!(e.to_string().contains("Steps"), "{e}");
        let e = GenerationParams::parse_a1111(
            "p\nSteps: 1, Sampler: a, CFG scale: 7, Seed: 1, Size: 1by1",
        )
        .unwrap_err();
        assert!(e.to_string().contains("Size"), "{e}");
    }

    #[test]
    fn bad_pixels_are_errors() {
        assert!(encode_png(&[0; 5], 1, 2, &params()).is_err());
        assert!(encode_png(&[], 0, 0, &params()).is_err());
        assert!(read_png_text(b"not a png").is_err());
        assert!(read_png_text(&[]).is_err());
    }
}
