"""Is a TCP port free to listen on, and if not, who holds it.

Checked before a command starts Ray, so a taken port stops the command with one line naming the
port (and the process listening on it, where the system lets us see it) instead of a Serve
traceback deep in the log.
"""

from __future__ import annotations

import errno
import socket

import psutil

from system.errors import ConfigError


def port_holder(port: int) -> str | None:
    """``pid N (command line)`` of a process listening on ``port``, or None when unknown or not visible."""
    try:
        connections = psutil.net_connections(kind="inet")
    except psutil.AccessDenied:
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                command = " ".join(psutil.Process(conn.pid).cmdline()) or psutil.Process(conn.pid).name()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                return f"pid {conn.pid}"
            return f"pid {conn.pid} ({command[:120]})"
    return None


def ensure_port_free(host: str, port: int, key: str) -> None:
    """Raise :class:`ConfigError` naming ``key``, the port and its holder unless ``host:port`` can be bound.

    Binding (with ``SO_REUSEADDR``, as a server does) rather than connecting also catches a listener
    on the wildcard address and ignores sockets lingering in TIME_WAIT.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(f"{key}: cannot listen on {host}:{port}: {exc.strerror}") from None
            holder = port_holder(port)
            held = f" by {holder}" if holder else ""
            raise ConfigError(
                f"{key}: port {port} on {host} is already in use{held}; stop that process or pick another "
                f"port with --{key} N"
            ) from None
