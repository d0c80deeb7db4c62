"""Landlock, the kernel's unprivileged access control (Linux 5.13+), through its three syscalls.

A *ruleset* lists what a process may still do: for the filesystem, which rights it keeps
beneath which directories (everything else the ruleset *handles* is denied); for TCP, which
ports it may connect to (ABI 4); and *scopes* (ABI 6): no signal to, and no abstract unix
socket of, a process outside its own domain. ``restrict_self`` makes a ruleset the calling
thread's domain, inherited across fork and exec and never lifted. Domains stack: a second
ruleset can only take away more, so the filesystem and the network are two rulesets here,
each built once per policy by the supervisor and applied by every task process it starts.

Rights that a kernel's ABI does not know are left out of the ruleset (best effort, as the
kernel's own sample does); ``isolate.services.hostcaps.landlock_abi`` is what ``isolate doctor``
reports. Python has no binding for these syscalls; they take small packed structs, built
here with ctypes.
"""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Iterable
from pathlib import Path

_SYS_CREATE_RULESET = 444  # the same number on every architecture (asm-generic)
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39

# Filesystem rights, by the ABI that introduced them.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
# What a rule on a file (not a directory) may grant.
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV

CONNECT_TCP = 1 << 1  # ABI 4 (BIND_TCP is 1 << 0; binding is not restricted here)
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

READ = EXECUTE | READ_FILE | READ_DIR
"""Rights to read and run what is beneath a directory."""
ALL = (1 << 16) - 1
"""Every filesystem right (cut to what the kernel knows when the rule is added)."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class LandlockError(OSError):
    """A Landlock syscall failed (the message names which)."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class _NetPortAttr(ctypes.Structure):
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


def fs_rights(abi: int) -> int:
    """Every filesystem right the kernel of ``abi`` knows."""
    known = [mask for level, mask in _FS_BY_ABI.items() if level <= abi]
    return max(known) if known else 0


def _check(result: int, what: str) -> int:
    if result < 0:
        error = ctypes.get_errno()
        raise LandlockError(error, f"landlock {what}: {os.strerror(error)}")
    return result


def _create(abi: int, *, fs: int = 0, net: int = 0, scoped: int = 0) -> int:
    attr = _RulesetAttr(fs, net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    return _check(
        _libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0),
        "create_ruleset",
    )


def filesystem_ruleset(abi: int, rules: Iterable[tuple[Path, int]]) -> int:
    """A ruleset fd (close-on-exec) allowing only ``rules`` (path, rights) on the filesystem.
    Paths that do not exist are skipped; rights are cut to what the ABI knows."""
    handled = fs_rights(abi)
    ruleset = _create(abi, fs=handled)
    try:
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                allowed = rights & handled
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    allowed &= _FILE_RIGHTS
                attr = _PathBeneathAttr(allowed, fd)
                _check(
                    _libc.syscall(
                        _SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(attr), 0
                    ),
                    f"add_rule {path}",
                )
            finally:
                os.close(fd)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def scope_and_tcp_ruleset(abi: int, denied_ports: Iterable[int]) -> int | None:
    """A ruleset fd allowing TCP connects to every port but ``denied_ports`` (ABI 4;
    Landlock rules allow, so every other port gets a rule), and (ABI 6) no signal to, and no
    abstract unix socket of, a process outside the domain. None if the ABI offers neither.
    It handles no filesystem access, so a process in it can still mount (bubblewrap)."""
    denied = set(denied_ports) if abi >= 4 else set()
    scoped = SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET if abi >= 6 else 0
    if not denied and not scoped:
        return None
    ruleset = _create(abi, net=CONNECT_TCP if denied else 0, scoped=scoped)
    if not denied:
        return ruleset
    attr = _NetPortAttr(CONNECT_TCP, 0)
    pointer = ctypes.byref(attr)
    add = _libc.syscall
    try:
        for port in range(65536):
            if port in denied:
                continue
            attr.port = port
            if add(_SYS_ADD_RULE, ruleset, _RULE_NET_PORT, pointer, 0) < 0:
                _check(-1, f"add_rule port {port}")
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def restrict_self(rulesets: Iterable[int]) -> None:
    """Make each ruleset a layer of this thread's domain, for good. Sets no_new_privs first
    if it is not set (Landlock requires it of an unprivileged process)."""
    if _libc.prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    for ruleset in rulesets:
        _check(_libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0), "restrict_self")
