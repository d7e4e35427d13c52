#!/usr/bin/env python3
"""N free loopback ports for processes to listen on, printed on one line.

    scripts/lib/free_ports.py N

Random ports below 32768, outside the kernel's range for outgoing connections and bind(0)
(ip_local_port_range, 32768-60999 by default): a port the kernel handed out can be taken by
any connection made before its process binds it (seen in CI, beside a load test's clients:
daprd's "bind: address already in use"). Each is held while the next is picked, so they
differ. The tests' Rust harness picks its ports the same way (tests/support/mod.rs).
"""
import random
import socket
import sys


def free_ports(n):
    sockets = []
    try:
        while len(sockets) < n:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", random.randrange(20000, 32768)))
                sockets.append(s)
            except OSError:
                s.close()
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


if __name__ == "__main__":
    print(*free_ports(int(sys.argv[1])))
