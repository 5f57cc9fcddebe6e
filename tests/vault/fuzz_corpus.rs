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

/// Writes the seed corpus from real vault bytes plus edge cases.
/// `WAVAULT_WRITE_CORPUS=1 cargo test --test vault fuzz_corpus::write -- --ignored`
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write() {
    use wavault::vault::crypto::KdfParams;
    use wavault::vault::{Kind, KEY_FILE};
    if std::env::var_os("WAVAULT_WRITE_CORPUS").is_none() {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let tmp = tempfile::tempdir().unwrap();
    let v = wavault::Vault::create(tmp.path(), b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap();
    let b = wavault::BotId::parse("corpus").unwrap();
    v.add_bot(&wavault::vault::BotConfig::new(b.clone()))
        .unwrap();
    v.view(&b).put(Kind::TEST, b"name", b"some data").unwrap();
    v.rotate_key(&mut |_, _| {}).unwrap();
    v.flush().unwrap();
    let header = std::fs::read(tmp.path().join(KEY_FILE)).unwrap();
    drop(v);
    let db = sled::open(tmp.path().join("db")).unwrap();
    let rec = db
        .open_tree("records")
        .unwrap()
        .iter()
        .next()
        .unwrap()
        .unwrap()
        .1
        .to_vec();
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = root.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };
    write("slot_parser", "valid", &header);
    write("slot_parser", "truncated", &header[..header.len() / 2]);
    write("slot_parser", "empty", b"");
    let mut huge = header.clone();
    huge[34 + 2..34 + 6].copy_from_slice(&u32::MAX.to_be_bytes());
    write("slot_parser", "kdf-above-cap", &huge);
    write("slot_parser", "magic-only", b"WAVAULTK\x01");
    write("record_decoder", "valid", &rec);
    write("record_decoder", "truncated", &rec[..20]);
    write("record_decoder", "empty", b"");
    let mut future = rec.clone();
    future[0] = 9;
    write("record_decoder", "future-version", &future);
    write(
        "record_decoder",
        "codec-garbage",
        &[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    );
}
