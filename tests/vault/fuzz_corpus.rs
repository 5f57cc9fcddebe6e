//! Runs the fuzz targets' entry points over the committed corpus (fuzz/corpus).

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    out
}

#[test]
fn record_decoder_corpus() {
    let c = corpus("record_decoder");
    assert!(c.len() >= 4, "corpus too small");
    c.iter().for_each(|d| wavault::fuzzing::record_decoder(d));
}

#[test]
fn slot_parser_corpus() {
    let c = corpus("slot_parser");
    assert!(c.len() >= 4, "corpus too small");
    c.iter().for_each(|d| wavault::fuzzing::slot_parser(d));
}
