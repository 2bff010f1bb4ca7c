"""Test helper: runs the real server (target/release/switchyard with the
installed modules/rpc.so) on a free loopback port with a temporary data
dir, and can restart it on the same port and data."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.environ.get("SWITCHYARD_BIN", os.path.join(ROOT, "target", "release", "switchyard"))
RPC_SO = os.environ.get("SWITCHYARD_RPC_SO", os.path.join(ROOT, "modules", "rpc.so"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestServer:
    def __init__(self) -> None:
        for f in (BIN, RPC_SO):
            if not os.path.exists(f):
                raise RuntimeError(f"{f} is missing: run `make build` first")
        self.dir = tempfile.mkdtemp(prefix="sy-py-")
        os.mkdir(os.path.join(self.dir, "modules"))
        os.mkdir(os.path.join(self.dir, "data"))
        shutil.copy(RPC_SO, os.path.join(self.dir, "modules", "rpc.so"))
        # TLS on the same port as plaintext, when openssl can make the pairs:
        # a self-signed server certificate (its own CA) and a client
        # certificate, which the server requires of TLS clients.
        self.tls = None
        tls_toml = ""
        tls_dir = os.path.join(self.dir, "tls")
        gen = os.path.join(ROOT, "scripts", "tls-cert.sh")

        def run(*args):
            return subprocess.run([gen, *args], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode == 0

        if run(tls_dir, "localhost", "127.0.0.1") and run("--client", "bot1", tls_dir):
            self.tls = {"ca": os.path.join(tls_dir, "cert.pem"),
                        "cert": os.path.join(tls_dir, "clients", "bot1.pem"),
                        "key": os.path.join(tls_dir, "clients", "bot1.key")}
            tls_toml = ('\n[server.tls]\ncert = "tls/cert.pem"\nkey = "tls/key.pem"\n'
                        'client_ca = "tls/client-ca.pem"\nclient_auth = "required"\n')
        self.config = os.path.join(self.dir, "switchyard.toml")
        with open(self.config, "w") as f:
            # purge_interval_ms: expiry events come within 50 ms.
            f.write(f"[server]\n{tls_toml}\n[modules.rpc]\npurge_interval_ms = 50\n")
        self.port = free_port()
        self.proc = None
        self.spawn()

    def spawn(self) -> None:
        args = [BIN, "-port", str(self.port), "--bind", "127.0.0.1", "-threads", "2",
                "--modules", os.path.join(self.dir, "modules"),
                "--data-dir", os.path.join(self.dir, "data"), "--config", self.config]
        self.log = open(os.path.join(self.dir, "stderr.log"), "ab")
        self.proc = subprocess.Popen(args, cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self.log)
        started = threading.Event()

        def drain(out) -> None:
            for line in out:
                if line.startswith(b"listening on "):
                    started.set()

        threading.Thread(target=drain, args=(self.proc.stdout,), daemon=True).start()
        if not started.wait(10):
            self.stop()
            with open(os.path.join(self.dir, "stderr.log")) as f:
                raise RuntimeError("server did not start in 10 s:\n" + f.read()[-3000:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.log.close()

    def restart(self) -> None:
        self.stop()
        for i in range(5):
            try:
                self.spawn()
                return
            except RuntimeError:
                if i == 4:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        self.stop()
        if not os.environ.get("KEEP_TEST_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)
