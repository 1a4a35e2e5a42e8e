"""Updraft's Python function runtime: a small HTTP server around a user's handler.

Started as `python3 -u python.py HANDLER` it loads HANDLER (a .py file, or a folder
with main.py or handler.py) and serves it on $PORT. Started with `--stem` it is a
stem cell: the interpreter and the server's modules are loaded, and it waits for one
JSON line on stdin ({"args": [HANDLER], "env": [[k, v], ...], "cwd": DIR}, and in
a sandbox "uid" and "gid" to become) before loading the handler, so a cold start
skips the interpreter's own start-up.

The handler is `def handle(request)`. `request` has method, path, query (a dict of
the first value of each parameter), headers (lower-case names), body (bytes) and
json (the body parsed). It returns a dict or list (sent as JSON), a str, bytes, a
tuple (body, status[, headers]) or an `updraft.Response(body, status, headers)`.
An exception answers 500 and its traceback goes to stderr; with UPDRAFT_DEBUG=1 the
traceback is in the response too.
"""
import importlib.util
import json
import os
import sys
import traceback
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Response:
    def __init__(self, body=b"", status=200, headers=None):
        self.body = body
        self.status = status
        self.headers = dict(headers or {})


class Request:
    def __init__(self, method, target, headers, body):
        parts = urlsplit(target)
        self.method = method
        self.path = parts.path
        self.query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    @property
    def json(self):
        return json.loads(self.body or b"null")


def encode(result):
    """The handler's return value as (status, headers, body bytes)."""
    status, headers = 200, {}
    if isinstance(result, Response):
        status, headers, result = result.status, result.headers, result.body
    elif isinstance(result, tuple):
        result, status, *rest = result
        headers = dict(rest[0]) if rest else {}
    if isinstance(result, (dict, list)):
        body, kind = json.dumps(result).encode(), "application/json"
    elif isinstance(result, str):
        body, kind = result.encode(), "text/plain; charset=utf-8"
    elif isinstance(result, (bytes, bytearray)):
        body, kind = bytes(result), "application/octet-stream"
    elif result is None:
        body, kind = b"", "text/plain"
    else:
        body, kind = json.dumps(result).encode(), "application/json"
    headers = {k.lower(): str(v) for k, v in headers.items()}
    headers.setdefault("content-type", kind)
    return status, headers, body


def load(handler):
    path = os.path.abspath(handler)
    if os.path.isdir(path):
        for name in ("main.py", "handler.py", "__init__.py"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
    folder = os.path.dirname(path)
    sys.path.insert(0, folder)
    for vendored in ("vendor", "lib", ".packages"):
        if os.path.isdir(os.path.join(folder, vendored)):
            sys.path.insert(1, os.path.join(folder, vendored))
    spec = importlib.util.spec_from_file_location("handler", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, "handle", None)
    if not callable(function):
        raise SystemExit(f"{handler}: defines no handle(request) function")
    return function


def serve(function):
    debug = os.environ.get("UPDRAFT_DEBUG") == "1"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(self.command, self.path, self.headers, self.rfile.read(length))
            try:
                status, headers, body = encode(function(request))
            except Exception:
                trace = traceback.format_exc()
                sys.stderr.write(trace)
                sys.stderr.flush()
                status, headers = 500, {"content-type": "text/plain; charset=utf-8"}
                body = (trace if debug else "the function raised an exception; see the logs\n").encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = answer

        def log_message(self, fmt, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()


def main():
    # Handlers may `from updraft import Response`.
    sys.modules["updraft"] = types.SimpleNamespace(Response=Response, Request=Request)
    if sys.argv[1:] == ["--stem"]:
        order = json.loads(sys.stdin.readline())
        if "uid" in order:
            # Sandboxed, the stem is root able only to become its namespace's user.
            os.setgroups([])
            os.setgid(order["gid"])
            os.setuid(order["uid"])
        os.environ.clear()
        os.environ.update(dict(order["env"]))
        # The interpreter read PYTHONPATH when the stem started, before the revision's
        # (its dependency layer) was known.
        for entry in reversed(os.environ.get("PYTHONPATH", "").split(":")):
            if entry:
                sys.path.insert(0, entry)
        os.chdir(order["cwd"])
        handler = order["args"][0]
    else:
        handler = sys.argv[1]
    try:
        function = load(handler)
    except BaseException:
        traceback.print_exc()
        sys.exit(3)
    serve(function)


main()
