"""Tenants as JSON: import (through the admin's own forms, all or nothing) and export."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.forms import BaseInlineFormSet, ModelForm, inlineformset_factory

from tenants.directory import changes_batched
from tenants.forms import (
    AudienceForm,
    CorsOriginForm,
    HostForm,
    RequiredInlineFormSet,
    ScopeRuleForm,
    TenantForm,
)
from tenants.models import Tenant
from tenants.tasks import refreshes_batched

# JSON name -> model field, for the fields whose names differ.
RENAMED = {"issuer": "issuer_override", "jwks_url": "jwks_url_override"}
DEFAULTS: dict[str, Any] = {
    "active": True,
    "domain": "",
    "issuer": "",
    "jwks_url": "",
    "algorithms": ["RS256"],
    "leeway": 60,
    "scope_claims": "scope",
    "provision_users": False,
    "admin_scope": "",
}
REQUIRED = ("slug", "name", "audiences")


@dataclass(frozen=True)
class InlineSpec:
    """How one JSON list maps onto an admin inline."""

    form: type[ModelForm]
    formset: type[BaseInlineFormSet]
    min_num: int

    def build(self, tenant: Tenant, rows: list[dict[str, str]]) -> BaseInlineFormSet:
        """A bound formset that adds ``rows`` to a tenant with none."""
        formset_class = inlineformset_factory(
            Tenant,
            self.form._meta.model,
            form=self.form,
            formset=self.formset,
            extra=0,
            min_num=self.min_num,
            validate_min=True,
        )
        prefix = formset_class.get_default_prefix()
        data = {f"{prefix}-TOTAL_FORMS": len(rows), f"{prefix}-INITIAL_FORMS": 0}
        for index, row in enumerate(rows):
            data.update({f"{prefix}-{index}-{name}": value for name, value in row.items()})
        return formset_class(data, instance=tenant, prefix=prefix)


INLINES = {
    "hosts": InlineSpec(HostForm, BaseInlineFormSet, 0),
    "audiences": InlineSpec(AudienceForm, RequiredInlineFormSet, 1),
    "scope_rules": InlineSpec(ScopeRuleForm, BaseInlineFormSet, 0),
    "cors_origins": InlineSpec(CorsOriginForm, BaseInlineFormSet, 0),
}
KNOWN_KEYS = {*DEFAULTS, *REQUIRED, *INLINES}


class TenantImportError(Exception):
    """The file was refused; ``errors`` lists every problem, one sentence each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def import_tenants(
    document: object, progress: Callable[[int, int], None] | None = None
) -> "ImportSummary":
    """Create or update (by slug) every tenant in the document, or change nothing at all.

    Key sets are not fetched here: one refresh per distinct JWKS URL is queued after commit.
    ``progress(done, total)`` is called every PROGRESS_EVERY tenants.
    """
    items = _tenant_items(document)
    errors: list[str] = []
    existing = set(Tenant.objects.filter(slug__in=_slugs(items)).values_list("slug", flat=True))
    with transaction.atomic(), refreshes_batched() as urls, changes_batched():
        # The file is the whole truth for its tenants: clearing their parts first lets a host
        # move from one tenant to another, whatever the order of the file.
        for name in INLINES:
            INLINES[name].form._meta.model.objects.filter(
                tenant__slug__in=[item.get("slug") for item in items]
            ).delete()
        for index, item in enumerate(items):
            label = f"tenants[{index}]" + (f" ({item['slug']})" if "slug" in item else "")
            errors += [f"{label}: {message}" for message in _import_one(item)]
            if progress and (index + 1) % PROGRESS_EVERY == 0:
                progress(index + 1, len(items))
        if errors:
            transaction.set_rollback(True)
    if errors:
        raise TenantImportError(errors)
    slugs = [item["slug"] for item in items]
    created = len(set(slugs) - existing)
    return ImportSummary(created, len(slugs) - created, len(urls))


PROGRESS_EVERY = 1000


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: tenants created and updated, key set refreshes queued."""

    created: int
    updated: int
    key_sets: int


def _slugs(items: list[dict[str, Any]]) -> list[str]:
    return [item["slug"] for item in items if isinstance(item.get("slug"), str)]


def _tenant_items(document: object) -> list[dict[str, Any]]:
    if not isinstance(document, dict) or not isinstance(document.get("tenants"), list):
        raise TenantImportError(['The file must be a JSON object with a "tenants" list.'])
    items = document["tenants"]
    problems = [
        f"tenants[{i}]: must be an object" for i, t in enumerate(items) if not isinstance(t, dict)
    ]
    slugs = [item.get("slug") for item in items if isinstance(item, dict)]
    problems += [
        f"slug {slug!r} appears more than once"
        for slug in sorted(set(slugs), key=str)
        if slug is not None and slugs.count(slug) > 1
    ]
    if problems:
        raise TenantImportError(problems)
    return items


def _import_one(item: dict[str, Any]) -> list[str]:
    """Validate and save one tenant the way admin does; return every problem found."""
    problems = _shape_problems(item)
    if problems:
        return problems
    form = TenantForm(
        _tenant_form_data(item), instance=Tenant.objects.filter(slug=item["slug"]).first()
    )
    tenant_valid = form.is_valid()
    tenant = form.save(commit=False) if tenant_valid else form.instance
    formsets = {
        name: spec.build(tenant, _inline_rows(name, item.get(name, [])))
        for name, spec in INLINES.items()
    }
    problems = _form_errors(form.errors)
    for name, formset in formsets.items():
        if not formset.is_valid():
            problems += _formset_errors(name, formset)
    if problems or not tenant_valid:
        return problems
    tenant.save()
    for formset in formsets.values():
        formset.save()
    return []


def _shape_problems(item: dict[str, Any]) -> list[str]:
    problems = [f"unknown field {key!r}" for key in item if key not in KNOWN_KEYS]
    problems += [f"{key}: this field is required" for key in REQUIRED if key not in item]
    for name in INLINES:
        if not isinstance(item.get(name, []), list):
            problems.append(f"{name}: must be a list")
    rules = item.get("scope_rules", [])
    for rule in rules if isinstance(rules, list) else []:
        scopes = rule.get("scopes", []) if isinstance(rule, dict) else None
        if not isinstance(scopes, list) or not all(_is_scope_word(s) for s in scopes):
            problems.append(
                'scope_rules: each rule is {"endpoint": ..., "scopes": [...]}, one scope per item'
            )
    return problems


def _is_scope_word(value: object) -> bool:
    return isinstance(value, str) and bool(value) and " " not in value


def _tenant_form_data(item: dict[str, Any]) -> dict[str, Any]:
    values = {**DEFAULTS, **{k: v for k, v in item.items() if k not in INLINES}}
    return {RENAMED.get(key, key): value for key, value in values.items()}


def _inline_rows(name: str, values: list[Any]) -> list[dict[str, str]]:
    if name == "hosts":
        return [{"hostname": value} for value in values]
    if name == "audiences":
        return [{"audience": value} for value in values]
    if name == "cors_origins":
        return [{"origin": value} for value in values]
    return [
        {"endpoint": rule.get("endpoint", ""), "scopes": " ".join(rule.get("scopes", []))}
        for rule in values
    ]


def _form_errors(errors: dict[str, list[str]]) -> list[str]:
    reverse = {field: key for key, field in RENAMED.items()}
    return [
        f"{reverse.get(field, field)}: {message}"
        for field, messages in errors.items()
        for message in messages
    ]


def _formset_errors(name: str, formset: BaseInlineFormSet) -> list[str]:
    problems = [f"{name}: {message}" for message in formset.non_form_errors()]
    for index, errors in enumerate(formset.errors):
        problems += [f"{name}[{index}]: {m}" for m in _form_errors(errors)]
    return problems


def export_tenants() -> dict[str, Any]:
    """Every tenant, in the format ``import_tenants`` reads."""
    tenants = Tenant.objects.prefetch_related("hosts", "audiences", "scope_rules", "cors_origins")
    return {"tenants": [_export_one(tenant) for tenant in tenants]}


def _export_one(tenant: Tenant) -> dict[str, Any]:
    optional = {
        "domain": tenant.domain,
        "issuer": tenant.issuer_override,
        "jwks_url": tenant.jwks_url_override,
    }
    return {
        "slug": tenant.slug,
        "name": tenant.name,
        "active": tenant.active,
        **{key: value for key, value in optional.items() if value},
        "audiences": [a.audience for a in tenant.audiences.all()],
        "hosts": [h.hostname for h in tenant.hosts.all()],
        "scope_rules": [
            {"endpoint": r.endpoint, "scopes": r.scopes.split()} for r in tenant.scope_rules.all()
        ],
        "algorithms": list(tenant.algorithms),
        "leeway": tenant.leeway,
        "scope_claims": tenant.scope_claims,
        "provision_users": tenant.provision_users,
        "admin_scope": tenant.admin_scope,
        "cors_origins": [o.origin for o in tenant.cors_origins.all()],
    }
