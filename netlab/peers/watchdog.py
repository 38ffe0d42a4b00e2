"""Stop a peer's process group when the netlab harness that started it dies.

netlab.external starts one of these next to every peer (nginx, node, java, http.server), in its
own session so it is no part of the peer's measured process tree:

    python -I -S watchdog.py PGID GRACE_SECONDS [WORKDIR]   (stdin: a pipe from the harness)

The harness holds the write end of the pipe. If the harness exits, crashes or is killed (a
notebook kernel restarted with SIGKILL), the read returns end-of-file and the watchdog sends
SIGTERM to the peer's group, then SIGKILL after the grace period, and then removes the peer's
WORKDIR (its config and log, in the temp folder): a killed harness cannot. A harness that
stops the peer itself writes "d" (disarm) first, and the watchdog leaves quietly. The netlab
models need no watchdog: their server process watches such a pipe itself (netlab.lifecycle); a
peer's code is not ours to change.
"""

import os
import shutil
import signal
import sys
import time


def main() -> None:
    pgid, grace = int(sys.argv[1]), float(sys.argv[2])
    workdir = sys.argv[3] if len(sys.argv) > 3 else None
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while True:
            chunk = os.read(0, 64)
            if not chunk:
                break                       # end-of-file: the harness is gone
            if b"d" in chunk:
                return                      # disarmed: the harness stopped the peer itself
    except OSError:
        pass
    stop(pgid, grace)
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def stop(pgid: int, grace: float) -> None:
    """SIGTERM the group, SIGKILL after ``grace`` seconds; return once it is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except OSError:
            return                          # the group is gone already
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except OSError:
                return
            time.sleep(0.05)


if __name__ == "__main__":
    main()
