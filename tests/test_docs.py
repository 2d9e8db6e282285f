"""The docs against the code: the generated reference pages equal what `python -m scripts.docs_reference` writes;
every setting, metric, alert and CLI command the code has is named in the docs; every env var and every
`trustgap COMMAND --option` the docs name exists; every YAML block that sets a setting loads; every relative link
resolves; every command in the docs' shell blocks parses.

The docs are README.md and docs/**/*.md. A shell block is a fenced ```bash, ```sh, ```shell or ```console block
(in a console block only the `$ ` lines are commands). Each command is checked offline and in-process, without a
running stack: `trustgap ...` through the CLI's own argparse parser (and `trustgap replay ... --dry-run` run for
real when its files are in the repo), `make TARGET` against the Makefile's targets, `python -m MODULE` by finding
the module, `python FILE` by the file, `python -c CODE` by compiling it, `TRUSTGAP_*=` assignments against the
settings. Any other program must be in UNCHECKED with the reason it cannot be checked here; an unknown one fails.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client import Counter

from deploy.alerts import AREAS
from scripts import docs_reference
from stream import cli
from stream.metrics import Metrics
from stream.settings import ENV_PREFIX, ConfigError, ModelSettings, Settings, load

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = f"run `{docs_reference.COMMAND}` and commit the result"
SHELL_LANGS = frozenset({"bash", "sh", "shell", "console"})

# Programs (or command prefixes) the docs may run that this test cannot check offline, each with the reason.
UNCHECKED: dict[str, str] = {
    "jq": "filters the JSON of the command before it in the pipeline, which is checked",
    "curl": "asks a running worker's web server",
    "git clone": "needs the network",
    "cd": "moves the shell; the commands after it are checked",
    "sudo apt-get": "installs system packages (the Makefile's system-deps targets do the same, checked there)",
    "apt-get": "installs system packages (the Makefile's system-deps targets do the same, checked there)",
    "pip install": "installs packages from an index",
    "python train.py": "the reader's own training script, gated by `trustgap gate`",
}
# Words that run the rest of the line as a command: what follows them is checked instead.
PREFIXES = frozenset({"env", "time", "exec", "nohup", "export"})


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def docs_text(*extra: Path) -> str:
    return "\n".join(p.read_text() for p in [*doc_files(), *extra])


# --- (a) the generated pages --------------------------------------------------------------------------------------

def test_the_settings_and_metrics_pages_equal_what_the_code_generates() -> None:
    assert docs_reference.drift() == [], REGENERATE


def test_a_changed_description_makes_the_settings_page_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ModelSettings.model_fields["alpha"], "description", "a new description")
    assert docs_reference.drift() == [docs_reference.DOCS / "settings.md"]


def test_a_new_metric_makes_the_metrics_page_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    class OneMore(Metrics):
        def __init__(self) -> None:
            super().__init__()
            self.extra = Counter("trustgap_extra", "A metric the page does not list yet", registry=self.registry)

    monkeypatch.setattr(docs_reference, "Metrics", OneMore)
    assert docs_reference.drift() == [docs_reference.DOCS / "metrics.md"]
    assert "`trustgap_extra_total` | counter | none | A metric the page does not list yet" in \
        docs_reference.metrics_page()


def test_the_settings_page_shows_env_vars_defaults_and_bounds() -> None:
    page = docs_reference.settings_page()
    # a nested model's field, a secret's default, a bound, and a per-model field's two env vars
    assert "| `topics.alerts` | str | `trustgap.alerts` | `TRUSTGAP_TOPICS__ALERTS` |" in page
    assert "| `redis_url` | str (secret) | `redis://127.0.0.1:6379/0` |" in page
    assert "| `gc_threshold` | int, ≥ 700 | `5000` |" in page
    assert "`TRUSTGAP_DEFAULTS__ALPHA`<br>`TRUSTGAP_MODELS__<NAME>__ALPHA`" in page


# --- (b) everything the code has is named in the docs -------------------------------------------------------------

def setting_names() -> list[str]:
    """Every setting a value is given to (`topics.alerts`, not `topics`), the per-model ones by their own name."""
    nested = {".".join(p[:-1]) for p, _ in docs_reference.setting_rows(Settings) if len(p) > 1}
    return [name for p, _ in docs_reference.setting_rows(Settings) if (name := ".".join(p)) not in nested] + \
        list(ModelSettings.model_fields)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def metric_names() -> list[str]:
    return [row[0] for row in docs_reference.metric_rows()]


def alert_names() -> list[str]:
    return [a.name for area in AREAS.values() for a in area]


def env_vars() -> set[str]:
    """Every env var trustgap reads by name: each setting's (a model's own ones are matched by `is_env_var`)."""
    return ({docs_reference.env_var(p) for p, _ in docs_reference.setting_rows(Settings)}
            | {docs_reference.env_var(("defaults", name)) for name in ModelSettings.model_fields}
            | {"TRUSTGAP_CONFIG", cli.STATE_DIR_ENV})


def is_env_var(name: str) -> bool:
    per_model = "|".join(n.upper() for n in ModelSettings.model_fields)
    return name.upper() in env_vars() or bool(re.fullmatch(rf"{ENV_PREFIX}MODELS__\w+?__({per_model})", name,
                                                           re.IGNORECASE))


# kind: (the names the code has, how the docs spell one as a regex, files read besides the docs)
NAMED: dict[str, tuple[Callable[[], list[str]], Callable[[str], str], tuple[Path, ...]]] = {
    "setting": (setting_names, lambda n: f"`{re.escape(n)}`", ()),
    "metric": (metric_names, lambda n: rf"\b{n}\b", ()),
    "alert": (alert_names, lambda n: rf"\b{n}\b", (ROOT / "deploy" / "RUNBOOK.md",)),
    "CLI command": (lambda: list(subcommands()), lambda n: rf"\btrustgap {n}\b", ()),
}


def unnamed(kind: str, names: list[str]) -> list[str]:
    _, spelled, extra = NAMED[kind]
    text = docs_text(*extra)
    return [n for n in names if not re.search(spelled(n), text)]


@pytest.mark.parametrize("kind", NAMED)
def test_the_docs_name_every(kind: str) -> None:
    assert unnamed(kind, NAMED[kind][0]()) == [], f"no doc names these {kind}s"


@pytest.mark.parametrize("kind", NAMED)
def test_a_name_the_docs_lack_is_reported(kind: str) -> None:
    assert unnamed(kind, [*NAMED[kind][0](), "frobnicate_nope"]) == ["frobnicate_nope"]


def unknown_env_vars(text: str) -> list[str]:
    """The `TRUSTGAP_*` names in the text that are no env var of trustgap's. Placeholders (`TRUSTGAP_<SETTING>`,
    `TRUSTGAP_*`) and bare prefixes (`TRUSTGAP_DEFAULTS__`) are not names."""
    found = re.findall(r"TRUSTGAP_[A-Za-z0-9_]*(?![A-Za-z0-9_<*])", text)
    return sorted({n for n in found if not n.endswith("_") and not is_env_var(n)})


def test_every_env_var_the_docs_name_exists() -> None:
    assert {f.relative_to(ROOT).as_posix(): bad for f in doc_files() if (bad := unknown_env_vars(f.read_text()))} \
        == {}


def test_an_env_var_that_is_no_setting_is_reported() -> None:
    text = ("`TRUSTGAP_<SETTING>`, `TRUSTGAP_*`, TRUSTGAP_DEFAULTS__, TRUSTGAP_MODELS__<NAME>__ALPHA, "
            "TRUSTGAP_MODELS__claims__alpha, TRUSTGAP_TOPICS__ALERTS, TRUSTGAP_CONFIG and TRUSTGAP_BROKER, "
            "TRUSTGAP_MODELS__CLAIMS__WINDOW")
    assert unknown_env_vars(text) == ["TRUSTGAP_BROKER", "TRUSTGAP_MODELS__CLAIMS__WINDOW"]


@dataclass(frozen=True)
class Block:
    lang: str  # the fence's info string, lowercased; "" for the prose between blocks
    start: int  # line number of its first line
    lines: list[str]


def blocks(text: str) -> Iterator[Block]:
    """The text as fenced code blocks and the prose runs between them, in order."""
    fence, lang, start, lines = "", "", 1, []
    for no, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        opening = re.match(r"(`{3,}|~{3,})\s*([\w-]*)", stripped)
        if not fence and opening:
            yield Block("", start, lines)
            fence, lang, start, lines = opening.group(1), opening.group(2).lower() or "text", no + 1, []
        elif fence and stripped.startswith(fence) and not stripped.strip(fence[0]):
            yield Block(lang, start, lines)
            fence, lang, start, lines = "", "", no + 1, []
        else:
            lines.append(line)
    yield Block(lang, start, lines)


def code_in(text: str) -> Iterator[str]:
    """The text's code: each fenced block's lines (shell comments left out) and each inline code span."""
    for block in blocks(text):
        for line in block.lines:
            if not block.lang:
                yield from re.findall(r"`([^`]+)`", line)
            else:
                yield re.sub(r"(^|\s)#.*", "", line) if block.lang in SHELL_LANGS else line


def cli_mistakes(text: str) -> list[str]:
    """`trustgap COMMAND --option` in the text's code where COMMAND is no command or --option none of its options;
    synopses (`trustgap status [--json]`) included, placeholders (`trustgap COMMAND`, `trustgap <cmd>`) not."""
    commands, out = subcommands(), []
    for code in code_in(text):
        for m in re.finditer(r"\btrustgap ([a-z][\w-]*)([^|;&)]*)", code):
            name, rest = m.groups()
            if name not in commands:
                out.append(f"{m.group(0).strip()}: no command {name!r}")
                continue
            options = {o for a in commands[name]._actions for o in a.option_strings}
            out += [f"{m.group(0).strip()}: {name} has no {o}" for o in re.findall(r"(?<![\w-])--[a-z][\w-]*", rest)
                    if o not in options]
    return out


def test_every_cli_command_and_option_the_docs_write_exists() -> None:
    assert {f.relative_to(ROOT).as_posix(): bad for f in doc_files() if (bad := cli_mistakes(f.read_text()))} == {}


def test_a_cli_option_that_does_not_exist_is_reported() -> None:
    text = ("Run `trustgap status [--json] [--windows N]` or `trustgap COMMAND --help`; `trustgap gate --model M "
            "--format csv` and `trustgap stats`.\n```yaml\n- run: trustgap exclusions --model m --since x | "
            "trustgap replay --dry --dry-run\n```\n")
    assert cli_mistakes(text) == ["trustgap gate --model M --format csv: gate has no --format",
                                  "trustgap stats: no command 'stats'",
                                  "trustgap replay --dry --dry-run: replay has no --dry"]


def settings_examples(text: str, name: str) -> Iterator[tuple[str, dict[str, object]]]:
    """(file:line, document) of each YAML block that sets at least one setting: a trustgap config file."""
    for block in blocks(text):
        if block.lang in ("yaml", "yml"):
            try:
                doc = yaml.safe_load("\n".join(block.lines))
            except yaml.YAMLError:
                continue  # a template or a fragment, not a config file
            if isinstance(doc, dict) and set(doc) & set(Settings.model_fields):
                yield f"{name}:{block.start}", doc


def example_problems(text: str, name: str) -> list[str]:
    problems = []
    for where, doc in settings_examples(text, name):
        try:
            load(**doc)
        except ConfigError as err:
            problems.append(f"{where}: {err}")
    return problems


def test_every_settings_example_in_the_docs_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.upper().startswith(ENV_PREFIX)]:
        monkeypatch.delenv(var)  # env vars would win over the example
    docs = [(f.read_text(), f.relative_to(ROOT).as_posix()) for f in doc_files()]
    assert [where for d in docs for where, _ in settings_examples(*d)], "no YAML block of the docs sets a setting"
    assert [p for d in docs for p in example_problems(*d)] == []


def test_a_settings_example_with_a_wrong_key_is_reported() -> None:
    text = "```yaml\nbroker_url: kafka://k:9092\ndefaults:\n  window_second: 60\n```\n"
    assert example_problems(text, "bad.md") == ["bad.md:2: bad setting defaults.window_second: Extra inputs are not "
                                                "permitted (config key 'defaults.window_second' or env "
                                                "TRUSTGAP_DEFAULTS__WINDOW_SECOND)"]


def anchors(page: Path) -> set[str]:
    """The link targets a page offers: its headings as GitHub spells their anchors, and its `<a id=...>` tags."""
    out = set()
    for block in blocks(page.read_text()):
        for line in block.lines if not block.lang else []:
            if m := re.match(r"#{1,6}\s+(.*)", line):
                out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
            out.update(re.findall(r'<a (?:name|id)="([^"]+)"', line))
    return out


def broken_links(page: Path) -> list[str]:
    """The relative links of a page's prose whose file, or heading, does not exist."""
    out = []
    for block in blocks(page.read_text()):
        for no, line in enumerate(block.lines if not block.lang else [], block.start):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z]+:", target):
                    continue  # http:, https:, mailto:
                path, _, anchor = target.partition("#")
                dest = (page.parent / path).resolve() if path else page
                if not dest.exists():
                    out.append(f"{page.name}:{no}: {target}: no such file")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    out.append(f"{page.name}:{no}: {target}: no such heading")
    return out


def test_every_relative_link_in_the_docs_resolves() -> None:
    assert [b for f in [*doc_files(), ROOT / "deploy" / "RUNBOOK.md"] for b in broken_links(f)] == []


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A `trustgap gate` heading\n[ok](#a-trustgap-gate-heading) [web](https://x.org/nope) "
                    "[gone](nope.md) [lost](#nope)\n```sh\n[not](a-link.md)\n```\n")
    assert broken_links(page) == ["page.md:2: nope.md: no such file", "page.md:2: #nope: no such heading"]


# --- (c) every command in the docs' shell blocks parses ------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    where: str  # file:line
    words: tuple[str, ...]  # the command's words, assignments before it left out
    assigned: tuple[str, ...]  # the names of `NAME=value` words before it

    def __str__(self) -> str:
        return f"{self.where}: `{shlex.join(self.words) or ' '.join(self.assigned)}`"


def shell_lines(text: str, name: str) -> Iterator[tuple[str, str]]:
    """(file:line, command line) of every command line in the text's shell blocks: continuation lines joined,
    console output and here-document bodies left out."""
    for block in blocks(text):
        if block.lang not in SHELL_LANGS:
            continue
        pending, start, heredoc = "", 0, ""
        for no, raw in enumerate(block.lines, block.start):
            line = raw.strip()
            if heredoc:
                heredoc = "" if line == heredoc else heredoc
                continue
            if not pending:
                if block.lang == "console" and not line.startswith("$"):
                    continue  # the command's output
                line, start = line.removeprefix("$").strip(), no
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line, pending = pending + line, ""
            if m := re.search(r"<<-?\s*['\"]?(\w+)", line):
                heredoc = m.group(1)
            if line:
                yield f"{name}:{start}", line


def split_commands(where: str, line: str) -> Iterator[Command]:
    """The simple commands of a shell line: split at `&&`, `||`, `;`, `|`, `&` and subshells, redirections dropped."""
    line = re.sub(r"(?<![\w-])\d+(?=[<>])", "", line)  # a redirection's file descriptor (2>&1)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.wordchars += ":@%+,{}[]^!$"  # URLs, globs and variables stay one word
    words: list[str] = []
    tokens = list(lexer)
    skip = False
    for i, token in enumerate([*tokens, ";"]):
        if token.endswith("$") and tokens[i + 1:i + 2] == ["("]:
            token = token[:-1]  # `$(` opens a command substitution: what follows is a command of its own
            if not token:
                continue
        if skip:
            skip = False
        elif set(token) <= set("<>&") and ("<" in token or ">" in token) and token != "<(":
            skip = True  # the redirection's target
        elif set(token) <= set("();|&<"):
            if words:
                yield command(where, words)
            words = []
        else:
            words.append(token)


def command(where: str, words: list[str]) -> Command:
    assigned: list[str] = []
    while words and (re.match(r"[A-Za-z_]\w*=", words[0]) or words[0] in PREFIXES):
        if "=" in words[0]:
            assigned.append(words[0].split("=", 1)[0])
        words = words[1:]
    return Command(where, tuple(words), tuple(assigned))


def commands_in(text: str, name: str) -> list[Command]:
    return [c for where, line in shell_lines(text, name) for c in split_commands(where, line)]


def doc_commands() -> list[Command]:
    return [c for f in doc_files() for c in commands_in(f.read_text(), f.relative_to(ROOT).as_posix())]


def make_targets() -> set[str]:
    rules = re.findall(r"^([\w. -]+?)\s*:(?![=:])", (ROOT / "Makefile").read_text(), re.M)
    return {target for rule in rules for target in rule.split() if not target.startswith(".")}


def check_trustgap(args: tuple[str, ...]) -> str | None:
    """Parse the arguments with the CLI's parser; run `replay --dry-run` when its files are in the repo."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parsed = cli.build_parser().parse_args(list(args))
    except SystemExit as exit_:
        return None if exit_.code == 0 else f"the CLI refuses it: {err.getvalue().strip().splitlines()[-1]}"
    if parsed.command == "replay" and parsed.dry_run and all((ROOT / f).is_file() for f in parsed.files):
        out = io.StringIO()
        with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = cli.main(list(args))
        if code not in (0, 3):
            return f"the dry run exits {code}: {out.getvalue().strip()}"
    return None


def check_python(args: tuple[str, ...]) -> str | None:
    while args and args[0].startswith("-") and args[0] not in ("-m", "-c"):
        args = args[1:]  # interpreter flags (-u, -O, -B)
    if args[:1] == ("-c",):
        try:
            compile(args[1], "<doc>", "exec")
        except SyntaxError as err:
            return f"python -c does not compile: {err}"
        return None
    if args[:1] == ("-m",):
        module, rest = args[1], args[2:]
        if importlib.util.find_spec(module) is None:
            return f"no module {module}"
        if module == "pytest":
            missing = [a for a in rest if a.startswith("tests") and not (ROOT / a.split("::")[0]).exists()]
            return f"no test file {missing}" if missing else None
        return None
    if not args or not (ROOT / args[0]).is_file():
        return f"no file {args[:1]}"
    return None


def check(cmd: Command) -> str | None:
    """What is wrong with the command, or None when it parses (or is declared unchecked)."""
    bad = [n for n in cmd.assigned if n.upper().startswith(ENV_PREFIX) and not is_env_var(n)]
    if bad:
        return f"{bad} name no setting"
    if not cmd.words:
        return None  # only assignments
    line, program = " ".join(cmd.words), Path(cmd.words[0]).name
    if any(line == prefix or line.startswith(prefix + " ") for prefix in UNCHECKED):
        return None
    if program == "trustgap":
        return check_trustgap(cmd.words[1:])
    if program == "make":
        missing = [t for t in cmd.words[1:] if not t.startswith("-") and "=" not in t and t not in make_targets()]
        return f"no target {missing} in the Makefile" if missing else None
    if re.fullmatch(r"python3?(\.\d+)?", program):
        return check_python(cmd.words[1:])
    return (f"unknown program {cmd.words[0]!r}: check it here, or add it to UNCHECKED in tests/test_docs.py with "
            "the reason it cannot be checked offline")


def test_every_command_in_the_docs_shell_blocks_parses() -> None:
    commands = doc_commands()
    assert any(c.words[:1] == ("trustgap",) for c in commands), "no `trustgap` command found in any shell block"
    assert [f"{c}: {problem}" for c in commands if (problem := check(c))] == []


@pytest.mark.parametrize(("block", "problem"), [
    ("trustgap frobnicate", "invalid choice"),  # no such command
    ("trustgap gate --modle claims", "the following arguments are required: --model"),  # a misspelt option
    ("trustgap status --windows many", "invalid int value"),  # a value of the wrong type
    ("trustgap up && trustgap stauts --json", "invalid choice"),  # the second command of a list
    ("trustgap status --json | jq . | trustgap rport", "invalid choice"),  # the end of a pipeline
    ("python train.py --exclude <(trustgap exclusions --model claims --format xml)", "invalid choice"),  # <(...)
    ("make deploy", "no target ['deploy']"),  # not in the Makefile
    ("python -m stream.nope", "no module stream.nope"),
    ("python scripts/nope.py", "no file"),
    ("python -c 'import ('", "does not compile"),
    ("python -m pytest tests/test_nope.py -q", "no test file"),
    ("TRUSTGAP_BROKER=kafka://kafka:9092 trustgap worker", "['TRUSTGAP_BROKER'] name no setting"),  # not a setting
    ("TRUSTGAP_MODELS__CLAIMS__WINDOW=60", "name no setting"),  # a model's field that does not exist
    ("frobnicate --all", "unknown program 'frobnicate'"),  # not declared unchecked
    ("trustgap gate \\\n  --model", "expected one argument"),  # a continuation line
])
def test_a_bogus_command_is_caught(block: str, problem: str) -> None:
    problems = [check(c) or "" for c in commands_in(f"```sh\n{block}\n```\n", "bogus.md")]
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize("block", [
    "```sh\ntrustgap status --json | jq '.models[].model'   # a comment\n```",
    "```console\n$ trustgap gate --model claims\nhold: trustgap frobnicate is output, not a command\n```",
    "```bash\nTRUSTGAP_MODELS__CLAIMS__WINDOW_SECONDS=60 TRUSTGAP_TOPICS__ALERTS=a trustgap worker 2>&1 >log\n```",
    "```sh\ncat > trustgap.yaml <<'EOF'\nnot: a command\nEOF\ntrustgap worker --config trustgap.yaml\n```",
    "```yaml\n- run: trustgap frobnicate   # not a shell block\n```",
    "```sh\nmake demo && .venv/bin/python -m deploy.generate --check && python -m pytest tests/test_docs.py -q\n```",
])
def test_a_good_block_passes(block: str) -> None:
    # `cat` is no known program: a block whose here-document is read as commands fails on it
    commands = [c for c in commands_in(block + "\n", "good.md") if c.words[:1] != ("cat",)]
    assert [f"{c}: {p}" for c in commands if (p := check(c))] == []


def test_a_replay_dry_run_whose_files_exist_is_run(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"not": "an event"}\n')
    assert check_trustgap(("replay", str(events), "--dry-run")) is None  # exit 3, an invalid line: it ran
    assert "exits 2: trustgap: --rate must be above 0" in str(check_trustgap(("replay", str(events), "--dry-run",
                                                                             "--rate", "0")))


# --- the same commands through real processes ---------------------------------------------------------------------

def argparse_modules() -> list[str]:
    """The repo's modules the docs run as `python -m MODULE` that parse their arguments with argparse."""
    out = set()
    for c in doc_commands():
        words = c.words
        if words and re.fullmatch(r"python3?(\.\d+)?", Path(words[0]).name) and words[1:2] == ("-m",):
            spec = importlib.util.find_spec(words[2])
            origin = spec.origin if spec and spec.origin else ""
            if origin.endswith("__init__.py"):
                origin = origin.removesuffix("__init__.py") + "__main__.py"
            if origin.startswith(str(ROOT)) and "argparse" in Path(origin).read_text():
                out.add(words[2])
    return sorted(out)


@pytest.mark.integration
def test_the_installed_entry_point_and_the_docs_modules_answer_help() -> None:
    entry = Path(sys.executable).parent / "trustgap"
    runs = [[str(entry), "--help"]] + [[sys.executable, "-m", m, "--help"] for m in argparse_modules()]
    failed = []
    for argv in runs:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or "usage:" not in done.stdout:
            failed.append(f"{shlex.join(argv)}: exit {done.returncode} {done.stderr.strip()[-300:]}")
    assert failed == []
