//! Writing checkpoint files in tests: safetensors, and GGUF with F16 tensors.

use std::collections::BTreeMap;
use std::path::Path;

use sdweb::weights::StorageDType;

/// name → (dtype, shape, bytes), in name order.
pub type Tensors = BTreeMap<String, (StorageDType, Vec<usize>, Vec<u8>)>;

pub fn write_safetensors(path: &Path, tensors: &Tensors) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, (dtype, shape, bytes)) in tensors {
        let dtype = dtype.safetensors_name();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(bytes);
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

fn gguf_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend(s.as_bytes());
    out
}

/// A GGUF v3 file (default 32-byte alignment) of F16 tensors, dims in ggml's reversed order.
pub fn write_gguf_f16(
    path: &Path,
    architecture: &str,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<u8>)>,
) {
    const GGML_TYPE_F16: u32 = 1;
    const GGUF_TYPE_STRING: u32 = 8;
    let align = |n: usize| n.div_ceil(32) * 32;
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend(1u64.to_le_bytes());
    out.extend(gguf_string("general.architecture"));
    out.extend(GGUF_TYPE_STRING.to_le_bytes());
    out.extend(gguf_string(architecture));
    let mut offset = 0;
    for (name, (shape, bytes)) in tensors {
        assert_eq!(bytes.len(), 2 * shape.iter().product::<usize>(), "{name}");
        out.extend(gguf_string(name));
        out.extend((shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            out.extend((*d as u64).to_le_bytes());
        }
        out.extend(GGML_TYPE_F16.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset = align(offset + bytes.len());
    }
    out.resize(align(out.len()), 0);
    for (_, bytes) in tensors.values() {
        out.extend(bytes);
        out.resize(align(out.len()), 0);
    }
    std::fs::write(path, out).unwrap();
}
