from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tenants.models import Tenant
from tenants.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key and print its secret once."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="Tenant slug; omit for a global key that sees every tenant.")
        parser.add_argument("--scopes", required=True, help="Comma-separated: ingest,read,admin")
        parser.add_argument("--name", default="", help="A label for the key.")

    def handle(self, *args, tenant=None, scopes, name, **options):
        tenant_obj = None
        if tenant:
            tenant_obj = Tenant.objects.filter(slug=tenant).first()
            if tenant_obj is None:
                raise CommandError(f"No tenant with slug {tenant!r}.")
        try:
            api_key, secret = api_key_create(
                name=name or f"{tenant or 'global'} key",
                scopes=[scope.strip() for scope in scopes.split(",") if scope.strip()],
                tenant=tenant_obj,
                actor="manage.py create_api_key",
            )
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from error
        self.stderr.write(
            f"Created {api_key.prefix} ({', '.join(api_key.scopes)}). The secret is shown only once:"
        )
        self.stdout.write(secret)
