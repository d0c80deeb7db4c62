"""Confinement of a task process beyond its OS user and rlimits: cgroups, Landlock, bubblewrap.

Each mechanism has a mode, from the node's settings (``cgroups``, ``landlock``,
``bubblewrap``) or the tenant's ``hardening`` table, which overrides them:

- ``auto``: used where the host has it (found at scheduler start, reported by ``isolate
  doctor``);
- ``required``: a task does not start where the host lacks it (the attempt fails with the
  reason, and is not retried: only an admin can change that);
- ``off``.

What each does for an attempt (the scheduler resolves a :class:`Sandbox` per attempt):

- **cgroup**: see :mod:`localexec.cgroups`.
- **bubblewrap** (``bwrap``, as the task's user, in user namespaces): the task sees only the
  system paths read-only (``/usr``, ``/etc``, ...), its env, the runtime, the bundles and the
  work dirs; its own ``/proc`` (a pid namespace: no other process is visible or can be
  signalled), ``/dev``, and empty ``/tmp`` and ``/dev/shm``; no network unless the tenant says
  ``network = true`` (a network namespace with only its own loopback); ipc and uts
  namespaces. The database, logs and config are simply not there, and the mapping (under
  ``/etc`` by default) is covered by ``/dev/null``, which a sandbox cannot open (nodev).
  bwrap itself runs with an environment of isolate's (:data:`HELPER_ENVIRONMENT`): the
  task's reaches the task only, through ``--clearenv`` and ``--setenv`` in a memfd read by
  ``--args``, so nothing of the author's (``LD_PRELOAD``, ...) runs on the host, outside the
  sandbox, before it exists.
- **Landlock**: without bubblewrap, the same filesystem allow-list enforced by the kernel on
  every open (read and execute beneath the system paths, env, runtime and bundles; read and
  write beneath the work dirs; the devices of ``/dev`` but not its shared memory
  filesystems, ``/dev/shm`` included; ``/proc`` as procfs needs). With or without it: no
  TCP connect to the database's port (when the
  database is on TCP), and (ABI 6) no signal to, and no abstract unix socket of, a process
  outside the attempt's domain. (Landlock alone cannot take one file out of ``/etc``: there
  the mapping is protected by its mode, 0600, which ``isolate doctor`` checks.) Landlock
  forbids mounting once a domain limits the
  filesystem, so under bubblewrap only the network and scope layer is applied, before
  ``bwrap`` runs.

The paths are the node's roots (all work dirs, all bundles), not the attempt's own, so a
spare started before its attempt exists can be confined the same way: within those roots
the file permissions keep tenants apart (docs/security.md).
"""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from isolate.config import Config, Settings
from isolate.errors import IsolateError
from isolate.services.hostcaps import bubblewrap, landlock_abi
from isolate.tenancy import Tenant, tenants_path
from localexec import landlock

MODES = ("auto", "required", "off")
# Read-only in every sandbox: what programs and the interpreter need from the system.
SYSTEM_PATHS = tuple(
    Path(p) for p in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
)
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
_DEV_RIGHTS = landlock.READ | landlock.WRITE_FILE | landlock.TRUNCATE | landlock.IOCTL_DEV
# Under /dev, the filesystems every process of the host shares, where a task could leave
# files for another or fill memory that outlives it: POSIX shared memory and semaphores,
# message queues, huge pages. A Landlock-only task gets none of them (bubblewrap gives each
# task its own /dev and /dev/shm).
_SHARED_UNDER_DEV = frozenset({"shm", "mqueue", "hugepages"})
# The whole environment bwrap itself runs with: nothing of the task's reaches the loader of
# a program running on the host (the task's own is set inside, with --clearenv/--setenv).
HELPER_ENVIRONMENT = {"PATH": "/usr/bin:/bin"}
# bwrap refuses more arguments than this (MAX_ARGS in bubblewrap.c), its --args file's
# included.
_BWRAP_MAX_ARGS = 9000


class HardeningUnavailable(IsolateError):
    """A tenant (or the node) requires a hardening this host does not have."""


@dataclass(frozen=True)
class Hardening:
    """What is wanted: a mode per mechanism, and whether a bubblewrapped task has a network."""

    cgroup: str = "auto"
    landlock: str = "auto"
    bubblewrap: str = "auto"
    network: bool = False


def wanted_hardening(settings: Settings, tenant: Tenant | None) -> Hardening:
    """The node's settings, overridden by what the tenant's ``hardening`` table says."""
    own = tenant.hardening if tenant is not None else None
    return Hardening(
        cgroup=(own and own.cgroup) or settings.cgroups,
        landlock=(own and own.landlock) or settings.landlock,
        bubblewrap=(own and own.bubblewrap) or settings.bubblewrap,
        network=settings.sandbox_network if own is None or own.network is None else own.network,
    )


def describe_wanted(want: Hardening) -> str:
    network = "network" if want.network else "no network"
    return (
        f"cgroup={want.cgroup} landlock={want.landlock} "
        f"bubblewrap={want.bubblewrap} ({network} under bubblewrap)"
    )


def database_ports(config: Config) -> tuple[int, ...]:
    """The TCP port of the node's database, which no task may connect to under Landlock.
    Empty for SQLite (a file outside every allow-list) and a unix socket (not there under
    bubblewrap; Landlock does not filter connects to sockets: docs/security.md)."""
    if config.is_default_sqlite:
        return ()
    try:
        url = make_url(config.database_url)
    except ArgumentError:
        return ()
    backend = url.get_backend_name()
    if not url.host or url.host.startswith("/") or "unix_socket" in url.query:
        return ()
    port = url.port or _DEFAULT_PORTS.get(backend)
    return (port,) if port else ()


@dataclass(frozen=True)
class HostSandbox:
    """What this host offers, found once when the scheduler starts."""

    landlock_abi: int = 0
    bwrap: Path | None = None
    bwrap_finding: str = "not probed"
    cgroups: bool = False
    cgroups_finding: str = "not probed"

    @classmethod
    def detect(cls, *, cgroups: bool, cgroups_finding: str) -> HostSandbox:
        """Probe the host (bubblewrap's probe runs it once, as nobody under root: 20 ms).
        Probed whatever the node's settings say: a tenant's table may override them."""
        bwrap, bwrap_finding = bubblewrap()
        return cls(landlock_abi(), bwrap, bwrap_finding, cgroups, cgroups_finding)


@dataclass(frozen=True)
class Sandbox:
    """How one attempt is confined; the default confines nothing beyond a cgroup."""

    cgroup: bool = True
    landlock: int = 0
    """The Landlock ABI the task process uses (0: none)."""
    bwrap: Path | None = None
    network: bool = True
    read_only: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    denied_ports: tuple[int, ...] = ()
    hidden: tuple[Path, ...] = ()
    """Files under the system paths a bubblewrapped task must not read (the mapping)."""

    @property
    def filters_tcp(self) -> bool:
        return self.landlock >= 4 and self.network and bool(self.denied_ports)

    def describe(self) -> str:
        """One line for the attempt's log header."""
        parts = []
        if self.bwrap is not None:
            net = "host network" if self.network else "no network"
            parts.append(f"bubblewrap ({net}, own /proc and /tmp)")
        if self.landlock:
            what = ["filesystem"] if self.bwrap is None else []
            if self.filters_tcp:
                what.append("no TCP to port " + ", ".join(map(str, self.denied_ports)))
            if self.landlock >= 6:
                what.append("scopes")
            parts.append(f"landlock ({', '.join(what)})")
        return "; ".join(parts) or "none"

    def filesystem_rules(self) -> list[tuple[Path, int]]:
        """The Landlock filesystem allow-list (used without bubblewrap)."""
        rules = [(path, landlock.READ) for path in (*SYSTEM_PATHS, *self.read_only)]
        rules += [(Path("/proc"), landlock.READ), (Path("/sys"), landlock.READ)]
        rules += [(path, _DEV_RIGHTS) for path in device_paths()]
        rules += [(path, landlock.ALL) for path in self.writable]
        return rules

    def bwrap_argv(self) -> list[str]:
        """``bwrap`` and its options, to put before the task's argv (a spare's, whose
        environment is isolate's own: see :meth:`bwrap_exec` for a task's)."""
        assert self.bwrap is not None
        return [str(self.bwrap), *self.bwrap_options(), "--"]

    def bwrap_exec(
        self, argv: Sequence[str], env: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str], int]:
        """What to exec to run ``argv`` with ``env`` under bubblewrap: bwrap's argv, its own
        environment (:data:`HELPER_ENVIRONMENT`) and the fd of the memfd (inheritable, to
        keep open) that holds its options, ``--clearenv`` and a ``--setenv`` per variable of
        ``env``, read by ``--args`` (bwrap closes it before the task starts). Neither the
        values nor their size are bwrap's argv, which other users can read in ``/proc``."""
        assert self.bwrap is not None
        options = [*self.bwrap_options(), "--clearenv"]
        for name, value in env.items():
            if "\0" in name or "\0" in value or "=" in name or not name:
                raise IsolateError(
                    f"env.{_printable(name)}: a variable's name or value cannot hold a NUL "
                    "(nor its name an '=')"
                )
            options += ["--setenv", name, value]
        if len(options) + len(argv) + 4 > _BWRAP_MAX_ARGS:
            raise IsolateError(
                f"{len(env)} environment variables: too many for bubblewrap, which takes at "
                f"most {_BWRAP_MAX_ARGS} arguments (3 per variable)"
            )
        fd = _args_memfd(options)
        return [str(self.bwrap), "--args", str(fd), "--", *argv], dict(HELPER_ENVIRONMENT), fd

    def bwrap_options(self) -> list[str]:
        """bwrap's options: namespaces, and the filesystem the task sees."""
        assert self.bwrap is not None
        argv = ["--unshare-all", "--die-with-parent"]
        if self.network:
            argv.append("--share-net")
        for path in SYSTEM_PATHS:
            if path.is_symlink():  # merged /usr: /bin -> usr/bin
                argv += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                argv += ["--ro-bind", str(path), str(path)]
        argv += ["--ro-bind-try", "/sys", "/sys", "--proc", "/proc", "--dev", "/dev"]
        argv += ["--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]  # noqa: S108 - the sandbox's own
        for path in self.hidden:
            argv += ["--ro-bind", os.devnull, str(path)]
        # Parents before children: a bind under /tmp goes onto the fresh tmpfs.
        binds = [(p, "--ro-bind-try") for p in self.read_only]
        binds += [(p, "--bind") for p in self.writable]
        for path, option in sorted(binds, key=lambda item: len(item[0].parts)):
            argv += [option, str(path), str(path)]
        return argv


def device_paths() -> list[Path]:
    """What a Landlock-only task may use beneath ``/dev``: each of its entries (devices
    and directories such as ``pts``), not the shared memory filesystems, not the symlinks
    (into ``/proc``, allowed on their own), not ``/dev`` itself (no listing)."""
    dev = Path("/dev")
    try:
        entries = sorted(os.scandir(dev), key=lambda entry: entry.name)
    except OSError:
        return []
    return [
        dev / entry.name
        for entry in entries
        if entry.name not in _SHARED_UNDER_DEV and not entry.is_symlink()
    ]


def _args_memfd(args: list[str]) -> int:
    """An inheritable memfd above stdio holding ``args``, each ended by a NUL, read from its
    start (bwrap's ``--args`` format)."""
    data = b"".join(os.fsencode(arg) + b"\0" for arg in args)
    fd = os.memfd_create("isolate-bwrap-args", os.MFD_CLOEXEC)
    try:
        if fd <= 2:
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            os.close(fd)
            fd = moved
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        os.set_inheritable(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _printable(name: str) -> str:
    return name if name.isidentifier() else repr(name)[:60]


def sandbox_for(
    config: Config,
    tenant: Tenant | None,
    host: HostSandbox,
    *,
    python: Path,
    shared: tuple[Path, ...],
    work_root: Path,
) -> Sandbox:
    """The sandbox of an attempt of ``tenant`` (None: single-user) in the env of ``python``:
    readable are the env, the shared package trees, the interpreter's installation and
    ``shared`` (runtime, bundles); writable ``work_root``."""
    candidates = (
        python.parent.parent,
        config.envcache_dir / "objects" / "trees",
        Path(os.path.realpath(python)).parent.parent,
        *shared,
        *_resolver_dirs(),
    )
    read_only = tuple(dict.fromkeys(path for path in candidates if not _under_system(path)))
    mapping = tenants_path(config)
    return resolve(
        wanted_hardening(config.settings, tenant),
        host,
        read_only=read_only,
        writable=(work_root,),
        denied_ports=database_ports(config),
        hidden=(mapping,) if _under_system(mapping) and mapping.is_file() else (),
        who=f"tenant {tenant.name}" if tenant is not None else "this node",
    )


def _under_system(path: Path) -> bool:
    return any(path == top or top in path.parents for top in SYSTEM_PATHS)


def _resolver_dirs() -> tuple[Path, ...]:
    """Where ``/etc/resolv.conf`` really is when it links out of ``/etc`` (systemd-resolved
    keeps it under ``/run``): a task with a network must be able to resolve names."""
    resolv = Path("/etc/resolv.conf")
    if not resolv.is_symlink():
        return ()
    return (Path(os.path.realpath(resolv)).parent,)


def resolve(
    want: Hardening,
    host: HostSandbox,
    *,
    read_only: tuple[Path, ...],
    writable: tuple[Path, ...],
    denied_ports: tuple[int, ...] = (),
    hidden: tuple[Path, ...] = (),
    who: str = "this node",
) -> Sandbox:
    """The :class:`Sandbox` for ``want`` on ``host``; raises :class:`HardeningUnavailable`
    when a required mechanism is missing (``who`` names whose requirement it is)."""
    missing = []
    if want.cgroup == "required" and not host.cgroups:
        missing.append(f"a cgroup per attempt ({host.cgroups_finding})")
    if want.landlock == "required" and host.landlock_abi == 0:
        missing.append("Landlock (not available in this kernel)")
    if want.bubblewrap == "required" and host.bwrap is None:
        missing.append(f"bubblewrap ({host.bwrap_finding})")
    if missing:
        raise HardeningUnavailable(
            f"{who} requires {' and '.join(missing)}, which this host does not offer: "
            "the task does not start (an admin can install it, or change the mode)"
        )
    bwrap = host.bwrap if want.bubblewrap != "off" else None
    confined = Sandbox(
        cgroup=want.cgroup != "off" and host.cgroups,
        landlock=host.landlock_abi if want.landlock != "off" else 0,
        bwrap=bwrap,
        network=want.network if bwrap is not None else True,
        read_only=read_only,
        writable=writable,
        denied_ports=denied_ports,
        hidden=hidden if bwrap is not None else (),
    )
    if confined.bwrap is not None and not (confined.filters_tcp or confined.landlock >= 6):
        confined = replace(confined, landlock=0)  # nothing left for Landlock to do
    return confined


# The network and scope rulesets of this process, by denied ports (see layers_for).
_network_layers: dict[tuple[int, ...], int | None] = {}


def layers_for(sandbox: Sandbox) -> list[int]:
    """The Landlock ruleset fds (close-on-exec) the supervisor hands a task process of
    ``sandbox``: the network and scope layer, built once per set of denied ports (a rule
    per allowed port takes 0.1 s) and kept open for the supervisor's life. The filesystem
    layer is built by each task process itself, after its privilege drop (:func:`confine`).
    Called from the thread that forks."""
    if not sandbox.landlock:
        return []
    ports = sandbox.denied_ports if sandbox.filters_tcp else ()
    if ports not in _network_layers:
        _network_layers[ports] = landlock.scope_and_tcp_ruleset(sandbox.landlock, ports)
    fd = _network_layers[ports]
    return [] if fd is None else [fd]


def confine(sandbox: Sandbox, layers: list[int]) -> list[str]:
    """In the task process, after the privilege drop: apply the Landlock layers (and the
    filesystem layer without bubblewrap); returns the argv prefix to exec through
    (bubblewrap's, or nothing). Raises on any failure: a task never starts less confined
    than planned. For a spare, whose environment is isolate's own until its hand-over; a
    task process uses :func:`confine_exec`."""
    _restrict(sandbox, layers)
    return sandbox.bwrap_argv() if sandbox.bwrap is not None else []


def confine_exec(
    sandbox: Sandbox, layers: list[int], argv: Sequence[str], env: Mapping[str, str]
) -> tuple[list[str], dict[str, str], set[int]]:
    """:func:`confine`, and what to exec to run ``argv`` with ``env`` in ``sandbox``: the
    argv, the environment of the program exec'd and the fds it must inherit. Under
    bubblewrap that program is bwrap, with an environment of isolate's and ``env`` handed
    on through a memfd (:meth:`Sandbox.bwrap_exec`); otherwise ``argv`` itself."""
    _restrict(sandbox, layers)
    if sandbox.bwrap is None:
        return list(argv), dict(env), set()
    exec_argv, helper_env, fd = sandbox.bwrap_exec(argv, env)
    return exec_argv, helper_env, {fd}


def _restrict(sandbox: Sandbox, layers: list[int]) -> None:
    rulesets = list(layers)
    built = -1
    try:
        if sandbox.landlock and sandbox.bwrap is None:
            built = landlock.filesystem_ruleset(sandbox.landlock, sandbox.filesystem_rules())
            rulesets.append(built)
        if rulesets:
            landlock.restrict_self(rulesets)
    finally:
        if built >= 0:
            os.close(built)


def exit_signal(sandbox: Sandbox, exit_code: int) -> int | None:
    """The signal that ended a bubblewrapped task: bwrap exits with 128 + its number."""
    if sandbox.bwrap is None or exit_code <= 128:
        return None
    try:
        return int(signal.Signals(exit_code - 128))
    except ValueError:
        return None
