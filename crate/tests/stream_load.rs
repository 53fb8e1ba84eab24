//! The streaming safetensors loader the browser uses: any chunking gives the file's exact
//! tensors (also when they are row-sharded), and short or long streams are errors.

mod common;

use burn::tensor::DType;
use common::*;
use sdweb::weights::safetensors::SafetensorsHeader;
use sdweb::weights::stream::SafetensorsStream;
use sdweb::weights::{TensorStore, to_f32};

const UNET: &str = "sd1_tiny/unet/diffusion_pytorch_model.safetensors";
const TEXT_ENCODER_F16: &str = "sd2_tiny/text_encoder/model.fp16.safetensors";

/// Streams `bytes` in pieces of `chunk` bytes into a fresh store.
fn stream_into(bytes: &[u8], chunk: usize, max_tensor_bytes: usize) -> TensorStore {
    let mut store = TensorStore::new(&device(), DType::F32, "test");
    store.set_max_tensor_bytes(max_tensor_bytes);
    let mut stream = SafetensorsStream::new(
        "test.safetensors",
        bytes.len() as u64,
        Box::new(|n| Some(n.to_string())),
    );
    for piece in bytes.chunks(chunk) {
        stream.push(&mut store, piece).unwrap();
    }
    stream.finish(&mut store).unwrap();
    store
}

/// Every tensor of the file, read back from the store, equals the file's values exactly.
fn assert_store_matches_file(store: &TensorStore, bytes: &[u8]) -> usize {
    let mut cursor = std::io::Cursor::new(bytes);
    let header = SafetensorsHeader::read(&mut cursor, "file").unwrap();
    let mut sharded = 0;
    for (name, entry) in &header.tensors {
        let expected = to_f32(
            &header.read_tensor(&mut cursor, entry, "file").unwrap(),
            entry.dtype,
        );
        let got = read_flat(store, name, &entry.shape);
        if store.shard_count(name) > 1 {
            sharded += 1;
        }
        assert_eq!(got, expected, "{name}");
    }
    sharded
}

fn read_flat(store: &TensorStore, name: &str, shape: &[usize]) -> Vec<f32> {
    let w = store.root();
    let data = match *shape {
        [a] => w.get::<1>(name, [a]).unwrap().into_data(),
        [a, b] => w.get::<2>(name, [a, b]).unwrap().into_data(),
        [a, b, c] => w.get::<3>(name, [a, b, c]).unwrap().into_data(),
        [a, b, c, d] => w.get::<4>(name, [a, b, c, d]).unwrap().into_data(),
        _ => panic!("{name}: unexpected shape {shape:?}"),
    };
    data.convert::<f32>().try_to_vec::<f32>().unwrap()
}

#[test]
fn odd_chunk_sizes_give_the_files_tensors() {
    for file in [UNET, TEXT_ENCODER_F16] {
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        for chunk in [1 << 20, 4099, 997] {
            let store = stream_into(&bytes, chunk, usize::MAX);
            assert_store_matches_file(&store, &bytes);
        }
    }
}

#[test]
fn row_shards_stream_and_read_back_exactly() {
    // 4 KiB shards: every 2-D/4-D weight over 4 KiB is split into row shards as it arrives.
    let bytes = std::fs::read(fixtures().join(TEXT_ENCODER_F16)).unwrap();
    let store = stream_into(&bytes, 3001, 4096);
    let sharded = assert_store_matches_file(&store, &bytes);
    assert!(sharded > 5, "only {sharded} tensors were sharded");
}

/// A token embedding stored as q4_0 blocks (`sdweb quantize`) streams into dense row shards
/// equal to the CPU dequantisation of the file's blocks.
#[test]
fn quantised_embedding_table_streams_into_dense_row_shards() {
    use sdweb::weights::quant::dequantize_blocks;
    use sdweb::weights::{QuantPolicy, QuantType};
    let out = std::env::temp_dir().join(format!("sdweb-stream-q4-{}", std::process::id()));
    let policy = QuantPolicy::new(QuantType::Q4_0);
    sdweb::weights::quantize_model::quantize_folder(
        &fixtures().join("sd1_tiny"),
        &out,
        Some(&policy),
    )
    .unwrap();
    let bytes = std::fs::read(out.join("text_encoder/model.safetensors")).unwrap();
    std::fs::remove_dir_all(&out).ok();
    let header = SafetensorsHeader::read(&mut std::io::Cursor::new(&bytes), "te").unwrap();
    let (name, entry) = header
        .tensors
        .iter()
        .find(|(k, _)| k.ends_with("token_embedding.weight"))
        .unwrap();
    assert_eq!(entry.shape, [49408, 1, 18], "{name}");
    let blocks = header
        .read_tensor(&mut std::io::Cursor::new(&bytes), entry, "te")
        .unwrap();
    let expected = dequantize_blocks(&blocks, QuantType::Q4_0);

    // 4 KiB shards: 32 rows of 32 f32 each.
    let store = stream_into(&bytes, 3001, 4096);
    let shards = store.root().get_row_shards(name, [49408, 32]).unwrap();
    assert_eq!(shards.len(), 49408_usize.div_ceil(32));
    let got: Vec<f32> = shards.into_iter().flat_map(to_vec).collect();
    assert_eq!(got, expected);
}

#[test]
fn short_and_long_streams_are_errors() {
    let bytes = std::fs::read(fixtures().join(UNET)).unwrap();
    let mut store = TensorStore::new(&device(), DType::F32, "test");
    let mut stream = SafetensorsStream::new(
        "unet.safetensors",
        bytes.len() as u64,
        Box::new(|n| Some(n.to_string())),
    );
    stream.push(&mut store, &bytes[..bytes.len() - 10]).unwrap();
    let err = stream.finish(&mut store).unwrap_err().to_string();
    assert!(
        err.contains("unet.safetensors") && err.contains("truncated"),
        "{err}"
    );

    let mut stream = SafetensorsStream::new(
        "unet.safetensors",
        bytes.len() as u64 - 1,
        Box::new(|n| Some(n.to_string())),
    );
    let err = stream.push(&mut store, &bytes).unwrap_err().to_string();
    assert!(err.contains("unet.safetensors"), "{err}");

    // A file cut in the middle of its data, announced with its cut size: the header says so.
    let cut = &bytes[..bytes.len() / 2];
    let mut stream = SafetensorsStream::new(
        "unet.safetensors",
        cut.len() as u64,
        Box::new(|n| Some(n.to_string())),
    );
    let err = stream.push(&mut store, cut).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");

    // Empty, and shorter than its own header: messages that say so (not "after 0 of 0 bytes").
    let finish = |bytes: &[u8]| {
        let mut store = TensorStore::new(&device(), DType::F32, "test");
        let mut stream = SafetensorsStream::new(
            "unet.safetensors",
            bytes.len() as u64,
            Box::new(|n| Some(n.to_string())),
        );
        stream.push(&mut store, bytes).unwrap();
        stream.finish(&mut store).unwrap_err().to_string()
    };
    assert_eq!(
        finish(&[]),
        "unet.safetensors: malformed weights file: the file is empty (0 bytes)"
    );
    assert_eq!(
        finish(&bytes[..5]),
        "unet.safetensors: malformed weights file: the file ended after 5 bytes, inside its header (8 bytes needed)"
    );
}

#[test]
fn renamed_and_skipped_tensors() {
    let bytes = std::fs::read(fixtures().join(UNET)).unwrap();
    let mut store = TensorStore::new(&device(), DType::F32, "test");
    let mut stream = SafetensorsStream::new(
        "unet.safetensors",
        bytes.len() as u64,
        Box::new(|n| n.starts_with("conv_in.").then(|| format!("renamed.{n}"))),
    );
    for piece in bytes.chunks(65_537) {
        stream.push(&mut store, piece).unwrap();
    }
    stream.finish(&mut store).unwrap();
    assert_eq!(store.len(), 2);
    assert!(store.contains("renamed.conv_in.weight") && store.contains("renamed.conv_in.bias"));
}
