"""The client against the real server: one server for this file, restarted
once by the reconnect test (which runs last). Tests of methods the server
does not have yet (absent from sys.methods, or answering -32601, or refusing
a new parameter by name) skip with the reason printed."""

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import switchyard_client as sy
from server import TestServer

SERVER = None
METHODS = {}


def setUpModule():
    global SERVER, METHODS
    SERVER = TestServer()
    with sy.Client(port=SERVER.port) as c:
        METHODS = c.call("sys.methods")


def tearDownModule():
    if SERVER is not None:
        SERVER.close()


def until(cond, secs=3.0):
    end = time.monotonic() + secs
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def feature(*needs):
    """Skips (saying why) while the server lacks one of ``needs``."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(self):
            missing = [m for m in needs if m not in METHODS]
            if missing:
                print(f"\nskip {fn.__name__}: server lacks {', '.join(missing)}", file=sys.stderr)
                self.skipTest(f"server does not list {', '.join(missing)}")
            try:
                fn(self)
            except sy.MethodNotFound as e:
                print(f"\nskip {fn.__name__}: {e}", file=sys.stderr)
                self.skipTest(f"server answers -32601: {e}")
            except sy.InvalidParams as e:
                if not re.search(r"unknown field `(meta|queue|revision)`", str(e)):
                    raise
                print(f"\nskip {fn.__name__}: {e}", file=sys.stderr)
                self.skipTest(f"server refuses a new parameter: {e}")
        return run
    return wrap


class Server(unittest.TestCase):
    def setUp(self):
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()

    def client(self):
        c = sy.Client(port=SERVER.port, timeout=5, backoff=sy.Backoff(base=0.05, cap=0.5))
        self.clients.append(c)
        return c

    @feature("kv.get", "kv.set", "kv.incr", "kv.cas", "kv.keys", "kv.del")
    def test_01_kv_basics_and_typed_errors(self):
        c = self.client()
        self.assertEqual(c.call("sys.ping"), "pong")
        self.assertIsNone(c.kv.get("p1.a"))
        self.assertIs(c.kv.set("p1.a", {"x": [1, "y"]}), True)
        self.assertEqual(c.kv.get("p1.a"), {"x": [1, "y"]})
        self.assertEqual(c.kv.incr("p1.n"), 1)
        self.assertEqual(c.kv.incr("p1.n", 9), 10)
        self.assertIs(c.kv.cas("p1.n", 11, expected=3), False)
        self.assertIs(c.kv.cas("p1.n", 11, expected=10), True)
        self.assertIs(c.kv.cas("p1.new", "v", expected=None), True)
        self.assertEqual(c.kv.keys(prefix="p1."), ["p1.a", "p1.n", "p1.new"])
        self.assertIs(c.kv.delete("p1.a"), True)
        self.assertIs(c.kv.delete("p1.a"), False)
        with self.assertRaises(sy.SwitchyardError) as cm:
            c.kv.incr("p1.new")
        self.assertEqual(cm.exception.code, -32010)
        with self.assertRaises(sy.MethodNotFound):
            c.call("no.such")
        with self.assertRaises(sy.InvalidParams):
            c.call("kv.get", {"nope": 1})
        # Calls from many threads at once: each gets its own reply.
        out = {}
        threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, c.kv.incr(f"p1.t{i}", i)))
                   for i in range(1, 21)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        self.assertEqual(out, {i: i for i in range(1, 21)})

    @feature("bus.subscribe", "bus.publish")
    def test_02_pubsub_dispatches_to_every_matching_handler(self):
        sub, pub = self.client(), self.client()
        star, deep = [], []
        s1 = sub.bus.subscribe("p2.*", lambda m: star.append((m["topic"], m["data"])))
        sub.bus.subscribe("p2.>", lambda m: deep.append(m["topic"]))
        self.assertEqual(pub.bus.publish("p2.a", 1), 1, "one connection, one copy")
        self.assertEqual(pub.bus.publish("p2.a.b", 2), 1)
        until(lambda: len(star) == 1 and len(deep) == 2)
        self.assertEqual(star, [("p2.a", 1)])
        self.assertEqual(deep, ["p2.a", "p2.a.b"])
        self.assertTrue(s1.unsubscribe())
        pub.bus.publish("p2.c", 3)
        until(lambda: len(deep) == 3)
        self.assertEqual(len(star), 1)

    @feature("bus.subscribe", "bus.publish")
    def test_03_queue_group_one_member_each(self):
        a, b, pub = self.client(), self.client(), self.client()
        got_a, got_b = [], []
        a.bus.subscribe("p3.jobs", lambda m: got_a.append(m["data"]), queue="w")
        b.bus.subscribe("p3.jobs", lambda m: got_b.append(m["data"]), queue="w")
        if "bus.presence" in METHODS:
            self.assertEqual(pub.bus.presence("p3.jobs")["queues"]["w"], 2)
        for i in range(20):
            pub.bus.publish("p3.jobs", i)
        until(lambda: len(got_a) + len(got_b) == 20)
        time.sleep(0.05)
        self.assertEqual(sorted(got_a + got_b), list(range(20)))
        self.assertTrue(got_a and got_b, f"split {len(got_a)}/{len(got_b)}")

    @feature("bus.request", "bus.reply")
    def test_04_request_reply(self):
        svc, c = self.client(), self.client()
        svc.bus.respond("p4.add", lambda d, m: d["a"] + d["b"], queue="adders")

        def fail(d, m):
            raise ValueError("boom")

        svc.bus.respond("p4.fail", fail)
        slow = []
        svc.bus.subscribe("p4.slow", slow.append)
        self.assertEqual(c.bus.request("p4.add", {"a": 2, "b": 3}), 5)
        with self.assertRaisesRegex(sy.ResponderError, "boom"):
            c.bus.request("p4.fail", {})
        t0 = time.monotonic()
        with self.assertRaises(sy.NoResponders) as cm:
            c.bus.request("p4.nobody", 1)
        self.assertEqual(cm.exception.code, -32032)
        self.assertLess(time.monotonic() - t0, 1.0)
        # A slow request answered after a later call: replies matched by id.
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", c.bus.request("p4.slow", "q", timeout_ms=3000)))
        t.start()
        until(lambda: slow)
        self.assertEqual(c.kv.incr("p4.count"), 1)
        self.assertIs(svc.call("bus.reply", {"reply": slow[0]["reply"], "data": "late"}), True)
        t.join(3)
        self.assertEqual(out, {"r": "late"})
        t1 = time.monotonic()
        with self.assertRaises(sy.Timeout) as cm:
            c.bus.request("p4.slow", "q", timeout_ms=200)
        self.assertFalse(cm.exception.local)
        self.assertGreaterEqual(time.monotonic() - t1, 0.18)

    @feature("kv.get", "kv.set", "kv.cas")
    def test_05_kv_revisions(self):
        c = self.client()
        r1 = c.kv.set("p5.k", "a", meta=True)
        g = c.kv.get("p5.k", meta=True)
        self.assertEqual(g, {"value": "a", "revision": r1["revision"], "expires_in_ms": None})
        self.assertIs(c.kv.cas("p5.k", "b", revision=r1["revision"] + 100), False)
        r2 = c.kv.cas("p5.k", "b", revision=r1["revision"], meta=True)
        self.assertGreater(r2["revision"], r1["revision"])
        self.assertIs(c.kv.cas("p5.k", "c", revision=0), False)
        self.assertIs(c.kv.cas("p5.fresh", "c", revision=0), True)

    @feature("kv.watch", "kv.unwatch")
    def test_06_kv_watch(self):
        c = self.client()
        c.kv.set("p6.old", 1)
        events = []
        w = c.kv.watch("p6.", events.append, initial=True)
        until(lambda: any(e["op"] == "ready" for e in events))
        self.assertEqual([(e["op"], e.get("key")) for e in events], [("set", "p6.old"), ("ready", None)])
        del events[:]
        c.kv.set("p6.a", "x")
        c.kv.delete("p6.a")
        c.kv.set("p7.other", 1)
        until(lambda: len(events) == 2)
        self.assertEqual([(e["op"], e["key"], e.get("value")) for e in events],
                         [("set", "p6.a", "x"), ("del", "p6.a", None)])
        self.assertGreater(events[1]["revision"], events[0]["revision"])
        self.assertTrue(w.unwatch())
        c.kv.set("p6.b", 1)
        time.sleep(0.1)
        self.assertEqual(len(events), 2)

    @feature("stream.create", "stream.publish", "stream.consume", "stream.ack", "stream.fetch",
             "stream.info", "stream.delete")
    def test_07_streams(self):
        c = self.client()
        self.assertEqual(c.streams.create("P8", ["p8.>"], max_msgs=100)["name"], "P8")
        with self.assertRaises(sy.StreamConflict):
            c.streams.create("P8b", ["p8.x"])
        for i in range(1, 4):
            self.assertEqual(c.streams.publish(f"p8.o{i}", i), {"stream": "P8", "seq": i})
        with self.assertRaises(sy.NoSuchStream):
            c.streams.publish("p9.none", 1)
        got = []

        def handle(m):
            got.append((m["seq"], m["data"], m["deliveries"]))
            m.ack()

        cons = c.streams.consume("P8", "push", handle)
        until(lambda: len(got) == 3)
        self.assertEqual(got, [(1, 1, 1), (2, 2, 1), (3, 3, 1)])
        self.assertTrue(cons.stop())
        self.assertEqual(c.streams.fetch("P8", "push", batch=5), [], "all acknowledged")
        # stream.consume creates a durable consumer; fetch pulls from it once
        # this connection has detached (what it was sent is due again at once).
        pull = c.streams.consume("P8", "pull", lambda m: None, ack_wait_ms=60000)
        self.assertEqual(pull.info["consumer"], "pull")
        self.assertTrue(pull.stop())
        pulled = c.streams.fetch("P8", "pull", batch=2)
        self.assertEqual([m["seq"] for m in pulled], [1, 2])
        self.assertEqual(pulled[0].ack(), 1)
        self.assertEqual(c.streams.info("P8")["messages"], 3)
        self.assertTrue(c.streams.delete("P8"))

    def test_08_package_installs(self):
        try:
            import setuptools  # noqa: F401
        except Exception as e:  # a broken setuptools is as good as none here
            self.skipTest(f"setuptools unavailable: {e}")
        try:
            import wheel  # noqa: F401
        except ImportError:
            try:
                import setuptools.command.bdist_wheel  # noqa: F401
            except ImportError:
                self.skipTest("no wheel support (neither the wheel package nor setuptools >= 70.1)")
        tmp = tempfile.mkdtemp(prefix="sy-pip-")
        target = os.path.join(tmp, "target")
        try:
            # Built from a copy: setuptools writes build/ and *.egg-info
            # beside the sources.
            src = os.path.join(tmp, "src")
            here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
            shutil.copytree(here, src, ignore=shutil.ignore_patterns(
                "tests", "build", "*.egg-info", "__pycache__"))
            r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                                "--no-build-isolation", "--no-index", "--target", target, src],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0 and "No module named pip" in r.stderr:
                self.skipTest("pip unavailable")
            self.assertEqual(r.returncode, 0, r.stderr[-2000:])
            for f in ("__init__.py", "client.py", "backoff.py", "py.typed"):
                self.assertTrue(os.path.exists(os.path.join(target, "switchyard_client", f)), f)
            r = subprocess.run([sys.executable, "-c", "import switchyard_client as s; print(s.__version__)"],
                               env={**os.environ, "PYTHONPATH": target}, capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.stdout.strip(), "0.1.0", r.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_09_tls(self):
        if SERVER.tls is None:
            self.skipTest("openssl could not make certificates")
        with sy.Client("localhost", SERVER.port, tls=SERVER.tls) as c:
            self.assertEqual(c.call("sys.ping"), "pong")
            self.assertEqual(c.kv.incr("p9.tls"), 1)
            # Reads (replies, pushed messages) and writes from several
            # threads at once on the one TLS socket.
            got = []
            c.bus.subscribe("p9.*", lambda m: got.append(m["data"]))
            out = {}

            def work(i):
                for j in range(20):
                    out[(i, j)] = c.kv.incr(f"p9.t{i}")
                    c.bus.publish("p9.x", j)

            threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            self.assertEqual(out, {(i, j): j + 1 for i in range(4) for j in range(20)})
            until(lambda: len(got) == 80)
        # The self-signed server certificate is not trusted without its CA.
        with self.assertRaises(sy.ConnectionLost):
            sy.Client("localhost", SERVER.port, tls=True)
        # The server requires a client certificate, so the success above
        # proves the client sent its own. TLS 1.3 may finish the client's
        # side first: then the first call fails instead of the connect.
        with self.assertRaises((sy.ConnectionLost, sy.ClientClosed)):
            with sy.Client("localhost", SERVER.port, tls={"ca": SERVER.tls["ca"]},
                           reconnect=False) as bare:
                bare.call("sys.ping")

    def test_99_reconnect_after_restart(self):
        sub = self.client()
        got = []
        sub.bus.subscribe("p10.*", lambda m: got.append(m["data"]))
        SERVER.restart()
        until(lambda: sub.reconnects == 1, 10)
        pub = self.client()
        self.assertEqual(pub.bus.publish("p10.x", "after"), 1)
        until(lambda: got == ["after"])
        self.assertEqual(sub.kv.get("p1.n"), 11, "data survived the restart")


if __name__ == "__main__":
    unittest.main()
