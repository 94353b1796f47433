"""`manage.py create_demo_user`: make (or reset) the user the examples log in
as. Running it again sets the password again; it never makes a second user."""
import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create or reset the demo user (default demo / demo-password, or DEMO_USER / DEMO_PASSWORD)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("DEMO_USER", "demo"))
        parser.add_argument("--password", default=os.environ.get("DEMO_PASSWORD", "demo-password"))

    def handle(self, *args, username, password, **options):
        user, created = get_user_model().objects.get_or_create(username=username)
        user.set_password(password)
        user.save()
        verb = "created" if created else "reset"
        self.stdout.write(f"demo user {username!r} {verb} (id {user.pk})")
