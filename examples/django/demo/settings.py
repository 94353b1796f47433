"""Settings for the demo project: a Django REST framework API with SimpleJWT,
run by gunicorn on a Unix socket behind portcullis, which terminates TLS,
serves /static/ and checks access tokens before a request reaches Django.

Everything that differs between a laptop and a server comes from the
environment; run.sh sets development values.
"""
import os
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_list(name, default):
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("set DJANGO_SECRET_KEY (or DJANGO_DEBUG=1 for a throwaway key)")
    SECRET_KEY = "django-insecure-development-only"

# The HMAC key SimpleJWT signs tokens with. portcullis verifies the same
# tokens with the same key: its [jwt.simplejwt] policy reads JWT_SECRET too.
JWT_SECRET = os.environ.get("JWT_SECRET", "")
if len(JWT_SECRET) < 32:
    raise ImproperlyConfigured("set JWT_SECRET to a random string of at least 32 characters")

# --- Behind a TLS-terminating proxy -------------------------------------
# portcullis talks plain HTTP to gunicorn and says how the client came in.
# It always overwrites X-Forwarded-Proto, -Host and -For with what it saw,
# so Django may believe them: nothing but portcullis can reach the socket.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")  # request.is_secure()
USE_X_FORWARDED_HOST = True  # request.get_host() is the name the client used
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")
# Origins (scheme://host:port) that unsafe requests with cookies may come
# from; it matters once the project has session views (admin, forms).
CSRF_TRUSTED_ORIGINS = env_list(
    "DJANGO_CSRF_TRUSTED_ORIGINS", "https://localhost:8443,https://127.0.0.1:8443"
)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# portcullis's redirect listener sends http:// to https:// before Django
# sees it; a redirect here as well would only cost a round trip.
SECURE_SSL_REDIRECT = False
# The proxy cuts larger bodies off with 413 (portcullis server.max_body);
# this is Django's own limit for bodies it reads into memory (request.body).
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "rest_framework",
    "api",
]

# A token-only API: no sessions, so no session or auth middleware (DRF sets
# request.user from the token). Add both back with django.contrib.admin.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB", str(BASE_DIR / "db.sqlite3")),
    }
}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Static files: collected once, served by portcullis ------------------
# `manage.py collectstatic` copies every app's static/ into STATIC_ROOT; the
# manifest storage adds a content hash to each name (site.3f2a1c.css), so
# the proxy can tell browsers to cache them for a year.
STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles"))
STORAGES = {
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage",
    },
}

# --- REST framework and SimpleJWT ----------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

SIMPLE_JWT = {
    # HS256 with the shared secret: what portcullis's policy accepts.
    "ALGORITHM": "HS256",
    "SIGNING_KEY": JWT_SECRET,
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=5),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    # The claims portcullis checks and forwards: token_type must be
    # "access" (a refresh token is refused at the proxy), user_id becomes
    # the X-User-Id header.
    "TOKEN_TYPE_CLAIM": "token_type",
    "USER_ID_CLAIM": "user_id",
    "AUTH_HEADER_TYPES": ("Bearer",),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
