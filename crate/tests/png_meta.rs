//! PNG writing with A1111 parameters and the AI-generated XMP label.

use sdweb::png_meta::{
    GenerationParams, IPTC_EXT_NS, TRAINED_ALGORITHMIC_MEDIA, XMP_KEYWORD, encode_png,
    read_png_text,
};

fn gradient(w: u32, h: u32) -> Vec<u8> {
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            px.extend_from_slice(&[(x * 7) as u8, (y * 13) as u8, ((x ^ y) * 3) as u8]);
        }
    }
    px
}

fn tricky() -> GenerationParams {
    GenerationParams {
        prompt: "a \"quoted\" cat, sitting: on a mat\nsecond line: 東京の猫 🐱, (detailed:1.2)"
            .into(),
        negative_prompt: "blurry, \"bad\" hands\nlow quality".into(),
        steps: 25,
        sampler: "DPM++ 2M Karras".into(),
        cfg_scale: 7.5,
        seed: 18_446_744_073_709_551_615,
        width: 24,
        height: 16,
        model: "tiny: sd1, \"test\"".into(),
        extra: vec![
            ("Denoising strength".into(), "0.75".into()),
            ("Schedule type".into(), "Karras".into()),
            ("Note".into(), "a \"b\", c: d\ne".into()),
        ],
    }
}

fn chunk<'a>(chunks: &'a [(String, String)], key: &str) -> &'a str {
    chunks
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key:?} chunk in {chunks:?}"))
}

#[test]
fn parameters_round_trip_through_png() {
    let (w, h) = (24, 16);
    let params = tricky();
    let png = encode_png(&gradient(w, h), w, h, &params).unwrap();
    let chunks = read_png_text(&png).unwrap();
    let text = chunk(&chunks, "parameters");
    assert_eq!(text, params.to_a1111());
    let back = GenerationParams::parse_a1111(text).unwrap();
    assert_eq!(back, params);
}

#[test]
fn latin1_parameters_use_text_and_round_trip() {
    let params = GenerationParams {
        prompt: "café, naïve résumé".into(),
        negative_prompt: String::new(),
        steps: 20,
        sampler: "Euler a".into(),
        cfg_scale: 7.0,
        seed: 1,
        width: 8,
        height: 8,
        model: "v1-5".into(),
        extra: vec![],
    };
    let png = encode_png(&gradient(8, 8), 8, 8, &params).unwrap();
    // A tEXt chunk (Latin-1) named "parameters" is in the file.
    let needle = b"tEXtparameters\0";
    assert!(png.windows(needle.len()).any(|w| w == needle));
    let chunks = read_png_text(&png).unwrap();
    assert_eq!(
        chunk(&chunks, "parameters"),
        "café, naïve résumé\nSteps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 1, Size: 8x8, Model: v1-5"
    );
    assert_eq!(
        GenerationParams::parse_a1111(chunk(&chunks, "parameters")).unwrap(),
        params
    );
}

#[test]
fn xmp_label_and_software_chunks() {
    let png = encode_png(&gradient(4, 4), 4, 4, &tricky()).unwrap();
    let chunks = read_png_text(&png).unwrap();
    let xmp = chunk(&chunks, XMP_KEYWORD);
    assert!(xmp.contains(&format!(
        "Iptc4xmpExt:DigitalSourceType=\"{TRAINED_ALGORITHMIC_MEDIA}\""
    )));
    assert!(xmp.contains(&format!("xmlns:Iptc4xmpExt=\"{IPTC_EXT_NS}\"")));
    assert_eq!(
        TRAINED_ALGORITHMIC_MEDIA,
        "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    );
    assert!(xmp.starts_with("<?xpacket begin="));
    // The XMP must be an uncompressed iTXt chunk for readers that scan for it.
    let needle = b"iTXtXML:com.adobe.xmp\0\0\0\0\0";
    assert!(png.windows(needle.len()).any(|w| w == needle));
    assert_eq!(chunk(&chunks, "Software"), "sdweb");
}

#[test]
fn pixels_decode_unchanged() {
    let (w, h) = (37, 23);
    let px = gradient(w, h);
    let png = encode_png(&px, w, h, &tricky()).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(&png));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (w, h));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    assert_eq!(&buf[..info.buffer_size()], &px[..]);
}
