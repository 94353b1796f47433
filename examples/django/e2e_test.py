#!/usr/bin/env python3
"""End-to-end test of the Django example: the real app under gunicorn on a
Unix socket, the real portcullis binary in front with portcullis.toml (ports
and paths changed to a temp dir), and a client that checks what a user would.

    .venv/bin/python e2e_test.py --portcullis ../../target/debug/portcullis

Run it with the example's virtualenv Python: gunicorn and manage.py come from
there; the test itself uses only the standard library. gunicorn writes an
access log, so a check can prove that a request the proxy turned away never
reached the app. The last line printed is "<N> passed, <M> failed"; the exit
status is 0 only when nothing failed.
"""
import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
UPLOAD_SIZE = 8 * 1024 * 1024  # under the example's max_body (20MiB)
TOO_BIG = 25 * 1024 * 1024  # over it
EXPORT_SIZE = 16 * 1024 * 1024  # api/views.py's export


class SetupError(Exception):
    pass


def wait_for(what, condition, timeout, proc=None, log=None):
    """Poll `condition` until it is true, within a bounded deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SetupError(f"{what}: the process exited with {proc.returncode}{log_tail(log)}")
        if condition():
            return
        time.sleep(0.05)
    raise SetupError(f"{what}: not within {timeout}s{log_tail(log)}")


def log_tail(path, lines=25):
    if path is None or not Path(path).exists():
        return ""
    text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    return "\n    | " + "\n    | ".join(text) if text else ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_connect_unix(path):
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
        return True
    except OSError:
        return False


def can_connect_tcp(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def b64json(part):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class Deployment:
    """gunicorn + portcullis, set up in a temp dir the way run.sh does it."""

    def __init__(self, portcullis, venv_bin, config, tmp):
        self.portcullis = portcullis
        self.venv_bin = venv_bin
        self.config = config
        self.tmp = tmp
        self.procs = []
        self.static_root = tmp / "staticfiles"
        self.socket = tmp / "gunicorn.sock"
        self.gunicorn_access = tmp / "gunicorn-access.log"
        self.gunicorn_errors = tmp / "gunicorn-error.log"
        self.portcullis_log = tmp / "portcullis.log"
        self.env = dict(
            os.environ,
            JWT_SECRET=secrets.token_hex(32),
            DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
            DJANGO_DB=str(tmp / "db.sqlite3"),
            DJANGO_STATIC_ROOT=str(self.static_root),
            DJANGO_ALLOWED_HOSTS="localhost,127.0.0.1",
            PYTHONUNBUFFERED="1",
        )
        self.env.pop("DJANGO_DEBUG", None)
        self.https_port = self.http_port = None

    def manage(self, *args):
        r = subprocess.run(
            [str(self.venv_bin / "python"), "manage.py", *args],
            cwd=HERE, env=self.env, capture_output=True, text=True, timeout=120,
        )
        if r.returncode != 0:
            raise SetupError(f"manage.py {' '.join(args)} failed:\n{r.stdout}{r.stderr}")
        return r.stdout

    def start(self):
        self.manage("migrate", "--noinput", "-v0")
        self.manage("collectstatic", "--noinput", "-v0")
        out = self.manage("create_demo_user", "--username", "demo", "--password", "demo-password")
        m = re.search(r"\(id (\d+)\)", out)
        if not m:
            raise SetupError(f"create_demo_user said {out!r}")
        self.user_id = m.group(1)
        self.start_gunicorn()
        # A free port can be taken between finding and binding it: try again.
        for attempt in range(3):
            self.https_port, self.http_port = free_port(), free_port()
            try:
                self.start_portcullis()
                return
            except SetupError as e:
                if "in use" not in str(e) or attempt == 2:
                    raise

    def start_gunicorn(self):
        cmd = [
            str(self.venv_bin / "gunicorn"),
            "--bind", f"unix:{self.socket}",
            "--workers", "3",
            "--no-control-socket",
            "--access-logfile", str(self.gunicorn_access),
            "--error-logfile", str(self.gunicorn_errors),
            "demo.wsgi",
        ]
        self.gunicorn = self.spawn(cmd, None)
        wait_for("gunicorn listening on its socket", lambda: can_connect_unix(self.socket),
                 60, self.gunicorn, self.gunicorn_errors)

    def start_portcullis(self):
        text = self.config.read_text()
        for pattern, repl in [
            (r'^addr = "127\.0\.0\.1:8443"', f'addr = "127.0.0.1:{self.https_port}"'),
            (r'^addr = "127\.0\.0\.1:8080"', f'addr = "127.0.0.1:{self.http_port}"'),
            (r'^servers = \["unix:run/gunicorn\.sock"\]', f'servers = ["unix:{self.socket}"]'),
            (r'^static = "staticfiles"', f'static = "{self.static_root}"'),
            (r'^static = "private"', f'static = "{HERE / "private"}"'),
            (r'^access = "stdout"', f'access = "{self.tmp / "portcullis-access.log"}"'),
            (r'"errors/502\.html"', f'"{HERE / "errors" / "502.html"}"'),
        ]:
            text, n = re.subn(pattern, repl, text, flags=re.M)
            if n != (2 if "errors" in pattern else 1):
                raise SetupError(f"{self.config}: expected one line matching {pattern!r}, found {n}")
        conf = self.tmp / "portcullis.toml"
        conf.write_text(text)
        log = self.portcullis_log
        self.proxy = self.spawn([str(self.portcullis), "run", "-c", str(conf)], log)
        try:
            wait_for("portcullis listening", lambda: can_connect_tcp(self.https_port)
                     and can_connect_tcp(self.http_port), 30, self.proxy, log)
        except SetupError:
            self.stop(self.proxy)
            raise

    def spawn(self, cmd, log):
        out = open(log, "ab") if log else subprocess.DEVNULL
        p = subprocess.Popen(cmd, cwd=HERE, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)

    # --- the client side -------------------------------------------------

    def tls_context(self):
        """Trust exactly the certificate the proxy serves (an in-memory dev
        certificate), with the host name checked as usual."""
        pem = ssl.get_server_certificate(("127.0.0.1", self.https_port))
        ctx = ssl.create_default_context(cadata=pem)
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return ctx

    def request(self, method, path, headers=None, body=None, tls=True):
        if tls:
            conn = http.client.HTTPSConnection("127.0.0.1", self.https_port, timeout=60,
                                               context=self.ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    def gunicorn_saw(self, marker):
        return self.gunicorn_access.exists() and marker in self.gunicorn_access.read_text()

    def assert_never_reached_gunicorn(self, marker):
        """The request carrying `marker` was not in gunicorn's access log by
        the time a later request that did reach gunicorn was logged."""
        barrier = "barrier-" + secrets.token_hex(8)
        status, _, _ = self.request("GET", f"/public/?{barrier}")
        check(status == 200, f"the barrier request to /public/ got {status}")
        wait_for("gunicorn logging the barrier request", lambda: self.gunicorn_saw(barrier), 10)
        check(not self.gunicorn_saw(marker), f"gunicorn's access log has the request {marker}")


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def json_body(status, body, want=200):
    check(status == want, f"status {status}, want {want}: {body[:300]!r}")
    try:
        return json.loads(body)
    except ValueError:
        raise AssertionError(f"not JSON: {body[:300]!r}") from None


def bearer(token, **more):
    return {"Authorization": f"Bearer {token}", **more}


class Checks:
    """One method per item of "What it must show"; state flows from one to
    the next (the tokens), and a check whose input is missing fails."""

    def __init__(self, d):
        self.d = d
        self.access = self.refresh = None

    def need(self, name):
        v = getattr(self, name)
        check(v is not None, f"no {name} token: an earlier check failed")
        return v

    def tls_certificate(self):
        """TLS listener: the dev certificate is valid for localhost and 127.0.0.1"""
        for name in ("localhost", "127.0.0.1"):
            with socket.create_connection(("127.0.0.1", self.d.https_port), timeout=10) as raw:
                with self.d.ctx.wrap_socket(raw, server_hostname=name) as s:
                    check(s.version() in ("TLSv1.2", "TLSv1.3"), f"{name}: {s.version()}")

    def public_is_open(self):
        """/public/ reaches Django without a token, and Django knows it came over https"""
        data = json_body(*self.d.request("GET", "/public/")[::2])
        check(data.get("secure") is True, f"request.is_secure() was {data.get('secure')!r}")
        check(data.get("url", "").startswith("https://"), f"build_absolute_uri() = {data.get('url')!r}")

    def obtain_tokens(self):
        """POST /api/token/ through the proxy (open route) gives an access and a refresh token"""
        creds = json.dumps({"username": "demo", "password": "demo-password"})
        status, _, body = self.d.request("POST", "/api/token/", {"Content-Type": "application/json"}, creds)
        data = json_body(status, body)
        check({"access", "refresh"} <= data.keys(), f"token response keys: {sorted(data)}")
        claims = b64json(data["access"].split(".")[1])
        check(claims.get("token_type") == "access", f"access token claims {claims}")
        check(str(claims.get("user_id")) == self.d.user_id, f"user_id {claims.get('user_id')!r}")
        self.access, self.refresh = data["access"], data["refresh"]

    def protected_with_token(self):
        """/api/hello/ with the access token: 200 for the right user"""
        status, _, body = self.d.request("GET", "/api/hello/", bearer(self.need("access")))
        data = json_body(status, body)
        check(data.get("username") == "demo", f"username {data.get('username')!r}")
        check(str(data.get("user_id")) == self.d.user_id, f"user_id {data.get('user_id')!r}")

    def protected_without_token(self):
        """/api/hello/ without a token: 401 from the proxy with WWW-Authenticate; gunicorn never saw it"""
        marker = "no-token-" + secrets.token_hex(8)
        status, headers, body = self.d.request("GET", f"/api/hello/?{marker}")
        check(status == 401, f"status {status}, want 401: {body[:200]!r}")
        www = headers.get("WWW-Authenticate", "")
        check(www.startswith('Bearer realm="portcullis"'),
              f"WWW-Authenticate {www!r}, want the proxy's Bearer realm=\"portcullis\"")
        self.d.assert_never_reached_gunicorn(marker)

    def refresh_as_bearer(self):
        """the refresh token as a bearer: refused by the proxy (403 insufficient_scope); gunicorn never saw it"""
        marker = "refresh-bearer-" + secrets.token_hex(8)
        status, headers, body = self.d.request("GET", f"/api/hello/?{marker}", bearer(self.need("refresh")))
        check(status == 403, f"status {status}, want 403 (token_type is not \"access\"): {body[:200]!r}")
        www = headers.get("WWW-Authenticate", "")
        check('error="insufficient_scope"' in www, f"WWW-Authenticate {www!r}")
        self.d.assert_never_reached_gunicorn(marker)

    def tampered_token(self):
        """an access token with a changed payload: 401 invalid_token from the proxy; gunicorn never saw it"""
        head, payload, sig = self.need("access").split(".")
        claims = b64json(payload)
        claims["user_id"] = "999"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        marker = "tampered-" + secrets.token_hex(8)
        status, headers, body = self.d.request("GET", f"/api/hello/?{marker}", bearer(f"{head}.{forged}.{sig}"))
        check(status == 401, f"status {status}, want 401: {body[:200]!r}")
        www = headers.get("WWW-Authenticate", "")
        check('error="invalid_token"' in www, f"WWW-Authenticate {www!r}")
        self.d.assert_never_reached_gunicorn(marker)

    def refresh_and_use(self):
        """POST /api/token/refresh/ gives a new access token, and it works"""
        body = json.dumps({"refresh": self.need("refresh")})
        status, _, resp = self.d.request("POST", "/api/token/refresh/", {"Content-Type": "application/json"}, body)
        data = json_body(status, resp)
        new = data.get("access")
        check(new and new != self.access, "no new access token")
        status, _, resp = self.d.request("GET", "/api/hello/", bearer(new))
        check(json_body(status, resp).get("username") == "demo", "the new token is not the demo user's")
        self.access = new

    def forwarded_headers(self):
        """the app sees X-Forwarded-Proto https, the client's address and the token's user id, not spoofed ones"""
        host = f"localhost:{self.d.https_port}"
        spoofed = {
            "Host": host,
            "X-User-Id": "999",
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "http",
            "X-Forwarded-Host": "evil.example",
        }
        status, _, body = self.d.request("GET", "/api/headers/", bearer(self.need("access"), **spoofed))
        got = json_body(status, body)
        want = {
            "x_forwarded_proto": "https",
            "is_secure": True,
            "x_forwarded_for": "127.0.0.1",
            "client_ip": "127.0.0.1",
            "x_user_id": self.d.user_id,
            "user_id": self.d.user_id,
            "x_forwarded_host": host,
            "host": host,
            "absolute_uri": f"https://{host}/api/headers/",
        }
        wrong = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
        check(not wrong, "got/want: " + ", ".join(f"{k}={g!r}/{w!r}" for k, (g, w) in wrong.items()))

    def static_file(self):
        """a collected static file comes from the proxy with a year-long Cache-Control; gunicorn never sees it"""
        manifest = json.loads((self.d.static_root / "staticfiles.json").read_text())
        name = manifest["paths"]["demo/site.css"]
        check(name != "demo/site.css", "the manifest storage did not hash the name")
        on_disk = (self.d.static_root / name).read_bytes()
        marker = "static-" + secrets.token_hex(8)
        status, headers, body = self.d.request("GET", f"/static/{name}?{marker}")
        check(status == 200, f"status {status}: {body[:200]!r}")
        check(body == on_disk, f"body is not {name} from STATIC_ROOT")
        cc = headers.get("Cache-Control", "")
        check("max-age=31536000" in cc, f"Cache-Control {cc!r}")
        ctype = headers.get("Content-Type", "")
        check(ctype.startswith("text/css"), f"Content-Type {ctype!r}")
        self.d.assert_never_reached_gunicorn(marker)

    def protected_download(self):
        """/api/invoice/: Django checks the token and names the file (X-Accel-Redirect), portcullis sends it; /protected/ itself is 404"""
        on_disk = (HERE / "private" / "invoice-42.txt").read_bytes()
        marker = "invoice-" + secrets.token_hex(8)
        status, headers, body = self.d.request("GET", f"/api/invoice/?{marker}", bearer(self.need("access")))
        check(status == 200, f"status {status}: {body[:200]!r}")
        check(body == on_disk, f"body is not private/invoice-42.txt: {body[:200]!r}")
        disposition = headers.get("Content-Disposition", "")
        check(disposition == 'attachment; filename="invoice-42.txt"', f"Content-Disposition {disposition!r}")
        check(headers.get("X-Accel-Redirect") is None, "X-Accel-Redirect reached the client")
        wait_for("gunicorn logging the invoice request", lambda: self.d.gunicorn_saw(marker), 10)
        status, _, _ = self.d.request("GET", "/protected/invoice-42.txt")
        check(status == 404, f"/protected/invoice-42.txt asked directly: {status}, want 404")
        status, _, _ = self.d.request("GET", "/api/invoice/")
        check(status == 401, f"/api/invoice/ without a token: {status}, want 401")

    def redirect_to_https(self):
        """plain HTTP gets a 308 to the same path over https, and following it works"""
        status, headers, _ = self.d.request("GET", "/public/?from=plain", tls=False)
        where = headers.get("Location", "")
        want = f"https://127.0.0.1:{self.d.https_port}/public/?from=plain"
        check(status == 308, f"status {status}, want 308")
        check(where == want, f"Location {where!r}, want {want!r}")
        data = json_body(*self.d.request("GET", where[len(f"https://127.0.0.1:{self.d.https_port}"):])[::2])
        check(data.get("secure") is True, f"after the redirect: {data}")

    def large_upload(self):
        """an 8 MiB request body, read whole by the proxy (buffer_requests), reaches Django intact"""
        blob = os.urandom(UPLOAD_SIZE)

        def pieces():
            for i in range(0, len(blob), 256 * 1024):
                yield blob[i:i + 256 * 1024]

        headers = bearer(self.need("access"), **{
            "Content-Type": "application/octet-stream",
            # Django reads a body by its Content-Length; a chunked one looks empty.
            "Content-Length": str(len(blob)),
        })
        status, _, body = self.d.request("POST", "/api/upload/", headers, pieces())
        data = json_body(status, body)
        check(data.get("bytes") == len(blob), f"the app got {data.get('bytes')} bytes, sent {len(blob)}")
        check(data.get("sha256") == hashlib.sha256(blob).hexdigest(), "the body arrived changed")

    def slow_download(self):
        """three clients that read nothing of a 16 MiB export leave gunicorn's three sync workers free (buffer_responses), and each gets it whole later"""
        marker = "export-" + secrets.token_hex(8)
        clients = []
        try:
            for i in range(3):
                raw = socket.create_connection(("127.0.0.1", self.d.https_port), timeout=60)
                s = self.d.ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                clients.append(s)
                s.sendall(f"GET /public/export/?{marker}-{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            # A sync worker logs a request once it has written the answer
            # whole: without reading ahead, each would still be writing into
            # the full socket of a client that reads nothing.
            wait_for("gunicorn's workers to finish writing the three exports",
                     lambda: all(self.d.gunicorn_saw(f"{marker}-{i}") for i in range(3)), 60)
            status, _, _ = self.d.request("GET", "/public/")
            check(status == 200, f"/public/ while three clients read nothing: {status}")
            want = hashlib.sha256(bytes(range(256)) * (EXPORT_SIZE // 256)).hexdigest()
            for i, s in enumerate(clients):
                f = s.makefile("rb")
                status_line = f.readline().decode(errors="replace").strip()
                length = None
                while (line := f.readline().strip()) != b"":
                    name, _, value = line.decode(errors="replace").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                check(status_line.startswith("HTTP/1.1 200"), f"export {i}: {status_line!r}")
                check(length == EXPORT_SIZE, f"export {i}: Content-Length {length}")
                data = f.read(length)
                # Held past gunicorn's --timeout, a worker is killed mid-answer.
                check(len(data) == length, f"export {i}: {len(data)} of {length} bytes arrived")
                check(hashlib.sha256(data).hexdigest() == want, f"export {i} arrived changed")
        finally:
            for s in clients:
                s.close()

    def too_large_upload(self):
        """a body over max_body (client_max_body_size) gets 413 from the proxy; gunicorn never saw it"""
        marker = "too-big-" + secrets.token_hex(8)
        head = (f"POST /api/upload/?{marker} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {self.need('access')}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {TOO_BIG}\r\n\r\n")
        with socket.create_connection(("127.0.0.1", self.d.https_port), timeout=30) as raw:
            with self.d.ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(head.encode())
                status_line = s.makefile("rb").readline().decode(errors="replace").strip()
        check(status_line.startswith("HTTP/1.1 413"), f"got {status_line!r}, want 413")
        self.d.assert_never_reached_gunicorn(marker)

    def metrics(self):
        """/metrics: gunicorn up, the requests it was sent and none failed, the answers so far by class, their times"""
        status, headers, body = self.d.request("GET", "/metrics")
        check(status == 200, f"status {status}: {body[:300]!r}")
        ctype = headers.get("Content-Type", "")
        check(ctype.startswith("text/plain; version=0.0.4"), f"Content-Type {ctype!r}")
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                values[series] = float(value)

        def one(prefix):
            found = [v for k, v in values.items() if k.startswith(prefix)]
            check(len(found) == 1, f"{prefix}...: {found}")
            return found[0]

        check(one('portcullis_upstream_server_up{upstream="django",') == 1, "gunicorn not up")
        sent = one('portcullis_upstream_server_requests_total{upstream="django",')
        check(sent >= 5, f"{sent} requests sent to gunicorn")
        failed = one('portcullis_upstream_server_failures_total{upstream="django",')
        check(failed == 0, f"{failed} failed")
        # The checks before: tokens, pages and uploads (2xx), the redirect
        # to https (3xx), refused tokens, a direct /protected/ and the
        # oversize upload (4xx).
        for code, least in [("2xx", 5), ("3xx", 1), ("4xx", 3)]:
            n = values.get(f'portcullis_responses_total{{code="{code}"}}', 0)
            check(n >= least, f"{code}: {n}")
        check(values.get('portcullis_responses_total{code="5xx"}') == 0, "a 5xx before gunicorn stopped")
        # The latency histograms: every answered attempt timed, gunicorn's
        # time in its server's, each answer's in its class's.
        timed = one('portcullis_upstream_server_header_time_seconds_count{upstream="django",')
        check(timed == sent, f"{timed} attempts timed, {sent} sent")
        inf = [v for k, v in values.items()
               if k.startswith('portcullis_upstream_server_header_time_seconds_bucket{upstream="django",')
               and k.endswith('le="+Inf"}')]
        check(inf == [timed], f"+Inf buckets {inf}, count {timed}")
        app_time = one('portcullis_upstream_server_header_time_seconds_sum{upstream="django",')
        check(app_time > 0, f"gunicorn's time {app_time}")
        answered = values.get('portcullis_response_time_seconds_count{code="2xx"}', 0)
        check(answered >= 5, f"{answered} 2xx answers timed")

    def maintenance_page(self):
        """with gunicorn stopped, a browser gets the site's error page (error_pages), not a line of text"""
        self.d.stop(self.d.gunicorn)
        page = (HERE / "errors" / "502.html").read_bytes()
        status, headers, body = self.d.request("GET", "/public/", {"Accept": "text/html"})
        check(status in (502, 503), f"status {status}, want 502 or 503")
        check(body == page, f"body is not errors/502.html: {body[:200]!r}")
        ctype = headers.get("Content-Type", "")
        check(ctype.startswith("text/html"), f"Content-Type {ctype!r}")


ORDER = [
    "tls_certificate", "public_is_open", "obtain_tokens", "protected_with_token",
    "protected_without_token", "refresh_as_bearer", "tampered_token", "refresh_and_use",
    "forwarded_headers", "static_file", "protected_download", "redirect_to_https", "large_upload", "slow_download", "too_large_upload", "metrics",
    # Last: it stops gunicorn.
    "maintenance_page",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--portcullis", required=True, type=Path, help="the built portcullis binary")
    ap.add_argument("--config", type=Path, default=HERE / "portcullis.toml")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir with the logs")
    args = ap.parse_args()

    venv_bin = Path(sys.executable).parent
    tmp = Path(tempfile.mkdtemp(prefix="portcullis-django-e2e-"))
    d = Deployment(args.portcullis.resolve(), venv_bin, args.config.resolve(), tmp)
    checks = Checks(d)
    passed = failed = 0
    try:
        try:
            if not (venv_bin / "gunicorn").exists():
                raise SetupError(f"no gunicorn next to {sys.executable}: run this with the example's venv Python")
            if not d.portcullis.exists():
                raise SetupError(f"{d.portcullis} does not exist: cargo build first")
            d.start()
            d.ctx = d.tls_context()
            setup_error = None
        except (SetupError, OSError, ssl.SSLError, subprocess.SubprocessError) as e:
            setup_error = f"setup failed: {e}"
            print(f"SETUP FAILED: {e}", flush=True)
        for name in ORDER:
            fn = getattr(checks, name)
            title = fn.__doc__.strip()
            try:
                if setup_error:
                    raise AssertionError(setup_error.splitlines()[0])
                fn()
                passed += 1
                print(f"ok   {title}", flush=True)
            except Exception as e:  # every failure is reported, none stops the run
                failed += 1
                reason = str(e) if isinstance(e, (AssertionError, SetupError)) else traceback.format_exc()
                print(f"FAIL {title}\n     {reason}", flush=True)
    finally:
        d.stop_all()
        if failed:
            for label, path in [("portcullis", d.portcullis_log), ("gunicorn", d.gunicorn_errors)]:
                tail = log_tail(path, 15)
                if tail:
                    print(f"--- last lines of the {label} log:{tail}")
        if args.keep or failed:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
