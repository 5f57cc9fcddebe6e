//! Groups end to end (issue 14): a bot run by the runner in a group with two
//! contacts the peer plays, sender keys both ways (`peer/group.rs`).
//!
//! Why it exists: group messages must reach the hook with the group, the
//! sender and the subject; the hook's replies and `send` must reach every
//! member; the bot's sender keys live in the vault like every Signal record,
//! so a restart and a restore into another vault carry on without a new
//! sender-key distribution and without a decrypt error; and a removed
//! participant must not read what the bot sends afterwards (a new sender key
//! goes to the remaining members only).

use std::time::Duration;

use serde_json::Value;
use wavault::runner::Runner;
use wavault::vault::BotConfig;
use wavault::Vault;

use crate::hook_server::{HookServer, Mode};
use crate::live_tests::{cli, ok, CHEAP};
use crate::messaging_tests::{assert_clean_signal, one_bot, wait_connected, OneBot};
use crate::peer::{Contact, Peer, PeerLog, LOGIN_DEADLINE};
use crate::runner_tests::{bot, new_vault, PASS};

/// Deadline for one message to make its way through bot, hook and back.
const DEADLINE: Duration = Duration::from_secs(30);

/// Waits until `contact` decrypted a bot message with `text`; its id.
async fn received(contact: &Contact, text: &str) -> String {
    let got = contact
        .wait_received(text, DEADLINE, |r| {
            r.iter().any(|m| m.text.as_deref() == Some(text))
        })
        .await
        .unwrap();
    got.iter()
        .find(|m| m.text.as_deref() == Some(text))
        .map(|m| m.id.clone())
        .unwrap()
}

/// The sender-key distribution of the bot's (`bot_phone`) message `id` to
/// `group`: the phones it carried a new sender key for.
fn skdm_of(peer: &Peer, bot_phone: &str, group: &str, id: &str) -> Vec<String> {
    peer.seen()
        .group_sends
        .iter()
        .find(|s| s.id == id && s.group == group && s.bot_phone == bot_phone)
        .unwrap_or_else(|| panic!("the server saw group message {id}"))
        .skdm_to
        .clone()
}

/// `from` writes `text` to the group; the hook gets it and its echo
/// reaches both `members`. Returns the event and the echo's message id.
async fn write_and_echo(
    hook: &HookServer,
    from: &Contact,
    group: &str,
    text: &str,
    members: [&Contact; 2],
) -> (Value, String) {
    from.send_group_text(group, text).await.unwrap();
    hook_and_echo(hook, text, members).await
}

/// The hook gets the group message `text` and its echo reaches both
/// `members`. Returns the event and the echo's message id.
async fn hook_and_echo(hook: &HookServer, text: &str, members: [&Contact; 2]) -> (Value, String) {
    let is_it = |e: &Value| e["text"] == text;
    let seen = hook
        .wait(text, DEADLINE, |s| s.accepted.iter().any(is_it))
        .await;
    let event = seen.accepted.into_iter().find(is_it).unwrap();
    let echo = format!("echo: {text}");
    let id = received(members[0], &echo).await;
    assert_eq!(received(members[1], &echo).await, id);
    (event, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_of_a_bot_and_two_contacts_across_restart_restore_and_a_removal() {
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;
    let OneBot {
        dir,
        vault,
        phone,
        peer,
        runner,
        cfg: c,
    } = one_bot(BotConfig::new(bot("grp")), 4_918_300_001_001, Some(&hook)).await;
    let (a, b) = ("4918300001002", "4918300001003");
    let (ca, cb) = (peer.contact(a), peer.contact(b));
    let group = peer.create_group("Team Alpha", &[a, &phone, b]);

    // A writes: the hook gets the group, the sender and the subject; its
    // reply goes to the group and both contacts decrypt it.
    let (event, echo) = write_and_echo(&hook, &ca, &group, "hello group", [&ca, &cb]).await;
    assert_eq!(event["chat"], group.as_str(), "{event}");
    assert_eq!(event["is_group"], true, "{event}");
    assert_eq!(event["sender_pn"], format!("{a}@s.whatsapp.net"), "{event}");
    assert!(
        event["sender"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{a}@")),
        "{event}"
    );
    assert_eq!(event["group_subject"], "Team Alpha", "{event}");
    assert_eq!(
        skdm_of(&peer, &phone, &group, &echo),
        [a, b],
        "the first group message distributes the bot's sender key to both"
    );

    // `send` to the group (the CLI, through the running runner) reaches both.
    let out = ok(&cli(dir.path(), &["send", "grp", &group, "from send"]).await);
    let id = received(&ca, "from send").await;
    assert_eq!(out.trim(), id);
    assert_eq!(received(&cb, "from send").await, id);
    assert!(
        skdm_of(&peer, &phone, &group, &id).is_empty(),
        "the members have the key"
    );

    // `groups list --json`, through the control socket.
    let out = ok(&cli(dir.path(), &["groups", "list", "grp", "--json"]).await);
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{"id": group, "subject": "Team Alpha", "participants": 3}]),
        "{out}"
    );

    // A restart: the bot's sender key and the contacts' come from the vault.
    // A writes while the bot is down: the message comes in the offline
    // backlog at login, and its subject is asked of the server then.
    runner.shutdown().await.unwrap();
    ca.send_group_text(&group, "after restart").await.unwrap();
    let runner = Runner::start(vault.clone(), c.clone()).unwrap();
    wait_connected(&runner, "grp").await;
    let (event, echo) = hook_and_echo(&hook, "after restart", [&ca, &cb]).await;
    assert_eq!(event["group_subject"], "Team Alpha", "{event}");
    assert!(
        skdm_of(&peer, &phone, &group, &echo).is_empty(),
        "after a restart the bot still has its sender key (no new distribution)"
    );

    // An export restored into another vault: the group works on there.
    let scratch = tempfile::tempdir().unwrap();
    let f = scratch.path().join("grp.wvb");
    let mut args = vec!["export", "--bot", "grp", "-o", f.to_str().unwrap()];
    args.extend(CHEAP);
    ok(&cli(dir.path(), &args).await);
    runner.shutdown().await.unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    drop(new_vault(dir_b.path(), &[]));
    ok(&cli(dir_b.path(), &["restore", f.to_str().unwrap()]).await);
    let vault_b = Vault::open(dir_b.path(), PASS).unwrap();
    let runner = Runner::start(vault_b.clone(), c.clone()).unwrap();
    wait_connected(&runner, "grp").await;
    // A's message carries no sender key this time: the restored bot reads
    // it with A's key from the backup, and its reply goes out under its own
    // key from the backup.
    let (_, echo) = write_and_echo(&hook, &ca, &group, "after restore", [&ca, &cb]).await;
    assert!(
        skdm_of(&peer, &phone, &group, &echo).is_empty(),
        "the restored bot has its sender key (no new distribution)"
    );
    // B's first message (with its sender key) to the restored bot.
    let (event, _) = write_and_echo(&hook, &cb, &group, "b writes", [&ca, &cb]).await;
    assert_eq!(event["sender_pn"], format!("{b}@s.whatsapp.net"), "{event}");
    assert_clean_signal(&peer);

    // B is removed: the bot's next message uses a new sender key, which
    // only A gets; B (which kept the old one) cannot decrypt it.
    peer.remove_from_group(&group, b).await.unwrap();
    let out = ok(&cli(dir_b.path(), &["send", "grp", &group, "after removal"]).await);
    let id = received(&ca, "after removal").await;
    assert_eq!(out.trim(), id);
    assert_eq!(
        skdm_of(&peer, &phone, &group, &id),
        [a],
        "a new sender key, for A only"
    );
    let tried = |log: &PeerLog| log.group_eavesdrops.iter().any(|(p, i)| p == b && *i == id);
    let seen = peer
        .wait_for("B's attempt at the message", DEADLINE, |log| {
            tried(log) || !log.group_leaks.is_empty()
        })
        .await
        .unwrap();
    assert!(seen.group_leaks.is_empty(), "{:?}", seen.group_leaks);
    assert!(tried(&seen), "B tried the message with the key it kept");
    assert!(
        !cb.received().iter().any(|m| m.id == id),
        "the removed contact got nothing"
    );
    assert_clean_signal(&peer);
    assert_eq!(peer.group_members(&group), [a, phone.as_str()]);

    // B is added back: the bot's next message brings it the current sender
    // key (to B only) and both decrypt it.
    peer.add_to_group(&group, b).await.unwrap();
    let out = ok(&cli(dir_b.path(), &["send", "grp", &group, "welcome back"]).await);
    let id = received(&ca, "welcome back").await;
    assert_eq!(out.trim(), id);
    assert_eq!(received(&cb, "welcome back").await, id);
    assert_eq!(
        skdm_of(&peer, &phone, &group, &id),
        [b],
        "the key, to B only"
    );
    assert_clean_signal(&peer);
    let seen = peer.seen();
    assert!(seen.group_leaks.is_empty(), "{:?}", seen.group_leaks);
    assert!(
        seen.unsupported.is_empty(),
        "the peer answered every request: {:?}",
        seen.unsupported
    );
    runner.shutdown().await.unwrap();

    // `groups list` with no runner: the bot connects alone to list.
    let rows = wavault::runner::groups_once(vault_b, c, &bot("grp"), LOGIN_DEADLINE)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (
            rows[0].id.as_str(),
            rows[0].subject.as_str(),
            rows[0].participants
        ),
        (group.as_str(), "Team Alpha", 3)
    );
}
