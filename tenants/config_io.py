"""Tenants as JSON: import (through the admin's own forms, all or nothing) and export."""

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import islice
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.forms import BaseInlineFormSet, ModelForm, inlineformset_factory

from tenants.directory import changes_batched, record_change
from tenants.forms import (
    AudienceForm,
    CorsOriginForm,
    HostForm,
    IssuerForm,
    IssuerFormSet,
    ListField,
    RequiredInlineFormSet,
    RouteForm,
    RouteFormSet,
    ScopeRuleForm,
    TenantForm,
)
from tenants.models import Tenant, TenantHost, TenantIssuer
from tenants.routes import MAX_ROUTES
from tenants.tasks import queue_refresh, refreshes_batched
from tenants.validation import MAX_ISSUERS

T = TypeVar("T")

# JSON name -> model field, for the fields whose names differ.
RENAMED = {"issuer": "issuer_override", "jwks_url": "jwks_url_override"}
# An entry of "issuers"; at the top level of a tenant, the one entry of its list.
ISSUER_KEYS = ("domain", "issuer", "jwks_url")
DEFAULTS: dict[str, Any] = {
    "active": True,
    "algorithms": ["RS256"],
    "leeway": 60,
    "scope_claims": "scope",
    "provision_users": False,
    "admin_scope": "",
    "token_profile": "auth0",
    "organizations": [],
    "dpop": "allowed",
    "dpop_algorithms": ["ES256"],
    "dpop_nonce": False,
    "rate_limit_per_subject": "",
    "rate_limit_per_tenant": "",
}
REQUIRED = ("slug", "name", "audiences")


class BulkUniqueMixin:
    """A model form whose one unique field is checked against values loaded in bulk.

    The import loads every taken value of the file in one query per chunk (and adds each value a
    valid tenant claims), instead of one ``exists()`` per form; the error is the form's own.
    """

    unique_field: str

    def __init__(self, *args: Any, taken: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.taken = taken
        # The value the row had before the import: a row never collides with itself.
        self.own_value = getattr(self.instance, self.unique_field)

    def validate_unique(self) -> None:
        """Every other unique check as the form does it; ``unique_field`` against ``taken``."""
        name, instance = self.unique_field, self.instance
        try:
            instance.validate_unique(exclude={*self._get_validation_exclusions(), name})
        except ValidationError as error:
            self._update_errors(error)
        value = getattr(instance, name)
        if name not in self._errors and value != self.own_value and value in self.taken:
            error = instance.unique_error_message(type(instance), (name,))
            self._update_errors(ValidationError({name: error}))


class ImportTenantForm(BulkUniqueMixin, TenantForm):
    """The admin's tenant form, its slug checked against the slugs loaded in bulk."""

    unique_field = "slug"
    organizations = ListField(required=False, text=False)  # JSON gives a list, never text


class ImportHostForm(BulkUniqueMixin, HostForm):
    """The admin's host form, its hostname checked against the hostnames loaded in bulk."""

    unique_field = "hostname"


@dataclass(frozen=True)
class InlineSpec:
    """How one JSON list maps onto an admin inline."""

    form: type[ModelForm]
    formset: type[BaseInlineFormSet]
    min_num: int
    max_num: int | None = None

    @cached_property
    def formset_class(self) -> type[BaseInlineFormSet]:
        """The inline formset class, built once."""
        return inlineformset_factory(
            Tenant,
            self.form._meta.model,
            form=self.form,
            formset=self.formset,
            extra=0,
            min_num=self.min_num,
            validate_min=True,
            max_num=self.max_num,
            absolute_max=self.max_num,
        )

    def build(
        self, tenant: Tenant, rows: list[dict[str, str]], **form_kwargs: Any
    ) -> BaseInlineFormSet:
        """A bound formset that adds ``rows`` to a tenant with none."""
        prefix = self.formset_class.get_default_prefix()
        data = {f"{prefix}-TOTAL_FORMS": len(rows), f"{prefix}-INITIAL_FORMS": 0}
        for index, row in enumerate(rows):
            data.update({f"{prefix}-{index}-{name}": value for name, value in row.items()})
        return self.formset_class(data, instance=tenant, prefix=prefix, form_kwargs=form_kwargs)


INLINES = {
    "issuers": InlineSpec(IssuerForm, IssuerFormSet, 1, MAX_ISSUERS),
    "hosts": InlineSpec(ImportHostForm, BaseInlineFormSet, 0),
    "audiences": InlineSpec(AudienceForm, RequiredInlineFormSet, 1),
    "scope_rules": InlineSpec(ScopeRuleForm, BaseInlineFormSet, 0),
    "cors_origins": InlineSpec(CorsOriginForm, BaseInlineFormSet, 0),
    "routes": InlineSpec(RouteForm, RouteFormSet, 0, MAX_ROUTES),
}
ROUTE_KEYS = {"methods": list, "path": str, "public": bool, "scopes": list}
KNOWN_KEYS = {*DEFAULTS, *REQUIRED, *INLINES, *ISSUER_KEYS}
# The JSON type of each plain field, as export writes it: a form would read "no" as true and
# ["x"] as the text "['x']", so the file's types are checked first (the slug's before any, in
# _tenant_items). A bool is an int to Python, not here.
FIELD_TYPES: dict[str, type] = {
    **{key: str for key in ("name", "scope_claims", "admin_scope", "token_profile")},
    **{key: str for key in ("dpop", "rate_limit_per_subject", "rate_limit_per_tenant")},
    **{key: str for key in ISSUER_KEYS},
    **{key: bool for key in ("active", "provision_users", "dpop_nonce")},
    "leeway": int,
}
# The inline lists of text: a form would drop a null or blank item and stringify the rest.
TEXT_LISTS = ("audiences", "hosts", "cors_origins")
# SQLite allows 999 variables per statement; every ``__in`` filter goes in chunks below that.
CHUNK = 900
CREATE_EVERY = 1000


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
    with transaction.atomic(), refreshes_batched() as urls, changes_batched():
        batch = ImportBatch.load(items)
        for index, item in enumerate(items):
            label = f"tenants[{index}]" + (f" ({item['slug']})" if "slug" in item else "")
            # Once a tenant is refused nothing is saved: the transaction is rolled back anyway.
            errors += [f"{label}: {message}" for message in _import_one(item, batch, not errors)]
            if progress and (index + 1) % PROGRESS_EVERY == 0:
                progress(index + 1, len(items))
        if errors:
            transaction.set_rollback(True)
        else:
            batch.create()
    if errors:
        raise TenantImportError(errors)
    created = sum(_slug_key(item) not in batch.existing for item in items)
    return ImportSummary(created, len(items) - created, len(urls))


PROGRESS_EVERY = 1000


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: tenants created and updated, key set refreshes queued."""

    created: int
    updated: int
    key_sets: int


@dataclass
class ImportBatch:
    """One import's view of the database: tenants to update, values taken, tenants to create."""

    existing: dict[str, Tenant]
    slugs: set[str]
    hosts: set[str]
    new: list[tuple[Tenant, list[models.Model]]] = field(default_factory=list)

    @classmethod
    def load(cls, items: list[dict[str, Any]]) -> "ImportBatch":
        """Read the file's tenants, clear their parts, and note the slugs and hosts taken."""
        keys = {_slug_key(item) for item in items} - {None}
        # Slugs as looked up (the upsert) and as the form cleans them (their uniqueness).
        found = _in_chunks(Tenant.objects.all(), "slug", {*keys, *map(str.strip, keys)})
        existing = {tenant.slug: tenant for tenant in found if tenant.slug in keys}
        _clear_parts([tenant.pk for tenant in existing.values()])
        hosts = TenantHost.objects.values_list("hostname", flat=True)
        return cls(
            existing=existing,
            slugs={tenant.slug for tenant in found},
            hosts=set(_in_chunks(hosts, "hostname", _hostnames(items))),
        )

    def claim(self, tenant: Tenant, parts: list[models.Model]) -> None:
        """A valid tenant takes its slug and hostnames: later tenants of the file may not."""
        self.slugs.add(tenant.slug)
        self.hosts.update(part.hostname for part in parts if isinstance(part, TenantHost))

    def save(self, tenant: Tenant, parts: list[models.Model]) -> None:
        """Save an updated tenant now, as admin does; queue a new one for creation in bulk."""
        if tenant.pk is not None:
            tenant.save()
            for row in parts:
                row.save()
            return
        self.new.append((tenant, parts))
        if len(self.new) >= CREATE_EVERY:
            self.create()

    def create(self) -> None:
        """Insert the queued tenants and their parts; do what tenants/signals.py does on save."""
        tenants = Tenant.objects.bulk_create([tenant for tenant, _ in self.new])
        parts: dict[type[models.Model], list[models.Model]] = {}
        for _, rows in self.new:
            for row in rows:
                parts.setdefault(type(row), []).append(row)
        for model, rows in parts.items():
            model.objects.bulk_create(rows)
        for tenant in tenants:
            record_change(tenant.pk)
        issuers = parts.get(TenantIssuer, [])
        queue_refresh({issuer.jwks_url for issuer in issuers if issuer.tenant.active})
        self.new = []


def _clear_parts(tenant_ids: list[int]) -> None:
    """Delete the issuers, hosts, audiences, rules, origins and routes of these tenants."""
    # The file is the whole truth for its tenants: clearing their parts first lets a host
    # move from one tenant to another, whatever the order of the file.
    for spec in INLINES.values():
        for chunk in _chunked(tenant_ids):
            spec.form._meta.model.objects.filter(tenant_id__in=chunk).delete()


def _in_chunks(queryset: models.QuerySet, name: str, values: set[str]) -> list[Any]:
    """The rows whose ``name`` is one of ``values``, read CHUNK values at a time."""
    found: list[Any] = []
    for chunk in _chunked(sorted(values)):
        found += queryset.filter(**{f"{name}__in": chunk})
    return found


def _chunked(values: Sequence[T]) -> Iterator[list[T]]:
    """``values`` in lists of at most CHUNK."""
    iterator = iter(values)
    while chunk := list(islice(iterator, CHUNK)):
        yield chunk


def _hostnames(items: list[dict[str, Any]]) -> set[str]:
    """Every hostname of the file as HostForm cleans it, to look up which are taken."""
    lists = [item.get("hosts") for item in items]
    return {
        str(host).strip().lower() for hosts in lists if isinstance(hosts, list) for host in hosts
    }


def _slug_key(item: dict[str, Any]) -> str | None:
    """The slug a tenant is looked up by (a str: ``_tenant_items`` refused any other type)."""
    return item.get("slug")


def _tenant_items(document: object) -> list[dict[str, Any]]:
    if not isinstance(document, dict) or not isinstance(document.get("tenants"), list):
        raise TenantImportError(['The file must be a JSON object with a "tenants" list.'])
    items = document["tenants"]
    problems = [
        f"tenants[{i}]: must be an object" for i, t in enumerate(items) if not isinstance(t, dict)
    ]
    problems += [
        f"tenants[{i}]: slug: must be a str"
        for i, t in enumerate(items)
        if isinstance(t, dict) and "slug" in t and not isinstance(t["slug"], str)
    ]
    if problems:
        raise TenantImportError(problems)
    slugs = Counter(item["slug"].strip() for item in items if "slug" in item)
    problems += [
        f"slug {slug!r} appears more than once" for slug in sorted(slugs) if slugs[slug] > 1
    ]
    if problems:
        raise TenantImportError(problems)
    return items


def _import_one(item: dict[str, Any], batch: ImportBatch, save: bool) -> list[str]:
    """Validate one tenant the way admin does, and save it if ``save``; return every problem."""
    problems, tenant, parts = _validated(item, batch)
    if problems:
        return problems
    batch.claim(tenant, parts)
    if save:
        batch.save(tenant, parts)
    return []


def _validated(
    item: dict[str, Any], batch: ImportBatch
) -> tuple[list[str], Tenant, list[models.Model]]:
    """Every problem of one tenant, else none and its unsaved tenant and parts."""
    problems = _shape_problems(item)
    if problems:
        return problems, Tenant(), []
    form = ImportTenantForm(
        _tenant_form_data(item), instance=batch.existing.get(_slug_key(item)), taken=batch.slugs
    )
    tenant_valid = form.is_valid()
    tenant = form.save(commit=False) if tenant_valid else form.instance
    # An empty list with no minimum is valid and adds nothing: it needs no formset.
    lists = {**item, "issuers": _issuer_entries(item)}
    formsets = {
        name: spec.build(tenant, _inline_rows(name, lists[name]), **_form_kwargs(name, batch))
        for name, spec in INLINES.items()
        if lists.get(name) or spec.min_num
    }
    problems = _form_errors(form.errors)
    for name, formset in formsets.items():
        if not formset.is_valid():
            top_level = name == "issuers" and name not in item
            problems += _formset_errors(name, formset, top_level)
    if problems or not tenant_valid:
        return problems, tenant, []
    return [], tenant, [row for formset in formsets.values() for row in formset.save(commit=False)]


def _form_kwargs(name: str, batch: ImportBatch) -> dict[str, Any]:
    return {"taken": batch.hosts} if name == "hosts" else {}


def _issuer_entries(item: dict[str, Any]) -> list[Any]:
    """The tenant's issuers: its list, or the top-level domain, issuer and jwks_url as one."""
    if "issuers" in item:
        return item["issuers"]
    return [{key: item[key] for key in ISSUER_KEYS if key in item}]


def _issuer_shape_problems(item: dict[str, Any]) -> list[str]:
    """What is wrong with the issuers' shape before their forms look at the values."""
    if "issuers" not in item:
        return []
    if any(key in item for key in ISSUER_KEYS):
        return ['give either "issuers" or the top-level domain, issuer and jwks_url, not both']
    entries = item["issuers"] if isinstance(item["issuers"], list) else []
    problems = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(
                f'issuers[{index}]: each issuer is {{"domain": ...}} or {{"issuer": ...}}'
            )
            continue
        problems += [
            f"issuers[{index}]: unknown field {k!r}" for k in entry if k not in ISSUER_KEYS
        ]
        problems += [
            f"issuers[{index}]: {key}: must be a str"
            for key in ISSUER_KEYS
            if key in entry and not isinstance(entry[key], str)
        ]
    return problems


def _shape_problems(item: dict[str, Any]) -> list[str]:
    problems = [f"unknown field {key!r}" for key in item if key not in KNOWN_KEYS]
    problems += _issuer_shape_problems(item)
    problems += [f"{key}: this field is required" for key in REQUIRED if key not in item]
    for name in INLINES:
        if not isinstance(item.get(name, []), list):
            problems.append(f"{name}: must be a list")
    problems += [
        f"{key}: must be a {kind.__name__}"
        for key, kind in FIELD_TYPES.items()
        if key in item and not _is_a(item[key], kind)
    ]
    problems += [
        f"{key}: each item must be a non-empty str"
        for key in TEXT_LISTS
        if isinstance(item.get(key), list) and not all(_is_text(v) for v in item[key])
    ]
    rules = item.get("scope_rules", [])
    for rule in rules if isinstance(rules, list) else []:
        scopes = rule.get("scopes", []) if isinstance(rule, dict) else None
        if not isinstance(scopes, list) or not all(_is_scope_word(s) for s in scopes):
            problems.append(
                'scope_rules: each rule is {"endpoint": ..., "scopes": [...]}, one scope per item'
            )
    routes = item.get("routes", [])
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        problems += [f"routes[{index}]: {problem}" for problem in _route_shape_problems(route)]
    return problems


def _route_shape_problems(route: object) -> list[str]:
    """What is wrong with one route object before its form looks at the values."""
    if not isinstance(route, dict):
        return ['each route is {"methods": [...], "path": "...", "public": ..., "scopes": [...]}']
    problems = [f"unknown field {key!r}" for key in route if key not in ROUTE_KEYS]
    if "path" not in route:
        problems.append("path: this field is required")
    problems += [
        f"{key}: must be a {kind.__name__}"
        for key, kind in ROUTE_KEYS.items()
        if key in route and not isinstance(route[key], kind)
    ]
    for key in ("methods", "scopes"):  # a blank alternative would quietly mean "any token"
        if isinstance(route.get(key), list) and not all(_is_text(v) for v in route[key]):
            problems.append(f"{key}: each item must be a non-empty str")
    return problems


def _is_a(value: object, kind: type) -> bool:
    """``isinstance``, except that a bool is not an int."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_scope_word(value: object) -> bool:
    return isinstance(value, str) and bool(value) and " " not in value


def _tenant_form_data(item: dict[str, Any]) -> dict[str, Any]:
    own = {k: v for k, v in item.items() if k not in INLINES and k not in ISSUER_KEYS}
    return {**DEFAULTS, **own}


def _inline_rows(name: str, values: list[Any]) -> list[dict[str, str]]:
    if name == "issuers":
        return [
            {"position": index, **{RENAMED.get(k, k): entry.get(k, "") for k in ISSUER_KEYS}}
            for index, entry in enumerate(values)
        ]
    if name == "hosts":
        return [{"hostname": value} for value in values]
    if name == "audiences":
        return [{"audience": value} for value in values]
    if name == "cors_origins":
        return [{"origin": value} for value in values]
    if name == "routes":
        return [
            {
                "position": index,
                "methods": route.get("methods", ["*"]),
                "path": route["path"],
                "public": route.get("public", False),
                "scopes": route.get("scopes", []),
            }
            for index, route in enumerate(values)
        ]
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


def _formset_errors(name: str, formset: BaseInlineFormSet, top_level: bool = False) -> list[str]:
    """Every problem of a list, by index; a top-level issuer's as the tenant's own fields'."""
    problems = [f"{name}: {message}" for message in formset.non_form_errors()]
    for index, errors in enumerate(formset.errors):
        label = "" if top_level else f"{name}[{index}]: "
        problems += [f"{label}{m}" for m in _form_errors(errors)]
    return problems


def export_tenants() -> dict[str, Any]:
    """Every tenant, in the format ``import_tenants`` reads."""
    tenants = Tenant.objects.prefetch_related(
        "issuers", "hosts", "audiences", "scope_rules", "cors_origins", "routes"
    )
    return {"tenants": [_export_one(tenant) for tenant in tenants]}


def _export_one(tenant: Tenant) -> dict[str, Any]:
    optional = {
        "rate_limit_per_subject": tenant.rate_limit_per_subject,
        "rate_limit_per_tenant": tenant.rate_limit_per_tenant,
    }
    return {
        "slug": tenant.slug,
        "name": tenant.name,
        "active": tenant.active,
        **_issuers_of(tenant),
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
        "token_profile": tenant.token_profile,
        "organizations": list(tenant.organizations),
        "dpop": tenant.dpop,
        "dpop_algorithms": list(tenant.dpop_algorithms),
        "dpop_nonce": tenant.dpop_nonce,
        "cors_origins": [o.origin for o in tenant.cors_origins.all()],
        **_routes_of(tenant),
    }


def _issuers_of(tenant: Tenant) -> dict[str, Any]:
    """One issuer at the top level, as files from before lists had it; several as "issuers"."""
    entries = [
        {
            key: value
            for key, value in zip(
                ISSUER_KEYS, (i.domain, i.issuer_override, i.jwks_url_override), strict=True
            )
            if value
        }
        for i in tenant.issuers.all()
    ]
    return entries[0] if len(entries) == 1 else {"issuers": entries}


def _routes_of(tenant: Tenant) -> dict[str, Any]:
    """The tenant's routes in order; no key for a tenant without any (files from before them)."""
    routes = [
        {"methods": r.methods, "path": r.path, "public": r.public, "scopes": r.scopes}
        for r in tenant.routes.all()
    ]
    return {"routes": routes} if routes else {}
