"""The demo API. portcullis has already checked the access token of every
request under /api/ (except /api/token/) before it gets here; SimpleJWT's
JWTAuthentication checks it again, which costs little and keeps the app
safe should it ever be reached some other way.
"""
import hashlib

from django.http import HttpResponse

from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response


def client_ip(request):
    """The client's address. portcullis replaces X-Forwarded-For with the
    address it saw (or, behind proxies it trusts, appends it), so the last
    entry is the one to believe; REMOTE_ADDR is empty on a Unix socket."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if forwarded:
        return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR", "")


@api_view(["GET"])
@authentication_classes([])
@permission_classes([AllowAny])
def public(request):
    return Response(
        {
            "message": "anyone may read this",
            "secure": request.is_secure(),
            "url": request.build_absolute_uri(),
        }
    )


EXPORT_SIZE = 16 * 1024 * 1024


def export(request):
    """A large answer, as a CSV export or a report is: 16 MiB of a fixed
    pattern (bytes 0 to 255 over and over), so a client can check it."""
    return HttpResponse(bytes(range(256)) * (EXPORT_SIZE // 256), content_type="application/octet-stream")


@api_view(["GET"])
@permission_classes([IsAuthenticated])
def hello(request):
    user = request.user
    return Response({"message": f"hello, {user.username}", "username": user.username, "user_id": user.pk})


@api_view(["GET"])
@permission_classes([IsAuthenticated])
def headers(request):
    """Echo what the proxy told the app about the request."""
    meta = request.META
    return Response(
        {
            "x_forwarded_proto": meta.get("HTTP_X_FORWARDED_PROTO"),
            "x_forwarded_for": meta.get("HTTP_X_FORWARDED_FOR"),
            "x_forwarded_host": meta.get("HTTP_X_FORWARDED_HOST"),
            "x_user_id": meta.get("HTTP_X_USER_ID"),
            "x_request_id": meta.get("HTTP_X_REQUEST_ID"),
            "remote_addr": meta.get("REMOTE_ADDR"),
            # What Django made of them (SECURE_PROXY_SSL_HEADER, USE_X_FORWARDED_HOST):
            "is_secure": request.is_secure(),
            "host": request.get_host(),
            "absolute_uri": request.build_absolute_uri(),
            "client_ip": client_ip(request),
            # The user SimpleJWT found in the token, to compare with X-User-Id.
            "user_id": str(request.user.pk),
        }
    )


@api_view(["POST"])
@permission_classes([IsAuthenticated])
def upload(request):
    """Read a request body of any size in pieces, never whole in memory, and
    say how much arrived and its SHA-256."""
    digest = hashlib.sha256()
    size = 0
    stream = request.stream
    while stream is not None:
        chunk = stream.read(64 * 1024)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    return Response({"bytes": size, "sha256": digest.hexdigest()})


@api_view(["GET"])
@permission_classes([IsAuthenticated])
def invoice(request):
    """A file only a signed-in user may download: Django decides, portcullis
    sends the bytes from its internal /protected/ route (what
    django-sendfile2's nginx backend answers, without the package)."""
    response = HttpResponse(content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="invoice-42.txt"'
    response["X-Accel-Redirect"] = "/protected/invoice-42.txt"
    return response
