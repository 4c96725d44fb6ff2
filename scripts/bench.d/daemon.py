#!/usr/bin/env python3
"""Measures `lifeboat daemon` for scripts/bench.d/daemon.sh (run as root).

  daemon.py --user U --config CFG --lifeboat BIN --idle SECONDS --schedule-file F --status-url URL
      Starts `BIN --config CFG daemon` as user U (setuid in the child, with U's HOME, USER and
      LOGNAME, as measure.py runs commands: a backup keeps its block values under the state
      directory in U's home), then
      1. idle: for SECONDS, samples /proc every second: CPU seconds used (utime + stime) and the
         resident memory of the daemon (VmRSS; mean and peak);
      2. backup: replaces the line `schedule = ...` of CFG by one that fires within seconds (the
         contents of F), sends SIGHUP, and samples every 100 ms until `BIN list --json` shows a
         new full backup: the daemon's peak RSS and the peak summed RSS of its process tree.
         Every 2 s it also reads the daemon's status (URL, its /status) and stops with an error
         and the end of the daemon's log as soon as the reload was refused, a backup run failed,
         no backup run started within a minute, or the daemon exited;
      3. sends SIGTERM and waits for exit 0.
    Prints one line per phase.
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

# The same process-tree sum the backup benchmark reports, and the same user and environment.
from measure import child_kwargs, tree_rss_kib

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
TICKS = os.sysconf("SC_CLK_TCK")
# How long after the SIGHUP a run of the backup job must have started (the schedule fires every
# few seconds), and how long the scheduled backup may take until it is listed.
FIRST_RUN_SECONDS = 60
BACKUP_SECONDS = 1800


def arg(name):
    return sys.argv[sys.argv.index(f"--{name}") + 1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB


def backup_job(status_url):
    with urllib.request.urlopen(status_url, timeout=10) as response:
        status = json.load(response)
    [job] = [job for job in status["jobs"] if job["job"] == "backup"]  # its schedule is set before and after
    return status["daemon"]["reload_error"], job


def main():
    user, config, lifeboat = arg("user"), arg("config"), arg("lifeboat")
    idle, schedule = float(arg("idle")), open(arg("schedule-file")).read().strip()
    status_url = arg("status-url")
    as_user = child_kwargs({"user": user, "cwd": "/"})
    log_path = os.path.join(os.path.dirname(config), "daemon.log")

    def fail(message):
        with open(log_path) as log_file:
            tail = log_file.read().splitlines()[-20:]
        sys.exit("\n".join([f"error: {message}; the end of {log_path}:", *tail]))

    def backups():
        listing = subprocess.run([lifeboat, "--config", config, "list", "--json"], capture_output=True, text=True,
                                 **as_user)
        if listing.returncode != 0:
            fail(f"`lifeboat list --json` failed: {listing.stderr.strip()}")
        return [b["id"] for b in json.loads(listing.stdout)["backups"] if b.get("kind") == "full"]

    log = open(log_path, "w")
    daemon = subprocess.Popen([lifeboat, "--config", config, "daemon"], stdout=log, stderr=subprocess.STDOUT,
                              **as_user)
    try:
        time.sleep(5)  # started, repository opened, first watch done
        if daemon.poll() is not None:
            fail(f"the daemon exited with {daemon.returncode}")
        start_cpu, samples, start = cpu_seconds(daemon.pid), [], time.monotonic()
        while time.monotonic() - start < idle:
            samples.append(rss_kib(daemon.pid))
            time.sleep(1)
        used = cpu_seconds(daemon.pid) - start_cpu
        elapsed = time.monotonic() - start
        print(f"  idle {elapsed / 60:.1f} min: CPU {used:.2f} s ({100 * used / elapsed:.3f} % of one core); "
              f"RSS mean {sum(samples) / len(samples) / 1024:.1f} MiB, peak {max(samples) / 1024:.1f} MiB")

        before = set(backups())
        _, job_before = backup_job(status_url)
        runs_before, failures_before = job_before["runs_total"], job_before["failures_total"]
        text = open(config).read()
        lines = [schedule if line.startswith("schedule = ") else line for line in text.splitlines()]
        with open(config, "w") as rewritten:
            rewritten.write("\n".join(lines) + "\n")
        daemon.send_signal(signal.SIGHUP)
        peak, tree_peak, start = 0, 0, time.monotonic()
        last_check, started = 0.0, False
        while True:
            if daemon.poll() is not None:
                fail(f"the daemon exited with {daemon.returncode} before the scheduled backup was listed")
            peak = max(peak, rss_kib(daemon.pid))
            tree_peak = max(tree_peak, tree_rss_kib(daemon.pid))
            now = time.monotonic()
            if now - last_check > 2:
                last_check = now
                if set(backups()) - before:
                    break
                reload_error, job = backup_job(status_url)
                if reload_error:
                    fail(f"the daemon refused the reload: {reload_error}")
                if job["failures_total"] > failures_before:
                    fail(f"the scheduled backup failed: {job['last_run']['error']}")
                started = started or job["running_since"] is not None or job["runs_total"] > runs_before
                if not started and now - start > FIRST_RUN_SECONDS:
                    fail(f"no backup run started within {FIRST_RUN_SECONDS} s of the reload ({schedule})")
            if now - start > BACKUP_SECONDS:
                fail(f"no scheduled backup listed within {BACKUP_SECONDS} s")
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
