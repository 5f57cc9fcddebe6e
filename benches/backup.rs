//! Export and restore of a vault of N bots (default 1,000) with realistic
//! Signal state (tests/support/signal_state.rs: about 66 KB of records per
//! bot), against the limits:
//! - this machine's raw XChaCha20-Poly1305 throughput on one core, sealing
//!   64 KiB chunks (what a backup's payload costs at the least);
//! - `tar` of the vault folder piped through `age` (passphrase mode) or,
//!   if `age` is missing, `openssl enc -chacha20`, when installed.
//!
//! Reported in MB/s of backup plaintext (record names and data plus
//! framing: what the stream seals). Export includes reading and opening
//! every record from the vault, the file write, its fsync and the full
//! verification read; restore includes the verification read and one
//! durable transaction per bot. Argon2 runs with cheap parameters: key
//! derivation is not what is measured.
//!
//! Run: `cargo bench --bench backup` (about 3 minutes).
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

fn raw_aead_mb_s() -> f64 {
    let key = SecretKey::from_bytes([9; 32]);
    let chunk = vec![0x5au8; 64 * 1024];
    let nonce = [0u8; 24];
    let mut total = 0usize;
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < 3.0 {
        let sealed = crypto::seal(&key, &nonce, b"ad", &chunk);
        total += chunk.len();
        std::hint::black_box(sealed);
    }
    total as f64 / t.elapsed().as_secs_f64() / MB
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

    let raw = raw_aead_mb_s();
    // Phase alone: reading and opening every record (what export must do
    // before it seals anything), and encoding the frames.
    let t = Instant::now();
    let mut framed = 0usize;
    for c in src.list_bots().unwrap() {
        let d = src.dump_bot(&c.id).unwrap();
        framed += wavault::codec::encode(&d).len();
    }
    let dump_s = t.elapsed().as_secs_f64();
    // Phase alone: sealing that many bytes into a stream in memory.
    let t = Instant::now();
    {
        use std::io::Write;
        let mut w = wavault::backup::stream::StreamWriter::create(
            Vec::with_capacity(framed + framed / 64),
            b"x",
            KdfParams::INSECURE_FOR_TESTS,
        )
        .unwrap();
        let block = vec![7u8; 1 << 20];
        let mut left = framed;
        while left > 0 {
            let n = left.min(block.len());
            w.write_all(&block[..n]).unwrap();
            left -= n;
        }
        std::hint::black_box(w.finish().unwrap());
    }
    let seal_s = t.elapsed().as_secs_f64();
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
    let plain = {
        let (_, b) = archive::read_file(&file, b"backup", &mut |_, _| {}).unwrap();
        b.bots.iter().map(|d| d.payload_bytes()).sum::<u64>()
    };

    let dst = Vault::create(
        &tmp.path().join("dst"),
        b"other",
        KdfParams::INSECURE_FOR_TESTS,
    )
    .unwrap();
    let t = Instant::now();
    let (_, backup) = archive::read_file(&file, b"backup", &mut |_, _| {}).unwrap();
    let read_s = t.elapsed().as_secs_f64();
    archive::restore(&dst, &backup, &[], false, &mut |_| Ok(None), &mut |_, _| {}).unwrap();
    let restore_s = t.elapsed().as_secs_f64();
    drop(backup);
    src.flush().unwrap();
    let tar = tar_pipeline(&src_dir, &tmp.path().join("vault.tar.enc"));

    println!(
        "backup bench: {n} bots, {} records, {:.1} MB of record data, file {:.1} MB",
        report.records,
        plain as f64 / MB,
        report.bytes as f64 / MB
    );
    println!("  raw XChaCha20-Poly1305, one core, 64 KiB chunks: {raw:.0} MB/s");
    let export_mb_s = plain as f64 / MB / export_s;
    println!(
        "  export (read+open every record, seal, write, fsync, verify): {export_s:.2} s = {export_mb_s:.0} MB/s = {:.2}x raw AEAD (target >= 0.5x): {}",
        export_mb_s / raw,
        if export_mb_s >= raw / 2.0 { "met" } else { "MISSED" }
    );
    println!(
        "  export phases alone: read+open+encode every record {dump_s:.2} s ({:.0} MB/s); seal the stream in memory {seal_s:.2} s ({:.0} MB/s)",
        framed as f64 / MB / dump_s,
        framed as f64 / MB / seal_s
    );
    println!(
        "  restore: verify+decode {read_s:.2} s, total with {n} durable bot transactions {restore_s:.2} s = {:.0} MB/s",
        plain as f64 / MB / restore_s
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
