"""The filter bar of every page, read from and written back to the query string.

A page's query string uses the parameters of `/api/v1/costs/` (start, end, tenant, provider, model,
status, granularity, tag.<key>=<value>), so the CSV of a page is that API's answer for the same
parameters. Two differences, both because HTML forms send every field: an empty value means "any",
and "untagged" (the API's `tag.<key>=` with an empty value) is asked for with `untagged=<key>`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from urllib.parse import urlencode

from chargeback.costs import GRANULARITIES
from chargeback.filters import TAG_PARAMETER
from chargeback.models import UsageStatus

# Dimensions a stacked chart can be split by.
STACK_DIMENSIONS = ("model", "tenant", "provider", "tag.feature")
# Tags the drill-down walks through, in order, below the tenant levels.
FEATURE_TAG = "feature"
PROMPT_TEMPLATE_TAG = "prompt_template"
# Query-string parameters longer than this are ignored: nothing legitimate is that long.
MAX_PARAMETER_LENGTH = 200


@dataclass(frozen=True)
class PageFilters:
    start: str = ""
    end: str = ""
    granularity: str = ""  # "": chosen from the range's length
    tenant: str = ""
    provider: str = ""
    model: str = ""
    status: str = ""
    stack: str = "model"
    # tag key -> value; "" means untagged.
    tags: dict[str, str] = field(default_factory=dict)
    page: int = 1

    def with_changes(self, **changes) -> PageFilters:
        return replace(self, **changes)

    def with_tag(self, key: str, value: str | None) -> PageFilters:
        """These filters with a tag filter set (None: removed)."""
        tags = dict(self.tags)
        if value is None:
            tags.pop(key, None)
        else:
            tags[key] = value
        return replace(self, tags=tags, page=1)

    def without_drill_steps(self) -> PageFilters:
        """These filters above the drill-down's steps: no feature, model or prompt template, no
        tenant (a tenant page names its tenant in the path)."""
        tags = {
            key: value for key, value in self.tags.items() if key not in (FEATURE_TAG, PROMPT_TEMPLATE_TAG)
        }
        return replace(self, tenant="", model="", tags=tags, page=1)

    def parameters(self, *, include_page: bool = False) -> list[tuple[str, str]]:
        """The page's own query-string parameters (empty values left out)."""
        parameters = [
            (name, value)
            for name, value in (
                ("start", self.start),
                ("end", self.end),
                ("granularity", self.granularity),
                ("tenant", self.tenant),
                ("provider", self.provider),
                ("model", self.model),
                ("status", self.status),
                ("stack", "" if self.stack == "model" else self.stack),
            )
            if value
        ]
        for key, value in sorted(self.tags.items()):
            parameters.append((f"tag.{key}", value) if value else ("untagged", key))
        if include_page and self.page > 1:
            parameters.append(("page", str(self.page)))
        return parameters

    def query_string(self, **changes) -> str:
        """`?...` for these filters with `changes`; "" when there is nothing to say."""
        filters = replace(self, **changes) if changes else self
        encoded = urlencode(filters.parameters(include_page=True))
        return f"?{encoded}" if encoded else ""

    def api_parameters(self, *, granularity: str, group_by: tuple[str, ...]) -> str:
        """The same view as `/api/v1/costs/` parameters (untagged is the API's empty tag value)."""
        parameters = [
            (name, value)
            for name, value in (
                ("start", self.start),
                ("end", self.end),
                ("tenant", self.tenant),
                ("provider", self.provider),
                ("model", self.model),
                ("status", self.status),
            )
            if value
        ]
        parameters += [(f"tag.{key}", value) for key, value in sorted(self.tags.items())]
        parameters += [("granularity", granularity)]
        if group_by:
            parameters.append(("group_by", ",".join(group_by)))
        return urlencode(parameters)

    @property
    def extra_tags(self) -> dict[str, str]:
        """Tag filters other than the feature, which has its own field in the bar."""
        return {key: value for key, value in self.tags.items() if key != FEATURE_TAG}


def _text(query_dict, name: str) -> str:
    value = query_dict.get(name, "").strip()
    return value if len(value) <= MAX_PARAMETER_LENGTH else ""


def page_filters_from(query_dict, *, tenant: str = "") -> PageFilters:
    """The filters a request asks for; values that cannot be meant are dropped, not errors, because
    a person edits these by hand and an empty page says less than a page with the filter ignored.
    `tenant` (from the path of the drill-down) beats the query string."""
    tags: dict[str, str] = {}
    for name in query_dict:
        match = TAG_PARAMETER.match(name)
        value = _text(query_dict, name)
        if match and value:
            tags[match.group(1)] = value
    for key in query_dict.getlist("untagged"):
        if TAG_PARAMETER.match(f"tag.{key}") and key not in tags:
            tags[key] = ""
    # A "tag key / tag value" pair from the bar's free-form tag field.
    tag_key, tag_value = _text(query_dict, "tag_key"), _text(query_dict, "tag_value")
    if tag_key and tag_value and TAG_PARAMETER.match(f"tag.{tag_key}"):
        tags[tag_key] = tag_value
    end = _text(query_dict, "end")
    # The bar's date field is the last day shown, inclusive; the query's end is the day after it.
    last_day = _text(query_dict, "to")
    if last_day:
        with contextlib.suppress(ValueError):  # not a date: the range stays as it was
            end = (date.fromisoformat(last_day) + timedelta(days=1)).isoformat()
    granularity = _text(query_dict, "granularity")
    status = _text(query_dict, "status")
    stack = _text(query_dict, "stack")
    try:
        page = max(int(query_dict.get("page", "1")), 1)
    except ValueError:
        page = 1
    return PageFilters(
        start=_text(query_dict, "start"),
        end=end,
        granularity=granularity if granularity in GRANULARITIES and granularity != "total" else "",
        tenant=tenant or _text(query_dict, "tenant"),
        provider=_text(query_dict, "provider"),
        model=_text(query_dict, "model"),
        status=status if status in UsageStatus.values else "",
        stack=stack if stack in STACK_DIMENSIONS else "model",
        tags=tags,
        page=min(page, 100_000),
    )
