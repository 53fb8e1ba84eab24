//! QuantizeStream (the browser's and `sdweb quantize`'s converter) on arbitrary bytes, fed in
//! two pieces: errors are fine; panics, huge allocations and a finished output whose length
//! differs from the announced size are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdweb::weights::quantize_model::QuantizeStream;
use sdweb::weights::{QuantPolicy, QuantType};

fuzz_target!(|data: &[u8]| {
    for ty in [QuantType::Q8_0, QuantType::Q4_0] {
        let mut stream = QuantizeStream::new("fuzz.safetensors", data.len() as u64, "unet", Some(QuantPolicy::new(ty)));
        let split = data.len() / 3;
        let mut out = Vec::new();
        let mut ok = true;
        for piece in [&data[..split], &data[split..]] {
            match stream.push(piece) {
                Ok(bytes) => out.extend(bytes),
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        let announced = stream.output_size();
        if let Ok((tail, _)) = stream.finish() {
            out.extend(tail);
            assert_eq!(announced, Some(out.len() as u64), "output size differs from the header's");
        }
    }
});
