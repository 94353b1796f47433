#!/usr/bin/env bash
# The Django example in one command: a virtualenv with the pinned packages,
# the database migrated, static files collected, a demo user, gunicorn on a
# Unix socket, and portcullis in front on https://localhost:8443/ (and
# http://localhost:8080/, which redirects). Ctrl-C stops both.
#
#   ./run.sh                       portcullis from PATH, else built from this repo
#   PORTCULLIS=/path/to/portcullis ./run.sh
set -euo pipefail
cd "$(dirname "$0")"
repo=$(cd ../.. && pwd)

if [ ! -x .venv/bin/python ]; then
    echo "==> virtualenv in .venv"
    "${PYTHON:-python3}" -m venv .venv
fi
echo "==> pip install -r requirements.txt"
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt

# Development secrets, made once and kept in run/ (gitignored) so that tokens
# stay valid across restarts. JWT_SECRET is read by Django (SimpleJWT signs
# with it) and by portcullis (its [jwt.simplejwt] policy verifies with it).
mkdir -p run
for var in JWT_SECRET DJANGO_SECRET_KEY; do
    if [ -z "${!var:-}" ]; then
        file="run/$(echo "$var" | tr '[:upper:]' '[:lower:]')"
        [ -s "$file" ] || (umask 077 && .venv/bin/python -c 'import secrets; print(secrets.token_hex(32))' >"$file")
        export "$var=$(cat "$file")"
    fi
done

echo "==> manage.py migrate, collectstatic, create_demo_user"
.venv/bin/python manage.py migrate --noinput -v0
.venv/bin/python manage.py collectstatic --noinput -v0
.venv/bin/python manage.py create_demo_user

if [ -n "${PORTCULLIS:-}" ]; then
    portcullis=$PORTCULLIS
elif command -v portcullis >/dev/null; then
    portcullis=$(command -v portcullis)
else
    echo "==> cargo build --release (portcullis)"
    (cd "$repo" && cargo build --release --quiet --bin portcullis)
    portcullis="${CARGO_TARGET_DIR:-$repo/target}/release/portcullis"
fi
"$portcullis" check -c portcullis.toml

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> gunicorn on unix:run/gunicorn.sock, 3 workers"
rm -f run/gunicorn.sock
.venv/bin/gunicorn --bind unix:run/gunicorn.sock --workers 3 --no-control-socket \
    --access-logfile - demo.wsgi &
pids+=($!)
for _ in $(seq 100); do [ -S run/gunicorn.sock ] && break; sleep 0.1; done

echo "==> portcullis run -c portcullis.toml"
"$portcullis" run -c portcullis.toml &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/8443) 2>/dev/null && break; sleep 0.1; done

cat <<'EOF'

Try (-k: the certificate is a development one made at start):

  # a token pair for the demo user, from SimpleJWT through the proxy
  curl -k https://localhost:8443/api/token/ -H 'Content-Type: application/json' \
       -d '{"username": "demo", "password": "demo-password"}'
  TOKEN=$(curl -sk https://localhost:8443/api/token/ -H 'Content-Type: application/json' \
       -d '{"username": "demo", "password": "demo-password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access"])')

  # the protected view with the access token: 200
  curl -k https://localhost:8443/api/hello/ -H "Authorization: Bearer $TOKEN"
  # without it: 401 from portcullis, and gunicorn's log shows nothing
  curl -ik https://localhost:8443/api/hello/
  # what Django was told: X-Forwarded-Proto, -For, -Host and X-User-Id from the token
  curl -k https://localhost:8443/api/headers/ -H "Authorization: Bearer $TOKEN" -H 'X-User-Id: 999'
  # a static file, served by portcullis from staticfiles/
  curl -Ik https://localhost:8443/static/demo/site.css
  # a protected download: Django checks the token, portcullis sends private/invoice-42.txt
  curl -k https://localhost:8443/api/invoice/ -H "Authorization: Bearer $TOKEN"
  # plain http: 308 to https
  curl -I http://localhost:8080/public/
  # counters for Prometheus (this machine only)
  curl -sk https://localhost:8443/metrics

Ctrl-C stops gunicorn and portcullis.
EOF
wait -n
