"""Stop a process group when the netlab harness that started it dies.

netlab.supervisor starts one of these next to everything it supervises (a server, a peer, an
experiment's helper), in a session of its own, so it is no part of the measured process tree:

    python -I -S watchdog.py PGID GRACE_SECONDS [PATH ...]   (stdin: a pipe from the harness)

The harness holds the write end of the pipe. If the harness exits, crashes or is killed (a
notebook kernel restarted with SIGKILL), the read returns end-of-file and the watchdog sends
SIGTERM to the group, then SIGKILL after the grace period, and then removes the PATHs (a
workdir, a usage file in the temp folder): a killed harness cannot. A harness that stops the
group itself writes "d" (disarm) first, and the watchdog leaves quietly.

Why a process and not a thread inside the server: a peer's code (nginx, node) is not ours to
change, and one mechanism for everything is one mechanism to test. It imports nothing of
netlab (-I -S), so it starts in a few milliseconds.
"""

import os
import shutil
import signal
import sys
import time


def main() -> None:
    pgid, grace = int(sys.argv[1]), float(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # a Ctrl-C for the harness is not for us
    try:
        while True:
            chunk = os.read(0, 64)
            if not chunk:
                break                       # end-of-file: the harness is gone
            if b"d" in chunk:
                return                      # disarmed: the harness stopped the group itself
    except OSError:
        pass
    stop(pgid, grace)
    for path in sys.argv[3:]:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def stop(pgid: int, grace: float, alive=None) -> bool:
    """SIGTERM the group, SIGKILL after ``grace`` seconds; True once it is gone, False if some of
    it outlived the SIGKILL by ``grace`` too. ``alive()`` says whether anything of the group is
    left (by default: the group can still be signalled). This is netlab's one TERM-then-KILL
    sequence for a group: ``netlab.supervisor`` calls it too, with an ``alive`` that reaps."""
    if alive is None:
        alive = lambda: _signal(pgid, 0)            # noqa: E731
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal(pgid, sig)
        deadline = time.monotonic() + grace
        while alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        else:
            return True
    return False


def _signal(pgid: int, sig) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except OSError:
        return False                        # the group is gone


if __name__ == "__main__":
    main()
