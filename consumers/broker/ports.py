"""The broker's loopback ports: picking free ones, telling whether one is taken, and the
three a running broker listens on."""

from __future__ import annotations

import socket
from dataclasses import dataclass


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on the loopback interface (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class BrokerPorts:
    """The three loopback ports of a running broker (``sasl_ssl`` is 0 when disabled)."""

    plaintext: int
    controller: int
    sasl_ssl: int = 0
