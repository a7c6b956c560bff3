"""Tenants: their issuers, the audiences it mints tokens for, hosts, and endpoint scope rules."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models

from authz.endpoints import get_endpoint
from authz.policy import (
    AUTH0_PROFILE,
    DPOP_ALLOWED,
    DPOP_DISABLED,
    DPOP_REQUIRED,
    RFC9068_PROFILE,
)
from tenants.ratelimit import validate_rate
from tenants.validation import (
    validate_algorithms,
    validate_domain,
    validate_dpop_algorithms,
    validate_hostname,
    validate_issuer_url,
    validate_organizations,
    validate_origin,
    validate_route_methods,
    validate_route_path,
    validate_scope_alternatives,
    validate_scopes,
    validate_single_scope,
)


def derive_issuer(domain: str, issuer_override: str) -> str:
    """The exact ``iss`` of a tenant: the override, else Auth0's ``https://<domain>/``."""
    return issuer_override or f"https://{domain}/"


def derive_jwks_url(issuer: str, jwks_url_override: str) -> str:
    """Where a tenant's key set lives: the override, else under the issuer's well-known path."""
    return jwks_url_override or f"{issuer.rstrip('/')}/.well-known/jwks.json"


def default_algorithms() -> list[str]:
    """Auth0 signs access tokens with RS256."""
    return ["RS256"]


def default_dpop_algorithms() -> list[str]:
    """Auth0's SDKs make DPoP proofs with ES256."""
    return ["ES256"]


class DPoPMode(models.TextChoices):
    """Whether DPoP-bound tokens (RFC 9449) are refused, taken beside Bearer, or demanded."""

    DISABLED = DPOP_DISABLED, "disabled: Bearer only"
    ALLOWED = DPOP_ALLOWED, "allowed: Bearer or DPoP"
    REQUIRED = DPOP_REQUIRED, "required: DPoP only"


class ScopeClaims(models.TextChoices):
    """Which token claims carry the granted scopes."""

    SCOPE = "scope", "scope (space-separated string)"
    PERMISSIONS = "permissions", "permissions (Auth0 RBAC array)"
    BOTH = "both", "both scope and permissions"


class TokenProfile(models.TextChoices):
    """How access tokens are typed and which claims they must carry."""

    AUTH0 = AUTH0_PROFILE, "Auth0 (typ absent, JWT or at+jwt)"
    RFC9068 = RFC9068_PROFILE, "RFC 9068 (typ at+jwt; client_id, jti and iat required)"


class Tenant(models.Model):
    """One customer of the platform, with the Auth0 (or other OIDC) issuers it trusts."""

    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    algorithms = models.JSONField(default=default_algorithms, validators=[validate_algorithms])
    leeway = models.PositiveIntegerField(
        default=60,
        validators=[MaxValueValidator(600)],
        help_text="Seconds of clock skew tolerated on exp, nbf and iat.",
    )
    scope_claims = models.CharField(
        max_length=12, choices=ScopeClaims.choices, default=ScopeClaims.SCOPE
    )
    dpop = models.CharField(
        "DPoP",
        max_length=8,
        choices=DPoPMode.choices,
        default=DPoPMode.ALLOWED,
        help_text="A token bound to a key (cnf.jkt) is never taken as Bearer, whatever this is.",
    )
    dpop_algorithms = models.JSONField(
        "DPoP proof algorithms",
        default=default_dpop_algorithms,
        validators=[validate_dpop_algorithms],
    )
    dpop_nonce = models.BooleanField(
        "DPoP nonces",
        default=False,
        help_text="Proofs must carry a nonce this API issued (DPoP-Nonce header); costs clients "
        "one extra round trip when the nonce rotates.",
    )
    provision_users = models.BooleanField(
        default=False, help_text="Create a Django user for each token subject."
    )
    admin_scope = models.CharField(
        max_length=200,
        blank=True,
        validators=[validate_single_scope],
        help_text="One scope: a token with it may delete any message of the tenant; blank: none.",
    )
    token_profile = models.CharField(
        max_length=10,
        choices=TokenProfile.choices,
        default=TokenProfile.AUTH0,
        help_text="RFC 9068 also demands typ at+jwt and the claims client_id, jti and iat.",
    )
    organizations = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_organizations],
        help_text="Auth0 organization ids (org_...), one per line: a token's org_id must be one "
        "of them. Blank: org_id is not checked.",
    )
    rate_limit_per_subject = models.CharField(
        "rate limit per subject",
        max_length=20,
        blank=True,
        validators=[validate_rate],
        help_text="Requests per token subject, such as 60/min, 1000/hour or 20/s; blank: the "
        "platform's default (AUTHZ_RATE_LIMIT_PER_SUBJECT), if any.",
    )
    rate_limit_per_tenant = models.CharField(
        "rate limit per tenant",
        max_length=20,
        blank=True,
        validators=[validate_rate],
        help_text="This tenant's requests together, checked before any token work; requests "
        "refused before authentication count apart, against as many again. Blank: the "
        "platform's default (AUTHZ_RATE_LIMIT_PER_TENANT), if any.",
    )
    operators = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="operated_tenants",
        help_text="Staff users who may configure this tenant (but not its slug or hosts).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def issuer(self) -> str:
        """The first listed issuer's exact ``iss`` (the development commands mint as it)."""
        first = self.issuers.first()
        return first.issuer if first else ""

    @property
    def jwks_url(self) -> str:
        """Where the first listed issuer's key set is fetched from."""
        first = self.issuers.first()
        return first.jwks_url if first else ""

    @property
    def jwks_urls(self) -> set[str]:
        """Where the key sets of every listed issuer are fetched from."""
        return {issuer.jwks_url for issuer in self.issuers.all()}


class TenantIssuer(models.Model):
    """One issuer a tenant trusts: the exact ``iss`` of its tokens and where its keys live."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="issuers")
    position = models.PositiveIntegerField(default=0, help_text="Order on the page.")
    domain = models.CharField(
        max_length=253,
        blank=True,
        validators=[validate_domain],
        help_text="Auth0 domain, such as acme.eu.auth0.com; the issuer is then https://acme.eu.auth0.com/.",
    )
    issuer_override = models.CharField(
        "issuer override",
        max_length=500,
        blank=True,
        validators=[validate_issuer_url],
        help_text="Exact iss claim for custom domains or other issuers; blank derives it.",
    )
    jwks_url_override = models.CharField(
        "JWKS URL override",
        max_length=500,
        blank=True,
        validators=[validate_issuer_url],
        help_text="Blank: the issuer URL followed by .well-known/jwks.json.",
    )

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.issuer

    def clean(self) -> None:
        """Require a domain or an issuer override to know which issuer to trust."""
        if not self.domain and not self.issuer_override:
            raise ValidationError(
                {
                    "domain": ValidationError(
                        "Enter the Auth0 domain, or an issuer override.", code="no_issuer"
                    )
                }
            )

    @property
    def issuer(self) -> str:
        """The exact ``iss`` value tokens must carry."""
        return derive_issuer(self.domain, self.issuer_override)

    @property
    def jwks_url(self) -> str:
        """Where this issuer's JSON Web Key Set is fetched from."""
        return derive_jwks_url(self.issuer, self.jwks_url_override)


class TenantHost(models.Model):
    """A hostname that serves one tenant."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="hosts")
    hostname = models.CharField(max_length=253, unique=True, validators=[validate_hostname])

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return self.hostname


class TenantAudience(models.Model):
    """An API identifier (``aud``) the tenant's issuer mints tokens for."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="audiences")
    audience = models.CharField(max_length=500)

    class Meta:
        ordering = ["audience"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "audience"], name="unique_tenant_audience")
        ]

    def __str__(self) -> str:
        return self.audience


class TenantCorsOrigin(models.Model):
    """A browser origin allowed to call the tenant's API (CORS)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="cors_origins")
    origin = models.CharField(max_length=300, validators=[validate_origin])

    class Meta:
        ordering = ["origin"]
        verbose_name = "CORS origin"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "origin"], name="unique_tenant_origin")
        ]

    def __str__(self) -> str:
        return self.origin


class ScopeRule(models.Model):
    """The scopes a tenant demands on one endpoint, replacing the endpoint's default."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="scope_rules")
    endpoint = models.CharField(max_length=100)
    scopes = models.CharField(
        max_length=1000,
        blank=True,
        validators=[validate_scopes],
        help_text="Space-separated; all are required. Blank: any valid token.",
    )

    class Meta:
        ordering = ["endpoint"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "endpoint"], name="unique_tenant_endpoint")
        ]

    def __str__(self) -> str:
        return f"{self.endpoint}: {self.scopes or '(any valid token)'}"

    def clean(self) -> None:
        """Refuse rules for endpoints the platform does not have."""
        if not self.endpoint:
            return  # the field's own validation already says it is required
        try:
            get_endpoint(self.endpoint)
        except KeyError:
            message = f"Unknown endpoint {self.endpoint!r}."
            raise ValidationError(
                {"endpoint": ValidationError(message, code="unknown_endpoint")}
            ) from None


def any_method() -> list[str]:
    """A new route answers every method until told otherwise."""
    return ["*"]


class Route(models.Model):
    """A path of the tenant's own API and what it demands: public, or scopes (alternatives)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="routes")
    position = models.PositiveIntegerField(default=0, help_text="Order on the page.")
    methods = models.JSONField(default=any_method, validators=[validate_route_methods])
    path = models.CharField(
        max_length=1000,
        validators=[validate_route_path],
        help_text="Literal segments, {name} for one segment, {name...} last for the rest.",
    )
    public = models.BooleanField(default=False, help_text="No token is looked at.")
    scopes = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_scope_alternatives],
        help_text="Alternatives, one per line, each a space-separated set granted in full. "
        "Blank: any valid token of the tenant.",
    )

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{' '.join(self.methods)} {self.path}"

    def clean(self) -> None:
        """A public route looks at no token, so it cannot demand scopes."""
        if self.public and self.scopes:
            raise ValidationError(
                {"scopes": ValidationError("A public route takes no scopes.", code="public")}
            )


class TenantChange(models.Model):
    """One change to a tenant, written in the change's own transaction: the feed every process
    applies to its directory (the tenant id only; the tenant may be gone)."""

    tenant_id = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"change {self.id} of tenant {self.tenant_id}"


class TrafficCount(models.Model):
    """Requests of one tenant with one outcome in one 5-minute bucket (``tenants/traffic.py``),
    when the shared store is the database; kept a day. By slug: the tenant may be gone."""

    bucket = models.IntegerField()  # seconds since the epoch // 300
    tenant = models.CharField(max_length=63)
    status = models.SmallIntegerField()
    code = models.CharField(max_length=64)
    count = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["bucket", "tenant", "status", "code"], name="traffic_count_outcome"
            )
        ]
        indexes = [models.Index(fields=["tenant", "bucket"], name="traffic_count_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant} {self.status} {self.code} x{self.count} in bucket {self.bucket}"


class RateWindow(models.Model):
    """One rate limit's sliding window counter (``tenants/ratelimit.py``), when the shared store
    is the database: hits in the current fixed window and in the one before it."""

    rate_key = models.CharField(max_length=80, unique=True)
    window_index = models.BigIntegerField()  # seconds since the epoch // the limit's seconds
    hits = models.BigIntegerField()
    previous_hits = models.BigIntegerField()
    expires = models.BigIntegerField(db_index=True)  # seconds since the epoch

    def __str__(self) -> str:
        return f"{self.rate_key}: {self.hits} (+{self.previous_hits} before)"
