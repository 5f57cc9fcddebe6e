//! The web surface from the command line: binding rules and the token.

use crate::common::*;

fn init(dir: &std::path::Path) {
    let out = run(wavault(dir).args(cheap_init_args()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn non_loopback_listen_needs_listen_any() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path());
    for addr in ["0.0.0.0:0", "192.0.2.1:8080", "[::]:0"] {
        let out = run(wavault(tmp.path()).args(["run", "--listen", addr]));
        assert_eq!(code(&out), 2, "{addr}: {}", stderr(&out));
        assert!(stderr(&out).contains("--listen-any"), "{}", stderr(&out));
        assert!(stderr(&out).contains("not a loopback address"));
    }
    // --listen-any alone is a usage error too.
    let out = run(wavault(tmp.path()).args(["run", "--listen-any"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn token_show_is_stable_and_rotate_replaces_it() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path());
    let show = || {
        let out = run(wavault(tmp.path()).args(["token", "show"]));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        stdout(&out).trim().to_owned()
    };
    let first = show();
    assert_eq!(first.len(), 64, "{first}");
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(show(), first, "created once, then shown");
    let out = run(wavault(tmp.path()).args(["token", "rotate"]));
    assert_eq!(code(&out), 0);
    let rotated = stdout(&out).trim().to_owned();
    assert_ne!(rotated, first);
    assert_eq!(show(), rotated);
    // Sealed: the token is not in the file in clear.
    let file = std::fs::read(tmp.path().join("web.token")).unwrap();
    assert!(!file.windows(16).any(|w| rotated.as_bytes().starts_with(w)));
    // Tampered: a clear error naming the way out.
    let mut bad = file.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(tmp.path().join("web.token"), bad).unwrap();
    let out = run(wavault(tmp.path()).args(["token", "show"]));
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("token rotate"), "{}", stderr(&out));
}
