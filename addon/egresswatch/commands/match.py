"""``egresswatch match [--lists DIR ...] [--json] HOST ...``: explain how each host is attributed.

For every HOST it prints the normalised name, the app(s), the deciding rule (domain, match kind,
``file:line``, source, confidence, tags) and the app's regimes with their status today; a name
that matches nothing says so, and names the carve-out that excluded it if one did.

Exit status: 0 when every HOST is a valid name, matched or not (an unmatched host is an answer,
not a failure: scripts read ``app`` from ``--json``); 3 when any HOST is not a valid hostname
(every host is still explained); 1 when the catalogue does not load; 2 for usage errors.

``--json`` prints one object per host and line::

    {"input": "Pay.Weixin.QQ.com.", "host": "pay.weixin.qq.com", "valid": true,
     "app": "wechat-pay", "apps": ["wechat-pay"],
     "rule": {"domain": ..., "match": "suffix", "file": ..., "line": 12, "source": ...,
              "confidence": "high", "tags": [...]},
     "regimes": [{"id": "us-eo-13971", "status": "revoked"}], "carved_out_by": null}

``host`` is the normalised name, or the input as given when it is not a valid hostname (then
``valid`` is false and ``error`` says why). For an IP literal matched by a CIDR range, the rule's
``domain`` is the network and its ``match`` is ``cidr``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from datetime import date
from typing import Any
from typing import TextIO

from ..catalogue import CarveOut
from ..catalogue import Catalogue
from ..hostnames import is_ip_literal
from ..hostnames import normalise_host
from ..hostnames import why_invalid
from ..matcher import Match
from ..matcher import Matcher
from .lists import STATUS_TEXT
from .lists import add_catalogue_args
from .lists import load_from_args

__all__ = ["EXIT_INVALID", "EXIT_OK", "explain", "register"]

#: Every host was a valid name (matched or not).
EXIT_OK = 0
#: At least one host was not a valid hostname (1 and 2 are the catalogue and usage errors).
EXIT_INVALID = 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "match",
        help="explain which app (if any) a hostname is attributed to, and why",
        description=(
            "Explain which designated app each HOST is attributed to: the normalised name, "
            "the deciding rule with its file:line and provenance, and the regimes with their "
            "status. Exits 0 when every HOST is a valid name (matched or not), 3 when any "
            "HOST is not a valid hostname, 1 if the catalogue does not load, 2 on usage errors."
        ),
    )
    add_catalogue_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object per host and line")
    p.add_argument("hosts", nargs="+", metavar="HOST", help="hostname, host:port or IP literal")
    p.set_defaults(func=run)


def _carve_outs(cat: Catalogue) -> dict[str, list[CarveOut]]:
    table: dict[str, list[CarveOut]] = {}
    for app in cat.apps.values():
        for co in app.carve_outs:
            table.setdefault(co.domain, []).append(co)
    return table


def _suffixes(name: str) -> Iterator[str]:
    while True:
        yield name
        i = name.find(".")
        if i < 0:
            return
        name = name[i + 1 :]


def _carved_out_by(name: str, table: dict[str, list[CarveOut]]) -> CarveOut | None:
    """The most specific carve-out covering ``name`` (an explanation for "no match")."""
    if is_ip_literal(name):
        return None
    for s in _suffixes(name):
        if s in table:
            return table[s][0]
    return None


def _rule_data(m: Match) -> dict[str, Any]:
    r = m.rule
    return {
        "domain": r.domain,
        "match": r.match,
        "file": r.file,
        "line": r.line,
        "source": r.source,
        "confidence": r.confidence,
        "tags": list(r.tags),
    }


def explain(
    raw: str, matcher: Matcher, cat: Catalogue, today: date, carve: dict[str, list[CarveOut]]
) -> dict[str, Any]:
    """The decision for one host, as the ``--json`` object."""
    name = normalise_host(raw)
    if name is None:
        return {
            "input": raw,
            "host": raw,
            "valid": False,
            "error": why_invalid(raw) or "not a valid hostname",
            "app": None,
            "apps": [],
            "rule": None,
            "regimes": [],
            "carved_out_by": None,
        }
    m = matcher.match_normalised(name)
    if m is not None:
        m = m._replace(rule=matcher.explain(m.rule))  # bulk-list names: look the line up
    co = _carved_out_by(name, carve) if m is None else None
    regimes = []
    for rid in m.regimes if m else ():
        regime = cat.regimes.get(rid)
        regimes.append({"id": rid, "status": regime.status(today) if regime else None})
    return {
        "input": raw,
        "host": name,
        "valid": True,
        "app": m.app if m else None,
        "apps": list(m.apps) if m else [],
        "rule": _rule_data(m) if m else None,
        "regimes": regimes,
        "carved_out_by": (
            {
                "domain": co.domain,
                "app": co.app,
                "file": co.file,
                "line": co.line,
                "reason": co.reason,
            }
            if co
            else None
        ),
    }


def _text(d: dict[str, Any], cat: Catalogue) -> list[str]:
    shown = d["host"] if d["host"] == d["input"] else f"{d['input']} -> {d['host']}"
    if not d["valid"]:
        return [f"{d['input']}: invalid hostname ({d['error']})"]
    if d["app"] is None:
        co = d["carved_out_by"]
        if co:
            return [
                f"{shown}: no match (carved out of {co['app']} by {co['domain']} at "
                f"{co['file']}:{co['line']}: {co['reason']})"
            ]
        return [f"{shown}: no match"]
    app = cat.apps[d["app"]]
    r = d["rule"]
    lines = [f"{shown}: {app.id} ({app.name})"]
    if len(d["apps"]) > 1:
        lines.append(f"  shared by:  {', '.join(d['apps'])}")
    lines.append(f"  rule:       {r['domain']} ({r['match']}) at {r['file']}:{r['line']}")
    lines.append(f"  source:     {r['source']}")
    lines.append(
        f"  confidence: {r['confidence']}"
        + (f"; tags: {', '.join(r['tags'])}" if r["tags"] else "")
    )
    regimes = []
    for reg in d["regimes"]:
        status = STATUS_TEXT.get(reg["status"], "undefined")
        regime = cat.regimes.get(reg["id"])
        if regime is not None and reg["status"] == "revoked" and regime.revoked:
            status += f" {regime.revoked}"
        elif regime is not None and reg["status"] == "not_yet_effective" and regime.effective:
            status += f", effective {regime.effective}"
        regimes.append(f"{reg['id']} ({status})")
    lines.append(f"  regimes:    {', '.join(regimes) or 'none'}")
    return lines


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    cat = load_from_args(args, err)
    if cat is None:
        return 1
    matcher = Matcher.from_catalogue(cat)
    today: date = args.today or date.today()
    carve = _carve_outs(cat)
    rc = EXIT_OK
    for raw in args.hosts:
        d = explain(raw, matcher, cat, today, carve)
        if not d["valid"]:
            rc = EXIT_INVALID
        if args.json:
            print(json.dumps(d, sort_keys=False), file=out)
        else:
            for line in _text(d, cat):
                print(line, file=out)
    return rc
