"""Forms shared by the admin and the JSON import, so both validate tenants identically."""

from typing import Any

from django import forms
from django.forms.models import BaseInlineFormSet

from authz.endpoints import all_endpoints
from tenants.models import ScopeRule, Tenant, TenantAudience, TenantCorsOrigin, TenantHost
from tenants.validation import ASYMMETRIC_ALGORITHMS


def endpoint_choices() -> list[tuple[str, str]]:
    """Registered endpoint keys, labelled with their default scopes."""
    return [
        (e.key, f"{e.key} (default: {' '.join(e.default_scopes) or 'any valid token'})")
        for e in all_endpoints()
    ]


class ListField(forms.Field):
    """A list of names: a JSON list from the import, one per line (or space) from the admin."""

    widget = forms.Textarea(attrs={"rows": 3})

    def __init__(self, *args: Any, text: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.text = text

    def to_python(self, value: object) -> list | object:
        """A list for text (when taken) or a list; anything else is left for the validator."""
        if value in self.empty_values:
            return []
        if isinstance(value, str) and self.text:
            return value.replace(",", " ").split()
        return value

    def prepare_value(self, value: object) -> object:
        """One name per line in the admin's text box."""
        return "\n".join(value) if isinstance(value, list) else value


class TenantForm(forms.ModelForm):
    """A tenant's own fields."""

    algorithms = forms.MultipleChoiceField(
        choices=[(name, name) for name in ASYMMETRIC_ALGORITHMS],
        initial=["RS256"],
        widget=forms.CheckboxSelectMultiple,
    )
    dpop_algorithms = forms.MultipleChoiceField(
        label="DPoP proof algorithms",
        choices=[(name, name) for name in ASYMMETRIC_ALGORITHMS],
        initial=["ES256"],
        widget=forms.CheckboxSelectMultiple,
    )
    organizations = ListField(
        required=False,
        help_text=Tenant._meta.get_field("organizations").help_text,
    )

    class Meta:
        model = Tenant
        fields = [
            "slug",
            "name",
            "active",
            "domain",
            "issuer_override",
            "jwks_url_override",
            "algorithms",
            "leeway",
            "scope_claims",
            "provision_users",
            "admin_scope",
            "token_profile",
            "organizations",
            "dpop",
            "dpop_algorithms",
            "dpop_nonce",
            "rate_limit_per_subject",
            "rate_limit_per_tenant",
        ]

    def clean_domain(self) -> str:
        """Domains are case-insensitive; store them lower-case."""
        return self.cleaned_data["domain"].strip().lower()


class HostForm(forms.ModelForm):
    """One hostname of a tenant."""

    class Meta:
        model = TenantHost
        fields = ["hostname"]

    def clean_hostname(self) -> str:
        """Hostnames are case-insensitive; store them lower-case."""
        return self.cleaned_data["hostname"].strip().lower()


class AudienceForm(forms.ModelForm):
    """One audience of a tenant."""

    class Meta:
        model = TenantAudience
        fields = ["audience"]


class CorsOriginForm(forms.ModelForm):
    """One browser origin allowed to call the tenant's API."""

    class Meta:
        model = TenantCorsOrigin
        fields = ["origin"]


class ScopeRuleForm(forms.ModelForm):
    """One endpoint's scopes, the endpoint chosen among the registered ones."""

    endpoint = forms.ChoiceField(choices=endpoint_choices)

    class Meta:
        model = ScopeRule
        fields = ["endpoint", "scopes"]


class RequiredInlineFormSet(BaseInlineFormSet):
    """At least one row must remain after deletions."""

    def clean(self) -> None:
        """Refuse to leave the tenant with none of these rows."""
        super().clean()
        kept = [
            form
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE", False)
        ]
        if not kept:
            raise forms.ValidationError(
                f"Add at least one {self.model._meta.verbose_name}.", code="required"
            )


class TokenDebugForm(forms.Form):
    """What an operator pastes into the token debugger; nothing of it is ever stored."""

    endpoint = forms.ChoiceField(help_text="The endpoint whose scope rule the token must meet.")
    url = forms.CharField(
        required=False,
        max_length=2048,
        label="URL",
        help_text="The URL the client called (a DPoP proof names it); blank: the tenant's own.",
    )
    token = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5, "autocomplete": "off", "spellcheck": "false"}),
        max_length=16 * 1024,
        strip=True,
        help_text="The access token, without 'Bearer '.",
    )
    proof = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off", "spellcheck": "false"}),
        max_length=16 * 1024,
        strip=True,
        label="DPoP proof",
        help_text="The DPoP header's value, for a DPoP-bound token; blank: sent as Bearer.",
    )

    def __init__(self, *args: Any, endpoints: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["endpoint"].choices = [
            (key, f"{key}: {method} {path}") for key, (method, path) in endpoints.items()
        ]

    def clean_token(self) -> str:
        """A token with its scheme pasted too is taken without it."""
        token = self.cleaned_data["token"]
        scheme, _, rest = token.partition(" ")
        return rest.strip() if scheme.lower() in ("bearer", "dpop") and rest else token
