//! A power-cut simulator: a FUSE filesystem (`fuser`) that keeps, next to
//! what programs see, what a power cut would leave.
//!
//! The files live in memory (in this test process; a vault of a few MB).
//! Per file it keeps the bytes as of the last `fsync`/`fdatasync` of that
//! file, and the writes since; per folder the entries as of its last
//! `fsync`. A creation, a rename or an unlink is durable only once its
//! folder was synced (the strict POSIX reading, stricter than ext4). What
//! does not make data durable here, as on a drive with a volatile cache:
//! `sync_file_range`, `close`, and the passage of time.
//!
//! [`PowerFs::cut`]: the power goes out. From that instant every request
//! fails with EIO (a process still running sees its I/O fail and cannot
//! sync anything more). The caller kills the processes that used the
//! mount, then [`PowerFs::power_on`] unmounts, rebuilds the tree from the
//! durable state and mounts it again (a fresh kernel cache, as after a
//! reboot). With `tear`, each file also keeps a random prefix of its unsynced
//! writes in order, the last of them cut at a random byte (a torn write):
//! what a drive that wrote some of its cache before dying leaves.

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// A write not yet made durable: bytes at an offset, or a new length.
#[derive(Clone, Debug)]
enum Pending {
    Write(u64, Vec<u8>),
    Truncate(u64),
}

#[derive(Clone, Debug)]
enum Kind {
    File {
        data: Vec<u8>,
        /// The bytes as of the last fsync.
        durable: Vec<u8>,
        /// What happened to `data` since, in order.
        pending: Vec<Pending>,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        /// The entries as of the last fsync of the folder.
        durable: BTreeMap<OsString, u64>,
    },
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
}

impl Node {
    /// A new file or folder of the caller's, with `mode`'s permission bits.
    fn new(kind: Kind, req: &Request, mode: u32) -> Node {
        Node {
            kind,
            perm: (mode & 0o7777) as u16,
            uid: req.uid(),
            gid: req.gid(),
            mtime: SystemTime::now(),
        }
    }
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Power is out: every request fails.
    dead: bool,
    /// Requests that change something (writes, syncs, creations, renames...).
    ops: u64,
    /// The power goes out when `ops` passes this.
    cut_at: Option<u64>,
}

const ROOT: u64 = 1;
/// No kernel caching of names or attributes: every lookup asks us.
const TTL: Duration = Duration::ZERO;

fn apply(data: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write(off, bytes) => {
            let off = *off as usize;
            if data.len() < off + bytes.len() {
                data.resize(off + bytes.len(), 0);
            }
            data[off..off + bytes.len()].copy_from_slice(bytes);
        }
        Pending::Truncate(len) => data.resize(*len as usize, 0),
    }
}

impl State {
    fn new() -> State {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let root = Node {
            kind: Kind::Dir {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
            perm: 0o755,
            uid,
            gid,
            mtime: SystemTime::now(),
        };
        State {
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            dead: false,
            ops: 0,
            cut_at: None,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        let (kind, size, nlink) = match &n.kind {
            Kind::File { data, .. } => (FileType::RegularFile, data.len() as u64, 1),
            Kind::Dir { .. } => (FileType::Directory, 0, 2),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind,
            perm: n.perm,
            nlink,
            uid: n.uid,
            gid: n.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn entries(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::Dir { entries, .. }) => Ok(entries),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(parent)?
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    fn file(&mut self, ino: u64) -> Result<(&mut Vec<u8>, &mut Vec<Pending>), Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::File { data, pending, .. }) => Ok((data, pending)),
            Some(_) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn make(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.entries(parent)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// Rebuilds the tree from what was durable (see the module docs).
    fn after_cut(&mut self, mut rng: Option<&mut Rng>) {
        let mut keep = HashMap::new();
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if keep.contains_key(&ino) {
                continue;
            }
            let Some(mut n) = self.nodes.get(&ino).cloned() else {
                continue;
            };
            match &mut n.kind {
                Kind::Dir { entries, durable } => {
                    *entries = durable.clone();
                    todo.extend(durable.values().copied());
                }
                Kind::File {
                    data,
                    durable,
                    pending,
                } => {
                    let mut now = durable.clone();
                    if let Some(rng) = rng.as_deref_mut() {
                        let upto = rng.below(pending.len() as u64 + 1) as usize;
                        for (i, p) in pending.iter().take(upto).enumerate() {
                            match p {
                                Pending::Write(off, bytes) if i + 1 == upto => {
                                    let torn = rng.below(bytes.len() as u64 + 1) as usize;
                                    apply(&mut now, &Pending::Write(*off, bytes[..torn].to_vec()));
                                }
                                p => apply(&mut now, p),
                            }
                        }
                        *durable = now.clone();
                    }
                    *data = now;
                    pending.clear();
                }
            }
            keep.insert(ino, n);
        }
        self.nodes = keep;
    }
}

/// A small deterministic generator (SplitMix64), seeded by the test.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// The seed of a campaign: `WAVAULT_POWERCUT_SEED` if set, else the clock.
/// Printed, so a failing run can be replayed.
pub fn seed(campaign: &str) -> u64 {
    let seed = std::env::var("WAVAULT_POWERCUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!(
        "power-cut campaign {campaign}: seed {seed} (replay with WAVAULT_POWERCUT_SEED={seed})"
    );
    seed
}

/// How many cuts a campaign runs: `WAVAULT_POWERCUTS` if set (the long
/// run), else `default` (the size that fits CI).
pub fn cuts(default: usize) -> usize {
    std::env::var("WAVAULT_POWERCUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone)]
struct Fs(Arc<Mutex<State>>);

impl Fs {
    fn live(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.dead {
            Err(Errno::EIO)
        } else {
            Ok(s)
        }
    }
}

impl Fs {
    /// A request that changes something: counted, and the one that passes
    /// the armed count finds the power out (it fails, as all after it).
    fn change(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let mut s = self.live()?;
        s.ops += 1;
        if s.cut_at.is_some_and(|at| s.ops > at) {
            s.dead = true;
            return Err(Errno::EIO);
        }
        Ok(s)
    }
}

macro_rules! live {
    ($self:ident, $reply:ident) => {
        match $self.live() {
            Ok(s) => s,
            Err(e) => return $reply.error(e),
        }
    };
}

macro_rules! change {
    ($self:ident, $reply:ident) => {
        match $self.change() {
            Ok(s) => s,
            Err(e) => return $reply.error(e),
        }
    };
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = live!(self, reply);
        match s.child(parent.0, name) {
            Ok(ino) => reply.entry(&TTL, &s.attr(ino).expect("listed"), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = live!(self, reply);
        match s.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = change!(self, reply);
        if let Some(len) = size {
            match s.file(ino.0) {
                Ok((data, pending)) => {
                    let p = Pending::Truncate(len);
                    apply(data, &p);
                    pending.push(p);
                }
                Err(e) => return reply.error(e),
            }
        }
        let Some(n) = s.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(m) = mode {
            n.perm = (m & 0o7777) as u16;
        }
        if let Some(u) = uid {
            n.uid = u;
        }
        if let Some(g) = gid {
            n.gid = g;
        }
        n.mtime = SystemTime::now();
        reply.attr(&TTL, &s.attr(ino.0).expect("exists"));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = change!(self, reply);
        let kind = Kind::Dir {
            entries: BTreeMap::new(),
            durable: BTreeMap::new(),
        };
        let node = Node::new(kind, req, mode & !umask);
        match s.make(parent.0, name, node) {
            Ok(ino) => reply.entry(&TTL, &s.attr(ino).expect("made"), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = change!(self, reply);
        let kind = Kind::File {
            data: Vec::new(),
            durable: Vec::new(),
            pending: Vec::new(),
        };
        let node = Node::new(kind, req, mode & !umask);
        match s.make(parent.0, name, node) {
            Ok(ino) => reply.created(
                &TTL,
                &s.attr(ino).expect("made"),
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = change!(self, reply);
        let ino = match s.child(parent.0, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if matches!(s.nodes[&ino].kind, Kind::Dir { .. }) {
            return reply.error(Errno::EISDIR);
        }
        s.entries(parent.0).expect("a folder").remove(name);
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = change!(self, reply);
        let ino = match s.child(parent.0, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match s.entries(ino) {
            Ok(e) if !e.is_empty() => return reply.error(Errno::ENOTEMPTY),
            Ok(_) => {}
            Err(e) => return reply.error(e),
        }
        s.entries(parent.0).expect("a folder").remove(name);
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = change!(self, reply);
        let ino = match s.child(parent.0, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if let Err(e) = s.entries(newparent.0) {
            return reply.error(e);
        }
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        if let Ok(old) = s.child(newparent.0, newname) {
            if let Ok(e) = s.entries(old) {
                if !e.is_empty() {
                    return reply.error(Errno::ENOTEMPTY);
                }
            }
        }
        s.entries(parent.0).expect("a folder").remove(name);
        s.entries(newparent.0)
            .expect("a folder")
            .insert(newname.to_owned(), ino);
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = live!(self, reply);
        if s.nodes.contains_key(&ino.0) {
            reply.opened(FileHandle(0), FopenFlags::empty());
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut s = live!(self, reply);
        match s.file(ino.0) {
            Ok((data, _)) => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        bytes: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = change!(self, reply);
        match s.file(ino.0) {
            Ok((data, pending)) => {
                let p = Pending::Write(offset, bytes.to_vec());
                apply(data, &p);
                pending.push(p);
                reply.written(bytes.len() as u32);
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _s = live!(self, reply);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = change!(self, reply);
        match s.nodes.get_mut(&ino.0).map(|n| &mut n.kind) {
            Some(Kind::File {
                data,
                durable,
                pending,
            }) => {
                *durable = data.clone();
                pending.clear();
                reply.ok();
            }
            Some(Kind::Dir { entries, durable }) => {
                *durable = entries.clone();
                reply.ok();
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fsync(req, ino, fh, datasync, reply)
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = live!(self, reply);
        let entries: Vec<(OsString, u64)> = match s.entries(ino.0) {
            Ok(e) => e.iter().map(|(n, i)| (n.clone(), *i)).collect(),
            Err(e) => return reply.error(e),
        };
        let mut all = vec![
            (OsString::from("."), ino.0, FileType::Directory),
            (OsString::from(".."), ino.0, FileType::Directory),
        ];
        for (name, i) in entries {
            let kind = match s.nodes.get(&i).map(|n| &n.kind) {
                Some(Kind::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((name, i, kind));
        }
        for (n, (name, i, kind)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), n as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }
}

/// A tree saved by [`PowerFs::save`].
pub struct Saved(HashMap<u64, Node>, u64);

/// A mounted simulator (see the module docs).
pub struct PowerFs {
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
    /// Holds the mount point's parent folder.
    _dir: tempfile::TempDir,
}

impl PowerFs {
    /// Mounts an empty simulator on a fresh folder.
    pub fn mount() -> PowerFs {
        let dir = tempfile::tempdir().expect("temp folder");
        let mountpoint = dir.path().join("disk");
        std::fs::create_dir(&mountpoint).expect("mount point");
        let mut fs = PowerFs {
            state: Arc::new(Mutex::new(State::new())),
            mountpoint,
            session: None,
            _dir: dir,
        };
        fs.attach();
        fs
    }

    fn attach(&mut self) {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("wavault-powercut".into()),
            fuser::MountOption::RW,
        ];
        let session = fuser::spawn_mount(Fs(self.state.clone()), &self.mountpoint, &config)
            .unwrap_or_else(|e| {
                panic!(
                    "mounting the power-cut simulator at {} failed ({e}): it needs /dev/fuse \
                     and fusermount3 (apt install fuse3)",
                    self.mountpoint.display()
                )
            });
        self.session = Some(session);
    }

    /// Unmounts. A child that another test thread of this process is
    /// spawning holds copies of this process's open files between its fork
    /// and its exec; the mount is busy until then: retried to a deadline.
    fn unmount(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let done = std::process::Command::new("fusermount3")
                .args(["-u", "-q", "--"])
                .arg(&self.mountpoint)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if done {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the simulator at {} stays busy (a file on it still open in this process?)",
                self.mountpoint.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // fuser's own unmount then finds nothing to unmount (an error we
        // ignore); its thread ends with the connection.
        let _ = session.umount_and_join();
    }

    /// The mounted folder.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The power goes out: from now on every request fails with EIO.
    pub fn cut(&self) {
        self.lock().dead = true;
    }

    /// After [`PowerFs::cut`] (and once the processes that used the mount
    /// are gone): unmounts, keeps only what was durable (plus, with `tear`,
    /// a random torn prefix of the unsynced writes), and mounts it again.
    pub fn power_on(&mut self, tear: Option<&mut Rng>) {
        assert!(self.lock().dead, "power_on without a cut");
        self.unmount();
        let mut s = self.lock();
        s.after_cut(tear);
        s.dead = false;
        s.cut_at = None;
        drop(s);
        self.attach();
    }

    /// A cut and power-on in one go, for states with no process running.
    pub fn cycle(&mut self, tear: Option<&mut Rng>) {
        self.cut();
        self.power_on(tear);
    }

    /// The whole tree as it is now (call it with nothing running and
    /// nothing unsynced, e.g. right after [`PowerFs::cycle`]).
    pub fn save(&self) -> Saved {
        let s = self.lock();
        Saved(s.nodes.clone(), s.next_ino)
    }

    /// Puts a saved tree back (unmounted meanwhile: a fresh kernel cache),
    /// cheaper than building the same state again.
    pub fn load(&mut self, saved: &Saved) {
        self.unmount();
        let mut s = self.lock();
        s.nodes = saved.0.clone();
        s.next_ino = saved.1;
        s.dead = false;
        s.cut_at = None;
        drop(s);
        self.attach();
    }

    /// Arms the cut: the power goes out at the `n`th request from now that
    /// changes something (that request fails, as every one after it).
    pub fn arm(&self, n: u64) {
        let mut s = self.lock();
        s.cut_at = Some(s.ops + n);
    }

    /// Whether the power is out (an armed cut fired, or [`PowerFs::cut`]).
    pub fn is_cut(&self) -> bool {
        self.lock().dead
    }

    /// Requests that changed something so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

/// Tests of the simulator itself: a correct writer passes, one that
/// acknowledges before syncing fails.
pub mod selftest {
    use super::*;
    use std::io::Write;

    /// Writes `n` records to `file` (appending), syncing after each
    /// (`sync`) or not, and returns the records "acknowledged".
    fn writer(dir: &Path, n: usize, sync: bool) -> Vec<String> {
        let path = dir.join("log");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open log");
        if sync {
            f.sync_all().expect("sync new file");
            let d = std::fs::File::open(dir).expect("open folder");
            d.sync_all().expect("sync folder");
        }
        let mut acked = Vec::new();
        for i in 0..n {
            let line = format!("record {i}\n");
            f.write_all(line.as_bytes()).expect("write");
            if sync {
                f.sync_data().expect("fdatasync");
            }
            acked.push(line);
        }
        acked
    }

    /// What survived: missing acknowledged records.
    fn missing(dir: &Path, acked: &[String]) -> usize {
        let text = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        acked.iter().filter(|l| !text.contains(l.as_str())).count()
    }

    /// Runs the writer (syncing or not), cuts the power with tearing,
    /// and returns how many acknowledged records are gone.
    pub fn lost_after_cut(sync: bool, seed: u64) -> usize {
        let mut fs = PowerFs::mount();
        let acked = writer(fs.path(), 50, sync);
        assert_eq!(missing(fs.path(), &acked), 0, "all there before the cut");
        let mut rng = Rng::new(seed);
        fs.cycle(Some(&mut rng));
        missing(fs.path(), &acked)
    }

    /// A rename is durable only with its folder's sync; the old file stays
    /// until then.
    pub fn rename_needs_folder_sync() -> (String, String) {
        let mut fs = PowerFs::mount();
        let dir = fs.path().to_path_buf();
        let replace = |with_folder_sync: bool| {
            let tmp = dir.join("f.tmp");
            let mut f = std::fs::File::create(&tmp).unwrap();
            f.write_all(b"new").unwrap();
            f.sync_all().unwrap();
            std::fs::rename(&tmp, dir.join("f")).unwrap();
            if with_folder_sync {
                std::fs::File::open(&dir).unwrap().sync_all().unwrap();
            }
        };
        {
            let mut f = std::fs::File::create(dir.join("f")).unwrap();
            f.write_all(b"old").unwrap();
            f.sync_all().unwrap();
            std::fs::File::open(&dir).unwrap().sync_all().unwrap();
        }
        replace(false);
        fs.cycle(None);
        let without = std::fs::read_to_string(dir.join("f")).unwrap();
        replace(true);
        fs.cycle(None);
        let with = std::fs::read_to_string(dir.join("f")).unwrap();
        (without, with)
    }
}
