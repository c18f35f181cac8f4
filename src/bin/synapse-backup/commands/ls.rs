//! `ls`: a backup's kind, chain and sizes (from the listing) and its contents as its
//! manifest lists them, as text or JSON.

use serde::Serialize;
use synapse_backup::{
    BackupChain, BackupError, Compression, EntryKind, INNER_MANIFEST_MEMBER, ListedKind, Manifest,
    ManifestPath, describe_backup, read_manifest,
};

use crate::cli::{GlobalArgs, IdArg};
use crate::failure::Failure;
use crate::output::{self, emit, emit_json};
use crate::target::Target;

/// `ls ID`: the backup's kind, chain and sizes (from the listing), then its entries as
/// its manifest lists them.
pub(crate) async fn ls(global: &GlobalArgs, id: &IdArg) -> Result<(), Failure> {
    let target = Target::load(global)?;
    target.check_bucket().await?;
    let id = &target.resolve(id).await?;
    let manifest = match read_manifest(&target.client, id).await {
        Ok(manifest) => manifest,
        Err(BackupError::MissingManifest { .. }) => {
            return Err(Failure::failed(format!(
                "backup {id} has no manifest, so there is no listing of it: an incomplete \
                 backup is not restorable, and a legacy one's contents are known only by \
                 downloading it (`verify {id}` does)"
            )));
        }
        Err(e) => return Err(target.failure(e, false)),
    };
    let chain = describe_backup(&target.client, id)
        .await
        .map_err(|e| target.failure(e, false))?;
    if let Some(base) = &chain.broken_at {
        output::warn(&format!(
            "{id}: its chain is broken: {base} is missing or incomplete, so it is not \
             restorable"
        ));
    }
    let entries = entries(&manifest);
    if global.json {
        emit_json(&to_json_object(&chain, &manifest, &entries));
    } else {
        emit(&format!(
            "{}{}{}",
            summary(&chain),
            compression_line(&manifest),
            table(&entries)
        ));
    }
    Ok(())
}

/// The first line of `ls`: `ID: KIND (N packs: …), SIZE own, SIZE in total`.
pub fn summary(chain: &BackupChain) -> String {
    let own = output::size(chain.backup.size);
    if chain.packs.is_empty() && chain.broken_at.is_none() {
        return format!("{}: {}, {own}\n", chain.backup.id, chain.backup.kind);
    }
    let mut packs: Vec<String> = chain.packs.iter().map(|p| p.id.to_string()).collect();
    packs.push(chain.backup.id.to_string());
    let broken = chain
        .broken_at
        .as_ref()
        .map_or(String::new(), |b| format!(", broken: {b} is missing"));
    format!(
        "{}: {} ({} packs: {}{broken}), {own} own, {} in total\n",
        chain.backup.id,
        chain.backup.kind,
        packs.len(),
        packs.join(", "),
        output::size(chain.total_size)
    )
}

/// The line naming a compression other than none, and what reading it needs.
fn compression_line(manifest: &Manifest) -> String {
    match manifest.compression {
        Compression::None => String::new(),
        c @ Compression::Zstd(_) => format!("compression: {c} (reading it needs zstd)\n"),
        c => format!("compression: {c}\n"),
    }
}

/// `ls --json`: the backup, its kind and chain, its compression and its entries.
#[derive(Serialize)]
struct JsonListing {
    id: String,
    #[serde(flatten)]
    kind: ListedKind,
    size: u64,
    total_size: u64,
    packs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    broken_at: Option<String>,
    /// Its manifest's (`none`, `zlib-6`, `zstd-3`).
    compression: Compression,
    entries: Vec<JsonEntry>,
}

fn to_json_object(chain: &BackupChain, manifest: &Manifest, entries: &[Entry<'_>]) -> JsonListing {
    JsonListing {
        id: chain.backup.id.to_string(),
        kind: chain.backup.kind.clone(),
        size: chain.backup.size,
        total_size: chain.total_size,
        packs: chain.packs.iter().map(|p| p.id.to_string()).collect(),
        broken_at: chain.broken_at.as_ref().map(ToString::to_string),
        compression: manifest.compression,
        entries: to_json(entries),
    }
}

/// One entry of a backup, as `ls` prints it.
pub struct Entry<'a> {
    path: &'a ManifestPath,
    kind: EntryKind,
    size: u64,
}

/// The entries of `manifest`, in its order, without the inner manifest (which is
/// never restored).
pub fn entries(manifest: &Manifest) -> Vec<Entry<'_>> {
    let inner_dir = INNER_MANIFEST_MEMBER
        .rsplit_once('/')
        .map_or("", |(dir, _)| dir);
    manifest
        .files
        .iter()
        .filter(|f| {
            let p = f.path.as_bytes();
            p != INNER_MANIFEST_MEMBER.as_bytes() && p != inner_dir.as_bytes()
        })
        .map(|f| Entry {
            path: &f.path,
            kind: f.kind,
            size: f.size,
        })
        .collect()
}

/// `file`, `dir`, `symlink`, or the manifest's letter for anything else.
fn kind_name(kind: EntryKind) -> String {
    match kind {
        EntryKind::File => "file".into(),
        EntryKind::Dir => "dir".into(),
        EntryKind::Symlink => "symlink".into(),
        other => other.letter().to_string(),
    }
}

/// The path for a line of text: as it is when it is UTF-8 without control characters
/// (which could fake lines), else quoted with escapes.
fn shown(path: &ManifestPath) -> String {
    match path {
        ManifestPath::Text(text) if !text.chars().any(char::is_control) => text.clone(),
        other => format!("{:?}", String::from_utf8_lossy(other.as_bytes())),
    }
}

/// One line per entry: kind, size (files), path.
pub fn table(entries: &[Entry<'_>]) -> String {
    let mut out = String::new();
    for e in entries {
        let size = if e.kind == EntryKind::File {
            output::size(e.size)
        } else {
            "-".into()
        };
        out.push_str(&format!(
            "{:<7} {size:>9}  {}\n",
            kind_name(e.kind),
            shown(e.path)
        ));
    }
    out
}

#[derive(Serialize)]
struct JsonEntry {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<Vec<u8>>,
    kind: String,
    size: u64,
}

/// An array of `{path, kind, size}`; a path that is not UTF-8 is given lossily in
/// `path` and exactly in `path_bytes`.
fn to_json(entries: &[Entry<'_>]) -> Vec<JsonEntry> {
    entries
        .iter()
        .map(|e| JsonEntry {
            path: String::from_utf8_lossy(e.path.as_bytes()).into_owned(),
            path_bytes: match e.path {
                ManifestPath::Bytes(bytes) => Some(bytes.clone()),
                ManifestPath::Text(_) => None,
            },
            kind: kind_name(e.kind),
            size: e.size,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_paths_cannot_fake_lines() {
        let newline = ManifestPath::Text("data/a\nfile 1 B data/b".into());
        let bytes = ManifestPath::Bytes(b"data/\xff".to_vec());
        let plain = ManifestPath::Text("data/c d".into());
        let entries = [
            Entry {
                path: &newline,
                kind: EntryKind::File,
                size: 1,
            },
            Entry {
                path: &bytes,
                kind: EntryKind::File,
                size: 2,
            },
            Entry {
                path: &plain,
                kind: EntryKind::Dir,
                size: 4096,
            },
        ];
        let text = table(&entries);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.contains("\"data/a\\nfile 1 B data/b\""), "{text}");
        assert!(text.ends_with("dir             -  data/c d\n"), "{text:?}");
        let value = serde_json::to_value(to_json(&entries)).unwrap();
        assert_eq!(
            value[1]["path_bytes"],
            serde_json::json!([100, 97, 116, 97, 47, 255])
        );
        assert!(value[0].get("path_bytes").is_none());
        assert_eq!(value[2]["kind"], "dir");
    }
}
