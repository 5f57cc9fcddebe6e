#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wavault::fuzzing::backup_reader(data));
