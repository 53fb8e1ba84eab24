//! `sdweb::fuzzing::prompt_syntax` under libFuzzer (see its docs for the property checked).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sdweb::fuzzing::prompt_syntax(data));
