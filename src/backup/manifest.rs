//! The manifest: `<key>.manifest.json`, written after the data object. A backup
//! exists only when its manifest does.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

/// One archived entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The member name (relative, as in the archive).
    pub path: ManifestPath,
    /// `f` file, `d` directory, `l` symlink, as `find -printf %y` says.
    pub kind: char,
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
    pub backup_id: String,
    /// When the backup was started.
    pub created: DateTime<Utc>,
    /// `synapse-backup/<version>`.
    pub created_by: String,
    /// Where the data came from.
    pub layout: ManifestLayout,
    /// As [`Manifest::database`].
    pub database: String,
    /// 32 random bytes, lower-case hex, repeated in the external manifest.
    pub nonce: String,
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
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Parse {
            what: "inner manifest".into(),
            message: e.to_string(),
        })
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
    pub backup_id: String,
    /// When the backup was made.
    pub created: DateTime<Utc>,
    /// `synapse-backup/<version>`.
    pub created_by: String,
    /// Synapse's `server_name`, when `homeserver.yaml` has it.
    pub server_name: Option<String>,
    /// Where the data came from.
    pub layout: ManifestLayout,
    /// `sqlite` (a consistent snapshot is archived), `postgresql` (backed up by the
    /// PostgreSQL charm, not here) or `none`.
    pub database: String,
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
    /// `AES256`.
    pub cipher: String,
    /// gpg compression, e.g. `none` or `zlib-6`.
    pub compression: String,
    /// The [`InnerManifest`]'s nonce (absent in manifests written before 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
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
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Parse {
            what: "manifest".into(),
            message: e.to_string(),
        })
    }
}

/// A manifest's JSON with its file list streamed in one entry at a time, so a list of
/// 100,000 files is held once, already as JSON: `{"files":[...],` then the other fields
/// (a JSON object's keys have no order).
pub(crate) struct ManifestJson {
    buf: Vec<u8>,
    entries: u64,
}

impl ManifestJson {
    /// An empty file list with room for `capacity` bytes of JSON.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        buf.extend_from_slice(b"{\"files\":[");
        ManifestJson { buf, entries: 0 }
    }

    /// Appends one entry.
    pub(crate) fn push(&mut self, entry: &ManifestEntry) {
        if self.entries > 0 {
            self.buf.push(b',');
        }
        self.entries += 1;
        // Writing into a Vec cannot fail, and an entry always serialises.
        let _ = serde_json::to_writer(&mut self.buf, entry);
    }

    /// The whole manifest: the streamed files and `manifest`'s other fields (its own
    /// `files` must be empty).
    pub(crate) fn finish(mut self, manifest: &Manifest) -> Vec<u8> {
        debug_assert!(manifest.files.is_empty());
        let rest = serde_json::to_vec(manifest).unwrap_or_default();
        self.buf.push(b']');
        // `rest` is `{"format":...}`: its fields follow the file list.
        if let Some(fields) = rest.strip_prefix(b"{").filter(|f| *f != b"}") {
            self.buf.push(b',');
            self.buf.extend_from_slice(fields);
        } else {
            self.buf.push(b'}');
        }
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_through_json() {
        let m = Manifest {
            format: MANIFEST_FORMAT,
            backup_id: "backup-20261126071900000000".into(),
            created: Utc::now(),
            created_by: "synapse-backup/0.1.0".into(),
            server_name: Some("example.org".into()),
            layout: ManifestLayout {
                config_dir: "/data".into(),
                data_dir: "/data".into(),
                media_store_path: "/data/media_store".into(),
                members: vec!["data/a.key".into()],
            },
            database: "sqlite".into(),
            warnings: vec![],
            files: vec![ManifestEntry {
                path: ManifestPath::from_bytes(b"data/\xff"),
                kind: 'f',
                size: 1,
            }],
            plaintext_bytes: 1,
            ciphertext_bytes: 2,
            ciphertext_sha256: "ab".into(),
            cipher: "AES256".into(),
            compression: "none".into(),
            nonce: Some(InnerManifest::new_nonce().unwrap()),
        };
        assert_eq!(m.nonce.as_ref().unwrap().len(), 64);
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        assert!(Manifest::from_json(b"{}").is_err());

        // Streamed: the same manifest, whatever the entries' names.
        let mut streamed = ManifestJson::with_capacity(16);
        let mut files = m.files.clone();
        files.push(ManifestEntry {
            path: ManifestPath::Text("data/\"files\":[],\u{1}".into()),
            kind: 'f',
            size: 3,
        });
        for f in &files {
            streamed.push(f);
        }
        let json = streamed.finish(&Manifest {
            files: Vec::new(),
            ..m.clone()
        });
        assert_eq!(
            Manifest::from_json(&json).unwrap(),
            Manifest { files, ..m.clone() }
        );
        let empty = ManifestJson::with_capacity(0).finish(&Manifest {
            files: Vec::new(),
            ..m
        });
        assert!(Manifest::from_json(&empty).unwrap().files.is_empty());
    }
}
