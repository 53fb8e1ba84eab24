//! SafetensorsHeader on arbitrary bytes: parse the whole input as a file, then read it through
//! the seekable reader and read every tensor. Errors are fine; panics and huge allocations not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdweb::weights::safetensors::SafetensorsHeader;

fuzz_target!(|data: &[u8]| {
    let _ = SafetensorsHeader::parse(data, data.len() as u64, "fuzz.safetensors");
    let mut cursor = std::io::Cursor::new(data);
    if let Ok(header) = SafetensorsHeader::read(&mut cursor, "fuzz.safetensors") {
        for entry in header.tensors.values() {
            let bytes = header
                .read_tensor(&mut cursor, entry, "fuzz.safetensors")
                .expect("a header that parsed names only bytes inside the file");
            let _ = sdweb::weights::to_f32(&bytes, entry.dtype);
        }
    }
});
