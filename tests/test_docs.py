"""The documentation names only options, commands, flags and metrics that exist.

Every ``egresswatch_*`` name in README.md, domains/README.md, deploy/README.md and docs/*.md must
be a mitmproxy option registered by the addon's ``load()`` or a metric the exporter defines; every
``egresswatch <command> [--flag ...]`` in a code span or a shell block must resolve through the
CLI parser, and the shell examples must parse as written. The option and flag tables in
docs/operating.md must give the defaults the code has.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from egresswatch.cli import build_parser
from egresswatch.commands.match import EXIT_INVALID
from egresswatch.commands.match import EXIT_OK
from egresswatch.importers import FORMATS
from egresswatch.lint import Severity
from egresswatch.metrics import Metrics
from egresswatch.proxy.addon import EgressWatch
from mitmproxy.test import taddons
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    ROOT / "README.md",
    ROOT / "domains" / "README.md",
    ROOT / "deploy" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
SHELL_LANGS = frozenset({"sh", "bash", "shell", "console"})

_FENCE = re.compile(r"^[ \t]*```([a-z]*)[ \t]*\n(.*?)^[ \t]*```", re.S | re.M)
_SPAN = re.compile(r"`([^`\n]+)`")
# "egresswatch" as a command word: not egresswatch_x, egresswatch.py, egresswatch/..., -egresswatch
_COMMAND = re.compile(r"(?<![\w./-])egresswatch(?![\w./-])((?:[ \t]+[^\s`]+)*)")
_NAME = re.compile(r"\begresswatch_[a-z0-9_]*[a-z0-9](?!\.py)\b")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def shell_lines(text: str) -> Iterator[str]:
    """Lines of shell code blocks, continuations joined and ``# comments`` dropped."""
    for m in _FENCE.finditer(text):
        if m.group(1) not in SHELL_LANGS:
            continue
        for line in m.group(2).replace("\\\n", " ").splitlines():
            yield re.sub(r"(^|\s)#.*", "", line)


def code_spans(text: str) -> Iterator[str]:
    """Inline code spans outside fenced blocks."""
    yield from _SPAN.findall(_FENCE.sub("", text))


def command_lines(text: str) -> Iterator[tuple[str, bool]]:
    """``egresswatch ...`` invocations: (words after ``egresswatch``, from a shell block)."""
    for line in shell_lines(text):
        for m in _COMMAND.finditer(line):
            yield " ".join(m.group(1).split()), True
    for span in code_spans(text):
        for m in _COMMAND.finditer(span):
            yield " ".join(m.group(1).split()), False


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(p: argparse.ArgumentParser) -> set[str]:
    return {s for action in p._actions for s in action.option_strings}


def resolve(words: list[str]) -> tuple[list[str], argparse.ArgumentParser, list[str]]:
    """Walk sub-commands: (command path, its parser, the words after it); fail on a bad one."""
    parser = build_parser()
    path: list[str] = []
    rest = list(words)
    while (subs := _subparsers(parser)) and rest and not rest[0].startswith("-"):
        word = rest[0]
        if word not in subs:
            raise LookupError(
                f"'egresswatch {' '.join([*path, word])}': no such command "
                f"(have: {', '.join(sorted(subs))})"
            )
        path.append(word)
        parser = subs[word]
        rest = rest[1:]
    return path, parser, rest


def _flag_words(rest: list[str]) -> Iterator[str]:
    """``--flag`` / ``-f`` words for egresswatch itself (not mitmdump's after a lone ``--``)."""
    for word in rest:
        word = word.strip("[]()|")
        if word == "--":
            return
        if re.fullmatch(r"--?[a-z][a-z0-9-]*(=.*)?", word):
            yield word.split("=", 1)[0]


@pytest.fixture(scope="module")
def docs() -> dict[str, str]:
    return {_rel(p): p.read_text(encoding="utf-8") for p in DOCS}


@pytest.fixture(scope="module")
def addon_options() -> dict[str, Any]:
    """Every option the addon registers in ``load()``: name -> mitmproxy ``_Option``."""
    with taddons.context(EgressWatch(registry=CollectorRegistry())) as tctx:
        opts = tctx.options
        return {k: opts._options[k] for k in opts.keys() if k.startswith("egresswatch_")}


@pytest.fixture(scope="module")
def metric_names() -> set[str]:
    """Family and sample names the exporter can expose (counters as ``*_total``, infos
    as ``*_info``), with the optional next-expiry gauge set so that it is collected."""
    reg = CollectorRegistry()
    m = Metrics(reg)
    try:
        m.exceptions(1, 1.0)
        names: set[str] = set()
        for family in reg.collect():
            names.add(family.name)
            names.update(s.name for s in family.samples)
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "info":
                names.add(f"{family.name}_info")
        return names
    finally:
        m.close()


def test_the_docs_are_found(docs: dict[str, str]) -> None:
    assert {"README.md", "domains/README.md", "deploy/README.md", "docs/operating.md"} <= set(docs)
    assert len(docs) >= 10


def test_extractors_see_code_not_prose() -> None:
    text = (
        "Run `egresswatch lists check --strict DIR` (egresswatch is a proxy; `egresswatch_x`,\n"
        "`egresswatch/_shim/egresswatch_entry.py`).\n\n"
        "```sh\negresswatch run --policy p.yaml \\\n    --lists d  # not egresswatch match\n```\n"
        "```\negresswatch store benchmark (full)\n```\n"
    )
    assert list(command_lines(text)) == [
        ("run --policy p.yaml --lists d", True),
        ("lists check --strict DIR", False),
    ]
    assert _NAME.findall(text) == ["egresswatch_x"]
    assert list(_flag_words("--format html\\|md [-o PATH] -- --set x=1 -q".split())) == [
        "--format",
        "-o",
    ]


def test_resolve_rejects_unknown_commands_and_finds_flags() -> None:
    path, parser, rest = resolve(["lists", "check", "--strict", "DIR"])
    assert path == ["lists", "check"] and rest == ["--strict", "DIR"]
    assert {"--strict", "--with-bundled"} <= _flags(parser)
    with pytest.raises(LookupError, match="no such command"):
        resolve(["store", "benchmark"])


def test_every_egresswatch_name_is_an_option_or_a_metric(
    docs: dict[str, str], addon_options: dict[str, Any], metric_names: set[str]
) -> None:
    assert "egresswatch_lists" in addon_options and "egresswatch_hits_total" in metric_names
    unknown = [
        f"{path}: {name}"
        for path, text in docs.items()
        for name in sorted(set(_NAME.findall(text)))
        if name not in addon_options and name not in metric_names
    ]
    assert not unknown, "names in the docs that are neither an option nor a metric:\n" + "\n".join(
        unknown
    )


def test_every_addon_option_is_documented_in_operating(
    docs: dict[str, str], addon_options: dict[str, Any]
) -> None:
    text = docs["docs/operating.md"]
    missing = [
        name
        for name in addon_options
        if f"`{name}`" not in text
        and f"`{name.replace('_keyfile', '_certfile')}`, `_keyfile`" not in text
    ]
    assert not missing, f"options missing from docs/operating.md: {missing}"


def test_every_documented_command_and_flag_exists(docs: dict[str, str]) -> None:
    problems: list[str] = []
    seen: set[str] = set()
    for path, text in docs.items():
        for words, _ in command_lines(text):
            try:
                cmd, parser, rest = resolve(words.split())
            except LookupError as e:
                problems.append(f"{path}: {e}")
                continue
            seen.add(" ".join(cmd))
            for flag in _flag_words(rest):
                if flag not in _flags(parser):
                    problems.append(f"{path}: 'egresswatch {' '.join(cmd)}' has no {flag}")
    assert not problems, "\n".join(problems)
    # the extraction found the README's commands table, so the check is not vacuous
    assert {"run", "lists check", "lists show", "lists import", "match", "report"} <= seen
    assert {"db verify", "events export"} <= seen


def test_shell_examples_parse(docs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    examples = [
        (path, words)
        for path, text in docs.items()
        for words, in_shell in command_lines(text)
        if in_shell and words
    ]
    assert len(examples) >= 5
    for path, words in examples:
        try:
            args = parser.parse_args(words.split())
        except SystemExit:
            pytest.fail(f"{path}: 'egresswatch {words}' does not parse: {capsys.readouterr().err}")
        assert callable(args.func)


def _table_rows(text: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header line starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
        rows.append([c.strip() for c in cells])
    return rows


def _as_documented(default: object) -> str:
    """An option default as docs/operating.md writes it: ``[]``, ``true``, ``""``, ``60``."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, list | tuple):
        return repr(list(default))
    if default == "":
        return '""'
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def test_operating_option_table_defaults_match_the_addon(
    docs: dict[str, str], addon_options: dict[str, Any]
) -> None:
    rows = _table_rows(docs["docs/operating.md"], "| option | type, default |")
    assert len(rows) >= 15
    checked = 0
    for cells in rows:
        names = re.findall(r"`(egresswatch_[a-z_]+)`", cells[0])
        opt = addon_options[names[0]]
        spans = re.findall(r"`([^`]*)`", cells[1])
        if opt.choices:
            assert set(spans) == set(opt.choices), cells
            continue
        kind, _, _ = cells[1].partition(",")
        want = {"list": list, "bool": bool, "str": str, "int": int, "float": float}[kind.strip()]
        default = opt.default
        shown = _as_documented(default)
        assert isinstance(default, want) or (want is list and isinstance(default, list | tuple))
        assert spans[0] == shown, f"{names[0]}: docs say {spans[0]}, the addon {shown}"
        checked += 1
    assert checked >= 12


def test_operating_run_flags_exist_with_their_defaults(docs: dict[str, str]) -> None:
    _, run, _ = resolve(["run"])
    flags = _flags(run)
    rows = _table_rows(docs["docs/operating.md"], "| flag | default | becomes |")
    assert len(rows) >= 10
    for cells in rows:
        flag = re.match(r"`(--?[a-z][a-z0-9-]*)", cells[0])
        if flag is None:  # "-- ARGS…"
            continue
        assert flag.group(1) in flags, cells[0]
    defaults = {a.dest: a.default for a in run._actions}
    assert f"`{defaults['listen_host']}`" in docs["docs/operating.md"]
    row = {c[0].split()[0].strip("`"): c[1] for c in rows}
    assert row["--listen-host"].startswith(f"`{defaults['listen_host']}`")
    assert row["--listen-port"] == f"`{defaults['listen_port']}`"


def test_readme_first_commands(docs: dict[str, str]) -> None:
    """The README opens with the two commands a newcomer types; both exist as written."""
    first = next(_FENCE.finditer(docs["README.md"]))
    commands = [line.split("#")[0].strip() for line in first.group(2).splitlines()]
    assert commands == ["./dev.sh run", "./dev.sh test"]
    dev = (ROOT / "dev.sh").read_text(encoding="utf-8")
    assert re.search(r"^\s*run\)", dev, re.M) and re.search(r"^\s*test\)", dev, re.M)


def test_catalogue_readme_describes_the_tools(docs: dict[str, str]) -> None:
    """domains/README.md documents every severity, import format and the flags that matter."""
    text = docs["domains/README.md"]
    rows = _table_rows(text, "| severity |")
    assert [r[0] for r in rows] == [f"`{s}`" for s in Severity]
    formats = _table_rows(text, "| `--format` |")
    assert [r[0] for r in formats] == [f"`{f}`" for f in FORMATS]
    _, check, _ = resolve(["lists", "check"])
    for flag in ("--strict", "--with-bundled", "--quiet", "--today"):
        assert flag in _flags(check) and f"`{flag}" in text, flag
    _, imp, _ = resolve(["lists", "import"])
    defaults = {a.dest: a.default for a in imp._actions}
    assert f"`--confidence {defaults['confidence']}`" in text
    # the exit codes of `egresswatch match`, one table row each (was: "exits 0 whenever the
    # catalogue loads"; an invalid host now exits 3)
    codes = [r[0] for r in _table_rows(text, "| exit | meaning |")]
    assert codes == [str(EXIT_OK), str(EXIT_INVALID), "1", "2"]


def test_repository_paths_in_the_docs_exist(docs: dict[str, str]) -> None:
    """Code spans naming a file or directory of this repository name one that exists."""
    top = ("addon/", "bench/", "deploy/", "docs/", "domains/", "tests/")
    missing = []
    for path, text in docs.items():
        for span in code_spans(text):
            for word in span.split():
                word = word.rstrip(".,;:)")
                if not word.startswith(top) or "…" in word or "*" in word:
                    continue
                file, _, test = word.partition("::")  # a pytest node id names a test too
                if not (ROOT / file).exists() or (
                    test and f"def {test}(" not in (ROOT / file).read_text(encoding="utf-8")
                ):
                    missing.append(f"{path}: {word}")
    assert not missing, "\n".join(missing)
