//! A synthetic Synapse tree for tests, the quickstart and the benchmark: signing key,
//! homeserver.yaml, a real SQLite `homeserver.db` in WAL mode, local media and
//! thumbnails, and remote media / url cache that must not be backed up.
//!
//! Include with `#[path = "../tests/support/synapse_tree.rs"] mod synapse_tree;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How big a tree to make.
#[derive(Debug, Clone)]
pub struct TreeSpec {
    /// Number of local media files.
    pub media_files: usize,
    /// Total bytes of local media (spread over the files with realistic variation).
    pub media_bytes: u64,
    /// Rows in the SQLite database (each ~1 KiB of text).
    pub db_rows: usize,
    /// Seed of the deterministic content.
    pub seed: u64,
}

impl Default for TreeSpec {
    fn default() -> Self {
        TreeSpec {
            media_files: 40,
            media_bytes: 4 << 20,
            db_rows: 200,
            seed: 42,
        }
    }
}

/// A deterministic xorshift generator (no dependency, same bytes on every machine).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The paths of a made tree.
#[derive(Debug, Clone)]
pub struct SynapseTree {
    /// The layout root (`/data` is `<root>/data`).
    pub root: PathBuf,
    /// `<root>/data`.
    pub data: PathBuf,
    /// `<root>/data/media_store`.
    pub media: PathBuf,
}

impl SynapseTree {
    /// Builds a tree under `root` (created if needed).
    pub fn create(root: &Path, spec: &TreeSpec) -> SynapseTree {
        let data = root.join("data");
        let media = data.join("media_store");
        fs::create_dir_all(&media).unwrap();
        fs::write(
            data.join("homeserver.yaml"),
            "server_name: example.test\nreport_stats: false\nmedia_store_path: /data/media_store\n\
             signing_key_path: /data/example.test.signing.key\n\
             database:\n  name: sqlite3\n  args:\n    database: /data/homeserver.db\n",
        )
        .unwrap();
        fs::write(
            data.join("example.test.signing.key"),
            "ed25519 a_abcd c2lnbmluZy1rZXktc2VjcmV0LWJ5dGVz\n",
        )
        .unwrap();
        fs::write(data.join("example.test.log.config"), "version: 1\n").unwrap();
        make_sqlite(&data.join("homeserver.db"), spec.db_rows, spec.seed);
        let mut rng = Rng::new(spec.seed);
        let avg = (spec.media_bytes / spec.media_files.max(1) as u64).max(1);
        let mut written = 0u64;
        for i in 0..spec.media_files {
            let remaining = spec.media_bytes.saturating_sub(written);
            let left = (spec.media_files - i) as u64;
            let size = if left == 1 {
                remaining
            } else {
                (avg / 2 + rng.next_u64() % avg.max(1)).min(remaining)
            };
            let id = format!("{:016x}", rng.next_u64());
            let dir = media.join("local_content").join(&id[..2]).join(&id[2..4]);
            fs::create_dir_all(&dir).unwrap();
            write_random(&dir.join(&id[4..]), size, &mut rng);
            written += size;
            if i % 4 == 0 {
                let tdir = media
                    .join("local_thumbnails")
                    .join(&id[..2])
                    .join(&id[2..4])
                    .join(&id[4..]);
                fs::create_dir_all(&tdir).unwrap();
                write_random(
                    &tdir.join("32-32-image-png-crop"),
                    (size / 50).clamp(64, 16 << 10),
                    &mut rng,
                );
            }
        }
        for dir in [
            "remote_content/other.server/aa/bb",
            "remote_thumbnail/other.server/aa/bb",
            "url_cache/2026-11-26",
            "url_cache_thumbnails/2026-11-26",
        ] {
            fs::create_dir_all(media.join(dir)).unwrap();
            fs::write(media.join(dir).join("cached"), b"not ours").unwrap();
        }
        SynapseTree {
            root: root.to_path_buf(),
            data,
            media,
        }
    }

    /// Every regular file under `data` that a backup carries, with its bytes, keyed
    /// by the path relative to the root (`data/...`). The database is compared by
    /// content (see [`dump_db`]) rather than bytes.
    pub fn backed_up_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        for entry in walk(&self.data) {
            let rel = entry.strip_prefix(&self.root).unwrap().to_path_buf();
            let s = rel.to_string_lossy();
            let name = entry.file_name().unwrap().to_string_lossy();
            let carried = (s.starts_with("data/media_store/local_"))
                || (entry.parent() == Some(self.data.as_path()) && name.ends_with(".key"));
            if carried {
                out.insert(rel, fs::read(&entry).unwrap());
            }
        }
        out
    }
}

/// Writes `size` deterministic random bytes.
pub fn write_random(path: &Path, size: u64, rng: &mut Rng) {
    let mut f = fs::File::create(path).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// All regular files under `dir`, sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir` (work dirs, `.synapse-backup-*`, left out) by its path
/// relative to `dir`, with its bytes.
pub fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walk(dir)
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains("/.synapse-backup-"))
        .map(|p| {
            (
                p.strip_prefix(dir).unwrap().to_path_buf(),
                fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn python(script: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect(
            "python3 is needed to build the sample SQLite database: apt-get install -y python3",
        );
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Makes a SQLite database in WAL mode with `rows` rows, leaving a live `-wal`.
pub fn make_sqlite(path: &Path, rows: usize, seed: u64) {
    python(
        "import sqlite3, sys, random\n\
         path, rows, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n\
         random.seed(seed)\n\
         c = sqlite3.connect(path)\n\
         c.execute('PRAGMA journal_mode=WAL')\n\
         c.execute('CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, room TEXT, body TEXT)')\n\
         c.executemany('INSERT INTO events (room, body) VALUES (?, ?)', [('!room%d:example.test' % (i % 17), ''.join(random.choice('abcdefghij klmnop') for _ in range(1000))) for i in range(rows)])\n\
         c.commit()\n\
         c.close()\n",
        &[
            &path.to_string_lossy(),
            &rows.to_string(),
            &seed.to_string(),
        ],
    );
}

/// Appends rows to the database (a live change to be undone by a restore).
pub fn change_db(path: &Path) {
    python(
        "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute(\"INSERT INTO events (room, body) VALUES ('!new:example.test', 'changed')\")\nc.execute('DELETE FROM events WHERE id % 3 = 0')\nc.commit()\nc.close()\n",
        &[&path.to_string_lossy()],
    );
}

/// A canonical dump of the database's rows, to compare content across snapshot/restore.
pub fn dump_db(path: &Path) -> String {
    let out = python(
        "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nprint(c.execute('PRAGMA integrity_check').fetchone()[0])\nfor r in c.execute('SELECT id, room, body FROM events ORDER BY id'): print(repr(r))\n",
        &[&path.to_string_lossy()],
    );
    String::from_utf8(out.stdout).unwrap()
}
