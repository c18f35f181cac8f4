# The checksum stage's one pass over the encrypted stream: copies stdin to stdout and
# writes the stream's SHA-256 (`<hex>  -`) to argv[1] and its length to argv[2].
# With argv[3] (a file in the work dir), the running byte count replaces that file
# every half second (written to `<argv[3]>.tmp`, then renamed over it, so a reader
# never sees a torn number); failing to write it never fails the stage.
# Input: the program text arrives in $SB_HASH_PY and runs as `python3 -I -c`.
# Exit: 0, or non-zero when a read, write or the output files fail; dies of SIGPIPE
# (141 to bash) when its reader goes away, like the coreutils it replaces.
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
last = time.monotonic()
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
    if progress:
        now = time.monotonic()
        if now - last >= every:
            report(n)
            last = now
with open(sys.argv[1], "w") as f:
    f.write(h.hexdigest() + "  -\n")
with open(sys.argv[2], "w") as f:
    f.write("%d\n" % n)
if progress:
    report(n)
