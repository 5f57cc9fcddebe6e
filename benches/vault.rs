//! Vault benchmarks (issue 2): record seal/open against raw XChaCha20-Poly1305,
//! `rotate passphrase` at 1 and 1,000 bots, and `rotate key` throughput.
//!
//! `cargo bench --bench vault`; numbers go to docs/PERFORMANCE.md.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use wavault::vault::crypto::KdfParams;
use wavault::vault::record::RecordBody;
use wavault::vault::{BotConfig, Kind, TreeId};
use wavault::{BotId, Vault};

const PASS: &[u8] = b"bench passphrase";

fn vault_with(bots: usize, records_per_bot: usize, size: usize) -> (tempfile::TempDir, Vault) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Cheap KDF on purpose: these benchmarks measure everything but Argon2.
    let v = Vault::create(dir.path(), PASS, KdfParams::INSECURE_FOR_TESTS).expect("create");
    let data = vec![0x5a; size];
    for b in 0..bots {
        let id = BotId::parse(&format!("bot-{b}")).expect("id");
        v.add_bot(&BotConfig::new(id.clone())).expect("add");
        let view = v.view(&id);
        for r in 0..records_per_bot {
            view.put(Kind::TEST, format!("r{r}").as_bytes(), &data)
                .expect("put");
        }
    }
    v.flush().expect("flush");
    (dir, v)
}

fn seal_open(c: &mut Criterion) {
    let (_d, v) = vault_with(1, 0, 0);
    let key = [1u8; 33];
    for size in [256usize, 1024, 16 * 1024] {
        let mut g = c.benchmark_group(format!("aead_{size}B"));
        g.throughput(Throughput::Bytes(size as u64));
        let raw = XChaCha20Poly1305::new(&[7u8; 32].into());
        let msg = vec![0u8; size];
        g.bench_function("raw_xchacha20poly1305_seal", |b| {
            b.iter(|| {
                raw.encrypt(
                    &[3u8; 24].into(),
                    Payload {
                        msg: black_box(&msg),
                        aad: b"ad",
                    },
                )
                .expect("seal")
            })
        });
        let body = RecordBody {
            name: b"name".to_vec(),
            data: msg.clone(),
            written_at: 0,
        };
        g.bench_function("record_seal", |b| {
            b.iter(|| v.seal_value(TreeId::Records, &key, black_box(&body)))
        });
        let sealed = v.seal_value(TreeId::Records, &key, &body);
        g.bench_function("record_open", |b| {
            b.iter(|| {
                v.open_value(TreeId::Records, &key, black_box(&sealed))
                    .expect("open")
            })
        });
        g.finish();
    }
}

fn rotate_passphrase(c: &mut Criterion) {
    let mut g = c.benchmark_group("rotate_passphrase");
    g.sample_size(20);
    for bots in [1usize, 1000] {
        let (_d, v) = vault_with(bots, 10, 512);
        g.bench_function(format!("{bots}_bots"), |b| {
            b.iter(|| v.rotate_passphrase(PASS, None).expect("rotate"))
        });
    }
    g.finish();
}

fn rotate_key(c: &mut Criterion) {
    let mut g = c.benchmark_group("rotate_key");
    g.sample_size(10);
    let (bots, per_bot, size) = (1000usize, 20usize, 1024usize);
    let (_d, v) = vault_with(bots, per_bot, size);
    let records = (bots * per_bot + bots) as u64;
    g.throughput(Throughput::Elements(records));
    g.bench_function(format!("{records}_records_of_{size}B"), |b| {
        b.iter_batched(
            || (),
            |_| v.rotate_key(&mut |_, _| {}).expect("rotate"),
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let r = v.rotate_key(&mut |_, _| {}).expect("rotate");
    println!(
        "rotate_key: {} records, {:.1} MB in {:.3}s = {:.0} records/s, {:.1} MB/s",
        r.resealed,
        r.bytes as f64 / 1e6,
        r.seconds,
        r.resealed as f64 / r.seconds,
        r.bytes as f64 / 1e6 / r.seconds
    );
}

criterion_group!(benches, seal_open, rotate_passphrase, rotate_key);
criterion_main!(benches);
