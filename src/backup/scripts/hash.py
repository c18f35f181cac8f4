# The checksum stage's one pass over the encrypted stream: copies stdin to stdout and
# writes the stream's SHA-256 (`<hex>  -`) to argv[1] and its length to argv[2].
# With argv[3] (a file in the work dir), the running byte count replaces that file
# every half second (written to `<argv[3]>.tmp`, then renamed over it, so a reader
# never sees a torn number); failing to write it never fails the stage.
# With argv[4] = `gate` (a fetch), nothing is written before the stream's first packets
# are those of an encrypted message (`judge`, the rule of src/backup/packets.rs, which
# a test holds this copy to): else it exits 3 with the reason on stderr (4 when the
# stream ended before its first packets were whole: a download that failed may be the
# cause), and gpg never sees a byte of it.
# Input: the program text arrives in $SB_HASH_PY and runs as `python3 -I -c`.
# Exit: 0; 3 or 4 refused by the gate; non-zero when a read, write or the output
# files fail; dies of SIGPIPE (141 to bash) when its reader goes away, like the
# coreutils it replaces.
import hashlib, os, signal, sys, time
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
try:
    import fcntl
    for fd in (0, 1):
        fcntl.fcntl(fd, 1031, 1 << 20)
except Exception:
    pass
src = open(0, "rb", buffering=0, closefd=False)
out = open(1, "wb", buffering=0, closefd=False)
HEAD_MAX = 4096
NAMES = {1: "a public-key encrypted session key", 2: "a signature",
         3: "a symmetric-key encrypted session key", 4: "a one-pass signature",
         5: "a secret key", 6: "a public key", 7: "a secret key",
         8: "a compressed data packet",
         9: "symmetrically encrypted data without integrity protection",
         10: "a marker packet", 11: "a literal data packet", 12: "a trust packet",
         13: "a user id", 14: "a public key", 17: "a user attribute",
         18: "symmetrically encrypted and integrity protected data",
         19: "a modification detection code", 20: "AEAD encrypted data",
         21: "a padding packet"}
def header(b):
    # (tag, header length, body length or None), None when b ends inside it.
    if not b:
        return None
    ctb = b[0]
    if not ctb & 0x80:
        raise ValueError("its byte %#04x is no OpenPGP packet header (not binary OpenPGP data)" % ctb)
    if not ctb & 0x40:
        tag, kind = (ctb >> 2) & 0x0f, ctb & 3
        if kind == 3:
            return tag, 1, None
        size = 1 << kind
        if len(b) < 1 + size:
            return None
        return tag, 1 + size, int.from_bytes(b[1:1 + size], "big")
    tag = ctb & 0x3f
    if len(b) < 2:
        return None
    o = b[1]
    if o < 192:
        return tag, 2, o
    if o < 224:
        return (tag, 3, ((o - 192) << 8) + b[2] + 192) if len(b) >= 3 else None
    if o == 255:
        return (tag, 6, int.from_bytes(b[2:6], "big")) if len(b) >= 6 else None
    return tag, 2, None
def judge(head, ended):
    # True (encrypted), None (more bytes needed) or the reason it is refused.
    at = keys = 0
    while True:
        try:
            h = header(head[at:])
        except ValueError as e:
            return str(e) if at == 0 else "at byte %d, %s" % (at, e)
        if h is None:
            if ended:
                return "it ends after %d bytes, before its first packets are whole" % len(head)
            if len(head) >= HEAD_MAX:
                return "its first %d bytes hold no encrypted data packet" % HEAD_MAX
            return None
        tag, size, body = h
        if tag == 3 and keys < 16:
            if body is None:
                return "its session key packet has no definite length"
            at += size + body
            keys += 1
            if at >= HEAD_MAX:
                return "its session key packets run past its first %d bytes" % HEAD_MAX
        elif tag in (18, 20) and keys > 0:
            return True
        elif tag == 3:
            return "it starts with more than 16 session key packets"
        elif keys == 0:
            return ("its first packet is %s (tag %d), where an encrypted backup starts "
                    "with a symmetric-key encrypted session key (tag 3)"
                    % (NAMES.get(tag, "an unknown packet"), tag))
        else:
            return ("its session key is followed by %s (tag %d), not by encrypted data "
                    "(tag 18)" % (NAMES.get(tag, "an unknown packet"), tag))
h = hashlib.sha256()
buf = bytearray(1 << 20)
view = memoryview(buf)
progress = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
every = 0.5
def report(count):
    try:
        tmp = progress + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % count)
        os.replace(tmp, progress)
    except OSError:
        pass
if progress:
    report(0)
def write(data):
    done = 0
    while done < len(data):
        done += out.write(data[done:])
# The bytes read while the gate judges the stream's head (None: passing through).
held = bytearray() if len(sys.argv) > 4 and sys.argv[4] == "gate" else None
def opened(ended):
    verdict = judge(bytes(held), ended)
    if verdict is None:
        return False
    if verdict is not True:
        sys.stderr.write(verdict + "\n")
        sys.exit(4 if ended else 3)
    write(held)
    return True
last = time.monotonic()
n = 0
while True:
    k = src.readinto(buf)
    if not k:
        break
    h.update(view[:k])
    if held is None:
        write(view[:k])
    else:
        held += view[:k]
        if opened(False):
            held = None
    n += k
    if progress:
        now = time.monotonic()
        if now - last >= every:
            report(n)
            last = now
if held is not None:
    opened(True)
with open(sys.argv[1], "w") as f:
    f.write(h.hexdigest() + "  -\n")
with open(sys.argv[2], "w") as f:
    f.write("%d\n" % n)
if progress:
    report(n)
