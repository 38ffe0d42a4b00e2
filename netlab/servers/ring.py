"""io_uring's two rings, through its three system calls: the few pieces of liburing the
``uring`` model needs, in Python.

Why not the PyPI ``liburing`` binding: its wheels (2026.3.25 and 2026.3.30, the only ones
without a C toolchain) are compiled for AVX-512, so ``liburing.Ring()`` dies with SIGILL on
CPUs without it (AMD before Zen 4, Intel 12th-14th generation Core): the whole process, a
Jupyter kernel included, not an exception. This needs only ctypes and mmap.

What a ring is: ``io_uring_setup`` returns an fd whose memory we map. The submission queue
(SQ) is an array of 64-byte entries (SQEs) we fill and a tail index we advance; the completion
queue (CQ) is an array of 16-byte entries (CQEs) the kernel fills and a head index we advance.
``io_uring_enter`` tells the kernel how many new SQEs there are and, if asked, waits for CQEs:
one system call for a whole batch of operations.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
import sys

# opcodes (include/uapi/linux/io_uring.h)
POLL_ADD, TIMEOUT, ACCEPT, ASYNC_CANCEL, CLOSE, SEND, RECV = 6, 11, 13, 14, 19, 26, 27
NEEDED = {"ACCEPT": ACCEPT, "RECV": RECV, "SEND": SEND, "POLL_ADD": POLL_ADD,
          "TIMEOUT": TIMEOUT, "ASYNC_CANCEL": ASYNC_CANCEL, "CLOSE": CLOSE}   # all in 5.6
ACCEPT_MULTISHOT = 1            # in the SQE's ioprio field (Linux 5.19)
CQE_F_MORE = 2                  # a multishot operation will complete again
ENTER_GETEVENTS = 1
# Setup flag (Linux 5.19): a completion found while we run waits for our next system call
# instead of interrupting us (an inter-processor interrupt, dear in a VM) to be posted
COOP_TASKRUN = 1 << 8
# SQ slots of the model's ring; the kernel makes the CQ twice that, and completions beyond it
# wait in the kernel, not lost (since 5.5)
ENTRIES = 1024
_OFF_SQ_RING, _OFF_CQ_RING, _OFF_SQES = 0, 0x8000000, 0x10000000
_REGISTER_PROBE = 8
# syscall numbers: the same on every architecture Linux added them to together (not alpha)
_SETUP, _ENTER, _REGISTER = 425, 426, 427

_SQE = struct.Struct("=BBHiQQIIQHHiQQ")       # opcode flags ioprio fd off addr len op_flags
_CQE = struct.Struct("=QiI")                  # user_data res flags     user_data ...
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
if _libc is not None:
    _libc.syscall.restype = ctypes.c_long


def _sys(nr, *args) -> int:
    r = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def address(buf) -> int:
    """Where ``buf`` (bytes, or a ctypes buffer) lives: the kernel reads or writes it there, so
    it must stay referenced until the operation's completion arrives."""
    return ctypes.cast(buf, ctypes.c_void_p).value if isinstance(buf, bytes) \
        else ctypes.addressof(buf)


class Ring:
    """One io_uring instance: ``prep`` fills SQEs, ``enter`` submits them (and waits),
    ``reap`` takes the CQEs. One thread uses it; nothing here blocks but ``enter``."""

    def __init__(self, entries: int = 256, flags: int = 0):
        params = ctypes.create_string_buffer(120)          # struct io_uring_params
        struct.pack_into("I", params, 8, flags)            # IORING_SETUP_* (COOP_TASKRUN)
        self.fd = _sys(_SETUP, entries, ctypes.addressof(params))
        head = struct.unpack_from("6I", params, 0)    # sq_entries cq_entries flags ... features
        sq = struct.unpack_from("7I", params, 40)     # offsets: head tail mask entries .. array
        cq = struct.unpack_from("6I", params, 80)     # offsets: head tail mask entries .. cqes
        self.entries, cq_entries, self.features = head[0], head[1], head[5]
        self.maps = []
        try:
            self.sq = self._map(sq[6] + self.entries * 4, _OFF_SQ_RING)
            self.cq = self._map(cq[5] + cq_entries * _CQE.size, _OFF_CQ_RING)
            self.sqes = self._map(self.entries * _SQE.size, _OFF_SQES)
        except BaseException:
            self.close()
            raise
        self.sq_head, self.sq_tail, self.sq_array = sq[0], sq[1], sq[6]
        self.sq_mask = struct.unpack_from("I", self.sq, sq[2])[0]
        self.cq_head, self.cq_tail, self.cq_cqes = cq[0], cq[1], cq[5]
        self.cq_mask = struct.unpack_from("I", self.cq, cq[2])[0]
        self.tail = self._get(self.sq, self.sq_tail)       # ours: SQEs filled, maybe unsubmitted
        self.enters = 0                                    # io_uring_enter calls made

    def _map(self, size, offset):
        m = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                      offset=offset)
        self.maps.append(m)
        return m

    @staticmethod
    def _get(m, off):
        return struct.unpack_from("I", m, off)[0]

    def pending(self) -> int:
        """SQEs filled but not yet consumed by the kernel."""
        return (self.tail - self._get(self.sq, self.sq_head)) & 0xFFFFFFFF

    def prep(self, opcode, fd, user_data, addr=0, length=0, off=0, op_flags=0, ioprio=0):
        """Fill the next SQE (submitting first if the queue is full) and publish it."""
        if self.pending() >= self.entries:
            self.enter(wait=False)
            if self.pending() >= self.entries:  # the kernel took none: a slot would be lost
                raise OSError(errno.EBUSY, "io_uring's submission queue is full and the kernel "
                              "takes no more until its completions are reaped")
        i = self.tail & self.sq_mask
        _SQE.pack_into(self.sqes, i * _SQE.size, opcode, 0, ioprio, fd, off, addr, length,
                       op_flags, user_data, 0, 0, 0, 0, 0)
        struct.pack_into("I", self.sq, self.sq_array + 4 * i, i)
        self.tail = (self.tail + 1) & 0xFFFFFFFF
        struct.pack_into("I", self.sq, self.sq_tail, self.tail)   # the kernel may take it now

    def enter(self, wait: bool) -> None:
        """Submit every SQE filled so far and, if ``wait``, sleep until a CQE is there: one
        system call. A signal ends the wait early (its Python handler runs on return)."""
        self.enters += 1
        try:
            _sys(_ENTER, self.fd, self.pending(), 1 if wait else 0,
                 ENTER_GETEVENTS if wait else 0, 0, 0)
        except InterruptedError:
            pass
        except OSError as e:                # EAGAIN/EBUSY: completions must be reaped first
            if e.errno not in (errno.EAGAIN, errno.EBUSY):
                raise

    def reap(self) -> list:
        """The CQEs the kernel has posted, as (user_data, res, flags); their slots freed."""
        head, tail = self._get(self.cq, self.cq_head), self._get(self.cq, self.cq_tail)
        out = [_CQE.unpack_from(self.cq, self.cq_cqes + ((h & self.cq_mask) * _CQE.size))
               for h in range(head, head + ((tail - head) & 0xFFFFFFFF))]
        struct.pack_into("I", self.cq, self.cq_head, tail)        # the slots are the kernel's
        return out

    def supported(self) -> set:
        """The opcodes this kernel has (IORING_REGISTER_PROBE, Linux 5.6)."""
        probe = ctypes.create_string_buffer(16 + 256 * 8)
        _sys(_REGISTER, self.fd, _REGISTER_PROBE, ctypes.addressof(probe), 256)
        n = probe.raw[1]
        return {probe.raw[16 + 8 * i] for i in range(n)
                if struct.unpack_from("H", probe, 16 + 8 * i + 2)[0] & 1}

    def close(self) -> None:
        """Unmap and close: the kernel cancels whatever is still in flight."""
        for m in self.maps:
            m.close()
        self.maps = []
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


FEAT_FAST_POLL = 1 << 5         # a recv that must wait arms a poll, not a kernel thread (5.7)
DISABLED = "/proc/sys/kernel/io_uring_disabled"     # 0 allowed, 1 a group only, 2 nobody


def support() -> tuple:
    """(True, "") when the uring model can run here, else (False, one sentence why not).
    It sets up (and tears down) a ring: call it once, lazily (``servers.FEATURES``)."""
    if _libc is None:
        return False, "needs io_uring, which is Linux-only (5.7 or later)"
    machine, release = os.uname().machine, os.uname().release
    if machine not in ("x86_64", "amd64"):
        # x86 keeps plain stores and loads in order; elsewhere the ring's head and tail need
        # the barriers liburing uses (smp_store_release, smp_load_acquire), which ctypes lacks
        return False, (f"the uring model's ring is written for x86-64's memory ordering, and "
                       f"this is {machine}")
    try:
        ring = Ring(ENTRIES)            # the size the model uses: on 5.7-5.11 it is locked memory
    except OSError as e:
        disabled = "0"
        try:
            if e.errno == errno.EPERM:  # only a refusal can be the sysctl's doing
                with open(DISABLED) as f:
                    disabled = f.read().strip()
        except OSError:
            pass
        if disabled == "2":
            return False, "io_uring is switched off here (/proc/sys/kernel/io_uring_disabled is 2)"
        if disabled == "1":
            return False, ("io_uring is allowed only to the group in /proc/sys/kernel/"
                           "io_uring_group (io_uring_disabled is 1), and this user is not in it")
        if e.errno == errno.ENOSYS:
            return False, (f"io_uring_setup does not exist here (ENOSYS): the kernel ({release}) "
                           "is older than 5.1 or built without io_uring, or a container's "
                           "seccomp filter hides it")
        if e.errno == errno.EPERM:
            return False, ("io_uring_setup was refused (EPERM): a container's seccomp filter "
                           "(Docker's default profile blocks io_uring) or a security policy")
        if e.errno == errno.ENOMEM:
            return False, (f"io_uring_setup could not lock the ring's memory (ENOMEM): kernels "
                           f"before 5.12 ({release}) count it against `ulimit -l`; raise it")
        return False, f"io_uring_setup failed: {e.strerror}"
    try:
        try:
            ops = ring.supported()
        except OSError:                 # EINVAL: no IORING_REGISTER_PROBE, older than 5.6
            ops = set()
        missing = [name for name, op in NEEDED.items() if op not in ops]
        if missing:
            return False, (f"this kernel's io_uring ({release}) lacks {', '.join(missing)}: "
                           "the uring model needs Linux 5.7 or later")
        if not ring.features & FEAT_FAST_POLL:
            return False, (f"this kernel's io_uring ({release}) lacks IORING_FEAT_FAST_POLL "
                           "(Linux 5.7): each waiting recv would take a kernel worker thread")
    finally:
        ring.close()
    return True, ""


def multishot_accept(release: str = None) -> str:
    """Why multishot accept cannot be used here ('' when it can): it needs Linux 5.19, and
    a kernel without it would fail the accept with EINVAL."""
    release = release or (os.uname().release if _libc is not None else "not Linux")
    try:
        if tuple(int(x) for x in release.split("-")[0].split(".")[:2]) >= (5, 19):
            return ""
    except ValueError:
        pass
    return f"multishot=True needs IORING_ACCEPT_MULTISHOT, Linux 5.19 or later (this is {release})"
