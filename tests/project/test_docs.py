"""The documentation runs: every fenced block of README.md and docs/*.md is executed or checked,
and every relative link and every repository path it names exists.

- ```python blocks of a page run top to bottom in one namespace, as a reader pasting them would,
  in a fresh directory holding `gpt2/`: a tiny random GPT-2 saved there by transformers, so that
  `hf.load("./gpt2")` works with nothing downloaded (transformers and torch are the `hf` extra:
  without them this fails, it does not skip).
- ```bash blocks: each `jaxformer ...` command is parsed by the CLI's own parser
  (`jaxformer.cli.parse_arguments`); the config and overrides of `train` are loaded and validated by
  `jaxformer.config.load_config` (of `info`, by the info command's own loader), and nothing runs.
  `python -m bench.X` must name a script of the bench package (`python bench/X.py` is refused: the
  scripts import `bench.common` and run as modules), `scripts/...` must exist, and every `--flag`
  given to a benchmark must be one its argument parser declares; `python -m pytest` paths must
  exist; `python -m tests.mutations ARGS` must pass its own parser (`ARGS --list`).
  Any other command is an error here, so no command goes unchecked.
- ```yaml blocks parse; one made of config sections (model:, train:, ...) is validated as a run
  config, its `mesh.rules` included; one whose first line is `# NAME.yaml` is also written under
  that name where the page's bash blocks are checked.
- ```text blocks that show `$ jaxformer ...` followed by a `jaxformer ...: error: ...` line must
  reproduce that error exactly. A fence without a language is an error.
- In docs/performance.md every table row names the machine, the date (YYYY-MM-DD) and, in its
  last column, the command that prints its figures, checked as above.
- Every benchmark's docstring opens with the question it answers and names the page and section
  its figures go in (`docs/performance.md, "Section"`); that section exists, and a row of
  docs/performance.md printed by `python -m bench.X` sits in a section bench/X.py names.

Checked by hand that each check can fail: a typo in a python block (`jaxformer.build_modle`)
fails test_python_blocks_run; a nonexistent preset (`jaxformer train shakespeare_char_cpx`), an
unknown override key (`train.stepz=1`), an unknown flag (`--top-z`) or a benchmark flag its
script lacks (`python -m bench.moe --stepz 3`) fail test_bash_blocks_are_valid_commands; a
changed error line fails test_text_blocks_show_real_errors; a broken link or anchor fails
test_links_resolve; a performance row without its date or command fails
test_performance_rows_name_machine_date_and_command; a benchmark row moved under another heading
fails test_performance_rows_sit_where_their_scripts_say.

Links to docs/tpu.md and docs/multihost.md are skipped while those files do not exist.
"""

import ast
import contextlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_YET_WRITTEN = {ROOT / "docs" / "tpu.md", ROOT / "docs" / "multihost.md"}
LANGUAGES = {"python", "bash", "yaml", "text"}
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
REPO_DIRS = ("jaxformer", "tests", "bench", "scripts", "configs", "colab", "docs")


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def blocks(page: Path, language: str | None = None) -> list[tuple[int, str, str]]:
    """(line number of the block's first line, language, text) of each fenced block."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start(2)) + 1
        lang = match.group(1).strip()
        if language is None or lang == language:
            found.append((line, lang, match.group(2)))
    return found


def pages_with(language: str) -> list:
    return [pytest.param(p, id=page_id(p)) for p in PAGES if blocks(p, language)]


def without_code(text: str) -> str:
    return FENCE.sub("", text)


# --- python ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory) -> Path:
    """config.json + model.safetensors of a random one-layer GPT-2 (d 64, 4 heads, 256 tokens)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("hf") / "gpt2"
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=256, n_positions=128, n_embd=64, n_layer=1, n_head=4,
                        bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


@contextlib.contextmanager
def registries_restored():
    """A page may register a family, a task or a logical axis: undo it afterwards."""
    from jaxformer.models import registry as families
    from jaxformer.parallel import rules
    from jaxformer.tasks import registry as tasks

    saved = [(d, dict(d)) for d in (families._FAMILIES, tasks._TASKS, rules._DECLARED)]
    try:
        yield
    finally:
        for registry, before in saved:
            registry.clear()
            registry.update(before)


@pytest.mark.parametrize("page", pages_with("python"))
def test_python_blocks_run(page, hf_gpt2, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(hf_gpt2, tmp_path / "gpt2")
    namespace = {"__name__": "__docs__"}
    with registries_restored():
        for line, _, code in blocks(page, "python"):
            # Padded so that a traceback's line numbers are the page's own.
            exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)


# --- bash ------------------------------------------------------------------------------------

def command_lines(script: str) -> list[list[str]]:
    """The commands of a bash block as argument lists: continuation lines joined, comments
    dropped, `a && b` and `a; b` split."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        current = []
        for word in words + ["&&"]:
            if word in ("&&", ";", "||"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    return commands


def declared_flags(script: Path) -> set[str]:
    source = script.read_text()
    return set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", source))


def check_bench(module: str, args: list[str]) -> None:
    """`python -m bench.<module> ARGS`: the package and the script exist, and so do its flags."""
    script = ROOT / "bench" / f"{module}.py"
    assert (ROOT / "bench" / "__init__.py").is_file(), "bench/ is not a package"
    assert script.is_file(), f"{script.relative_to(ROOT)} does not exist"
    flags = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    unknown = flags - declared_flags(script)
    assert not unknown, f"{script.relative_to(ROOT)} declares no {sorted(unknown)}"


def check_jaxformer(argv: list[str]) -> None:
    """Parse with the CLI's parser; load and validate the config a command trains with."""
    from jaxformer.cli import parse_arguments
    from jaxformer.commands import info
    from jaxformer.config import load_config

    try:
        args = parse_arguments(argv)
    except SystemExit as e:
        raise AssertionError(f"jaxformer {' '.join(argv)}: the CLI refuses it (exit {e.code})")
    if args.command == "info":
        info.model_config(args.config, args.overrides)
    elif hasattr(args, "config") and hasattr(args, "overrides"):
        config = load_config(args.config, args.overrides)
        check_rules(config)


def check_rules(config) -> None:
    from jaxformer.parallel.rules import make_rules

    make_rules(config.mesh.rules)


def check_command(words: list[str]) -> None:
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):  # VAR=value prefixes
        words = words[1:]
    program, args = words[0], words[1:]
    if program == "jaxformer":
        check_jaxformer(args)
    elif program in ("python", "python3"):
        if args[:2] == ["-m", "pytest"]:
            for arg in args[2:]:
                if arg.startswith("tests/"):
                    assert (ROOT / arg.split("::")[0]).exists(), f"{arg} does not exist"
        elif args[:1] == ["-m"] and args[1].startswith("bench."):
            check_bench(args[1].removeprefix("bench."), args[2:])
        elif args[:2] == ["-m", "jaxformer"]:
            check_jaxformer(args[2:])
        elif args[:2] == ["-m", "tests.mutations"]:  # its own parser and ids; runs nothing
            listed = subprocess.run([sys.executable, "-m", "tests.mutations", *args[2:], "--list"],
                                    cwd=ROOT, capture_output=True, text=True)
            assert listed.returncode == 0, listed.stderr
        elif args and args[0].startswith("bench/"):
            raise AssertionError(f"benchmarks run as modules: python -m bench.{Path(args[0]).stem}")
        elif args and args[0].startswith("scripts/"):
            check_script(args[0], args[1:])
        else:
            raise AssertionError(f"no check for `{' '.join(words)}`: add one to this test")
    elif program.startswith("scripts/"):
        check_script(program, args)
    elif program == "sbatch" and args and args[0].startswith("scripts/"):
        check_script(args[0], args[1:])
    elif program == "pip" and args[:1] == ["install"]:
        pass
    else:
        raise AssertionError(f"no check for `{' '.join(words)}`: add one to this test")


def check_script(path: str, args: list[str]) -> None:
    assert (ROOT / path).is_file(), f"{path} does not exist"
    if path == "scripts/launch_local.py":  # its own flags, then `-- COMMAND`
        assert "--" in args, "launch_local.py runs the command after `--`"
        check_command(args[args.index("--") + 1:])
    else:  # the TPU and SLURM launchers pass CONFIG [key=value ...] to `jaxformer train`
        check_jaxformer(["train", *args])


def yaml_files(page: Path) -> dict[str, str]:
    """The YAML blocks a page names as files (first line `# NAME.yaml`)."""
    named = {}
    for _, _, text in blocks(page, "yaml"):
        match = re.match(r"#\s*([\w.-]+\.ya?ml)\s*\n", text)
        if match:
            named[match.group(1)] = text
    return named


@pytest.mark.parametrize("page", pages_with("bash"))
def test_bash_blocks_are_valid_commands(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, text in yaml_files(page).items():
        (tmp_path / name).write_text(text)
    for line, _, script in blocks(page, "bash"):
        for words in command_lines(script):
            try:
                check_command(words)
            except Exception as e:
                raise AssertionError(f"{page_id(page)}:{line}: `{shlex.join(words)}`: "
                                     f"{type(e).__name__}: {e}") from None


# --- yaml and text ---------------------------------------------------------------------------

@pytest.mark.parametrize("page", pages_with("yaml"))
def test_yaml_blocks_parse_and_named_configs_validate(page, tmp_path):
    from jaxformer.config import load_config

    sections = {"model", "task", "data", "optimizer", "mesh", "train", "finetune"}
    for line, _, text in blocks(page, "yaml"):
        loaded = yaml.safe_load(text)
        assert loaded is not None, f"{page_id(page)}:{line}: an empty YAML block"
        if isinstance(loaded, dict) and set(loaded) <= sections:  # a run config, named or not
            (tmp_path / "block.yaml").write_text(text)
            check_rules(load_config(tmp_path / "block.yaml"))
    for name, text in yaml_files(page).items():
        (tmp_path / name).write_text(text)
        check_rules(load_config(tmp_path / name))


@pytest.mark.parametrize("page", pages_with("text"))
def test_text_blocks_show_real_errors(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for line, _, text in blocks(page, "text"):
        lines = text.splitlines()
        for i, shown in enumerate(lines):
            if not shown.startswith("$ jaxformer "):
                continue
            argv = shlex.split(shown[2:])[1:]
            expected = lines[i + 1] if i + 1 < len(lines) else ""
            if ": error: " not in expected:
                check_jaxformer(argv)
                continue
            with pytest.raises(Exception) as caught:
                check_jaxformer(argv)
            assert f"jaxformer {argv[0]}: error: {caught.value}" == expected, \
                f"{page_id(page)}:{line}"


def test_every_block_names_its_language():
    for page in PAGES:
        for line, lang, _ in blocks(page):
            assert lang in LANGUAGES, (f"{page_id(page)}:{line}: fence language {lang!r}; use one "
                                       f"of {sorted(LANGUAGES)} so the block is checked")


# --- links and paths -------------------------------------------------------------------------

def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+\s+(.*)$", without_code(page.read_text()), re.M)}


@pytest.mark.parametrize("page", [pytest.param(p, id=page_id(p)) for p in PAGES])
def test_links_resolve(page):
    text = without_code(page.read_text())
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if path in NOT_YET_WRITTEN and not path.exists():
            continue
        assert path.exists(), f"{page_id(page)}: link to {target}: no such file"
        if anchor:
            assert path.suffix == ".md" and anchor in anchors(path), \
                f"{page_id(page)}: link to {target}: no such heading"


@pytest.mark.parametrize("page", [pytest.param(p, id=page_id(p)) for p in PAGES])
def test_named_repository_paths_exist(page):
    text = page.read_text()
    for inline in re.findall(r"`([^`\n]+)`", text):
        for word in inline.split():
            word = word.rstrip(".,;:)")
            if word.startswith(tuple(d + "/" for d in REPO_DIRS)) and "*" not in word:
                path = ROOT / word.split("::")[0]
                if path in NOT_YET_WRITTEN:
                    continue
                assert path.exists(), f"{page_id(page)}: `{inline}` names {word}, which does not exist"


# --- performance -----------------------------------------------------------------------------

def tables(text: str) -> list[list[list[str]]]:
    """Markdown tables as rows of cells (header first, the separator row dropped)."""
    found, current = [], []
    for line in without_code(text).splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def test_performance_rows_name_machine_date_and_command(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    found = tables((ROOT / "docs" / "performance.md").read_text())
    assert len(found) >= 10
    for table in found:
        header, rows = table[0], table[1:]
        assert header[-3:] == ["machine", "date", "printed by"], header
        for row in rows:
            assert len(row) == len(header), row
            machine, date, command = row[-3:]
            assert machine, f"no machine in {row}"
            assert re.fullmatch(r"20\d\d-\d\d-\d\d", date), f"no date (YYYY-MM-DD) in {row}"
            shown = re.fullmatch(r"`([^`]+)`", command)
            assert shown, f"no command in {row}"
            for words in command_lines(shown.group(1)):
                check_command(words)


# --- benchmarks ------------------------------------------------------------------------------

BENCHMARKS = [p for p in sorted((ROOT / "bench").glob("*.py"))
              if p.name not in ("__init__.py", "common.py")]
NAMED_SECTION = re.compile(r'(docs/[\w.-]+\.md), "([^"]+)"')


def docstring(script: Path) -> str:
    return ast.get_docstring(ast.parse(script.read_text())) or ""


def named_sections(script: Path) -> list[tuple[str, str]]:
    """(page, section) of each `docs/PAGE.md, "Section"` the docstring names, across line breaks."""
    return NAMED_SECTION.findall(" ".join(docstring(script).split()))


@pytest.mark.parametrize("script", [pytest.param(p, id=p.stem) for p in BENCHMARKS])
def test_benchmarks_say_their_question_and_section(script):
    question = docstring(script).split("\n\n")[0]
    assert question.rstrip().endswith("?"), f"{script.name}: the docstring opens with its question"
    named = named_sections(script)
    assert named, f'{script.name}: the docstring names no `docs/PAGE.md, "Section"`'
    for page, section in named:
        assert slug(section) in anchors(ROOT / page), f'{script.name}: {page} has no "{section}"'


def test_performance_rows_sit_where_their_scripts_say():
    section = None
    for line in without_code((ROOT / "docs" / "performance.md").read_text()).splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("|"):
            for module in re.findall(r"python -m bench\.(\w+)", line):
                named = named_sections(ROOT / "bench" / f"{module}.py")
                assert ("docs/performance.md", section) in named, \
                    f'bench/{module}.py prints a row of "{section}" but its docstring does not say so'
