//! TEST ONLY: a real `nats-server -js` on a random loopback port, for the
//! fleet's unit tests (the Debian package `nats-server`; `.ci/run`
//! installs it). Killed when dropped.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct NatsServer {
    child: Option<Child>,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one and waits (up to 30 s) for its "Listening" line.
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server on PATH (apt install nats-server)");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                    if !sent {
                        let _ = tx.send(addr.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("nats-server listens within 30 s");
        NatsServer {
            child: Some(child),
            url: format!("nats://{addr}"),
            _dir: dir,
        }
    }

    /// Kills it and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
