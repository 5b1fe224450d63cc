"""Where each process listens by default on one machine (``make up``); tests use ephemeral ports."""

from registry_common.settings import SERVICES

GATEWAY_PORT = 8000
API_PORTS: dict[str, int] = {service: 8001 + i for i, service in enumerate(SERVICES)}
WORKER_PORTS: dict[str, int] = {service: 8101 + i for i, service in enumerate(SERVICES)}


def free_ports(how_many: int) -> list[int]:
    """Distinct loopback ports free right now for test and benchmark processes, taken below the kernel's
    ephemeral range (``ip_local_port_range``): a port from that range, freed here and bound by a process a
    moment later, can meanwhile be taken as the source port of any outgoing connection on the machine."""
    import random
    import socket

    low, high = 20000, 32767
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            ephemeral_low = int(ranges.read().split()[0])
        high = min(high, ephemeral_low - 1)
    except (OSError, ValueError, IndexError):
        pass
    chosen: list[int] = []
    for port in random.sample(range(low, high + 1), k=min(4000, high - low + 1)):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
        if len(chosen) == how_many:
            return chosen
    raise RuntimeError(f"no {how_many} free ports between {low} and {high}")


def free_port() -> int:
    return free_ports(1)[0]
