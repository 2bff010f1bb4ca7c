"""Pure logic and the reconnect protocol against a scripted fake server (no
switchyard needed): subject matching, backoff, typed errors, what a client
resends after a drop, replies matched by id."""

import json
import socket
import threading
import time
import unittest

import switchyard_client as sy


def until(cond, secs=3.0):
    end = time.monotonic() + secs
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class FakeServer:
    """Accepts connections, records their lines, answers per ``script``."""

    def __init__(self, script):
        self.script = script
        self.conns = []
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            conn = {"sock": s, "lines": []}
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            for raw in conn["sock"].makefile("rb"):
                msg = json.loads(raw)
                conn["lines"].append(msg)
                result = self.script(msg)
                if result is not None:
                    self.send(conn, {"jsonrpc": "2.0", "id": msg["id"], "result": result})
        except (OSError, ValueError):
            pass

    def send(self, conn, obj):
        conn["sock"].sendall((json.dumps(obj) + "\n").encode())

    def drop(self, i):
        self.conns[i]["sock"].shutdown(socket.SHUT_RDWR)
        self.conns[i]["sock"].close()

    def close(self):
        self.lsock.close()


class Pure(unittest.TestCase):
    def test_subject_matching(self):
        m = sy.subject_matches
        self.assertTrue(m("a.*", "a.b"))
        self.assertFalse(m("a.*", "a.b.c"))
        self.assertFalse(m("a.*", "a"))
        self.assertTrue(m("a.>", "a.b.c"))
        self.assertFalse(m("a.>", "a"))
        self.assertTrue(m("*.b.>", "x.b.c.d"))
        self.assertFalse(m("a.b", "a.b.c"))
        self.assertTrue(m(">", "x"))

    def test_backoff(self):
        b = sy.Backoff(rand=lambda: 1.0)
        got = [round(b.next(), 3) for _ in range(10)]
        self.assertEqual(got[:4], [0.1, 0.2, 0.4, 0.8])
        self.assertEqual(got[9], 10.0)
        b.reset()
        self.assertEqual(b.next(), 0.1)
        self.assertEqual(sy.Backoff(rand=lambda: 0.0).next(), 0.001)

    def test_typed_errors(self):
        self.assertIsInstance(sy.from_rpc_error({"code": -32032, "message": "x"}), sy.NoResponders)
        t = sy.from_rpc_error({"code": -32033, "message": "late"})
        self.assertIsInstance(t, sy.Timeout)
        self.assertEqual((t.code, t.local), (-32033, False))
        e = sy.from_rpc_error({"code": -32010, "message": "nope"})
        self.assertIs(type(e), sy.SwitchyardError)
        self.assertEqual(e.code, -32010)

    def test_exports(self):
        for name in sy.__all__:
            self.assertTrue(hasattr(sy, name), name)


class Protocol(unittest.TestCase):
    def test_reconnect_restores_state_and_fails_in_flight_calls(self):
        ids = iter(range(41, 100))

        def script(msg):
            return {"sys.auth": {"user": "bot"}, "bus.subscribe": 1, "kv.set": None,
                    "stream.consume": {"ok": 1}, "sys.ping": "pong"}.get(
                msg["method"], next(ids) if msg["method"] == "kv.watch" else True)

        fake = FakeServer(script)
        c = sy.Client(port=fake.port, token="t0k", backoff=sy.Backoff(base=0.02, cap=0.05))
        try:
            self.assertEqual(c.user, "bot")
            plain, queued, events, msgs = [], [], [], []
            c.bus.subscribe("a.*", lambda m: plain.append(m["topic"]))
            c.bus.subscribe("a.>", lambda m: queued.append(m["topic"]), queue="workers")
            c.kv.watch({"pattern": "cfg.*"}, events.append)
            c.streams.consume("ORDERS", "billing", lambda m: msgs.append(m["seq"]), ack_wait_ms=1000)

            errors = []

            def write():
                try:
                    c.kv.set("k", 1)
                except sy.SwitchyardError as e:
                    errors.append(e)

            t = threading.Thread(target=write)
            t.start()
            until(lambda: fake.conns and any(l["method"] == "kv.set" for l in fake.conns[0]["lines"]))
            fake.drop(0)
            t.join(3)
            self.assertEqual(len(errors), 1)
            self.assertIsInstance(errors[0], sy.ConnectionLost)
            until(lambda: c.reconnects == 1)
            second = [(l["method"], l.get("params")) for l in fake.conns[1]["lines"]]
            self.assertEqual(second[0], ("sys.auth", {"token": "t0k"}))
            self.assertEqual(sorted(json.dumps(x, sort_keys=True) for x in second[1:]), sorted(
                json.dumps(x, sort_keys=True) for x in [
                    ("bus.subscribe", {"topics": ["a.*"]}),
                    ("bus.subscribe", {"topics": ["a.>"], "queue": "workers"}),
                    ("kv.watch", {"pattern": "cfg.*"}),
                    ("stream.consume", {"stream": "ORDERS", "consumer": "billing", "ack_wait_ms": 1000}),
                ]))
            self.assertNotIn("kv.set", [m for m, _ in second])

            conn = fake.conns[1]
            fake.send(conn, {"jsonrpc": "2.0", "method": "kv.event",
                             "params": {"watch": 42, "key": "cfg.a", "op": "set", "revision": 7, "value": 1}})
            fake.send(conn, {"jsonrpc": "2.0", "method": "bus.message", "params": {"topic": "a.b", "data": 1}})
            fake.send(conn, {"jsonrpc": "2.0", "method": "bus.message", "params": {"topic": "a.b.c", "data": 2}})
            fake.send(conn, {"jsonrpc": "2.0", "method": "stream.message", "params": {
                "stream": "ORDERS", "consumer": "billing", "seq": 3, "subject": "o", "data": {}, "deliveries": 1}})
            until(lambda: len(events) == 1 and len(queued) == 2 and len(msgs) == 1)
            self.assertEqual(plain, ["a.b"])
            self.assertEqual(queued, ["a.b", "a.b.c"])
            self.assertEqual(events[0]["revision"], 7)
            self.assertEqual(msgs, [3])

            # Registered while disconnected: sent once (by the restore or
            # after it), never twice.
            dropped = threading.Event()
            c.on_disconnect = dropped.set
            fake.drop(1)
            self.assertTrue(dropped.wait(3))
            late = []
            t1 = threading.Thread(target=lambda: late.append(c.bus.subscribe("b.*", print)))
            t2 = threading.Thread(target=lambda: late.append(c.kv.watch("late.", print)))
            t1.start()
            t2.start()
            t1.join(3)
            t2.join(3)
            self.assertEqual(len(late), 2)
            until(lambda: c.reconnects == 2)
            third = fake.conns[2]["lines"]
            self.assertEqual(third[0]["method"], "sys.auth")
            self.assertEqual(len([l for l in third if l["method"] == "bus.subscribe"
                                  and l["params"]["topics"] == ["b.*"]]), 1)
            self.assertEqual(len([l for l in third if l["method"] == "kv.watch"
                                  and l["params"].get("prefix") == "late."]), 1)
            self.assertEqual(len([l for l in third if l["method"] == "kv.watch"]), 2)
        finally:
            c.close()
            fake.close()

    def test_replies_matched_by_id_and_local_timeout(self):
        held = []
        fake = FakeServer(lambda msg: held.append(msg))
        c = sy.Client(port=fake.port)
        try:
            out = {}

            def call(name):
                try:
                    out[name] = c.call("x." + name)
                except sy.SwitchyardError as e:
                    out[name] = e

            ta = threading.Thread(target=call, args=("a",))
            ta.start()
            until(lambda: len(held) == 1)
            tb = threading.Thread(target=call, args=("b",))
            tb.start()
            until(lambda: len(held) == 2)
            conn = fake.conns[0]
            fake.send(conn, {"jsonrpc": "2.0", "id": held[1]["id"], "result": "B"})
            tb.join(3)
            self.assertEqual(out, {"b": "B"})
            fake.send(conn, {"jsonrpc": "2.0", "id": held[0]["id"], "error": {"code": -32033, "message": "late"}})
            ta.join(3)
            self.assertIsInstance(out["a"], sy.Timeout)
            self.assertFalse(out["a"].local)
            t0 = time.monotonic()
            with self.assertRaises(sy.Timeout) as cm:
                c.call("x.c", timeout=0.1)
            self.assertTrue(cm.exception.local)
            self.assertGreaterEqual(time.monotonic() - t0, 0.09)
        finally:
            c.close()
            fake.close()

    def test_respond_replies_and_errors(self):
        def script(msg):
            if msg["method"] == "bus.request":
                return {sy.ERROR_KEY: {"code": -32000, "message": "boom"}}
            return 1 if msg["method"] == "bus.subscribe" else True

        fake = FakeServer(script)
        c = sy.Client(port=fake.port)
        try:
            c.bus.respond("svc.add", lambda d, m: d["a"] + d["b"])

            def fail(d, m):
                raise ValueError("nope")

            c.bus.respond("svc.fail", fail)
            conn = fake.conns[0]
            push = lambda p: fake.send(conn, {"jsonrpc": "2.0", "method": "bus.message", "params": p})
            push({"topic": "svc.add", "data": {"a": 2, "b": 3}, "reply": "_INBOX.1"})
            push({"topic": "svc.fail", "data": {}, "reply": "_INBOX.2"})
            push({"topic": "svc.add", "data": {"a": 1, "b": 1}})  # not a request
            replies = lambda: [l["params"] for l in conn["lines"] if l["method"] == "bus.reply"]
            until(lambda: len(replies()) == 2)
            time.sleep(0.03)
            self.assertEqual(sorted(replies(), key=lambda r: r["reply"]), [
                {"reply": "_INBOX.1", "data": 5},
                {"reply": "_INBOX.2", "data": {sy.ERROR_KEY: {"code": -32000, "message": "nope"}}},
            ])
            with self.assertRaisesRegex(sy.ResponderError, "boom"):
                c.bus.request("svc.x", 1)
            req = [l for l in conn["lines"] if l["method"] == "bus.request"][0]
            self.assertEqual(req["params"], {"topic": "svc.x", "data": 1})
        finally:
            c.close()
            fake.close()

    def test_watch_events_before_the_reply_come_first(self):
        fake = FakeServer(lambda msg: None if msg["method"] == "kv.watch" else True)
        c = sy.Client(port=fake.port)
        try:
            events = []
            out = {}
            t = threading.Thread(target=lambda: out.setdefault(
                "w", c.kv.watch("cfg.", lambda e: events.append((e["op"], e.get("key"))), initial=True)))
            t.start()
            until(lambda: fake.conns and len(fake.conns[0]["lines"]) == 1)
            line = fake.conns[0]["lines"][0]
            self.assertEqual(line["params"], {"prefix": "cfg.", "initial": True})
            ev = lambda p: json.dumps({"jsonrpc": "2.0", "method": "kv.event", "params": dict(watch=7, **p)}) + "\n"
            fake.conns[0]["sock"].sendall((ev({"key": "cfg.a", "op": "set", "revision": 1, "value": 1})
                                           + json.dumps({"jsonrpc": "2.0", "id": line["id"], "result": 7}) + "\n"
                                           + ev({"op": "ready"})).encode())
            t.join(3)
            until(lambda: len(events) == 2)
            self.assertEqual(events, [("set", "cfg.a"), ("ready", None)])
            self.assertTrue(out["w"].unwatch())
            self.assertEqual(fake.conns[0]["lines"][-1]["params"], {"watch": 7})
        finally:
            c.close()
            fake.close()

    def test_connect_failure_raises(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with self.assertRaises(sy.ConnectionLost):
            sy.Client(port=port)


if __name__ == "__main__":
    unittest.main()
