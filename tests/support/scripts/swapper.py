"""Swaps every entry created under a work base for a symlink to a victim file, as fast
as inotify reports it: the workload user's side of the chown race.

usage: swapper.py BASE VICTIM MODE   (MODE: `dirs` swaps work dirs, `files` the files
made in them). Prints `ready` once watching; on SIGTERM prints the number of swaps.
"""
import ctypes
import os
import signal
import struct
import sys

base, victim, mode = sys.argv[1], sys.argv[2], sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
IN_CREATE, IN_MOVED_TO, IN_ISDIR = 0x100, 0x80, 0x40000000
fd = libc.inotify_init()
watches = {}
swaps = 0


def watch(path):
    wd = libc.inotify_add_watch(fd, path.encode(), IN_CREATE | IN_MOVED_TO)
    if wd >= 0:
        watches[wd] = path


def swap(path):
    global swaps
    try:
        os.rename(path, path + ".moved")
        os.symlink(victim, path)
        swaps += 1
    except OSError:
        pass


def done(*_):
    print(swaps, flush=True)
    os._exit(0)


signal.signal(signal.SIGTERM, done)
watch(base)
print("ready", flush=True)
while True:
    buf = os.read(fd, 65536)
    i = 0
    while i < len(buf):
        wd, mask, _cookie, length = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16 : i + 16 + length].rstrip(b"\0").decode(errors="replace")
        i += 16 + length
        parent = watches.get(wd)
        if parent is None or name.endswith(".moved"):
            continue
        path = os.path.join(parent, name)
        if mask & IN_ISDIR:
            if parent == base and name.startswith(".synapse-backup-"):
                if mode == "dirs":
                    swap(path)
                else:
                    watch(path)
        elif mode == "files" and parent != base:
            swap(path)
