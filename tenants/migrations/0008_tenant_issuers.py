"""Each tenant's one issuer becomes the one entry of its list of issuers."""

import django.db.models.deletion
from django.db import migrations, models

import tenants.validation

ISSUER_FIELDS = ("domain", "issuer_override", "jwks_url_override")


def issuer_to_list(apps, schema_editor) -> None:
    """Copy every tenant's issuer into its first (and only) list entry."""
    tenant_model = apps.get_model("tenants", "Tenant")
    issuer_model = apps.get_model("tenants", "TenantIssuer")
    rows = tenant_model.objects.values_list("id", *ISSUER_FIELDS).iterator(chunk_size=2000)
    batch = []
    for tenant_id, *values in rows:
        batch.append(issuer_model(tenant_id=tenant_id, **dict(zip(ISSUER_FIELDS, values))))
        if len(batch) == 2000:
            issuer_model.objects.bulk_create(batch)
            batch = []
    issuer_model.objects.bulk_create(batch)


def list_to_issuer(apps, schema_editor) -> None:
    """Back: every tenant keeps its first listed issuer only."""
    tenant_model = apps.get_model("tenants", "Tenant")
    issuer_model = apps.get_model("tenants", "TenantIssuer")
    for issuer in issuer_model.objects.order_by("tenant_id", "-position", "-id"):
        values = {name: getattr(issuer, name) for name in ISSUER_FIELDS}
        tenant_model.objects.filter(pk=issuer.tenant_id).update(**values)


def issuer_field(name: str) -> models.CharField:
    """The field as it was on the tenant and is on the issuer."""
    if name == "domain":
        return models.CharField(
            max_length=253,
            blank=True,
            validators=[tenants.validation.validate_domain],
            help_text="Auth0 domain, such as acme.eu.auth0.com; the issuer is then "
            "https://acme.eu.auth0.com/.",
        )
    if name == "issuer_override":
        return models.CharField(
            "issuer override",
            max_length=500,
            blank=True,
            validators=[tenants.validation.validate_issuer_url],
            help_text="Exact iss claim for custom domains or other issuers; blank derives it.",
        )
    return models.CharField(
        "JWKS URL override",
        max_length=500,
        blank=True,
        validators=[tenants.validation.validate_issuer_url],
        help_text="Blank: the issuer URL followed by .well-known/jwks.json.",
    )


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0007_routes"),
    ]

    operations = [
        migrations.CreateModel(
            name="TenantIssuer",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "position",
                    models.PositiveIntegerField(default=0, help_text="Order on the page."),
                ),
                *((name, issuer_field(name)) for name in ISSUER_FIELDS),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="issuers",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={"ordering": ["position", "id"]},
        ),
        migrations.RunPython(issuer_to_list, list_to_issuer),
        *(migrations.RemoveField(model_name="tenant", name=name) for name in ISSUER_FIELDS),
    ]
