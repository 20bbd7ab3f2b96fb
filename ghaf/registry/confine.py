"""The model checker's child confines itself: Landlock for files, TCP and signals, seccomp
for the system calls Landlock does not cover (see docs/adr/0013-model-checker-confinement.md).

:func:`confine` runs first in the child (``ghaf/registry/checker.py``), while it is still
one thread and before it imports numpy or reads the model. Afterwards the process, and
anything it starts, can

- read only the interpreter's and the libraries' files (the standard library,
  site-packages, the ghaf package itself, ``/usr``, ``/lib*``, the loader cache), its own
  ``/proc/<pid>``, and a few CPU description files; write only the job's folder;
- not connect or bind TCP (Landlock ABI 4), reach abstract unix sockets or signal
  processes outside itself (ABI 6), and not execute any file;
- not create sockets of any kind, nor use ptrace, process_vm_*, io_uring, bpf,
  perf_event_open, the kernel keyring, mounts or new namespaces (seccomp, EPERM).

The server names the paths that must never be readable (its home, database, master key,
keyring, artifact store); a readable root that holds one is replaced by its children, and
a root inside one is refused. Only the standard library and ctypes are used here: this
module is loaded before the ghaf package (whose import pulls in numpy and its threads).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import site
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# --- Landlock (include/uapi/linux/landlock.h) -------------------------------------------
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
FILE_ONLY = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

READ = FS_READ_FILE | FS_READ_DIR
WRITE = (
    READ | FS_WRITE_FILE | FS_TRUNCATE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_DIR | FS_MAKE_REG
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


# --- seccomp (include/uapi/linux/seccomp.h, filter.h, audit.h) --------------------------
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
RET_KILL_PROCESS, RET_ERRNO, RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
LD_W_ABS, JMP_JEQ_K, JMP_JGE_K, JMP_JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
CLONE_NAMESPACES = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
X32_BIT = 0x40000000

# Refused with EPERM: every socket (TCP, UDP, unix: PostgreSQL's socket, ...), the ways
# to reach another process's memory or file descriptors, io_uring (which performs calls
# seccomp never sees), the kernel keyring, BPF and perf, mounts, namespaces, modules.
DENIED = (
    "socket",
    "socketpair",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "unshare",
    "setns",
    "open_by_handle_at",
    "name_to_handle_at",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
)
# System call numbers (arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h).
_X86_64 = """
socket 41 socketpair 53 clone 56 ptrace 101 pivot_root 155 chroot 161 mount 165 umount2 166
init_module 175 delete_module 176 kexec_load 246 add_key 248 request_key 249 keyctl 250
unshare 272 perf_event_open 298 name_to_handle_at 303 open_by_handle_at 304 setns 308
process_vm_readv 310 process_vm_writev 311 finit_module 313 kexec_file_load 320 bpf 321
userfaultfd 323
"""
_AARCH64 = """
umount2 39 mount 40 pivot_root 41 chroot 51 unshare 97 kexec_load 104 init_module 105
delete_module 106 ptrace 117 socket 198 socketpair 199 add_key 217 request_key 218 keyctl 219
clone 220 perf_event_open 241 name_to_handle_at 264 open_by_handle_at 265 setns 268
process_vm_readv 270 process_vm_writev 271 finit_module 273 bpf 280 userfaultfd 282
kexec_file_load 294
"""
_COMMON = """
io_uring_setup 425 io_uring_enter 426 io_uring_register 427 open_tree 428 move_mount 429
fsopen 430 fsmount 432 fspick 433 clone3 435 pidfd_getfd 438 process_madvise 440
mount_setattr 442
"""


def _numbers(*tables: str) -> dict[str, int]:
    words = " ".join(tables).split()
    return {name: int(number) for name, number in zip(words[::2], words[1::2], strict=True)}


ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (0xC000003E, _numbers(_X86_64, _COMMON)),  # AUDIT_ARCH_X86_64
    "aarch64": (0xC00000B7, _numbers(_AARCH64, _COMMON)),  # AUDIT_ARCH_AARCH64
}


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


class Unconfinable(Exception):
    """This kernel (or this layout of files) does not let the child confine itself."""


@dataclass(frozen=True)
class Confinement:
    landlock_abi: int
    readable: tuple[str, ...]
    writable: tuple[str, ...]
    tcp_denied: bool
    scoped: bool
    seccomp: bool = True
    denied_syscalls: tuple[str, ...] = field(default=DENIED)

    def as_dict(self) -> dict[str, object]:
        return {
            "landlock_abi": self.landlock_abi,
            "readable": list(self.readable),
            "writable": list(self.writable),
            "tcp_denied": self.tcp_denied,
            "scoped": self.scoped,
            "seccomp": self.seccomp,
        }


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _syscall(libc: ctypes.CDLL, number: int, *args: object) -> int:
    result = int(libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers; 0 when it has none (or it is off)."""
    if platform.system() != "Linux":
        return 0
    try:
        return _syscall(
            _libc(), SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
            ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
        )  # fmt: skip
    except OSError:
        return 0


# --- what may be read ---------------------------------------------------------------------


def interpreter_roots() -> list[str]:
    """What the interpreter and its libraries read: the standard library, site-packages,
    the ghaf package (not the folder holding it: with an editable install that is the
    repository, whose ``.ghaf`` may be the server's home), the shared libraries, and the
    CPU description numpy, OpenBLAS and joblib look at."""
    roots: list[str] = []
    for scheme_vars in (None, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        paths = sysconfig.get_paths(vars=scheme_vars) if scheme_vars else sysconfig.get_paths()
        roots += [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    roots += site.getsitepackages()
    roots += [p for p in sys.path if p and os.path.isdir(p) and p.endswith("-packages")]
    roots.append(str(Path(__file__).resolve().parents[1]))  # ghaf/
    libdir = sysconfig.get_config_var("LIBDIR")
    if isinstance(libdir, str) and os.path.isdir(libdir):
        roots += [os.path.join(libdir, n) for n in os.listdir(libdir) if n.startswith("libpython")]
    roots += [
        "/usr",
        "/lib",
        "/lib64",
        "/lib32",
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d",
        "/etc/localtime",
        f"/proc/{os.getpid()}",  # /proc/self, resolved: never another process's
        "/proc/cpuinfo",
        "/proc/meminfo",
        "/sys/devices/system/cpu",
        "/sys/devices/system/node",
        "/sys/fs/cgroup",
    ]
    return roots


DEVICES = {
    "/dev/null": FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE | FS_IOCTL_DEV,
    "/dev/zero": FS_READ_FILE,
    "/dev/urandom": FS_READ_FILE,
    "/dev/random": FS_READ_FILE,
}


def _real(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.fspath(path))


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def keep_out(roots: Iterable[str], protected: Sequence[str]) -> list[str]:
    """``roots`` with every root that holds a protected path replaced by its children
    (recursively, so only the protected path itself is left out). A root inside a
    protected path cannot be granted at all: :class:`Unconfinable`."""
    kept: list[str] = []
    guarded = [_real(p) for p in protected]

    def add(root: str) -> None:
        root = _real(root)
        if not os.path.exists(root):
            return
        for secret in guarded:
            if _inside(root, secret):
                raise Unconfinable(f"{root} is needed by the checker but lies in {secret}")
        if not any(_inside(secret, root) for secret in guarded):
            kept.append(root)
            return
        with os.scandir(root) as entries:
            for entry in entries:
                if _real(entry.path) not in guarded:
                    add(entry.path)

    for root in roots:
        add(root)
    return sorted(set(kept))


# --- applying it --------------------------------------------------------------------------


def _landlock(abi: int, readable: Sequence[str], writable: Sequence[str]) -> None:
    libc = _libc()
    handled_fs = (1 << 13) - 1
    handled_fs |= FS_REFER if abi >= 2 else 0
    handled_fs |= FS_TRUNCATE if abi >= 3 else 0
    handled_fs |= FS_IOCTL_DEV if abi >= 5 else 0
    attr = _RulesetAttr(
        handled_access_fs=handled_fs,
        handled_access_net=NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
        scoped=SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0,
    )
    size = 8 if abi < 4 else 16 if abi < 6 else ctypes.sizeof(_RulesetAttr)
    ruleset = _syscall(
        libc, SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
        ctypes.c_uint32(0),
    )  # fmt: skip
    try:
        grants = [(p, READ) for p in readable] + [(p, WRITE) for p in writable]
        grants += [(p, a) for p, a in DEVICES.items() if os.path.exists(p)]
        for path, access in grants:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                allowed = access & handled_fs
                if not os.path.isdir(path):
                    allowed &= FILE_ONLY
                rule = _PathBeneathAttr(allowed_access=allowed, parent_fd=fd)
                _syscall(
                    libc, SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset),
                    ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule),
                    ctypes.c_uint32(0),
                )  # fmt: skip
            finally:
                os.close(fd)
        _syscall(libc, SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)


def seccomp_program(arch: str) -> list[tuple[int, int, int, int]]:
    """The BPF filter: kill on a foreign architecture (or x86_64's x32 calls), EPERM for
    DENIED and for clone with namespace flags, ENOSYS for clone3 (its flags sit behind a
    pointer a filter cannot read; glibc then falls back to clone), allow the rest."""
    audit_arch, numbers = ARCHES[arch]
    prog = [
        (LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (JMP_JEQ_K, 1, 0, audit_arch),
        (RET_K, 0, 0, RET_KILL_PROCESS),
        (LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if arch == "x86_64":
        prog += [(JMP_JGE_K, 0, 1, X32_BIT), (RET_K, 0, 0, RET_KILL_PROCESS)]
    for name in DENIED:
        prog += [(JMP_JEQ_K, 0, 1, numbers[name]), (RET_K, 0, 0, RET_ERRNO | errno.EPERM)]
    prog += [(JMP_JEQ_K, 0, 1, numbers["clone3"]), (RET_K, 0, 0, RET_ERRNO | errno.ENOSYS)]
    prog += [
        (JMP_JEQ_K, 0, 3, numbers["clone"]),
        (LD_W_ABS, 0, 0, 16),  # args[0] (the flags), low 32 bits
        (JMP_JSET_K, 0, 1, CLONE_NAMESPACES),
        (RET_K, 0, 0, RET_ERRNO | errno.EPERM),
        (RET_K, 0, 0, RET_ALLOW),
    ]
    return prog


def _seccomp(arch: str) -> None:
    prog = seccomp_program(arch)
    filters = (_SockFilter * len(prog))(*(_SockFilter(*op) for op in prog))
    fprog = _SockFprog(len(prog), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    libc = _libc()
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        code = ctypes.get_errno()
        raise Unconfinable(f"seccomp is unavailable: {os.strerror(code)}")


def plan(
    *, writable: Sequence[str | os.PathLike[str]], protected: Sequence[str]
) -> tuple[list[str], list[str]]:
    """What :func:`confine` would grant: (readable roots, writable roots); raises
    :class:`Unconfinable` for a layout that cannot keep ``protected`` out."""
    write_roots = [_real(p) for p in writable]
    for root in write_roots:
        if not os.path.isdir(root):
            raise Unconfinable(f"the job folder {root} does not exist")
        for secret in map(_real, protected):  # granted whole: new files go straight in
            if _inside(secret, root) or _inside(root, secret):
                raise Unconfinable(f"the job folder {root} holds or lies in {secret}")
    return keep_out(interpreter_roots(), protected), write_roots


def confine(*, writable: Sequence[str | os.PathLike[str]], protected: Sequence[str]) -> Confinement:
    """Confine this process for good (see the module's docstring), or raise
    :class:`Unconfinable`. Never call it in a process that has more to do than the job."""
    arch = platform.machine()
    if platform.system() != "Linux" or arch not in ARCHES:
        raise Unconfinable(f"confinement needs Linux on x86_64 or aarch64, not {arch}")
    abi = landlock_abi()
    if abi < 1:
        raise Unconfinable("this kernel offers no Landlock (needs Linux 5.13+, lsm=landlock)")
    threads = os.listdir("/proc/self/task")
    if len(threads) != 1:
        raise Unconfinable(f"confinement must come before any thread ({len(threads)} running)")
    readable, write_roots = plan(writable=writable, protected=protected)
    libc = _libc()
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise Unconfinable(f"no_new_privs: {os.strerror(ctypes.get_errno())}")
    try:
        _landlock(abi, readable, write_roots)
    except OSError as exc:
        raise Unconfinable(f"Landlock refused the ruleset: {exc}") from None
    _seccomp(arch)
    return Confinement(
        landlock_abi=abi,
        readable=tuple(readable),
        writable=tuple(write_roots),
        tcp_denied=abi >= 4,
        scoped=abi >= 6,
    )
