"""Customer attributes: extra columns of the ``customers`` table (loyalty tier, age band, newsletter sign-up,
preferred department, ...) - their kinds, validation, and model-ready feature columns.

The kinds are declared in ``customers.attributes.yaml`` beside the tables, one ``name: kind`` per column::

    loyalty_tier: categorical     # any text; a category over a stable vocabulary
    age: numeric                  # a number
    newsletter: boolean           # true/false, yes/no, 1/0
    loyalty_joined: date          # a date; the feature is days before the cutoff

Without that file every extra column's kind is inferred from its values, and the validation report lists what
was inferred so it can be checked (``personalise validate``). Nothing here knows any dataset.

The customers table is a snapshot: an attribute holds its current value, which at an earlier cutoff may not
have been known yet (a loyalty tier earned later). Dates after the cutoff are therefore dropped (NaN); other
kinds cannot be checked and are the shop's responsibility.

Example
-------
>>> customers = pd.DataFrame({"customer_id": ["a", "b"], "tier": ["gold", None], "age": ["31", "47"]})
>>> report = ValidationReport()                                   # doctest: +SKIP
>>> typed, kinds = validate_attributes(customers, None, report)   # doctest: +SKIP
>>> kinds                                                         # doctest: +SKIP
{'tier': 'categorical', 'age': 'numeric'}
>>> attribute_features(typed, kinds).columns.tolist()             # doctest: +SKIP
['attr_tier', 'attr_age']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features import schema

if TYPE_CHECKING:
    from features.validation import ValidationReport

BOOL_WORDS = {"true": True, "1": True, "yes": True, "1.0": True, "false": False, "0": False,
              "no": False, "0.0": False}
"""The same spellings the contract accepts for its own boolean columns."""
YEAR = r"(?<!\d)\d{4}(?!\d)"
"""An undeclared column is inferred to hold dates only when every value has a four-digit year ('1-2' and
'19-24' are ranges, which a date parser would accept)."""
MAX_EXAMPLES = 5
ID_LIKE_MIN_DISTINCT = 1000
"""A categorical attribute with at least this many values, nearly one per customer, looks like an id or free
text: it is kept, with a warning (a model learns nothing from it)."""


def parse_declaration(raw: Any, report: ValidationReport) -> dict[str, str]:
    """The ``name -> kind`` mapping of ``customers.attributes.yaml`` content (already parsed YAML).

    Problems (not a mapping, an unknown kind, a name that is a contract column) are recorded in ``report``
    under the file's name; the valid entries are returned.
    """
    where = schema.ATTRIBUTES_FILE
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        report.add(where, None, 0,
                   f"expected a mapping 'column: kind' with kinds {list(schema.ATTRIBUTE_KINDS)}, "
                                   f"got {type(raw).__name__}")
        return {}
    out: dict[str, str] = {}
    for name, kind in raw.items():
        name, k = str(name), str(kind).strip().lower()
        if k not in schema.ATTRIBUTE_KINDS:
            report.add(where, name, 0, f"kind {kind!r} is not one of {list(schema.ATTRIBUTE_KINDS)}")
        elif name in schema.CUSTOMERS.names:
            report.add(where, name, 0, f"{name!r} is a contract column of customers, typed by the contract: "
                                       "remove it from the file")
        else:
            out[name] = k
    return out


def infer_kind(values: pd.Series) -> str:
    """The kind an undeclared column's values look like: boolean (only true/false, yes/no or 0/1), numeric,
    date (every value parses as a date) or else categorical."""
    if pd.api.types.is_bool_dtype(values):
        return schema.BOOLEAN
    if pd.api.types.is_datetime64_any_dtype(values):
        return schema.DATE
    v = values.dropna()
    if pd.api.types.is_numeric_dtype(values):
        return schema.BOOLEAN if len(v) and v.isin([0, 1]).all() else schema.NUMERIC
    distinct = pd.Series(v.astype(str).str.strip().unique())
    if not len(distinct):
        return schema.CATEGORICAL
    if distinct.str.lower().isin(list(BOOL_WORDS)).all():
        return schema.BOOLEAN
    if pd.to_numeric(distinct, errors="coerce").notna().all():
        return schema.NUMERIC
    if distinct.str.contains(YEAR).all() and parse_timestamps(distinct.head(200)).notna().all() \
            and parse_timestamps(distinct).notna().all():
        return schema.DATE
    return schema.CATEGORICAL


def parse_timestamps(s: pd.Series) -> pd.Series:
    """Timestamps as naive UTC ``datetime64[ns]`` (an offset is converted to UTC); unparseable values and
    years outside 1678..2261 (which nanoseconds cannot hold) become NaT. Shared with the contract's time
    columns."""
    if pd.api.types.is_datetime64_any_dtype(s):
        t = s
    else:
        t = pd.to_datetime(s, errors="coerce", utc=True, format="mixed")
    if getattr(t.dt, "tz", None) is not None:
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    year = t.dt.year
    return t.where((year > 1677) & (year < 2262)).astype("datetime64[ns]")


def cast(values: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    """``values`` as ``kind`` (numeric float, boolean ``boolean``, date ``datetime64``, categorical text) and
    the mask of values that are present but not of that kind."""
    present = values.notna()
    if kind == schema.NUMERIC:
        typed = pd.to_numeric(values, errors="coerce").astype(float)
        typed = typed.where(np.isfinite(typed))
    elif kind == schema.BOOLEAN:
        if pd.api.types.is_bool_dtype(values):
            typed = values.astype("boolean")
        else:
            text = values.astype("string").str.strip().str.lower()
            typed = text.map(BOOL_WORDS).astype("boolean")
    elif kind == schema.DATE:
        typed = parse_timestamps(values)
    else:
        typed = values.astype("string").str.strip().astype(object)
        typed = typed.where(present & (typed != ""), None)
    return typed, typed.isna() & present


def validate_attributes(customers: pd.DataFrame, declared: dict[str, str] | None, report: ValidationReport
                        ) -> tuple[pd.DataFrame, dict[str, str]]:
    """Type the attribute columns of ``customers`` and record every problem in ``report``.

    ``declared`` is the parsed ``customers.attributes.yaml`` (:func:`parse_declaration`); ``None`` means no
    file: every column that is not a contract column is an attribute of the inferred kind. Errors: a declared
    column that is missing, values not of the column's kind (named by customer id). Warnings: extra columns
    the file does not declare (kept, not used), categorical columns that look like ids. A summary of every
    attribute is stored in ``report.attributes``.

    Returns
    -------
    (customers with the attribute columns typed, ``{name: kind}``)
    """
    extra = [c for c in customers.columns if c not in schema.CUSTOMERS.names]
    source = "declared" if declared is not None else "inferred"
    if declared is None:
        kinds = {c: infer_kind(customers[c]) for c in extra}
    else:
        for name in declared:
            if name not in customers.columns:
                report.add("customers", name, len(customers),
                           f"declared in {schema.ATTRIBUTES_FILE} but not a "
                           f"column of customers; its extra columns are {extra}")
        for name in extra:
            if name not in declared:
                report.add("customers", name, len(customers),
                           f"not declared in {schema.ATTRIBUTES_FILE}: kept, "
                           "not used as an attribute", severity="warning")
        kinds = {n: k for n, k in declared.items() if n in customers.columns}
    out = customers.copy()
    ids = customers["customer_id"] if "customer_id" in customers.columns else customers.index.to_series()
    for name, kind in kinds.items():
        typed, bad = cast(customers[name], kind)
        if bad.any():
            examples = [f"{i}: {v!r}" for i, v in zip(ids[bad].head(MAX_EXAMPLES),
                                                      customers.loc[bad, name].head(MAX_EXAMPLES),
                                                       strict=True)]
            report.add("customers", name, int(bad.sum()), f"not a {kind} value ({source} kind)", examples)
        n_distinct = typed.nunique()
        if (
            kind == schema.CATEGORICAL
            and n_distinct >= ID_LIKE_MIN_DISTINCT
            and n_distinct >= 0.9 * typed.notna().sum()
        ):
            report.add("customers", name, int(n_distinct),
                       "categorical attribute with about one value per customer: "
                       "an id or free text, which no model learns from", severity="warning")
        out[name] = typed
    report.attributes = [_summary(name, kind, source, out[name]) for name, kind in kinds.items()]
    return out, kinds


def _summary(name: str, kind: str, source: str, s: pd.Series) -> dict[str, Any]:
    v = s.dropna()
    if not len(v):
        what = "no values"
    elif kind == schema.NUMERIC:
        what = f"{v.min():g} .. {v.max():g}, mean {v.mean():.4g}"
    elif kind == schema.DATE:
        what = f"{v.min():%Y-%m-%d} .. {v.max():%Y-%m-%d}"
    elif kind == schema.BOOLEAN:
        what = f"{v.astype(bool).mean():.1%} true"
    else:
        top = v.value_counts().head(3)
        what = f"{s.nunique()} values, most common " + ", ".join(f"{k!r} ({n})" for k, n in top.items())
    return {"name": name, "kind": kind, "source": source, "non_null": int(len(v)), "summary": what}


def vocabularies(customers: pd.DataFrame, kinds: dict[str, str]) -> dict[str, list[str]]:
    """Sorted distinct values of every categorical attribute: the category order of
    :func:`attribute_features`. Computed on the whole table, so the same value has the same code at every
    cutoff and in every subset."""
    return {n: sorted(customers[n].dropna().astype(str).unique().tolist())
            for n, k in kinds.items() if k == schema.CATEGORICAL and n in customers.columns}


def attribute_features(customers: pd.DataFrame, kinds: dict[str, str], cutoff: pd.Timestamp | None = None,
                       vocabulary: dict[str, list[str]] | None = None,
                       prefix: str = schema.ATTRIBUTE_PREFIX) -> pd.DataFrame:
    """Model-ready columns ``<prefix><name>``, one row per customer (index ``customer_id``).

    numeric -> float; categorical -> pandas ``category`` over ``vocabulary`` (default: :func:`vocabularies` of
    ``customers``; a value outside it becomes NaN); boolean -> 0.0/1.0; date -> days before ``cutoff`` (NaN
    when missing or after the cutoff, which was not known then). Missing values stay NaN. Pass the typed table
    from
    :func:`validate_attributes` (``Shop.customers``) and select rows afterwards, so the vocabulary is stable.

    Example
    -------
    >>> c = pd.DataFrame({"customer_id": ["a", "b"], "tier": ["gold", "silver"], "vip": [True, False]})
    >>> attribute_features(c, {"tier": "categorical", "vip": "boolean"})["attr_vip"].tolist()
    [1.0, 0.0]
    """
    vocab = vocabulary if vocabulary is not None else vocabularies(customers, kinds)
    out: dict[str, Any] = {}
    for name, kind in kinds.items():
        s = customers[name]
        if kind == schema.NUMERIC:
            col: Any = pd.to_numeric(s, errors="coerce").astype(float).to_numpy()
        elif kind == schema.BOOLEAN:
            col = s.astype("boolean").astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        elif kind == schema.DATE:
            if cutoff is None:
                raise ValueError(f"attribute {name!r} is a date: pass the cutoff its age is measured from")
            days = (pd.Timestamp(cutoff) - parse_timestamps(s)) / pd.Timedelta(days=1)
            col = days.where(days >= 0).to_numpy(dtype=float, na_value=np.nan)
        else:
            cats = vocab.get(name, [])
            text = s.astype("string").astype(object)
            col = pd.Categorical(text.where(s.notna() & text.isin(cats), None), categories=cats)
        out[f"{prefix}{name}"] = col
    index = pd.Index(customers["customer_id"].to_numpy(dtype=object), name="customer_id")
    return pd.DataFrame(out, index=index)
