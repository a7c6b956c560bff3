"""Forms shared by the admin and the JSON import, so both validate tenants identically."""

from collections import Counter
from typing import Any

from django import forms
from django.forms.models import BaseInlineFormSet

from authz.endpoints import all_endpoints
from tenants.models import (
    Route,
    ScopeRule,
    Tenant,
    TenantAudience,
    TenantCorsOrigin,
    TenantHost,
    TenantIssuer,
)
from tenants.routes import (
    MAX_ROUTES,
    METHODS,
    RouteConflict,
    RouteTable,
    TemplateError,
    normalized_template,
)
from tenants.routes import Route as CompiledRoute
from tenants.validation import ASYMMETRIC_ALGORITHMS, MAX_ISSUERS


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


class IssuerForm(forms.ModelForm):
    """One issuer of a tenant: an Auth0 domain, or an exact issuer, and where its keys live."""

    class Meta:
        model = TenantIssuer
        fields = ["position", "domain", "issuer_override", "jwks_url_override"]

    def clean_domain(self) -> str:
        """Domains are case-insensitive; store them lower-case."""
        return self.cleaned_data["domain"].strip().lower()


class IssuerFormSet(BaseInlineFormSet):
    """A tenant's issuers: at least one, at most MAX_ISSUERS, no ``iss`` listed twice."""

    def clean(self) -> None:
        """Refuse no issuer, too many, and two entries that name the same ``iss``."""
        super().clean()
        if any(self.errors):
            return
        kept = [
            form.instance
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE", False)
        ]
        if not kept:
            raise forms.ValidationError("Add at least one issuer.", code="required")
        if len(kept) > MAX_ISSUERS:
            raise forms.ValidationError(
                f"A tenant lists at most {MAX_ISSUERS} issuers.", code="too_many_issuers"
            )
        named = Counter(issuer.issuer for issuer in kept)
        repeated = sorted(name for name, count in named.items() if count > 1)
        if repeated:
            raise forms.ValidationError(
                [f"The issuer {name} is listed twice." for name in repeated],
                code="duplicate_issuer",
            )


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


class MethodsField(ListField):
    """HTTP methods: a JSON list, or names separated by commas or spaces; upper-cased."""

    def to_python(self, value: object) -> list | object:
        """The methods upper-cased, when they are a list of names."""
        value = super().to_python(value)
        if isinstance(value, list) and all(isinstance(name, str) for name in value):
            return [name.upper() for name in value]
        return value

    def prepare_value(self, value: object) -> object:
        """Methods on one line."""
        return " ".join(value) if isinstance(value, list) else value


class AlternativesField(ListField):
    """Scope alternatives: a JSON list, or one alternative per line; spaces collapsed."""

    def to_python(self, value: object) -> list | object:
        """One alternative per non-blank line, its scopes separated by single spaces."""
        if value in self.empty_values:
            return []
        if isinstance(value, str) and self.text:
            value = value.splitlines()
        if isinstance(value, list) and all(isinstance(line, str) for line in value):
            return [" ".join(line.split()) for line in value if line.strip()]
        return value


class RouteForm(forms.ModelForm):
    """One route of the tenant's own API."""

    methods = MethodsField(initial=["*"], help_text="GET, POST, ... or * for every method.")
    scopes = AlternativesField(required=False, help_text=Route._meta.get_field("scopes").help_text)

    class Meta:
        model = Route
        fields = ["position", "methods", "path", "public", "scopes"]
        widgets = {"path": forms.TextInput(attrs={"size": 40})}

    def clean_path(self) -> str:
        """Store the template in its normalized form."""
        path = self.cleaned_data["path"].strip()
        try:
            return normalized_template(path)
        except TemplateError:
            return path  # the model field's validator says what is wrong


class RouteFormSet(BaseInlineFormSet):
    """The routes of a tenant, refused together when two match exactly the same requests."""

    def clean(self) -> None:
        """Compile the routes kept: overlaps, their number and their ambiguity are errors."""
        super().clean()
        if any(self.errors):
            return
        kept = [
            form.cleaned_data
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE", False)
        ]
        if len(kept) > MAX_ROUTES:
            raise forms.ValidationError(
                f"A tenant has at most {MAX_ROUTES} routes.", code="too_many_routes"
            )
        ordered = sorted(enumerate(kept), key=lambda item: (item[1]["position"], item[0]))
        routes = [
            CompiledRoute.build(index, data["methods"], data["path"], False, data["scopes"])
            for index, (_, data) in enumerate(ordered)
        ]
        try:
            RouteTable.compile(routes)
        except RouteConflict as conflict:
            raise forms.ValidationError(conflict.problems, code="overlapping_routes") from None


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

    route_method = forms.ChoiceField(
        required=False, choices=[(m, m) for m in METHODS], initial="GET", label="Route method"
    )
    route_path = forms.CharField(
        required=False,
        max_length=8192,
        label="Route path",
        help_text="Instead of an endpoint: a path of this tenant's routes, such as /orders/42; "
        "the route's scopes are the rule.",
    )

    def __init__(self, *args: Any, endpoints: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["endpoint"].required = False  # a route path may take its place
        self.fields["endpoint"].choices = [
            (key, f"{key}: {method} {path}") for key, (method, path) in endpoints.items()
        ]

    def clean(self) -> dict[str, Any]:
        """An endpoint, or a route path: one of them says which rule applies."""
        data = super().clean()
        if not data.get("endpoint") and not data.get("route_path"):
            self.add_error("endpoint", "Choose an endpoint, or enter a route path.")
        return data

    def clean_token(self) -> str:
        """A token with its scheme pasted too is taken without it."""
        token = self.cleaned_data["token"]
        scheme, _, rest = token.partition(" ")
        return rest.strip() if scheme.lower() in ("bearer", "dpop") and rest else token
