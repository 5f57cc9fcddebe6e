//! Export and restore of a vault of N bots (default 1,000) with realistic
//! Signal state (tests/support/signal_state.rs: about 66 KB of records per
//! bot), against the limit of what they must do:
//! - raw XChaCha20-Poly1305 on one core, opening and sealing 64 KiB chunks;
//!   "the limit" is the time to open every record's bytes plus seal the
//!   stream's bytes at those raw speeds (export must do at least that);
//! - `tar` of the vault folder piped through `age` (passphrase mode) or,
//!   if `age` is missing, `openssl enc -chacha20`, when installed.
//!
//! Export includes reading and opening every record from the vault, the
//! stream sealed, the full verification read, the file write and its fsync
//! (target: within 3x the limit, on every core); restore includes the
//! verification read and one transaction per bot with one durable flush per
//! group of bots (target: under 1.5 s for 1,000 bots). Argon2 runs with
//! cheap parameters: key derivation is not what is measured.
//!
//! Run: `cargo bench --bench backup` (about a minute after the build).
//! `WAVAULT_BENCH_BOTS=N` changes the vault size.

#[path = "../tests/support/signal_state.rs"]
mod signal_state;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use wacore::store::traits::Backend;
use wavault::backup::archive;
use wavault::vault::crypto::{self, KdfParams, SecretKey};
use wavault::vault::BotConfig;
use wavault::{BotId, Vault};

const MB: f64 = 1_000_000.0;

/// Raw XChaCha20-Poly1305 on one core over 64 KiB chunks: (seal, open) MB/s.
fn raw_aead_mb_s() -> (f64, f64) {
    let key = SecretKey::from_bytes([9; 32]);
    let chunk = vec![0x5au8; 64 * 1024];
    let nonce = [0u8; 24];
    let mut total = 0usize;
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < 2.0 {
        let sealed = crypto::seal(&key, &nonce, b"ad", &chunk);
        total += chunk.len();
        std::hint::black_box(sealed);
    }
    let seal = total as f64 / t.elapsed().as_secs_f64() / MB;
    let sealed = crypto::seal(&key, &nonce, b"ad", &chunk);
    let mut total = 0usize;
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < 2.0 {
        let opened = crypto::open(&key, &nonce, b"ad", &sealed).unwrap();
        total += chunk.len();
        std::hint::black_box(opened);
    }
    (seal, total as f64 / t.elapsed().as_secs_f64() / MB)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `tar` of the vault folder through an encryption tool, to /dev/null-like
/// file; returns (tool, seconds, bytes of tar input).
fn tar_pipeline(dir: &std::path::Path, out: &std::path::Path) -> Option<(String, f64, u64)> {
    let size: u64 = walk(dir);
    let pass = out.with_extension("pass");
    std::fs::write(&pass, "bench passphrase\n").ok()?;
    let enc = if have("age") {
        // age reads a passphrase only from a terminal; use a key file instead (same cipher).
        let key = out.with_extension("agekey");
        let ok = Command::new("age-keygen")
            .arg("-o")
            .arg(&key)
            .stderr(Stdio::null())
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
        format!("age -e -i {} -o {}", key.display(), out.display())
    } else if have("openssl") {
        format!(
            "openssl enc -chacha20 -pbkdf2 -pass file:{} -out {}",
            pass.display(),
            out.display()
        )
    } else {
        return None;
    };
    let cmd = format!(
        "tar -C {} -cf - . | {enc} && sync {}",
        dir.display(),
        out.display()
    );
    let t = Instant::now();
    let ok = Command::new("sh")
        .args(["-c", &cmd])
        .status()
        .ok()?
        .success();
    let secs = t.elapsed().as_secs_f64();
    ok.then(|| {
        (
            enc.split_whitespace().next().unwrap().to_string(),
            secs,
            size,
        )
    })
}

fn walk(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let n: u64 = std::env::var("WAVAULT_BENCH_BOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let t = Instant::now();
    let src = Vault::create(&src_dir, b"bench", KdfParams::INSECURE_FOR_TESTS).unwrap();
    rt.block_on(async {
        for i in 0..n {
            let id = BotId::parse(&format!("bot-{i:04}")).unwrap();
            src.add_bot(&BotConfig::new(id.clone())).unwrap();
            let backend: Arc<dyn Backend> = src.bot_backend(&id).unwrap();
            signal_state::fill(&backend, i).await;
        }
    });
    src.flush().unwrap();
    eprintln!("setup: {n} bots in {:.1?}", t.elapsed());

    let (raw_seal, raw_open) = raw_aead_mb_s();
    // Bytes every record holds as stored (what export opens): keys and
    // sealed values of every kind.
    let all_kinds: Vec<wavault::vault::Kind> = (0..=0x7f).map(wavault::vault::Kind).collect();
    let stored: u64 = src
        .list_bots()
        .unwrap()
        .iter()
        .map(|c| src.footprint(&c.id, &all_kinds).unwrap().bytes)
        .sum();
    let file = tmp.path().join("all.wvb");
    let t = Instant::now();
    let report = archive::export(
        &src,
        &[],
        &file,
        b"backup",
        KdfParams::INSECURE_FOR_TESTS,
        &mut |_, _| {},
    )
    .unwrap();
    let export_s = t.elapsed().as_secs_f64();
    // Plaintext size: what the stream sealed (file minus header and tags).
    let (plain, framed) = {
        let (_, b) = archive::read_file(&file, b"backup", &mut |_, _| {}).unwrap();
        let framed: usize = b
            .bots
            .iter()
            .map(|d| 4 + wavault::codec::encode(d).len())
            .sum();
        (
            b.bots.iter().map(|d| d.payload_bytes()).sum::<u64>(),
            framed,
        )
    };
    let limit_s = stored as f64 / MB / raw_open + framed as f64 / MB / raw_seal;
    // The path before issue 19, in the same run: one thread dumps every
    // bot, seals the stream, reads it all back and decodes every frame,
    // then the file is written and synced.
    let t = Instant::now();
    {
        use std::io::Write;
        let dumps: Vec<_> = src
            .list_bots()
            .unwrap()
            .iter()
            .map(|c| src.dump_bot(&c.id).unwrap())
            .collect();
        let mut w = wavault::backup::stream::StreamWriter::create(
            Vec::new(),
            b"backup",
            KdfParams::INSECURE_FOR_TESTS,
        )
        .unwrap();
        for d in &dumps {
            let b = wavault::codec::encode(d);
            w.write_all(&(b.len() as u32).to_le_bytes()).unwrap();
            w.write_all(&b).unwrap();
        }
        let bytes = w.finish().unwrap();
        let (_, plain) = wavault::backup::stream::read_all(&bytes[..], b"backup").unwrap();
        let mut rest = &plain[..];
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            let d: wavault::vault::BotDump = wavault::codec::decode(&rest[4..4 + len]).unwrap();
            std::hint::black_box(d);
            rest = &rest[4 + len..];
        }
        let mut f = std::fs::File::create(tmp.path().join("old.wvb")).unwrap();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
    }
    let old_export_s = t.elapsed().as_secs_f64();

    let dst = Vault::create(
        &tmp.path().join("dst"),
        b"other",
        KdfParams::INSECURE_FOR_TESTS,
    )
    .unwrap();
    let flushes = dst.flush_count();
    let t = Instant::now();
    let (_, backup) = archive::read_file(&file, b"backup", &mut |_, _| {}).unwrap();
    let read_s = t.elapsed().as_secs_f64();
    archive::restore(&dst, &backup, &[], false, &mut |_| Ok(None), &mut |_, _| {}).unwrap();
    let restore_s = t.elapsed().as_secs_f64();
    let restore_flushes = dst.flush_count() - flushes;
    // The restore path before issue 19, in the same run: one thread, one
    // durable flush per bot (groups of one bot).
    let old_dst = Vault::create(
        &tmp.path().join("old-dst"),
        b"other",
        KdfParams::INSECURE_FOR_TESTS,
    )
    .unwrap();
    let t = Instant::now();
    let bots: Vec<_> = backup
        .bots
        .iter()
        .map(|d| (&d.config, &d.records[..]))
        .collect();
    let one = wavault::vault::ReplaceGroups {
        bots: 1,
        bytes: usize::MAX,
    };
    old_dst
        .replace_bots(&bots, one, 1, &mut |_| Ok(()))
        .unwrap();
    let old_restore_s = t.elapsed().as_secs_f64() + read_s;
    drop(bots);
    drop(backup);
    src.flush().unwrap();
    let tar = tar_pipeline(&src_dir, &tmp.path().join("vault.tar.enc"));

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "backup bench: {n} bots, {} records, {:.1} MB of record data ({:.1} MB stored), file {:.1} MB, {cores} cores",
        report.records,
        plain as f64 / MB,
        stored as f64 / MB,
        report.bytes as f64 / MB
    );
    println!(
        "  raw XChaCha20-Poly1305, one core, 64 KiB chunks: seal {raw_seal:.0} MB/s, open {raw_open:.0} MB/s"
    );
    println!(
        "  the limit: open {:.1} MB of stored records + seal {:.1} MB of stream at raw speed = {limit_s:.3} s",
        stored as f64 / MB,
        framed as f64 / MB
    );
    println!(
        "  export (snapshot+open every record, seal, verify, write, fsync): {export_s:.3} s = {:.0} MB/s of record data = {:.2}x the limit (target <= 3x): {}",
        plain as f64 / MB / export_s,
        export_s / limit_s,
        if export_s <= 3.0 * limit_s { "met" } else { "MISSED" }
    );
    println!(
        "  before (one thread; restore flushes once per bot): export {old_export_s:.3} s = {:.2}x the limit; restore {old_restore_s:.3} s (verify+decode as now, then {n} bot transactions and {n} durable flushes); now: export {:.2}x faster, restore {:.2}x faster",
        old_export_s / limit_s,
        old_export_s / export_s,
        old_restore_s / restore_s
    );
    println!(
        "  restore: verify+decode {read_s:.3} s; end to end with {n} bot transactions and {restore_flushes} durable flushes {restore_s:.3} s = {:.1}x the limit (target < 1.5 s): {}",
        restore_s / limit_s,
        if restore_s < 1.5 { "met" } else { "MISSED" }
    );
    match tar {
        Some((tool, secs, bytes)) => println!(
            "  tar of the vault folder ({:.1} MB on disk) | {tool}: {secs:.2} s = {:.0} MB/s of record data ({:.0} MB/s of folder bytes)",
            bytes as f64 / MB,
            plain as f64 / MB / secs,
            bytes as f64 / MB / secs
        ),
        None => println!("  tar | encryption tool: no age or openssl here"),
    }
}
