//! No bot id, JID, phone number or passphrase is findable in the vault files.

use crate::common::*;
use wavault::vault::Kind;

#[test]
fn identifiers_and_passphrase_never_appear_in_files() {
    let dir = tempfile::tempdir().unwrap();
    let secrets: Vec<&str> = vec![
        "ventas-mx",
        "soporte-cliente",
        "5215512345678",
        "5215512345678@s.whatsapp.net",
        "100000012345678@lid",
        "3EB0C767D26A1D2E8D14",
    ];
    {
        let v = new_vault(dir.path());
        for id in ["ventas-mx", "soporte-cliente"] {
            let view = v.view(&add_bot(&v, id));
            for s in &secrets[2..] {
                view.put(Kind::TEST, s.as_bytes(), s.as_bytes()).unwrap();
            }
        }
        v.rotate_key(&mut |_, _| {}).unwrap();
        v.flush().unwrap();
    }
    let mut needles: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
    needles.push(PASS.to_vec());
    for f in files(dir.path()) {
        let hay = std::fs::read(&f).unwrap();
        for n in &needles {
            assert!(
                !hay.windows(n.len()).any(|w| w == n.as_slice()),
                "{} found in {}",
                String::from_utf8_lossy(n),
                f.display()
            );
        }
    }
}

#[cfg(unix)]
#[test]
fn folders_are_0700_and_files_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("v");
    drop(new_vault(&root));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    for f in files(&root) {
        assert_eq!(mode(&f) & 0o077, 0, "{} is {:o}", f.display(), mode(&f));
    }
}
