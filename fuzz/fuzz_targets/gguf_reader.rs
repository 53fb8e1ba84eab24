//! The GGUF reader on arbitrary bytes through a Cursor: header, metadata, tensor infos, then every
//! tensor read and dequantised. Errors are fine; panics and huge allocations are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdweb::weights::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let mut cursor = std::io::Cursor::new(data);
    if let Ok(file) = GgufFile::read(&mut cursor, "fuzz.gguf") {
        for info in &file.tensors {
            match file.read_f32(&mut cursor, info, "fuzz.gguf") {
                Ok(values) => assert_eq!(values.len(), info.numel()),
                // only types we do not dequantise may fail once the header parsed
                Err(e) => assert!(!info.ggml_type.is_supported(), "{e}"),
            }
        }
    }
});
