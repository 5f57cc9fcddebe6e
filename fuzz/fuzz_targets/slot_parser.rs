#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wavault::fuzzing::slot_parser(data));
