#!/usr/bin/env python3
"""Ports SigmaHQ's Linux process_creation rules to a vedette pack (the standard benchmark pack).

    python3 bench/tools/sigma_linux.py SIGMA_REPO > bench/packs/sigma-linux.yaml

Sigma semantics kept: string matches are case-insensitive (ILIKE / lower(...) =), wildcards
`*` and `?` in values, modifiers contains / startswith / endswith / all / re, selections as a
map (AND) or list of maps (OR), conditions with and / or / not / parentheses / `1 of x*` /
`all of x*` / `them`. Every selection is wrapped in COALESCE(…, false), so a missing field
never matches and `not filter` keeps rows where the filter's field is NULL. Rules using fields
the `process_events` table does not have are left out (listed on stderr). Each rule keeps its
Sigma id and title in a comment.
"""
import os
import re
import sys

import yaml

FIELDS = {
    "Image": "exe",
    "CommandLine": "cmdline",
    "ParentImage": "parent_exe",
    "ParentCommandLine": "parent_cmdline",
    "User": "user",
    "CurrentDirectory": "cwd",
}


class Skip(Exception):
    pass


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def like_pattern(value, mode):
    """A Sigma value (with * ? wildcards and \\ escapes) as a LIKE pattern with ESCAPE '\\'."""
    out = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value) and value[i + 1] in "*?\\":
            out.append("\\" + value[i + 1] if value[i + 1] == "\\" else value[i + 1])
            i += 2
            continue
        if c == "*":
            out.append("%")
        elif c == "?":
            out.append("_")
        elif c in "%_\\":
            out.append("\\" + c)
        else:
            out.append(c)
        i += 1
    p = "".join(out)
    if mode in ("contains", "endswith"):
        p = "%" + p
    if mode in ("contains", "startswith"):
        p = p + "%"
    return p


def value_expr(col, value, mods):
    if value is None:
        return f"{col} IS NULL"
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise Skip(f"value {value!r}")
    if "re" in mods:
        return f"regexp_like({col}, {sql_str(value)})"
    mode = next((m for m in ("contains", "startswith", "endswith") if m in mods), None)
    if mode is None and "*" not in value and "?" not in value:
        return f"lower({col}) = {sql_str(value.lower())}"
    return f"{col} ILIKE {sql_str(like_pattern(value, mode))} ESCAPE '\\'"


def field_expr(key, values):
    name, *mods = key.split("|")
    if name not in FIELDS:
        raise Skip(f"field {name}")
    unknown = [m for m in mods if m not in ("contains", "startswith", "endswith", "all", "re")]
    if unknown:
        raise Skip(f"modifier {unknown}")
    col = FIELDS[name]
    values = values if isinstance(values, list) else [values]
    parts = [value_expr(col, v, mods) for v in values]
    joiner = " AND " if "all" in mods else " OR "
    return "(" + joiner.join(parts) + ")" if len(parts) > 1 else parts[0]


def selection_expr(sel):
    if isinstance(sel, dict):
        parts = [field_expr(k, v) for k, v in sel.items()]
        return "(" + " AND ".join(parts) + ")" if len(parts) > 1 else parts[0]
    if isinstance(sel, list) and all(isinstance(x, dict) for x in sel):
        parts = [selection_expr(x) for x in sel]
        return "(" + " OR ".join(parts) + ")" if len(parts) > 1 else parts[0]
    raise Skip("keyword selection")


def condition_sql(cond, sels):
    tokens = re.findall(r"\(|\)|[A-Za-z0-9_*]+", cond)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def names(pattern):
        if pattern == "them":
            return list(sels)
        rx = re.compile("^" + re.escape(pattern).replace("\\*", ".*") + "$")
        found = [n for n in sels if rx.match(n)]
        if not found:
            raise Skip(f"no selection matches {pattern}")
        return found

    def atom():
        t = take()
        if t == "(":
            e = expr()
            take()
            return e
        if t == "not":
            return f"NOT {atom()}"
        if t in ("1", "all") and peek() == "of":
            take()
            ns = names(take())
            parts = [sels[n] for n in ns]
            j = " OR " if t == "1" else " AND "
            return "(" + j.join(parts) + ")" if len(parts) > 1 else parts[0]
        if t not in sels:
            raise Skip(f"condition token {t}")
        return sels[t]

    def conj():
        e = atom()
        while peek() == "and":
            take()
            e = f"{e} AND {atom()}"
        return e

    def expr():
        e = conj()
        while peek() == "or":
            take()
            e = f"({e} OR {conj()})"
        return e

    out = expr()
    if pos != len(tokens):
        raise Skip(f"condition {cond}")
    return out


SEVERITY = {"informational": "info", "low": "low", "medium": "medium", "high": "high", "critical": "critical"}


def convert(doc):
    det = doc["detection"]
    cond = det.pop("condition")
    if isinstance(cond, list):
        if len(cond) != 1:
            raise Skip("several conditions")
        cond = cond[0]
    det.pop("timeframe", None)
    sels = {name: f"COALESCE({selection_expr(sel)}, false)" for name, sel in det.items()}
    where = condition_sql(cond, sels)
    return f"SELECT host, user, exe, cmdline, parent_exe FROM process_events WHERE {where}"


def main(repo):
    base = os.path.join(repo, "rules", "linux", "process_creation")
    out = [
        "# SigmaHQ Linux process_creation rules ported to vedette SQL (bench/tools/sigma_linux.py).",
        "# Source: https://github.com/SigmaHQ/sigma (Detection Rule License 1.1). Each rule keeps",
        "# its Sigma id and title in the comment above it.",
        "name: sigma-linux",
        "version: 1",
        "description: SigmaHQ Linux process_creation rules, for benchmarks and as a starting point.",
        "author: SigmaHQ contributors, ported by vedette",
        "rules:",
    ]
    kept = 0
    for f in sorted(os.listdir(base)):
        with open(os.path.join(base, f)) as fh:
            doc = yaml.safe_load(fh)
        try:
            sql = convert(doc)
        except Skip as e:
            print(f"skipped {f}: {e}", file=sys.stderr)
            continue
        rid = "sigma." + re.sub(r"[^a-z0-9_]", "_", f.removesuffix(".yml").removeprefix("proc_creation_lnx_"))
        title = doc["title"].replace('"', "'")
        tags = [t for t in doc.get("tags", []) if re.match(r"^[a-z0-9._-]+$", t)]
        out.append(f"  # {doc['id']}: {doc['title']}")
        out.append(f"  - id: {rid}")
        out.append(f"    name: {yaml.safe_dump(title, default_style=chr(34)).strip()}")
        out.append(f"    severity: {SEVERITY.get(doc.get('level', 'medium'), 'medium')}")
        if tags:
            out.append(f"    tags: [{', '.join(tags)}]")
        out.append("    sql: " + yaml.safe_dump(sql, default_style=chr(34), width=10**9).strip())
        kept += 1
    print("\n".join(out))
    print(f"kept {kept} rules", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
