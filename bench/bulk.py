#!/usr/bin/env python3
"""Bulk transfers for `bench/proxy-bulk.sh`, over loopback only.

  bulk.py upstream PORT_FILE   serve on 127.0.0.1 (port written to PORT_FILE):
                               a connection opening with "BULKUP <n>\\n"
                               gets n bytes read and "OK <n>\\n" back;
                               "BULKDN <n>\\n" gets n bytes sent, then EOF.
  bulk.py client HOST:PORT up|down SIZE
                               one transfer; prints the seconds it took.
"""
import socket
import sys
import threading
import time

CHUNK = 1 << 20


def read_line(s):
    line = b""
    while not line.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            raise EOFError("closed before a full line")
        line += b
    return line.decode().strip()


def serve(conn):
    with conn:
        cmd, n = read_line(conn).split()
        n = int(n)
        if cmd == "BULKUP":
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            got = 0
            while got < n:
                k = conn.recv_into(view, min(CHUNK, n - got))
                if k == 0:
                    break
                got += k
            conn.sendall(f"OK {got}\n".encode())
        elif cmd == "BULKDN":
            data = memoryview(bytes(range(256)) * (CHUNK // 256))
            left = n
            while left > 0:
                k = min(left, CHUNK)
                conn.sendall(data[:k])
                left -= k
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass


def upstream(port_file):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(ls.getsockname()[1]))
    import os
    os.rename(port_file + ".tmp", port_file)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def client(addr, way, size):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=120)
    t0 = time.perf_counter()
    if way == "up":
        s.sendall(f"BULKUP {size}\n".encode())
        data = memoryview(bytes(CHUNK))
        left = size
        while left > 0:
            k = min(left, CHUNK)
            s.sendall(data[:k])
            left -= k
        reply = read_line(s)
        if reply != f"OK {size}":
            sys.exit(f"upstream answered {reply!r}")
    else:
        s.sendall(f"BULKDN {size}\n".encode())
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        got = 0
        while True:
            k = s.recv_into(view)
            if k == 0:
                break
            got += k
        if got != size:
            sys.exit(f"received {got} of {size} bytes")
    print(f"{time.perf_counter() - t0:.4f}")


if __name__ == "__main__":
    if sys.argv[1] == "upstream":
        upstream(sys.argv[2])
    else:
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]))
