# shellcheck shell=bash
# fetch.sh (appended to common.sh and space.sh): downloads, checksums and decrypts a
# backup
#   aws s3 cp URL - | checksum | gpg --decrypt [| zstd -d] | tar
# then lists it (SB_MODE=list) or extracts it into $SB_WORK/stage (SB_MODE=extract),
# writing tar's `-vv` listing to $SB_WORK/members and gpg's status lines to
# $SB_WORK/gpg.status (the caller trusts nothing before reading them).
#
# list: tar reads every member (`--extract --to-stdout`: nothing is written to disk) and
#   the first 64 KiB of the members' contents go to $SB_WORK/head: the inner manifest,
#   when the archive starts with one. With SB_VERIFY_DB, that one member (the database)
#   and its -wal are extracted into the stage ($SB_STAGE, default $SB_WORK/stage) for
#   the caller to check.
# extract: members are extracted with their archived modes and owned by whoever runs
#   this (never the archived owner); then the staged tree is walked into
#   $SB_WORK/staged (`<type> <octal mode> <links> <uid> <size> <path>\0` records, as
#   `find -printf` writes them), the inner manifest's first 64 KiB copied to
#   $SB_WORK/head, and set-id, sticky and world-writable bits stripped from every
#   staged file and directory.
#
# A pack of an incremental backup's chain is read by one run each. With
# SB_PACK_MEMBERS (an older pack), tar lists or extracts the whole pack (the caller
# judges its listing), and what goes into the stage is exactly the members named
# (NUL-separated, its inner manifest first) in $SB_WORK/pack.members: the pack is
# extracted into $SB_WORK/pack.stage (but for the files named in $SB_WORK/pack.exclude
# when there is one, newline-separated: tar skips them), the named files moved from
# there into the stage and the rest removed. (tar's own --files-from matches every member against every
# name: 10,000 names over 100,000 members took 30 s, 99,000 names six minutes.) The
# packs are read side by side, the older ones each in a work dir of its own inside the
# backup's: SB_STAGE names the stage they share (the backup's; default
# $SB_WORK/stage), which SB_STAGE_SHARED makes if no run made it yet; a pack extracted
# straight into it (the database pack) with SB_PACK_TAG (a name of ours) has its inner
# manifest extracted as .synapse-backup/$SB_PACK_TAG.json instead, so that it does not
# overwrite the own pack's (its head is copied to $SB_WORK/head and the file removed);
# SB_NO_WALK leaves the staged walk and the strip to a last run with SB_MODE=walk,
# once every pack is in the stage; a first run with SB_MODE=dirs makes the stage and
# the directories the packs write into.
#
# Standard input: the passphrase and a newline (kept on fd 3 for gpg, never on disk);
# with SB_INPUT=stdin, the ciphertext follows that line (the library downloaded it):
# the line is read alone (bash's read takes a pipe byte by byte) and handed to gpg on
# a pipe of its own, and gpg reads the rest straight from it; the library counts and
# sums the bytes as it writes them, so the download and checksum stages do nothing
# (and $SB_WORK/sha256 and length are not written).
# Environment: SB_WORK (work dir), SB_MODE (list, extract, walk or dirs), SB_TAR,
# SB_GPG, SB_PYTHON, SB_HASH_PY; SB_ZSTD with SB_DECOMPRESS=zstd (the backup was made
# with zstd: gpg's output goes through `zstd -d` before tar);
# without SB_INPUT=stdin, SB_URL, SB_AWS and the aws CLI's AWS_* variables; and
# optionally SB_NEED_BYTES with SB_SPACE_DIR (free space to check first), SB_VERIFY_DB
# (list), SB_PACK_MEMBERS, SB_STAGE, SB_STAGE_SHARED, SB_PACK_TAG and SB_NO_WALK.
# The free-space reserve (with SB_NEED_BYTES): SB_RESERVE_BYTES and SB_RESERVE_PERCENT
# keep the smaller of that many bytes and that share of SB_SPACE_DIR's file system free
# for the live homeserver beside staging (space.sh's rule): checked first (need +
# reserve), then by tar's checkpoints while it extracts (SB_RESERVE_SH, the text of
# reserve.sh, run every eighth of the reserve), which stop it once less is free.
# Positional parameters: the aws CLI's extra arguments (none with SB_INPUT=stdin).
# The checksum stage gates the stream (checksum_start's `gate`): gpg sees none of it
# unless its first packets are those of an encrypted message; else the stage exits 3
# (`tee 3` in $SB_WORK/failed, the reason on stderr), the cause whatever the download
# did after (the aws CLI fails on the pipe the refusal closed), or 4 when the stream
# ended before its first packets were whole (a failed download before it is the
# cause). With SB_INPUT=stdin the library gates what it feeds.
# Exit codes: 0; 40 not enough free space (the free bytes in $SB_WORK/avail); 41 the
# staging file system filled up while extracting; 42 staging would leave, or was about
# to leave, less than the reserve free (`<available> <reserve>` in $SB_WORK/reserve,
# the free bytes before staging in $SB_WORK/avail); 10 +
# stage (10 download, 11 checksum, 12 gpg, 13 tar, or zstd before it) for the first
# stage that did not die of SIGPIPE, with `<stage> <status>` in $SB_WORK/failed and its stderr on ours; 14 when
# the checksum readers failed.
set -euo pipefail
umask 077
if [ "${SB_INPUT:-}" = stdin ]; then
  # The passphrase line, then the ciphertext on fd 5 for the download stage.
  IFS= read -r pass
  exec 3< <(printf '%s\n' "$pass")
  unset pass
  exec 5<&0 </dev/null
  download() { :; }
  gpg_in=5
else
  # The passphrase stays in the pipe it came in on: gpg reads it from fd 3.
  exec 3<&0 </dev/null
  download() { "$SB_AWS" s3 cp --only-show-errors --no-progress "$@" "$SB_URL" -; }
  gpg_in=0
fi
w=$SB_WORK
stage=${SB_STAGE:-$w/stage}
tag=${SB_PACK_TAG:-}
# walk_stage: the staged tree walked into $w/staged (`<type> <octal mode> <links>
# <uid> <size> <path>\0` records), then set-id, sticky and world-writable bits
# stripped from every staged file and directory.
walk_stage() {
  find "$stage" -mindepth 1 -printf '%y %m %n %U %s %P\0' >"$w/staged"
  find "$stage" -mindepth 1 \( -type f -o -type d \) -perm /7002 \
    -exec chmod u-s,g-s,o-t,o-w -- {} +
}
if [ "$SB_MODE" = walk ]; then
  rm -f -- "$w/staged"
  walk_stage
  exit 0
fi
# SB_MODE=dirs, before a chain's packs are extracted side by side: the stage, and in it
# every directory named (NUL-separated, relative) in $SB_WORK/stage.dirs, made 0755 as
# tar makes a member's missing directories, so that no two readers ever make the same
# directory at once (tar gives a file up when another process makes its directory
# between tar's failed open and its own mkdir).
if [ "$SB_MODE" = dirs ]; then
  mkdir -m 700 -- "$stage"
  umask 022
  "$SB_PYTHON" - "$stage" "$w/stage.dirs" <<'PY'
import os, sys
stage, names = (os.fsencode(a) for a in sys.argv[1:3])
with open(names, "rb") as f:
    listed = f.read().split(b"\0")
wanted = set()
for name in listed:
    if not name:
        continue
    parts = name.split(b"/")
    if name.startswith(b"/") or b".." in parts:
        sys.exit("refusing to make %r: not a path inside the stage" % name)
    for i in range(1, len(parts) + 1):
        wanted.add(b"/".join(parts[:i]))
# A directory sorts before the directories below it: one mkdir each, in the stage
# just made (private to this run, so nothing in it can be a link).
fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
for name in sorted(wanted):
    try:
        os.mkdir(name, 0o755, dir_fd=fd)
    except FileExistsError:
        pass
PY
  rm -f -- "$w/stage.dirs"
  exit 0
fi
rm -f -- "$w/members" "$w/gpg.status" "$w/sha256" "$w/length" "$w/head" "$w/failed" \
  "$w/staged" "$w/avail" "$w/aws.err" "$w/tee.err" "$w/gpg.err" "$w/tar.err" \
  "$w/zstd.err" "$w/zstd.status" "$w/reserve"
if [ "${SB_DECOMPRESS:-}" = zstd ]; then need_zstd 3 "this backup was made with it"; fi
# tar's checkpoint arguments that keep the reserve while it extracts (none without one).
reserve_args=()
if [ -n "${SB_NEED_BYTES:-}" ]; then
  space=$(df -B1 --output=size,avail "$SB_SPACE_DIR" | tail -n 1)
  read -r size avail <<<"$space"
  printf '%s\n' "$avail" >"$w/avail"
  if [ "$avail" -lt "$SB_NEED_BYTES" ]; then
    echo "not enough free space in $SB_SPACE_DIR: need $SB_NEED_BYTES bytes, $avail available" >&2
    exit 40
  fi
  if below_reserve "$avail" "$SB_NEED_BYTES" "$size" "$SB_SPACE_DIR" "$w/reserve"; then
    exit 42
  fi
  # reserve: set by below_reserve (space.sh, which this file is appended to).
  # shellcheck disable=SC2154
  if [ "$reserve" -gt 0 ]; then
    # reserve.sh's inputs; a check every eighth of the reserve in tar's 10 KiB
    # records (no more often than every 100: 1 MiB), so that staging stops with most
    # of the reserve left.
    export SB_RESERVE_DIR=$SB_SPACE_DIR SB_RESERVE_BYTES=$reserve SB_RESERVE_FILE=$w/reserve
    records=$((reserve / 8 / 10240))
    if [ "$records" -lt 100 ]; then records=100; fi
    reserve_args=(--checkpoint="$records" --checkpoint-action="exec=$SB_RESERVE_SH")
  fi
fi
if [ "$gpg_in" = 5 ]; then checksum_start none; else checksum_start sum gate; fi
tar_common=(-vv --numeric-owner --quoting-style=escape --index-file "$w/members")
# Where tar extracts: the stage, or an older pack's own stage to pick its files from.
into=$stage
if [ -n "${SB_PACK_MEMBERS:-}" ]; then
  into=$w/pack.stage
  # The pack's files its backup's index does not assign to it (a later pack's
  # database, media superseded or gone since), one per line as they are: tar skips
  # them instead of writing them only for them to be removed. Their names are matched
  # whole and literally; the index's own files are never among them.
  if [ -f "$w/pack.exclude" ]; then
    tar_common+=(--anchored --no-wildcards --no-unquote --exclude-from "$w/pack.exclude")
  fi
fi
if [ "$SB_MODE" = extract ]; then
  if [ -n "${SB_STAGE_SHARED:-}" ]; then
    # Shared by the packs read side by side: made by the first, a dir (not a link) for
    # the others, in the backup's private work dir.
    mkdir -m 700 -- "$stage" 2>/dev/null || { [ -d "$stage" ] && [ ! -L "$stage" ]; }
  else
    mkdir -m 700 "$stage"
  fi
  if [ "$into" != "$stage" ]; then
    mkdir -m 700 -- "$into"
  elif [ -n "$tag" ]; then
    tar_common+=(--transform "s,^\\.synapse-backup/manifest\\.json\$,.synapse-backup/$tag.json,")
  fi
  # No --delay-directory-restore: tar's default already sets a directory's mode and
  # time once it is past the directory's members, which our archives keep together
  # (`tar -c` of a tree), while delaying every directory to the end makes GNU tar walk
  # its list of delayed directories for each member: quadratic in a media store's
  # shard dirs (60,000 files in 40,000 dirs took 19 s instead of 1.3 s).
  tar_args=(--extract --directory "$into" --preserve-permissions --no-same-owner
    "${reserve_args[@]}" "${tar_common[@]}")
else
  tar_args=(--extract --to-stdout "${tar_common[@]}")
fi
# In list mode with SB_VERIFY_DB (the database's member name), a second tar reads a
# copy of the decrypted stream and extracts only that member (and its -wal) into
# $SB_STAGE (default $w/stage; an incremental backup's database pack, read in a work
# dir of its own, stages it in its backup's), so that the caller can run restore's database check on it; it drains its
# input to the end, so the copy never sees a broken pipe.
db_pid=""
if [ "$SB_MODE" = list ] && [ -n "${SB_VERIFY_DB:-}" ]; then
  mkdir -m 700 "$stage"
  mkfifo "$w/db.fifo"
  {
    LC_ALL=C "$SB_TAR" --extract --directory "$stage" --no-same-owner \
      "${reserve_args[@]}" --no-wildcards -- "$SB_VERIFY_DB" "$SB_VERIFY_DB-wal" >/dev/null 2>"$w/dbtar.err"
    cat >/dev/null
  } <"$w/db.fifo" &
  db_pid=$!
fi
# untar: the pipeline's last stage. In list mode the members' contents are read to the
# end (so tar never sees a broken pipe) and only their first 64 KiB kept.
untar() {
  if [ "$SB_MODE" = extract ]; then
    # Directories the archive does not hold (an incremental pack archives files, no
    # directories) are made 0755, as Synapse (umask 022) makes its media dirs; every
    # archived member keeps its own mode (--preserve-permissions), and the stage
    # itself is 0700.
    umask 022
    LC_ALL=C "$SB_TAR" "${tar_args[@]}"
  elif [ -n "$db_pid" ]; then
    tee -- "$w/db.fifo" | LC_ALL=C "$SB_TAR" "${tar_args[@]}" |
      { head -c 65536 >"$w/head"; cat >/dev/null; }
  else
    LC_ALL=C "$SB_TAR" "${tar_args[@]}" | { head -c 65536 >"$w/head"; cat >/dev/null; }
  fi
}
# unpack: the pipeline's last stage, through `zstd -d` with SB_DECOMPRESS=zstd. Its
# status is untar's, or 3 when zstd failed for a reason of its own (not a broken pipe:
# tar stopped first), its status then in $w/zstd.status for zstd_stage.
unpack() {
  if [ "${SB_DECOMPRESS:-}" != zstd ]; then
    untar
    return
  fi
  local s
  "$SB_ZSTD" -q -d -c 2>"$w/zstd.err" | untar
  s=("${PIPESTATUS[@]}")
  if [ "${s[0]}" -ne 0 ] && [ "${s[0]}" -ne 141 ]; then
    printf '%s\n' "${s[0]}" >"$w/zstd.status"
    return 3
  fi
  return "${s[1]}"
}
# Stage names and stderr files, in pipeline order (read by common.sh's pipeline_finish).
# shellcheck disable=SC2034
names=(download tee gpg tar)
# shellcheck disable=SC2034
errs=("$w/aws.err" "$w/tee.err" "$w/gpg.err" "$w/tar.err")
set +e
download "$@" 2>"$w/aws.err" |
  checksum 2>"$w/tee.err" |
  "$SB_GPG" --batch --no-tty --no-symkey-cache --pinentry-mode loopback \
    --passphrase-fd 3 --status-file "$w/gpg.status" --decrypt <&"$gpg_in" 2>"$w/gpg.err" |
  unpack 2>"$w/tar.err"
st=("${PIPESTATUS[@]}")
# The gate refused what it read: the download then failed on the closed pipe, if at all.
if [ "${st[1]}" -eq 3 ]; then st[0]=0; fi
if [ -n "$db_pid" ]; then wait "$db_pid" || true; fi
set -e
# reserve.sh stopped a tar: the reserve, whatever the stages upstream did on the pipe.
if [ -s "$w/reserve" ]; then
  read -r left kept <"$w/reserve"
  echo "staging stopped: $left bytes free in $SB_SPACE_DIR, under the $kept kept free" >&2
  exit 42
fi
zstd_stage 3
# A full staging file system: tar says so, unless its stderr file could not be written
# either (it is on the same file system), so a failed tar beside almost no free space
# counts too.
if [ "$SB_MODE" = extract ] && [ "${st[3]}" -ne 0 ]; then
  left=$(df -B1 --output=avail "$w" 2>/dev/null | tail -n 1 | tr -d ' ') || left=""
  if grep -qs 'No space left on device' "$w/tar.err" || { [ -n "$left" ] && [ "$left" -lt 1048576 ]; }; then
    echo "no space left on device while staging in $w" >&2
    exit 41
  fi
fi
pipeline_finish upstream
if [ "$SB_MODE" = extract ]; then
  inner="$into/.synapse-backup/manifest.json"
  if [ "$into" = "$stage" ] && [ -n "$tag" ]; then inner="$stage/.synapse-backup/$tag.json"; fi
  if [ -f "$inner" ] && [ ! -L "$inner" ]; then head -c 65536 -- "$inner" >"$w/head"; fi
  if [ "$into" = "$stage" ] && [ -n "$tag" ]; then
    rm -f -- "$inner"
  elif [ "$into" != "$stage" ]; then
    # The named files (after the inner manifest) into the shared stage, each a regular
    # file reached through real directories (the pack's stage is read by directory
    # descriptors, never through a link), into real directories of the stage (each
    # opened below the last, never through a link), made 0755 as tar makes them if
    # missing; a named file the pack lacks is left for the caller's listing check to
    # name. One rename per file and a few calls per directory: 0.7 s for 99,000 files
    # of a 100,000-file pack, where a realpath of every name and its directory took 8 s.
    umask 022
    "$SB_PYTHON" - "$into" "$stage" "$w/pack.members" <<'PY'
import os, sys
src, dst, names = (os.fsencode(a) for a in sys.argv[1:4])
with open(names, "rb") as f:
    listed = set(f.read().split(b"\0")[1:])
listed.discard(b"")
flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
opened = {b"": os.open(dst, flags)}
def dst_dir(rel):
    fd = opened.get(rel)
    if fd is None:
        head, _, part = rel.rpartition(b"/")
        parent = dst_dir(head)
        try:
            os.mkdir(part, 0o755, dir_fd=parent)
        except FileExistsError:
            pass
        try:
            fd = os.open(part, flags, dir_fd=parent)
        except OSError as e:
            sys.exit("refusing to move into %r: not a directory of the stage (%s)" % (rel, e.strerror))
        opened[rel] = fd
    return fd
def move(sfd, rel):
    prefix = rel + b"/" if rel else b""
    subdirs = []
    with os.scandir(sfd) as entries:
        for e in entries:
            name = os.fsencode(e.name)
            if e.is_dir(follow_symlinks=False):
                subdirs.append(name)
            elif e.is_file(follow_symlinks=False) and prefix + name in listed:
                os.rename(name, name, src_dir_fd=sfd, dst_dir_fd=dst_dir(rel))
    for name in subdirs:
        child = os.open(name, flags, dir_fd=sfd)
        try:
            move(child, prefix + name)
        finally:
            os.close(child)
    # Only the stage's directories on the way to the one being read stay open.
    if rel and rel in opened:
        os.close(opened.pop(rel))
move(os.open(src, flags), b"")
PY
    rm -rf -- "$into" "$w/pack.members"
  elif [ -z "${SB_NO_WALK:-}" ]; then
    walk_stage
  fi
fi
