#!/usr/bin/env python3
"""Submit a bitplan job to a coordinator, follow its progress, fetch the plan.

Speaks docs/protocol.md (version 1) directly with pyzmq and msgpack
(Debian: apt-get install python3-zmq python3-msgpack).

    python3 client.py JOB.json [--connect tcp://127.0.0.1:5555] [--out plan.json]
    python3 client.py --jobs
"""
import argparse
import itertools
import json
import sys
import time

import msgpack
import zmq

PROTO_VERSION = 1
_ids = itertools.count(int(time.time()) << 16)


class ProtocolError(Exception):
    pass


class Client:
    def __init__(self, endpoint, timeout_ms=10000, server_key=None, public_key=None,
                 secret_key=None):
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.ctx = zmq.Context.instance()
        self.sock = None
        self._keys = (server_key, public_key, secret_key)
        self._open()

    def _open(self):
        if self.sock is not None:
            self.sock.close(linger=0)
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, 64 << 20)
        server_key, public_key, secret_key = self._keys
        if server_key:
            s.curve_serverkey = server_key.encode()
            s.curve_publickey = public_key.encode()
            s.curve_secretkey = secret_key.encode()
        s.connect(self.endpoint)
        self.sock = s

    def request(self, t, **fields):
        """Send one request; return the reply header (a dict)."""
        req_id = next(_ids)
        header = {"v": PROTO_VERSION, "t": t, "id": req_id}
        header.update(fields)
        self.sock.send(msgpack.packb(header, use_bin_type=True))
        deadline = time.monotonic() + self.timeout_ms / 1000.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                self._open()  # drop whatever might still arrive for this request
                raise TimeoutError(f"no reply from {self.endpoint} within {self.timeout_ms} ms")
            frames = self.sock.recv_multipart()
            reply = msgpack.unpackb(frames[0], raw=False, strict_map_key=True)
            if not isinstance(reply, dict) or reply.get("v") != PROTO_VERSION:
                raise ProtocolError("reply is not a version-1 header")
            if reply.get("id") != req_id:
                continue  # a late reply to an earlier request
            if reply.get("t") == "error":
                raise RuntimeError(f"{reply.get('message')} (code {reply.get('code')})")
            return reply

    def submit(self, spec_text):
        return self.request("submit", job=spec_text)["job"]

    def status(self, job):
        return self.request("status", job=job)

    def result(self, job):
        return self.request("result", job=job)["plan"]

    def cancel(self, job):
        self.request("cancel", job=job)

    def jobs(self):
        return self.request("jobs")["jobs"]


def progress_line(st):
    pct = 100.0 * st.get("progress", 0.0)
    eta = st.get("eta_s")
    eta_s = f" ETA {eta:.0f}s" if eta is not None and st["state"] == "running" else ""
    return f"{st['job']} {st['state']:<8} {st['done']}/{st['total']} tasks {pct:5.1f}%{eta_s}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?", help="job spec JSON file")
    ap.add_argument("--connect", default="tcp://127.0.0.1:5555")
    ap.add_argument("--out", help="write the plan here (default: stdout)")
    ap.add_argument("--timeout-ms", type=int, default=10000)
    ap.add_argument("--jobs", action="store_true", help="list jobs and exit")
    args = ap.parse_args()

    c = Client(args.connect, args.timeout_ms)
    if args.jobs:
        for j in c.jobs():
            print(f"{j['job']:<12} {j['state']:<9} {j['done']}/{j['total']}")
        return 0
    if not args.spec:
        ap.error("a job spec file is required")
    with open(args.spec, encoding="utf-8") as f:
        spec = f.read()
    json.loads(spec)  # fail early on a broken file
    job = c.submit(spec)
    print(f"submitted {job}", file=sys.stderr)
    while True:
        st = c.status(job)
        print("\r" + progress_line(st), end="", file=sys.stderr, flush=True)
        if st["state"] in ("done", "failed", "canceled"):
            print(file=sys.stderr)
            break
        time.sleep(0.5)
    if st["state"] != "done":
        print(f"job {job} {st['state']}: {st.get('error')}", file=sys.stderr)
        return 1
    plan = c.result(job)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(plan)
    else:
        sys.stdout.write(plan)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, TimeoutError, ProtocolError, OSError) as e:
        print(f"client.py: error: {e}", file=sys.stderr)
        sys.exit(1)
