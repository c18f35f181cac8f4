# The checksum stage's one pass over the encrypted stream: copies stdin to stdout and
# writes the stream's SHA-256 (`<hex>  -`) to argv[1] and its length to argv[2].
# Input: the program text arrives in $SB_HASH_PY and runs as `python3 -I -c`.
# Exit: 0, or non-zero when a read, write or the output files fail; dies of SIGPIPE
# (141 to bash) when its reader goes away, like the coreutils it replaces.
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
