//! The manifest: `<key>.manifest.json`, written after the data object. A backup
//! exists only when its manifest does.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backup::listing::FrontCodedLists;
use crate::backup::plan::{BackupId, Compression};
use crate::error::ConfigError;

/// The manifest format version.
pub const MANIFEST_FORMAT: u32 = 1;

/// A path as stored in the manifest: text when it is UTF-8, raw bytes otherwise, so
/// non-UTF-8 file names are kept losslessly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ManifestPath {
    /// A UTF-8 path.
    Text(String),
    /// A path that is not valid UTF-8, as its bytes.
    Bytes(Vec<u8>),
}

impl ManifestPath {
    /// From raw bytes (text when they are UTF-8).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => ManifestPath::Text(s.to_string()),
            Err(_) => ManifestPath::Bytes(bytes.to_vec()),
        }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ManifestPath::Text(s) => s.as_bytes(),
            ManifestPath::Bytes(b) => b,
        }
    }
}

/// What an archived entry is: in the manifest, the letter `find -printf %y` prints
/// (`f`, `d`, `l`; manifests written before 0.2 came from `find` and may also hold its
/// letters for special files). Any other letter is a parse error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EntryKind {
    /// A regular file (`f`; hard links are archived as files).
    #[serde(rename = "f")]
    File,
    /// A directory (`d`).
    #[serde(rename = "d")]
    Dir,
    /// A symbolic link (`l`).
    #[serde(rename = "l")]
    Symlink,
    /// A named pipe (`p`).
    #[serde(rename = "p")]
    Fifo,
    /// A socket (`s`).
    #[serde(rename = "s")]
    Socket,
    /// A block device (`b`).
    #[serde(rename = "b")]
    BlockDevice,
    /// A character device (`c`).
    #[serde(rename = "c")]
    CharDevice,
}

/// The least a file system allocates for a file's data or a directory: one 4 KiB block
/// (ext4's and XFS's default, a tmpfs page).
const DISK_BLOCK: u64 = 4096;

impl EntryKind {
    /// The least an entry of this kind holding `size` bytes takes on disk: a file its
    /// size rounded up to whole 4 KiB blocks, a directory one block, a link or special
    /// file nothing (held in its inode). A store of small files and thumbnail dirs takes
    /// several times its bytes. Saturates.
    pub(crate) fn on_disk(self, size: u64) -> u64 {
        let blocks = match self {
            EntryKind::File => size.div_ceil(DISK_BLOCK),
            EntryKind::Dir => 1,
            _ => 0,
        };
        blocks.saturating_mul(DISK_BLOCK)
    }

    /// The kind for a `find -printf %y` letter.
    pub fn from_find_letter(letter: char) -> Option<Self> {
        Some(match letter {
            'f' => EntryKind::File,
            'd' => EntryKind::Dir,
            'l' => EntryKind::Symlink,
            'p' => EntryKind::Fifo,
            's' => EntryKind::Socket,
            'b' => EntryKind::BlockDevice,
            'c' => EntryKind::CharDevice,
            _ => return None,
        })
    }

    /// The kind for a GNU tar listing's type letter (`-` file, `h` hard link, which a
    /// restore stages as a file, `d`, `l`, `p`, `s`, `b`, `c`); `None` for tar's others.
    pub fn from_tar_letter(letter: char) -> Option<Self> {
        match letter {
            '-' | 'h' => Some(EntryKind::File),
            'f' => None,
            other => Self::from_find_letter(other),
        }
    }

    /// The manifest's letter (`find -printf %y`'s).
    pub fn letter(self) -> char {
        match self {
            EntryKind::File => 'f',
            EntryKind::Dir => 'd',
            EntryKind::Symlink => 'l',
            EntryKind::Fifo => 'p',
            EntryKind::Socket => 's',
            EntryKind::BlockDevice => 'b',
            EntryKind::CharDevice => 'c',
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EntryKind::File => "file",
            EntryKind::Dir => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::Fifo => "fifo",
            EntryKind::Socket => "socket",
            EntryKind::BlockDevice => "block device",
            EntryKind::CharDevice => "character device",
        })
    }
}

/// What a backup holds of Synapse's database (`database` in the manifest, as lower-case
/// text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DatabaseSnapshot {
    /// `sqlite`: a consistent snapshot of `homeserver.db` is archived.
    Sqlite,
    /// `postgresql`: Synapse uses PostgreSQL, which the PostgreSQL charm backs up, not
    /// this crate.
    Postgresql,
    /// `none`: SQLite is configured but there was no database file to archive.
    None,
}

impl DatabaseSnapshot {
    /// The manifest's text: `sqlite`, `postgresql` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseSnapshot::Sqlite => "sqlite",
            DatabaseSnapshot::Postgresql => "postgresql",
            DatabaseSnapshot::None => "none",
        }
    }
}

impl std::fmt::Display for DatabaseSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cipher of the encrypted object (`cipher` in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Cipher {
    /// `AES256`: gpg's `--cipher-algo AES256`, the only cipher this crate writes.
    #[default]
    #[serde(rename = "AES256")]
    Aes256,
}

impl std::fmt::Display for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cipher::Aes256 => "AES256",
        })
    }
}

/// One archived entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The member name (relative, as in the archive).
    pub path: ManifestPath,
    /// What the entry is.
    pub kind: EntryKind,
    /// Size in bytes (files).
    pub size: u64,
}

/// Where the archived paths came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestLayout {
    /// The config dir (container path).
    pub config_dir: String,
    /// The data dir (container path).
    pub data_dir: String,
    /// The media store (container path).
    pub media_store_path: String,
    /// The top-level members handed to tar.
    pub members: Vec<String>,
}

/// The inner manifest's member name: the first member of every archive this crate
/// writes, inside the encrypted and integrity-protected stream. It is never restored
/// (plain tools skip it with `tar -x --exclude=.synapse-backup`).
pub const INNER_MANIFEST_MEMBER: &str = ".synapse-backup/manifest.json";

/// The manifest inside the encrypted stream, written before tar starts: what a backup
/// claims about itself, authenticated by the passphrase. The external
/// [`Manifest`] repeats its `nonce` and adds what is known only afterwards (sizes,
/// checksum, file list); verify and restore check the two against each other and the
/// inner `backup_id` against the id asked for, so neither a forged external manifest
/// nor a good backup copied under another id is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InnerManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The backup id.
    pub backup_id: BackupId,
    /// When the backup was started.
    pub created: DateTime<Utc>,
    /// `synapse-backup/<version>`.
    pub created_by: String,
    /// Where the data came from.
    pub layout: ManifestLayout,
    /// As [`Manifest::database`].
    pub database: DatabaseSnapshot,
    /// 32 random bytes, lower-case hex, repeated in the external manifest.
    pub nonce: String,
    /// For a pack of a chain (an incremental backup, or a full one written with its
    /// file index so that increments can build on it): the SHA-256 of the backup's
    /// full file index and the older packs it needs. Absent in other full backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<crate::backup::incremental::PackChain>,
}

impl InnerManifest {
    /// A fresh random nonce (32 bytes from the OS, hex).
    ///
    /// # Errors
    /// When the OS has no randomness to give.
    pub fn new_nonce() -> Result<String, std::io::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses an inner manifest.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] when the JSON is not an inner manifest.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        from_json(bytes, "inner manifest")
    }
}

/// The manifest of one backup: `<key>.manifest.json`, beside the data object.
///
/// It is an **index**: anyone who can write to the bucket can write one, so listing and
/// the catalog read it only to list. Nothing in it is trusted until `verify` or
/// `restore` has authenticated it against the encrypted stream (gpg's status, the
/// [`InnerManifest`]'s id and nonce, the file list against the archive's members).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The backup id.
    pub backup_id: BackupId,
    /// When the backup was made.
    pub created: DateTime<Utc>,
    /// `synapse-backup/<version>`.
    pub created_by: String,
    /// Synapse's `server_name`, when `homeserver.yaml` has it.
    pub server_name: Option<String>,
    /// Where the data came from.
    pub layout: ManifestLayout,
    /// What the backup holds of the database.
    pub database: DatabaseSnapshot,
    /// Things the operator should know (e.g. a missing media store).
    pub warnings: Vec<String>,
    /// Every archived entry. (Empty in [`crate::BackupReport::manifest`]: `create`
    /// streams the list into the uploaded manifest without holding it; read it back
    /// from the bucket.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ManifestEntry>,
    /// Sum of the archived file sizes.
    pub plaintext_bytes: u64,
    /// Size of the encrypted object.
    pub ciphertext_bytes: u64,
    /// SHA-256 of the encrypted object, lower-case hex.
    pub ciphertext_sha256: String,
    /// The cipher (`AES256`).
    pub cipher: Cipher,
    /// The archive's compression (`none`, `zlib-6`, `zstd-3`): every read follows it.
    pub compression: Compression,
    /// The [`InnerManifest`]'s nonce (absent in manifests written before 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// For a backup made with a file index (an incremental create): what it is, the
    /// packs it needs and its index. Absent for other full backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ManifestChain>,
}

/// What the external manifest says of a backup made with a file index (listing only:
/// the inner manifest's [`PackChain`](crate::PackChain) is what verify and restore trust).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestChain {
    /// Full or incremental (with its base), and why full.
    pub kind: crate::backup::incremental::BackupKind,
    /// The older packs a restore reads, the full backup first, the base last (empty
    /// for a full backup).
    pub packs: Vec<BackupId>,
    /// The index object's key suffix (`.index.ndjson`, beside the data object).
    pub index: String,
    /// SHA-256 of the index object, lower-case hex.
    pub index_sha256: String,
    /// How many media files the index names, and their bytes.
    pub indexed_files: u64,
    /// The bytes of those files.
    pub indexed_bytes: u64,
    /// The media files this pack archives itself, and their bytes.
    pub own_files: u64,
    /// The bytes of those files.
    pub own_bytes: u64,
    /// The encrypted bytes of every pack a restore reads (the older ones as their
    /// manifests said when this backup was made, and this one with its database pack).
    pub total_ciphertext_bytes: u64,
    /// An incremental backup's database pack, `<key>.database`
    /// ([`DATABASE_SUFFIX`](crate::backup::incremental::DATABASE_SUFFIX)): its size and
    /// SHA-256, checked before anything in it is used. Absent for a full backup (its
    /// one pack holds the database) and one without a database snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabasePack>,
}

/// An incremental backup's database pack as its external manifest records it: the
/// encrypted object's size and SHA-256. The pack carries the same inner manifest as the
/// backup's own pack, which lists its members ([`PackChain::database`](crate::PackChain)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabasePack {
    /// Size of the encrypted object in bytes.
    pub ciphertext_bytes: u64,
    /// SHA-256 of the encrypted object, lower-case hex.
    pub ciphertext_sha256: String,
}

impl Manifest {
    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses a manifest.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] when the JSON is not a manifest.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        from_json(bytes, "manifest")
    }
}

/// A manifest's file list held compactly ([`FrontCodedLists`]: kind and size beside
/// each path) instead of an allocation per entry, for reading a backup of 100,000 files
/// back with little memory. Filled while the manifest's JSON is parsed
/// ([`Manifest::from_json_compact`]), so the entries are never held as a `Vec`, and
/// grown a list at a time, never by doubling (and copying) one large buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ManifestFiles(FrontCodedLists<2>);

impl ManifestFiles {
    /// Appends one entry.
    pub(crate) fn push(&mut self, path: &[u8], kind: EntryKind, size: u64) {
        self.0.push(path, [u64::from(kind.letter()), size]);
    }

    /// Gives back the room it does not use.
    fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }

    /// How many entries it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds no entry.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in the manifest's order: `(path, kind, size)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Vec<u8>, EntryKind, u64)> + Clone + '_ {
        self.0.iter().map(|(path, [kind, size])| {
            let kind = u32::try_from(kind)
                .ok()
                .and_then(char::from_u32)
                .and_then(EntryKind::from_find_letter)
                // Only letters of kinds were pushed.
                .unwrap_or(EntryKind::File);
            (path, kind, size)
        })
    }
}

impl<'de> Deserialize<'de> for ManifestFiles {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = ManifestFiles;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ManifestFiles, A::Error> {
                let mut files = ManifestFiles::default();
                // One entry at a time: its own allocation is freed before the next.
                while let Some(entry) = seq.next_element::<ManifestEntry>()? {
                    files.push(entry.path.as_bytes(), entry.kind, entry.size);
                }
                files.shrink_to_fit();
                Ok(files)
            }
        }
        deserializer.deserialize_seq(Entries)
    }
}

/// [`Manifest`] as parsed with its file list compact: the same fields, the same
/// defaults (a test keeps the two in step).
#[derive(Deserialize)]
struct CompactManifest {
    format: u32,
    backup_id: BackupId,
    created: DateTime<Utc>,
    created_by: String,
    server_name: Option<String>,
    layout: ManifestLayout,
    database: DatabaseSnapshot,
    warnings: Vec<String>,
    #[serde(default)]
    files: ManifestFiles,
    plaintext_bytes: u64,
    ciphertext_bytes: u64,
    ciphertext_sha256: String,
    cipher: Cipher,
    compression: Compression,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    chain: Option<ManifestChain>,
}

impl Manifest {
    /// Parses a manifest as [`Manifest::from_json`] does (the same checks, the same
    /// errors), its file list apart and compact: the manifest's own `files` is empty.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] when the JSON is not a manifest.
    pub(crate) fn from_json_compact(bytes: &[u8]) -> Result<(Self, ManifestFiles), ConfigError> {
        let c: CompactManifest = from_json(bytes, "manifest")?;
        Ok(c.split())
    }

    /// As [`from_json_compact`](Self::from_json_compact), reading the JSON from
    /// `reader` as it is parsed (the bytes are never held whole): the same checks, the
    /// same errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] when the JSON is not a manifest or `reader` fails.
    pub(crate) fn from_json_compact_reader(
        reader: impl std::io::Read,
    ) -> Result<(Self, ManifestFiles), ConfigError> {
        let de = serde_json::Deserializer::from_reader(reader);
        let c: CompactManifest = parse_json(de, "manifest")?;
        Ok(c.split())
    }
}

impl CompactManifest {
    /// The manifest (its `files` empty) and its compact file list.
    fn split(self) -> (Manifest, ManifestFiles) {
        let c = self;
        let manifest = Manifest {
            format: c.format,
            backup_id: c.backup_id,
            created: c.created,
            created_by: c.created_by,
            server_name: c.server_name,
            layout: c.layout,
            database: c.database,
            warnings: c.warnings,
            files: Vec::new(),
            plaintext_bytes: c.plaintext_bytes,
            ciphertext_bytes: c.ciphertext_bytes,
            ciphertext_sha256: c.ciphertext_sha256,
            cipher: c.cipher,
            compression: c.compression,
            nonce: c.nonce,
            chain: c.chain,
        };
        (manifest, c.files)
    }
}

/// Parses JSON, naming the field at fault (e.g. `files[3].kind: unknown variant`).
fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ConfigError> {
    parse_json(serde_json::Deserializer::from_slice(bytes), what)
}

/// Parses one JSON value from `de` (nothing but white space after it), naming the
/// field at fault.
fn parse_json<'de, R: serde_json::de::Read<'de>, T: serde::de::DeserializeOwned>(
    mut de: serde_json::Deserializer<R>,
    what: &str,
) -> Result<T, ConfigError> {
    let bad = |message: String| ConfigError::Parse {
        what: what.into(),
        message,
    };
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => bad(e.into_inner().to_string()),
            _ => bad(format!("{path}: {}", e.into_inner())),
        }
    })?;
    de.end().map_err(|e| bad(e.to_string()))?;
    Ok(value)
}

/// A manifest's JSON with its file list streamed in one entry at a time into `W` (a
/// temp file for a create, so that a list of 100,000 files is not held in memory):
/// `{"files":[...],` then the other fields (a JSON object's keys have no order).
pub(crate) struct ManifestJson<W: std::io::Write = Vec<u8>> {
    out: W,
    entries: u64,
}

impl ManifestJson {
    /// An empty file list in memory with room for `capacity` bytes of JSON.
    #[cfg(test)]
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        // Writing into a Vec cannot fail.
        ManifestJson::new(Vec::with_capacity(capacity)).unwrap_or_else(|_| unreachable!())
    }
}

impl<W: std::io::Write> ManifestJson<W> {
    /// An empty file list written into `out`.
    ///
    /// # Errors
    /// When writing to `out` fails.
    pub(crate) fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(b"{\"files\":[")?;
        Ok(ManifestJson { out, entries: 0 })
    }

    /// Appends one entry.
    ///
    /// # Errors
    /// When writing to the output fails.
    pub(crate) fn push(&mut self, entry: &ManifestEntry) -> std::io::Result<()> {
        if self.entries > 0 {
            self.out.write_all(b",")?;
        }
        self.entries += 1;
        serde_json::to_writer(&mut self.out, entry).map_err(std::io::Error::from)
    }

    /// The whole manifest: the streamed files and `manifest`'s other fields (its own
    /// `files` must be empty); gives the output back.
    ///
    /// # Errors
    /// When writing to the output fails.
    pub(crate) fn finish(mut self, manifest: &Manifest) -> std::io::Result<W> {
        debug_assert!(manifest.files.is_empty());
        let rest = serde_json::to_vec(manifest).unwrap_or_default();
        self.out.write_all(b"]")?;
        // `rest` is `{"format":...}`: its fields follow the file list.
        if let Some(fields) = rest.strip_prefix(b"{").filter(|f| *f != b"}") {
            self.out.write_all(b",")?;
            self.out.write_all(fields)?;
        } else {
            self.out.write_all(b"}")?;
        }
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_disk_counts_whole_blocks_per_file_and_dir() {
        use EntryKind::{Dir, File, Symlink};
        // An empty file takes no block, one byte a whole one, a directory one.
        assert_eq!(File.on_disk(0), 0);
        assert_eq!(File.on_disk(1), 4096);
        assert_eq!(Dir.on_disk(0), 4096);
        assert_eq!(File.on_disk(4096), 4096);
        assert_eq!(File.on_disk(4097), 8192);
        assert_eq!(Symlink.on_disk(100), 0);
        assert_eq!(File.on_disk(u64::MAX), u64::MAX);
    }

    #[test]
    fn manifest_round_trips_through_json() {
        let m = Manifest {
            format: MANIFEST_FORMAT,
            backup_id: "backup-20261126071900000000".parse().unwrap(),
            created: Utc::now(),
            created_by: "synapse-backup/0.1.0".into(),
            server_name: Some("example.org".into()),
            layout: ManifestLayout {
                config_dir: "/data".into(),
                data_dir: "/data".into(),
                media_store_path: "/data/media_store".into(),
                members: vec!["data/a.key".into()],
            },
            database: DatabaseSnapshot::Sqlite,
            warnings: vec![],
            files: vec![ManifestEntry {
                path: ManifestPath::from_bytes(b"data/\xff"),
                kind: EntryKind::File,
                size: 1,
            }],
            plaintext_bytes: 1,
            ciphertext_bytes: 2,
            ciphertext_sha256: "ab".into(),
            cipher: Cipher::Aes256,
            compression: Compression::Zlib(6),
            nonce: Some(InnerManifest::new_nonce().unwrap()),
            chain: None,
        };
        assert_eq!(m.nonce.as_ref().unwrap().len(), 64);
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        assert!(Manifest::from_json(b"{}").is_err());

        // Streamed: the same manifest, whatever the entries' names.
        let mut streamed = ManifestJson::with_capacity(16);
        let mut files = m.files.clone();
        files.push(ManifestEntry {
            path: ManifestPath::Text("data/\"files\":[],\u{1}".into()),
            kind: EntryKind::File,
            size: 3,
        });
        for f in &files {
            streamed.push(f).unwrap();
        }
        let json = streamed
            .finish(&Manifest {
                files: Vec::new(),
                ..m.clone()
            })
            .unwrap();
        assert_eq!(
            Manifest::from_json(&json).unwrap(),
            Manifest { files, ..m.clone() }
        );
        let empty = ManifestJson::with_capacity(0)
            .finish(&Manifest {
                files: Vec::new(),
                ..m
            })
            .unwrap();
        assert!(Manifest::from_json(&empty).unwrap().files.is_empty());
    }

    /// A manifest's JSON streamed into a file is byte for byte the one built in memory,
    /// and parsing it from a reader gives what parsing it whole gives (the same errors
    /// for one cut short).
    #[test]
    fn a_manifest_streamed_to_a_file_is_the_one_built_in_memory() {
        use std::io::{Read as _, Seek as _};
        let m = Manifest::from_json(TODAY.as_bytes()).unwrap();
        let rest = Manifest {
            files: Vec::new(),
            ..m.clone()
        };
        let mut memory = ManifestJson::with_capacity(0);
        let mut file = ManifestJson::new(std::io::BufWriter::with_capacity(
            7,
            tempfile::tempfile().unwrap(),
        ))
        .unwrap();
        for f in &m.files {
            memory.push(f).unwrap();
            file.push(f).unwrap();
        }
        let memory = memory.finish(&rest).unwrap();
        let mut written = file.finish(&rest).unwrap().into_inner().unwrap();
        written.rewind().unwrap();
        let mut bytes = Vec::new();
        written.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, memory);
        assert_eq!(Manifest::from_json(&bytes).unwrap(), m);

        let whole = Manifest::from_json_compact(&bytes).unwrap();
        // One byte per read: every token split across reads.
        let streamed =
            Manifest::from_json_compact_reader(std::io::BufReader::with_capacity(1, &bytes[..]))
                .unwrap();
        assert_eq!(streamed, whole);
        assert_eq!(streamed.1.len(), m.files.len());
        let cut = &bytes[..bytes.len() - 3];
        let (a, b) = (
            Manifest::from_json_compact(cut).unwrap_err().to_string(),
            Manifest::from_json_compact_reader(cut)
                .unwrap_err()
                .to_string(),
        );
        assert!(a.contains("EOF while parsing"), "{a}");
        assert_eq!(a, b);
        let trailing = [&bytes[..], b" x"].concat();
        assert!(Manifest::from_json_compact_reader(&trailing[..]).is_err());
    }

    /// A manifest as 0.2 writes it (compact, file list first), and as 0.1 wrote it
    /// (pretty, no nonce, kinds from `find`): both still parse, to the same types.
    const TODAY: &str = r#"{"files":[{"path":".synapse-backup","kind":"d","size":0},{"path":"data/a.key","kind":"f","size":3},{"path":"data/media/local_content/l","kind":"l","size":0},{"path":[100,97,116,97,47,255],"kind":"f","size":1}],"format":1,"backup_id":"backup-20261126071900123456","created":"2026-11-26T07:19:00.123456Z","created_by":"synapse-backup/0.2.0","server_name":"example.org","layout":{"config_dir":"/data","data_dir":"/data","media_store_path":"/data/media_store","members":["data/a.key"]},"database":"sqlite","warnings":["w"],"plaintext_bytes":4,"ciphertext_bytes":99,"ciphertext_sha256":"ab","cipher":"AES256","compression":"zlib-6","nonce":"00ff"}"#;

    #[test]
    fn manifests_in_todays_format_parse_to_types() {
        let m = Manifest::from_json(TODAY.as_bytes()).unwrap();
        assert_eq!(m.backup_id.as_str(), "backup-20261126071900123456");
        assert_eq!(m.database, DatabaseSnapshot::Sqlite);
        assert_eq!(m.cipher, Cipher::Aes256);
        assert_eq!(m.compression, Compression::Zlib(6));
        let kinds: Vec<EntryKind> = m.files.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                EntryKind::Dir,
                EntryKind::File,
                EntryKind::Symlink,
                EntryKind::File
            ]
        );
        assert_eq!(m.files[3].path, ManifestPath::Bytes(b"data/\xff".to_vec()));
        // Written back, the JSON is the same (as values: keys have no order).
        let back: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        let before: serde_json::Value = serde_json::from_str(TODAY).unwrap();
        assert_eq!(back, before);

        let old = r#"{
  "format": 1,
  "backup_id": "backup-20261120010203000004",
  "created": "2026-11-20T01:02:03.000004Z",
  "created_by": "synapse-backup/0.1.0",
  "server_name": null,
  "layout": {"config_dir": "/data", "data_dir": "/data",
             "media_store_path": "/data/media_store", "members": []},
  "database": "postgresql",
  "warnings": [],
  "files": [{"path": "data/media_store/local_content/fifo", "kind": "p", "size": 0}],
  "plaintext_bytes": 0,
  "ciphertext_bytes": 1,
  "ciphertext_sha256": "cd",
  "cipher": "AES256",
  "compression": "none"
}"#;
        let m = Manifest::from_json(old.as_bytes()).unwrap();
        assert_eq!(
            (m.database, m.compression, m.files[0].kind, m.nonce),
            (
                DatabaseSnapshot::Postgresql,
                Compression::None,
                EntryKind::Fifo,
                None
            )
        );
        let none = old.replace("\"postgresql\"", "\"none\"");
        assert_eq!(
            Manifest::from_json(none.as_bytes()).unwrap().database,
            DatabaseSnapshot::None
        );
        for level in 1..=9u8 {
            let name = format!("zlib-{level}");
            assert_eq!(
                name.parse::<Compression>().unwrap(),
                Compression::Zlib(level)
            );
            assert_eq!(Compression::Zlib(level).to_string(), name);
        }
        for level in 1..=19u8 {
            let name = format!("zstd-{level}");
            assert_eq!(
                name.parse::<Compression>().unwrap(),
                Compression::Zstd(level)
            );
            assert_eq!(Compression::Zstd(level).to_string(), name);
        }
        let zstd = TODAY.replacen("\"zlib-6\"", "\"zstd-3\"", 1);
        assert_eq!(
            Manifest::from_json(zstd.as_bytes()).unwrap().compression,
            Compression::Zstd(3)
        );
    }

    /// The compact parse gives what the whole one does: the same fields, the same
    /// file list (in order), the same errors.
    #[test]
    fn a_compact_parse_is_the_whole_one() {
        let old = TODAY.replace(",\"nonce\":\"00ff\"", "").replace(
            "\"files\":[",
            "\"files\":[{\"path\":\"data/f\",\"kind\":\"p\",\"size\":0},",
        );
        let no_files = TODAY.replace(
            &TODAY[TODAY.find("\"files\"").unwrap()..TODAY.find("\"format\"").unwrap()],
            "",
        );
        for json in [TODAY.to_string(), old, no_files] {
            let whole = Manifest::from_json(json.as_bytes()).unwrap();
            let (m, files) = Manifest::from_json_compact(json.as_bytes()).unwrap();
            assert_eq!(
                m,
                Manifest {
                    files: Vec::new(),
                    ..whole.clone()
                }
            );
            assert_eq!(files.len(), whole.files.len());
            assert_eq!(files.is_empty(), whole.files.is_empty());
            let back: Vec<(Vec<u8>, EntryKind, u64)> =
                files.iter().map(|(p, k, s)| (p.to_vec(), k, s)).collect();
            let expected: Vec<(Vec<u8>, EntryKind, u64)> = whole
                .files
                .iter()
                .map(|f| (f.path.as_bytes().to_vec(), f.kind, f.size))
                .collect();
            assert_eq!(back, expected);
        }
        for (from, to) in [
            ("\"kind\":\"l\"", "\"kind\":\"h\""),
            ("\"size\":3", "\"size\":-3"),
            ("\"zlib-6\"", "\"zlib-0\""),
            ("\"format\":1,", ""),
        ] {
            let json = TODAY.replacen(from, to, 1);
            let whole = Manifest::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            let compact = Manifest::from_json_compact(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert_eq!(compact, whole, "{to}");
        }
    }

    #[test]
    fn unknown_values_are_errors_naming_the_field() {
        for (from, to, field) in [
            (
                "\"backup-20261126071900123456\"",
                "\"backup-2026\"",
                "backup_id",
            ),
            (
                "\"backup-20261126071900123456\"",
                "\"../../etc\"",
                "backup_id",
            ),
            ("\"sqlite\"", "\"mysql\"", "database"),
            ("\"sqlite\"", "\"SQLite\"", "database"),
            ("\"AES256\"", "\"AES128\"", "cipher"),
            ("\"zlib-6\"", "\"zlib-0\"", "compression"),
            ("\"zlib-6\"", "\"zlib-10\"", "compression"),
            ("\"zlib-6\"", "\"bzip2\"", "compression"),
            ("\"zlib-6\"", "6", "compression"),
            ("\"zlib-6\"", "\"zstd-0\"", "compression"),
            ("\"zlib-6\"", "\"zstd-20\"", "compression"),
            ("\"zlib-6\"", "\"zstd-03\"", "compression"),
            ("\"zlib-6\"", "\"zstd-+3\"", "compression"),
            ("\"zlib-6\"", "\"zstd\"", "compression"),
            ("\"zlib-6\"", "\"zlib-06\"", "compression"),
            ("\"kind\":\"l\"", "\"kind\":\"h\"", "files[2].kind"),
            ("\"kind\":\"l\"", "\"kind\":\"file\"", "files[2].kind"),
            ("\"kind\":\"l\"", "\"kind\":\"\"", "files[2].kind"),
        ] {
            let json = TODAY.replacen(from, to, 1);
            assert_ne!(json, TODAY, "{from}");
            let e = Manifest::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("could not parse manifest: {field}: ")),
                "{to}: {e}"
            );
            let shown = to.trim_start_matches("\"kind\":");
            assert!(e.contains(shown.trim_matches('"')), "{to}: {e}");
        }
        // The inner manifest's fields too.
        let inner = r#"{"format":1,"backup_id":"backup-x","created":"2026-11-26T07:19:00Z","created_by":"x","layout":{"config_dir":"/d","data_dir":"/d","media_store_path":"/d/m","members":[]},"database":"sqlite","nonce":"00"}"#;
        let e = InnerManifest::from_json(inner.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("could not parse inner manifest: backup_id: ") && e.contains("backup-x"),
            "{e}"
        );
        // Trailing bytes are still refused.
        assert!(Manifest::from_json(format!("{TODAY} x").as_bytes()).is_err());
    }

    /// A file list past one list is held in several and given back as pushed.
    #[test]
    fn a_long_file_list_is_held_in_several_lists_in_order() {
        let mut files = ManifestFiles::default();
        let entries: Vec<(Vec<u8>, EntryKind, u64)> = (0..30_000_u64)
            .map(|i| {
                let kind = if i % 5 == 0 {
                    EntryKind::Dir
                } else {
                    EntryKind::File
                };
                (
                    format!("{:030}/{i}", i * 7919 % 1_000_003).into_bytes(),
                    kind,
                    i,
                )
            })
            .collect();
        for (path, kind, size) in &entries {
            files.push(path, *kind, *size);
        }
        files.shrink_to_fit();
        assert!(files.0.lists() > 1, "{} lists", files.0.lists());
        assert_eq!(files.len(), entries.len());
        assert!(files.iter().eq(entries.iter().cloned()));
    }
}
