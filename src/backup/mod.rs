//! The backup life cycle, run through a [`Container`](crate::Container): the I/O layer
//! over the pure [`plan`], [`restore_plan`], [`layout`] and [`manifest`] modules.

/// Shell text shared by the backup and fetch scripts: the checksum stage, which takes
/// the encrypted stream's SHA-256 and length in one pass (python3), else `tee` to FIFOs
/// read by `openssl dgst` / `sha256sum` and `wc -c`, waited for after the pipeline.
macro_rules! checksum_stage {
    () => {
        r#"# One pass over the encrypted stream: SHA-256 and length in-line (python3), else tee
# to a hasher and wc on FIFOs that are waited for below.
hash_py='
import hashlib, signal, sys
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
try:
    import fcntl
    for fd in (0, 1):
        fcntl.fcntl(fd, 1031, 1 << 20)
except Exception:
    pass
src = open(0, "rb", buffering=0, closefd=False)
out = open(1, "wb", buffering=0, closefd=False)
h = hashlib.sha256()
buf = bytearray(1 << 20)
view = memoryview(buf)
n = 0
while True:
    k = src.readinto(buf)
    if not k:
        break
    h.update(view[:k])
    done = 0
    while done < k:
        done += out.write(view[done:k])
    n += k
with open(sys.argv[1], "w") as f:
    f.write(h.hexdigest() + "  -\n")
with open(sys.argv[2], "w") as f:
    f.write("%d\n" % n)
'
inline=0
if "$SB_PYTHON" -I -c 'import fcntl, hashlib, signal' >/dev/null 2>&1; then inline=1; fi
if [ "$inline" = 0 ]; then
  mkfifo "$w/sha.fifo" "$w/len.fifo"
  if command -v openssl >/dev/null 2>&1; then
    openssl dgst -sha256 -r <"$w/sha.fifo" >"$w/sha256" &
  else
    sha256sum <"$w/sha.fifo" >"$w/sha256" &
  fi
  sha_pid=$!
  wc -c <"$w/len.fifo" >"$w/length" &
  len_pid=$!
fi
checksum() {
  if [ "$inline" = 1 ]; then
    "$SB_PYTHON" -I -c "$hash_py" "$w/sha256" "$w/length"
  else
    tee "$w/sha.fifo" "$w/len.fifo"
  fi
}
"#
    };
}

/// Shell text shared by the backup and fetch scripts, right after their pipeline: waits
/// for the checksum readers, then names the failing stage (the first that did not die of
/// SIGPIPE) from `names` / `errs`, writes `<stage> <status>` to `$w/failed`, copies that
/// stage's stderr and exits `10 + stage`, or 14 when the checksum readers failed.
macro_rules! pipeline_status {
    () => {
        r#"st=("${PIPESTATUS[@]}")
sha_st=0
len_st=0
if [ "$inline" = 0 ]; then
  exec 3<>"$w/sha.fifo" 4<>"$w/len.fifo"
  exec 3>&- 4>&-
  wait "$sha_pid" || sha_st=$?
  wait "$len_pid" || len_st=$?
fi
set -e
failed=""
for i in 0 1 2 3; do
  if [ "${st[$i]}" -ne 0 ] && [ "${st[$i]}" -ne 141 ]; then failed=$i; break; fi
done
if [ -z "$failed" ]; then
  for i in 3 2 1 0; do
    if [ "${st[$i]}" -ne 0 ]; then failed=$i; break; fi
  done
fi
if [ -n "$failed" ]; then
  printf '%s %s\n' "${names[$failed]}" "${st[$failed]}" >"$w/failed"
  tail -c 4096 "${errs[$failed]}" >&2
  exit $((10 + failed))
fi
if [ "$sha_st" -ne 0 ] || [ "$len_st" -ne 0 ]; then
  echo "the checksum of the encrypted stream could not be computed" >&2
  exit 14
fi
"#
    };
}

pub mod catalog;
mod create;
pub mod layout;
pub mod manifest;
pub mod plan;
mod restore;
pub mod restore_plan;
mod work;

pub use catalog::{
    BackupInfo, BackupStatus, PruneReport, RetentionPolicy, backup_status, delete_backup,
    exists_backup, list_backups, prune_backups, select_for_pruning,
};
pub use create::{BackupReport, create_backup, create_backup_with};
pub use restore::{
    RestoreOptions, RestoreReport, VerifyReport, restore_backup, restore_backup_with,
    verify_backup, verify_backup_with,
};
