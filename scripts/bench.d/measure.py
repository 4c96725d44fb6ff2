#!/usr/bin/env python3
"""Helpers for scripts/bench.d/backup-vs-pgbackrest.sh (run as root).

  measure.py run  --user U --cwd DIR --out FILE -- CMD...
      Runs CMD as user U (setuid in the child, no su/runuser process in the tree), samples every
      100 ms the summed RSS of CMD's whole process tree (from /proc), and writes one JSON object to
      FILE: rc, wall_s, tree_peak_kib (peak summed RSS, sampled) and proc_max_kib (largest single
      process, ru_maxrss of the waited-for children, what GNU `time -v` reports). CMD's stdout goes
      to FILE.stdout, stderr to FILE.stderr.
  measure.py seq  --user U --cwd DIR -- CMD... {} ... -- FILE...
      Runs CMD once per FILE, sequentially, with {} replaced by FILE, and prints one line per call:
      the wall time in milliseconds. Stops with an error if a call fails.
"""
import json
import os
import pwd
import resource
import subprocess
import sys
import threading
import time

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def tree_rss_kib(root):
    children = {}
    rss = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/statm") as f:
                resident = int(f.read().split()[1])
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = resident * PAGE_KIB
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def parse(argv):
    opts = {}
    while argv and argv[0].startswith("--") and argv[0] != "--":
        opts[argv[0][2:]] = argv[1]
        argv = argv[2:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    return opts, argv


def child_kwargs(opts):
    user = pwd.getpwnam(opts.get("user", "postgres"))
    env = dict(os.environ, HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    return dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd=opts.get("cwd", "/"), env=env)


def run(argv):
    opts, cmd = parse(argv)
    out = opts["out"]
    peak = [0]
    with open(out + ".stdout", "wb") as so, open(out + ".stderr", "wb") as se:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, **child_kwargs(opts))
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss_kib(proc.pid))
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait()
        wall = time.monotonic() - start
        done.set()
        sampler.join()
    result = dict(rc=rc, wall_s=wall, tree_peak_kib=peak[0],
                  proc_max_kib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    with open(out, "w") as f:
        json.dump(result, f)
    return 0 if rc == 0 else 1


def seq(argv):
    opts, rest = parse(argv)
    split = rest.index("--")
    template, files = rest[:split], rest[split + 1:]
    kwargs = child_kwargs(opts)
    for path in files:
        cmd = [path if part == "{}" else part for part in template]
        start = time.monotonic_ns()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)
        elapsed = time.monotonic_ns() - start
        if proc.returncode != 0:
            sys.stderr.write(f"error: {' '.join(cmd)} failed ({proc.returncode}):\n")
            sys.stderr.write(proc.stderr.decode(errors="replace"))
            return 1
        print(f"{elapsed / 1e6:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    sys.exit({"run": run, "seq": seq}[mode](args))
