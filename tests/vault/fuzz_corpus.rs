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

#[test]
fn backup_reader_corpus() {
    let c = corpus("backup_reader");
    assert!(c.len() >= 6, "corpus too small");
    c.iter().for_each(|d| wavault::fuzzing::backup_reader(d));
    // The valid seeds really open with the fuzz passphrase (else the fuzzer
    // would never get past the key unwrap).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/backup_reader");
    for (name, len) in [("valid-small", 22), ("valid-empty-payload", 0)] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let (_, plain) =
            wavault::backup::stream::read_all(&bytes[..], wavault::fuzzing::BACKUP_PASSPHRASE)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(plain.len(), len, "{name}");
        // Every truncation and every flipped byte of a valid seed, through the target.
        for cut in 0..bytes.len() {
            wavault::fuzzing::backup_reader(&bytes[..cut]);
        }
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0xff;
            wavault::fuzzing::backup_reader(&b);
        }
    }
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

/// Writes the backup_reader seed corpus: real backup files made with cheap
/// parameters and the fuzz passphrase, plus edge cases.
/// `WAVAULT_WRITE_CORPUS=1 cargo test --test vault fuzz_corpus::write_backup -- --ignored`
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_backup() {
    use std::io::Write;
    use wavault::backup::stream::{self, StreamWriter};
    use wavault::fuzzing::BACKUP_PASSPHRASE;
    use wavault::vault::crypto::KdfParams;
    if std::env::var_os("WAVAULT_WRITE_CORPUS").is_none() {
        return;
    }
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/backup_reader");
    std::fs::create_dir_all(&d).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(d.join(name), bytes).unwrap();
    let backup = |plain: &[u8]| {
        let mut w =
            StreamWriter::create(Vec::new(), BACKUP_PASSPHRASE, KdfParams::INSECURE_FOR_TESTS)
                .unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap()
    };
    let small = backup(b"a small backup payload");
    write("valid-small", &small);
    write("valid-empty-payload", &backup(b""));
    // Two full chunks and a short last one, cut inside the second chunk.
    let multi = backup(&vec![0x5a; 2 * stream::CHUNK_LEN + 100]);
    write(
        "multi-chunk-cut",
        &multi[..stream::HEADER_LEN + stream::FULL_CHUNK_FRAME + 1000],
    );
    write("header-only", &small[..stream::HEADER_LEN]);
    let mut future = small.clone();
    future[stream::MAGIC.len()] = 2;
    write("future-version", &future);
    let mut huge = small.clone();
    huge[stream::KDF_OFFSET..stream::KDF_OFFSET + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    write("kdf-above-cap", &huge);
    let mut trailing = small.clone();
    trailing.extend_from_slice(b"xyz");
    write("trailing-bytes", &trailing);
    let garbage: Vec<u8> = (0..300u32).map(|i| (i * 73 + 19) as u8).collect();
    write("garbage", &garbage);
    let mut magic_then_garbage = b"WAVAULTB\x01".to_vec();
    magic_then_garbage.extend_from_slice(&garbage);
    write("magic-then-garbage", &magic_then_garbage);
    write("empty", b"");
}
