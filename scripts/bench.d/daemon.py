#!/usr/bin/env python3
"""Measures `lifeboat daemon` for scripts/bench.d/daemon.sh (run as root).

  daemon.py --user U --config CFG --lifeboat BIN --idle SECONDS --schedule-file F
      Starts `BIN --config CFG daemon` as user U (setuid in the child), then
      1. idle: for SECONDS, samples /proc every second: CPU seconds used (utime + stime) and the
         resident memory of the daemon (VmRSS; mean and peak);
      2. backup: replaces the line `full = ...` of CFG's schedule by one that fires within seconds
         (the contents of F), sends SIGHUP, and samples every 100 ms until `BIN list --json` shows
         a new full backup: the daemon's peak RSS and the peak summed RSS of its process tree;
      3. sends SIGTERM and waits for exit 0.
    Prints one line per phase.
"""
import json
import os
import pwd
import signal
import subprocess
import sys
import time

from measure import tree_rss_kib  # the same process-tree sum the backup benchmark reports

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
TICKS = os.sysconf("SC_CLK_TCK")


def arg(name):
    return sys.argv[sys.argv.index(f"--{name}") + 1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB


def main():
    user, config, lifeboat = arg("user"), arg("config"), arg("lifeboat")
    idle, schedule = float(arg("idle")), open(arg("schedule-file")).read().strip()
    account = pwd.getpwnam(user)

    def as_user():
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)

    def backups():
        out = subprocess.run([lifeboat, "--config", config, "list", "--json"], preexec_fn=as_user,
                             capture_output=True, text=True, check=True).stdout
        return [b["id"] for b in json.loads(out)["backups"] if b.get("kind") == "full"]

    log = open(os.path.join(os.path.dirname(config), "daemon.log"), "w")
    daemon = subprocess.Popen([lifeboat, "--config", config, "daemon"], preexec_fn=as_user, stdout=log,
                              stderr=subprocess.STDOUT, cwd="/")
    try:
        time.sleep(5)  # started, repository opened, first watch done
        if daemon.poll() is not None:
            sys.exit(f"error: the daemon exited with {daemon.returncode}; see {log.name}")
        start_cpu, samples, start = cpu_seconds(daemon.pid), [], time.monotonic()
        while time.monotonic() - start < idle:
            samples.append(rss_kib(daemon.pid))
            time.sleep(1)
        used = cpu_seconds(daemon.pid) - start_cpu
        elapsed = time.monotonic() - start
        print(f"  idle {elapsed / 60:.1f} min: CPU {used:.2f} s ({100 * used / elapsed:.3f} % of one core); "
              f"RSS mean {sum(samples) / len(samples) / 1024:.1f} MiB, peak {max(samples) / 1024:.1f} MiB")

        before = set(backups())
        text = open(config).read()
        lines = [schedule if line.startswith("schedule = ") else line for line in text.splitlines()]
        open(config, "w").write("\n".join(lines) + "\n")
        daemon.send_signal(signal.SIGHUP)
        peak, tree_peak, start = 0, 0, time.monotonic()
        last_check = 0.0
        while True:
            peak = max(peak, rss_kib(daemon.pid))
            tree_peak = max(tree_peak, tree_rss_kib(daemon.pid))
            now = time.monotonic()
            if now - last_check > 2:
                last_check = now
                if set(backups()) - before:
                    break
            if now - start > 1800:
                sys.exit(f"error: no scheduled backup within 30 minutes; see {log.name}")
            time.sleep(0.1)
        print(f"  scheduled backup (from SIGHUP to listed, {time.monotonic() - start:.0f} s): daemon RSS peak "
              f"{peak / 1024:.1f} MiB; its process tree peak {tree_peak / 1024:.1f} MiB")
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=600)
    print(f"  SIGTERM: exit status {daemon.returncode}")
    if daemon.returncode != 0:
        sys.exit(1)


main()
