//! Command-line input that panicked or silently changed meaning: each is
//! refused with exit 2, naming the flag and the accepted forms, before any
//! vault is opened or any runtime started.

use crate::common::*;
use std::process::{Command, Output};
use std::time::Duration;

/// Runs `c` to its end, or kills it after `limit` (a `run` that accepted a
/// bad argument would otherwise run until stopped).
fn run_bounded(c: &mut Command, limit: Duration) -> Output {
    let (out, in_time) = run_with_deadline(c, limit);
    assert!(
        in_time,
        "still running after {limit:?} (the bad argument was accepted); stdout: {}; stderr: {}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// `args` on a vault with one disabled bot: exit 2, and stderr names every word of `words`.
fn refused(args: &[&str], words: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    crate::cli::init(tmp.path());
    let out = run(wavault(tmp.path()).args(["bot", "add", "idle", "--disabled"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run_bounded(wavault(tmp.path()).args(args), Duration::from_secs(20));
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: exit 2 expected: {err}"
    );
    for w in words {
        assert!(err.contains(w), "{args:?}: {w:?} missing from: {err}");
    }
    err
}

/// A bare number was taken as seconds: `sweep --older-than 30` deleted all
/// history older than 30 s when the operator meant 30 days.
#[test]
fn sweep_older_than_without_a_unit_is_refused() {
    refused(
        &["sweep", "--older-than", "30"],
        &["--older-than", "no unit", "30d", "500ms"],
    );
}

/// `213503982335d` overflowed (debug: a panic; release: a 9.6 h retention).
#[test]
fn sweep_older_than_overflow_is_refused() {
    refused(
        &["sweep", "--older-than", "213503982335d"],
        &["--older-than", "too long", "100 years"],
    );
    refused(
        &["sweep", "--older-than", "99999999999999999999999ms"],
        &["--older-than", "too long"],
    );
}

/// A zero period panicked inside the timer task (tokio `interval(0)`) and
/// silently stopped sweeps, key rotation and idle alerts.
#[test]
fn run_zero_periods_are_refused() {
    refused(
        &["run", "--sweep-every", "0s"],
        &["--sweep-every", "more than 0"],
    );
    refused(
        &["run", "--rotate-key-every", "0ms"],
        &["--rotate-key-every", "more than 0"],
    );
    refused(
        &["run", "--hook-timeout", "0s"],
        &["--hook-timeout", "more than 0"],
    );
    refused(
        &["run", "--retention", "0d"],
        &["--retention", "at least 1s"],
    );
    refused(
        &["run", "--queue-max-age", "0s"],
        &["--queue-max-age", "at least 1s"],
    );
    // Bare zeros: refused for the missing unit.
    refused(
        &["run", "--sweep-every", "0"],
        &["--sweep-every", "no unit"],
    );
}

/// Limits out of range name the valid range.
#[test]
fn zero_limits_are_refused_with_the_range() {
    refused(
        &["run", "--hook-concurrency", "0"],
        &["--hook-concurrency", "1..=1024"],
    );
    refused(&["run", "--queue-max", "0"], &["--queue-max", "1.."]);
    refused(
        &["bot", "add", "x", "--queue-max", "0"],
        &["--queue-max", "1.."],
    );
    refused(
        &["bot", "set", "idle", "--hook-timeout", "0s"],
        &["--hook-timeout", "more than 0"],
    );
}

/// `stats --since` with a huge value overflowed in the parser (a panic in a
/// debug build); zero is an empty window, refused as meaningless.
#[test]
fn stats_since_huge_or_zero_is_refused() {
    refused(
        &["stats", "--since", "213503982335d"],
        &["--since", "too long", "100 years"],
    );
    refused(&["stats", "--since", "0s"], &["--since", "at least 1s"]);
}

/// The library's window: a start after `now` (clock skew, or a request
/// built by hand for the control socket) is an empty window, not a panic.
#[test]
fn stats_window_starting_after_now_is_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(tmp.path());
    add_bot(&v, "skewed");
    let now = wavault::vault::now();
    for since in [now + 7200, i64::MAX] {
        let rows = wavault::stats::collect(&v, &[], since, now).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].window_start, now, "since {since}");
        assert_eq!(rows[0].window_end, now);
        assert_eq!((rows[0].messages_in, rows[0].messages_out), (0, 0));
    }
    // A start before the epoch near i64::MIN must not overflow either.
    let rows = wavault::stats::collect(&v, &[], i64::MIN, now).unwrap();
    assert_eq!(rows[0].window_end, now);
}

/// A library caller gets the same refusal: `Runner::start` checks the
/// configuration instead of letting a timer task panic.
#[test]
fn runner_refuses_zero_periods_from_the_library() {
    use wavault::runner::{net::Net, RunConfig, Runner};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(tmp.path());
    type Bad = fn(&mut RunConfig);
    let cases: [(&str, Bad); 4] = [
        ("--sweep-every", |c| c.sweep_every = Duration::ZERO),
        ("--rotate-key-every", |c| {
            c.rotate_key_every = Some(Duration::ZERO)
        }),
        ("idle check", |c| c.idle_check_every = Duration::ZERO),
        ("--sweep-every", |c| c.sweep_every = Duration::MAX),
    ];
    for (what, bad) in cases {
        let mut cfg = RunConfig::new(Net::production());
        cfg.console = false;
        cfg.control_socket = false;
        bad(&mut cfg);
        let r = rt.block_on(async { Runner::start(v.clone(), cfg).map(|_| ()) });
        let e = r.expect_err(what);
        assert_eq!(e.exit_code(), 2, "{what}: {e}");
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
}

/// Random strings into every command-line parser: none panics; what is
/// accepted is sound.
mod parsers {
    use proptest::prelude::*;
    use std::time::{Duration, Instant, SystemTime};
    use wavault::cli::{parse_age, parse_duration, parse_period, Cli, Command, MAX_DURATION};

    /// Arbitrary text, and text shaped like the inputs (digits, units,
    /// signs, spaces, huge numbers) so accepted values come up often.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,24}",
            ".{0,24}",
            "[ +-]?[0-9]{0,24}[ .]?(ms|s|m|h|d|w|S|µs)?[ ]?",
            "[0-9a-z@:.+\\[\\] -]{0,40}",
        ]
    }

    /// The canonical form of an accepted duration, for the round trip.
    fn show(d: Duration) -> String {
        format!("{}ms", d.as_millis())
    }

    /// Parses `wavault` + `args`; clap errors are fine, panics are not.
    fn cli(args: &[&str]) -> Option<Command> {
        let argv = std::iter::once("wavault").chain(args.iter().copied());
        Cli::try_parse_from(argv).ok().map(|c| c.command)
    }

    /// `run` with these flags: a usage error, or a configuration the runner accepts.
    fn run_plan(args: &[&str]) {
        let mut argv = vec!["run"];
        argv.extend_from_slice(args);
        if let Some(Command::Run(a)) = cli(&argv) {
            match (*a).plan() {
                Ok(cfg) => cfg.runner.check().expect("a plan the runner refuses"),
                Err(e) => assert_eq!(e.exit_code(), 2, "{argv:?}: {e}"),
            }
        }
    }

    use clap::Parser as _;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn durations_never_panic_and_accepted_ones_round_trip(s in text()) {
            if let Ok(d) = parse_duration(&s) {
                prop_assert!(d <= MAX_DURATION);
                prop_assert!(Instant::now().checked_add(d).is_some());
                prop_assert!(SystemTime::now().checked_add(d).is_some());
                prop_assert_eq!(parse_duration(&show(d)), Ok(d));
                prop_assert!(s.trim().ends_with(|c: char| c.is_ascii_alphabetic()), "{:?} has a unit", s);
            }
            if let Ok(d) = parse_period(&s) {
                prop_assert!(!d.is_zero());
            }
            if let Ok(d) = parse_age(&s) {
                prop_assert!(d >= Duration::from_secs(1));
            }
        }

        #[test]
        fn numbers_with_units_are_accepted_exactly_up_to_the_bound(
            n in prop_oneof![0u64..100_000, any::<u64>()],
            unit in prop::sample::select(vec![("ms", 1u128), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]),
        ) {
            let ms = u128::from(n) * unit.1;
            let got = parse_duration(&format!("{n}{}", unit.0));
            if ms <= MAX_DURATION.as_millis() {
                prop_assert_eq!(got, Ok(Duration::from_millis(ms as u64)));
            } else {
                let e = got.unwrap_err();
                prop_assert!(e.contains("100 years"), "{}", e);
            }
            prop_assert!(parse_duration(&n.to_string()).unwrap_err().contains("no unit"));
        }

        #[test]
        fn bot_ids_recipients_never_panic(s in text()) {
            if let Ok(id) = wavault::BotId::parse(&s) {
                prop_assert_eq!(wavault::BotId::parse(id.as_str()).ok(), Some(id));
            }
            let _ = wavault::messaging::parse_recipient(&s);
            let _ = cli(&["bot", "add", s.as_str()]);
            let _ = cli(&["send", "bot", s.as_str(), "text"]);
        }

        #[test]
        fn kdf_flags_never_panic(m in text(), t in text(), p in text()) {
            let args = ["init", "--kdf-memory-mib", m.as_str(), "--kdf-iterations", t.as_str(), "--kdf-parallelism", p.as_str()];
            if let Some(Command::Init(a)) = cli(&args) {
                match a.kdf.params() {
                    Ok(Some(k)) => prop_assert!(!k.exceeds_cap() && k.memory_kib > 0 && k.iterations > 0 && k.parallelism > 0),
                    Ok(None) => prop_assert!(false, "flags given: some parameters"),
                    Err(e) => prop_assert_eq!(e.exit_code(), 2),
                }
            }
        }

        #[test]
        fn run_flags_never_panic(s in text(), any_addr in any::<bool>()) {
            for flag in [
                "--stagger", "--sweep-every", "--retention", "--rotate-key-every",
                "--hook-timeout", "--queue-max-age", "--hook-concurrency", "--queue-max",
            ] {
                run_plan(&[flag, s.as_str()]);
            }
            let mut listen = vec!["--listen", s.as_str()];
            if any_addr {
                listen.push("--listen-any");
            }
            run_plan(&listen);
            for flag in ["--nats-owner-ttl", "--nats-prefix", "--host-id", "--nats-replicas", "--nats-max-age", "--sink"] {
                run_plan(&["--nats", "nats://127.0.0.1:4222", flag, s.as_str()]);
            }
            for cmd in [&["sweep", "--older-than"][..], &["stats", "--since"], &["send", "b", "4915112345678", "t", "--connect-timeout"]] {
                let mut argv = cmd.to_vec();
                argv.push(s.as_str());
                let _ = cli(&argv);
            }
        }
    }

    /// The fleet's flags: absurd values and fleet options without `--nats`
    /// are usage errors, found before the vault is opened.
    #[test]
    fn fleet_flags() {
        let plan = |args: &[&str]| {
            let mut argv = vec!["run"];
            argv.extend_from_slice(args);
            let Some(Command::Run(a)) = cli(&argv) else {
                return Err(2);
            };
            (*a).plan().map_err(|e| e.exit_code())
        };
        let n = ["--nats", "nats://127.0.0.1:4222"];
        let ok = plan(&[&n[..], &["--host-id", "h1", "--nats-owner-ttl", "9s"]].concat()).unwrap();
        let f = ok.runner.fleet.expect("a fleet");
        assert_eq!(
            (f.host_id.as_str(), f.owner_ttl),
            ("h1", Duration::from_secs(9))
        );
        assert_eq!(plan(&[]).unwrap().runner.fleet, None);
        for bad in [
            &["--nats-owner-ttl", "1s"][..],
            &["--nats-owner-ttl", "2d"],
            &["--nats-prefix", "a.b"],
            &["--nats-replicas", "0"],
            &["--nats-replicas", "6"],
            &["--nats-max-age", "1s"],
            &["--host-id", "a b"],
            &["--nats-creds", "/nonexistent/creds"],
        ] {
            assert_eq!(plan(&[&n[..], bad].concat()).err(), Some(2), "{bad:?}");
        }
        assert_eq!(
            plan(&["--host-id", "h1"]).err(),
            Some(2),
            "fleet options without --nats"
        );
        assert_eq!(plan(&["--sink", "kafka"]).err(), Some(2));
        assert!(plan(&["--sink", "nats,webhook"]).is_ok());
    }

    /// The listen address: loopback accepted, others only with --listen-any.
    #[test]
    fn listen_addresses() {
        run_plan(&["--listen", "127.0.0.1:0"]);
        let Some(Command::Run(a)) = cli(&["run", "--listen", "0.0.0.0:8080"]) else {
            panic!("parses")
        };
        assert_eq!((*a).plan().unwrap_err().exit_code(), 2);
    }
}
