//! A bot paired on one vault, exported, restored into another vault (other
//! passphrase, other vault id) logs in there without a QR code.

use wavault::backup::archive;
use wavault::runner::{Runner, RunnerEvent, StartCase};
use wavault::sessions::Status;
use wavault::vault::crypto::KdfParams;
use wavault::Vault;

use crate::peer::{Peer, LOGIN_DEADLINE};
use crate::runner_tests::{config, new_vault, next_event, run_and_pair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_bot_logs_in_on_another_vault_without_qr() {
    let tmp = tempfile::tempdir().unwrap();
    let a = new_vault(&tmp.path().join("a"), &["mover"]);
    let peer = Peer::new();
    let (runner, phone) = run_and_pair(&peer, &a, "mover", config(&peer)).await;
    runner.shutdown().await.unwrap();

    let file = tmp.path().join("mover.wvb");
    let (a2, f2) = (a.clone(), file.clone());
    tokio::task::spawn_blocking(move || {
        archive::export(
            &a2,
            &[],
            &f2,
            b"backup pw",
            KdfParams::INSECURE_FOR_TESTS,
            &mut |_, _| {},
        )
    })
    .await
    .unwrap()
    .expect("export");
    drop(a);

    let b = Vault::create(
        &tmp.path().join("b"),
        b"the other host's passphrase",
        KdfParams::INSECURE_FOR_TESTS,
    )
    .unwrap();
    let (_, backup) = archive::read_file(&file, b"backup pw", &mut |_, _| {}).unwrap();
    archive::restore(&b, &backup, &[], false, &mut |_| Ok(None), &mut |_, _| {}).unwrap();

    let registrations = peer.seen().registrations().count();
    let logins = peer.seen().logins(&phone).count();
    let runner = Runner::start(b.clone(), config(&peer)).unwrap();
    let mut rx = runner.subscribe();
    let case = next_event(&mut rx, LOGIN_DEADLINE, "start case", |e| match e {
        RunnerEvent::Started { case, .. } => Some(*case),
        _ => None,
    })
    .await;
    assert_eq!(case, StartCase::Reusing, "restored credentials are reused");
    next_event(&mut rx, LOGIN_DEADLINE, "connected", |e| match e {
        RunnerEvent::Qr { .. } => panic!("a QR code after restore"),
        RunnerEvent::Status {
            status: Status::Connected,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    let seen = peer.seen();
    assert_eq!(
        seen.registrations().count(),
        registrations,
        "no new pairing"
    );
    assert_eq!(
        seen.logins(&phone).count(),
        logins + 1,
        "the paired phone logged in"
    );
    runner.shutdown().await.unwrap();
}
