//! Fuzz targets: each takes arbitrary bytes and panics only when a property of a parser that
//! reads untrusted input breaks. Errors are fine; panics, huge allocations and inconsistent
//! results are not. Run coverage-guided by `cargo fuzz` (fuzz/, nightly) and, for a bounded
//! time on every CI run, by the stable mutation driver in `crate/tests/fuzz.rs`; both read the
//! committed seed corpora in `fuzz/seeds/<target>/`.

use std::io::Cursor;
use std::sync::OnceLock;

use crate::image_io::{MAX_PNG_SIDE, decode_png_rgb};
use crate::png_meta::GenerationParams;
use crate::tokenizer::{ClipTokenizer, Flavor};
use crate::weights::gguf::GgufFile;
use crate::weights::quantize_model::QuantizeStream;
use crate::weights::safetensors::{SafetensorsHeader, TensorEntry};
use crate::weights::stream::{SafetensorsStream, TensorSink};
use crate::weights::{QuantPolicy, QuantType, to_f32};

/// A fuzz target: panics when the property breaks.
pub type FuzzTarget = fn(&[u8]);

/// Every target, by the name of its seed folder (fuzz/seeds/) and `cargo fuzz` binary.
pub const TARGETS: &[(&str, FuzzTarget)] = &[
    ("safetensors_header", safetensors_header),
    ("safetensors_stream", safetensors_stream),
    ("quantize_stream", quantize_stream),
    ("gguf_reader", gguf_reader),
    ("png_image", png_image),
    ("tokenizer", tokenizer),
    ("a1111_parameters", a1111_parameters),
    ("prompt_syntax", prompt_syntax),
];

/// The safetensors header parser on the whole input, then the seekable reader and every
/// tensor read (which must succeed once the header parsed) and converted.
pub fn safetensors_header(data: &[u8]) {
    let _ = SafetensorsHeader::parse(data, data.len() as u64, "fuzz.safetensors");
    let mut cursor = Cursor::new(data);
    if let Ok(header) = SafetensorsHeader::read(&mut cursor, "fuzz.safetensors") {
        for entry in header.tensors.values() {
            let bytes = header
                .read_tensor(&mut cursor, entry, "fuzz.safetensors")
                .expect("a header that parsed names only bytes inside the file");
            let _ = to_f32(&bytes, entry.dtype);
        }
    }
}

/// The browser's streaming parser, fed in pieces whose sizes the first input byte picks, against
/// the whole-file reader: a stream that finishes delivered every tensor, byte for byte as the
/// seekable reader reads it.
pub fn safetensors_stream(data: &[u8]) {
    let Some((&step, file)) = data.split_first() else {
        return;
    };
    let mut sink = CollectingSink::default();
    let mut stream = SafetensorsStream::new(
        "fuzz.safetensors",
        file.len() as u64,
        Box::new(|n: &str| Some(n.to_string())),
    );
    let mut rest = file;
    let mut piece = 1 + step as usize;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(piece.min(rest.len()));
        if stream.push(&mut sink, now).is_err() {
            return;
        }
        rest = later;
        piece = piece * 3 % 4093 + 1;
    }
    if stream.finish(&mut sink).is_err() {
        return;
    }
    let mut cursor = Cursor::new(file);
    let header = SafetensorsHeader::read(&mut cursor, "fuzz.safetensors")
        .expect("a file the stream accepted has a valid header");
    assert_eq!(
        sink.tensors.len(),
        header.tensors.len(),
        "the stream skipped tensors"
    );
    for (name, bytes) in &sink.tensors {
        let entry = &header.tensors[name];
        let want = header
            .read_tensor(&mut cursor, entry, "fuzz.safetensors")
            .expect("readable");
        assert!(
            *bytes == want,
            "{name}: the stream delivered other bytes than the file holds"
        );
    }
}

/// Keeps every streamed tensor's bytes by name.
#[derive(Default)]
struct CollectingSink {
    tensors: Vec<(String, Vec<u8>)>,
}

impl TensorSink for CollectingSink {
    type Pending = (String, Vec<u8>);
    fn begin(&mut self, name: &str, _entry: &TensorEntry) -> Self::Pending {
        (name.to_string(), Vec::new())
    }
    fn push(&mut self, pending: &mut Self::Pending, bytes: &[u8]) {
        pending.1.extend_from_slice(bytes);
    }
    fn finish(&mut self, pending: Self::Pending) {
        self.tensors.push(pending);
    }
}

/// QuantizeStream (the browser's and `sdweb quantize`'s converter), q8_0 and q4_0, fed in two
/// pieces: a finished output has the size its header announced.
pub fn quantize_stream(data: &[u8]) {
    for ty in [QuantType::Q8_0, QuantType::Q4_0] {
        let policy = Some(QuantPolicy::new(ty));
        let mut stream = QuantizeStream::new("fuzz.safetensors", data.len() as u64, "unet", policy);
        let (head, tail) = data.split_at(data.len() / 3);
        let mut out = Vec::new();
        let pushed = [head, tail].into_iter().try_for_each(|piece| {
            out.extend(stream.push(piece)?);
            Ok::<_, crate::weights::WeightError>(())
        });
        if pushed.is_err() {
            continue;
        }
        let announced = stream.output_size();
        if let Ok((last, _)) = stream.finish() {
            out.extend(last);
            assert_eq!(
                announced,
                Some(out.len() as u64),
                "output size differs from the header's"
            );
        }
    }
}

/// The GGUF reader through a Cursor: header, metadata, tensor infos, then every tensor read and
/// dequantised (which must succeed for every type we dequantise once the header parsed).
pub fn gguf_reader(data: &[u8]) {
    let mut cursor = Cursor::new(data);
    if let Ok(file) = GgufFile::read(&mut cursor, "fuzz.gguf") {
        for info in &file.tensors {
            match file.read_f32(&mut cursor, info, "fuzz.gguf") {
                Ok(values) => assert_eq!(values.len(), info.numel()),
                Err(e) => assert!(!info.ggml_type.is_supported(), "{e}"),
            }
        }
    }
}

/// Init images and masks: any PNG decodes to RGB8 of the size it claims, within the limits.
/// Each input is tried as it is and with its chunk CRCs made right, so that mutations get past
/// the checksums into the decoder.
pub fn png_image(data: &[u8]) {
    for bytes in [data.to_vec(), with_chunk_crcs_fixed(data)] {
        if let Ok(image) = decode_png_rgb(&bytes) {
            assert!(image.width <= MAX_PNG_SIDE as usize && image.height <= MAX_PNG_SIDE as usize);
            assert_eq!(image.rgb.len(), image.width * image.height * 3);
        }
    }
}

/// The PNG with every complete chunk's CRC recomputed (the signature and lengths as they are).
fn with_chunk_crcs_fixed(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 8;
    while at + 12 <= out.len() {
        let len = u32::from_be_bytes(out[at..at + 4].try_into().expect("4 bytes")) as usize;
        let Some(end) = (at + 8)
            .checked_add(len)
            .filter(|&end| end + 4 <= out.len())
        else {
            break;
        };
        let crc = crc32(&out[at + 4..end]);
        out[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
    out
}

/// CRC-32 (ISO 3309, as PNG uses), bit by bit: inputs are small.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Both tokenizer flavours on any text: ids framed as the text encoder expects. On plain
/// lower-case ASCII (where transformers' slow and fast tokenizers agree) they give the same ids.
pub fn tokenizer(data: &[u8]) {
    let [(slow, slow_vocab), (fast, fast_vocab)] = fixture_tokenizers();
    let text = String::from_utf8_lossy(data);
    for (tok, vocab) in [(slow, slow_vocab), (fast, fast_vocab)] {
        if let Ok(enc) = tok.try_encode(&text) {
            assert_eq!(enc.ids.len(), tok.max_length());
            assert_eq!(enc.ids[0], tok.bos_id());
            assert!(enc.ids.iter().all(|&id| (id as usize) < *vocab));
        }
    }
    const PLAIN: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 ,.";
    let plain: String = data
        .iter()
        .map(|b| PLAIN[*b as usize % PLAIN.len()] as char)
        .collect();
    assert_eq!(
        slow.try_encode(&plain).ok(),
        fast.try_encode(&plain).ok(),
        "slow and fast tokenizers disagree on {plain:?}"
    );
}

/// A1111 prompt syntax on any text: at least one chunk, each framed for the text encoder
/// (max_length ids, bos first, one finite multiplier per id), and as many tokens counted as
/// the chunks hold.
pub fn prompt_syntax(data: &[u8]) {
    let [(tok, vocab), _] = fixture_tokenizers();
    let text = String::from_utf8_lossy(data);
    let Ok(prompt) = crate::prompt_syntax::tokenize_a1111(tok, &text) else {
        return;
    };
    assert!(!prompt.chunks.is_empty(), "no chunk for {text:?}");
    for chunk in &prompt.chunks {
        assert_eq!(chunk.ids.len(), tok.max_length(), "{text:?}");
        assert_eq!(chunk.weights.len(), chunk.ids.len(), "{text:?}");
        assert_eq!(chunk.ids[0], tok.bos_id(), "{text:?}");
        assert!(
            chunk.ids.iter().all(|&id| (id as usize) < *vocab),
            "{text:?}"
        );
        assert!(
            chunk.weights.iter().all(|w| w.is_finite()),
            "{text:?}: {:?}",
            chunk.weights
        );
    }
    assert!(
        prompt.token_count <= prompt.chunks.len() * (tok.max_length() - 2),
        "{text:?}"
    );
}

/// The SD 1.x fixture's tokenizer in both flavours with their vocabulary sizes (which count the
/// whole vocabulary on every call), built once.
fn fixture_tokenizers() -> &'static [(ClipTokenizer, usize); 2] {
    static TOKENIZERS: OnceLock<[(ClipTokenizer, usize); 2]> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/sd1_tiny/tokenizer");
        [Flavor::Slow, Flavor::Fast].map(|flavor| {
            let tok = ClipTokenizer::from_dir_with_flavor(&dir, flavor)
                .expect("the fixture's tokenizer loads");
            let vocab = tok.vocab_size();
            (tok, vocab)
        })
    })
}

/// The A1111 parameters parser on any text: what parses writes back to a text that parses to
/// the same parameters (but for the limits A1111 has too: a field whose value equals its key is
/// written bare, and a bare word is no field on reading; a prompt line that starts with
/// `Negative prompt:` starts the negative prompt).
pub fn a1111_parameters(data: &[u8]) {
    let Ok(mut params) = GenerationParams::parse_a1111(&String::from_utf8_lossy(data)) else {
        return;
    };
    let text = format!("{}\n{}", params.prompt, params.negative_prompt);
    if text
        .lines()
        .any(|line| line.starts_with("Negative prompt:"))
    {
        return; // a documented limit, as above
    }
    params.extra.retain(|(key, value)| key != value);
    if params.model == "Model" {
        params.model.clear();
    }
    let again = GenerationParams::parse_a1111(&params.to_a1111());
    assert_eq!(
        again.as_ref().ok(),
        Some(&params),
        "round trip of {params:?}: {again:?}"
    );
}
