"""The documentation against the repository: README.md and docs/**/*.md.

- every relative link and image resolves to a file or directory in the checkout;
- every ``make`` target and every ``behaviorlm`` subcommand and flag in README.md's shell
  blocks exists (``make``: the Makefile's targets; ``behaviorlm``: its ``--help`` output).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAKEFILE = REPO / "Makefile"

SKIPPED_PREFIXES = ("http://", "https://", "mailto:", "#")
SHELL_INFO_STRINGS = {"", "bash", "sh"}

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# The target of an inline link or image: `](target)`, `](<target>)`, `](target "title")`.
INLINE_LINK = re.compile(
    r"\]\(\s*(<[^>\n]*>|[^\s()]+)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
# A reference definition: `[name]: target "title"`.
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.%/-]+)\s*:(?!=)")


@dataclass(frozen=True)
class CodeBlock:
    info: str
    first_line: int  # the 1-based line number of the block's first content line
    lines: list[str]


@dataclass(frozen=True)
class Command:
    line: int  # the 1-based line number where the command starts
    words: list[str]

    def __str__(self) -> str:
        return " ".join(self.words)


def split_markdown(text: str) -> tuple[list[tuple[int, str]], list[CodeBlock]]:
    """The lines outside fenced code blocks (with line numbers) and the fenced blocks."""
    prose: list[tuple[int, str]] = []
    blocks: list[CodeBlock] = []
    fence: str | None = None
    info = ""
    body: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if fence is None:
            if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
                fence, info, body, start = match.group(1), match.group(2).strip(), [], number + 1
            else:
                prose.append((number, line))
        elif (
            match
            and match.group(1)[0] == fence[0]
            and len(match.group(1)) >= len(fence)
            and not match.group(2).strip()
        ):
            blocks.append(CodeBlock(info=info, first_line=start, lines=body))
            fence = None
        else:
            body.append(line)
    if fence is not None:  # an unclosed fence runs to the end of the document
        blocks.append(CodeBlock(info=info, first_line=start, lines=body))
    return prose, blocks


def link_targets(text: str) -> list[tuple[int, str]]:
    """(line, target) of every link, image and reference definition outside code."""
    prose, _ = split_markdown(text)
    targets: list[tuple[int, str]] = []
    for number, line in prose:
        line = CODE_SPAN.sub("code", line)
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            targets.append((number, definition.group(1)))
        targets.extend((number, match.group(1)) for match in INLINE_LINK.finditer(line))
    return targets


def resolve_target(markdown: Path, target: str) -> Path | None:
    """The path a relative target names, or None for an external link or an anchor."""
    target = target.strip()
    if target.startswith("<") and target.endswith(">"):
        target = target[1:-1].strip()
    if not target or target.startswith(SKIPPED_PREFIXES):
        return None
    target = re.sub(r"\s+(\"[^\"]*\"|'[^']*')$", "", target)  # a title
    target = unquote(target.split("#", 1)[0].split("?", 1)[0])
    if not target:
        return None
    if target.startswith("/"):  # GitHub resolves absolute link paths from the repository root
        return REPO / target.lstrip("/")
    return markdown.parent / target


def markdown_files() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("**/*.md"))]


def test_relative_links_resolve() -> None:
    broken: list[str] = []
    checked: dict[Path, int] = {}
    for markdown in markdown_files():
        if not markdown.is_file():
            continue
        for number, target in link_targets(markdown.read_text(encoding="utf-8")):
            path = resolve_target(markdown, target)
            if path is None:
                continue
            checked[markdown] = checked.get(markdown, 0) + 1
            if not path.exists():
                broken.append(f"{markdown.relative_to(REPO)}:{number}: {target}")
    assert not broken, "broken relative links:\n" + "\n".join(broken)
    assert checked.get(README, 0) > 0, (
        "no relative link checked in README.md (the link check would pass vacuously)"
    )


def shell_commands(block: CodeBlock) -> list[Command]:
    """The simple commands of a shell block: continuations joined, comments stripped, split
    on newlines, `;`, `&&`, `||`, `|` and `&`; quotes removed; redirection targets dropped."""
    text = "\n".join(block.lines)
    commands: list[Command] = []
    words: list[str] = []
    word: list[str] = []
    in_word = False
    quote: str | None = None
    skip_next_word = False  # the target of a redirection
    command_start = 0
    word_start = 0

    def end_word() -> None:
        nonlocal in_word, skip_next_word, command_start
        if in_word:
            if skip_next_word:
                skip_next_word = False
            else:
                if not words:
                    command_start = word_start
                words.append("".join(word))
        word.clear()
        in_word = False

    def end_command() -> None:
        end_word()
        if words:
            line = block.first_line + text.count("\n", 0, command_start)
            commands.append(Command(line=line, words=list(words)))
        words.clear()

    i = 0
    while i < len(text):
        char = text[i]
        following = text[i + 1] if i + 1 < len(text) else ""
        if quote == "'":
            if char == "'":
                quote = None
            else:
                word.append(char)
        elif quote == '"':
            if char == '"':
                quote = None
            elif char == "\\" and following in '"\\$`\n':
                if following != "\n":
                    word.append(following)
                i += 1
            else:
                word.append(char)
        elif char == "\\":
            if following and following != "\n":
                if not in_word:
                    word_start = i
                word.append(following)
                in_word = True
            i += 1  # a backslash-newline joins the line to the next
        elif char in "'\"":
            if not in_word:
                word_start = i
            quote = char
            in_word = True
        elif char == "#" and not in_word:
            while i + 1 < len(text) and text[i + 1] != "\n":
                i += 1
        elif char in " \t":
            end_word()
        elif char in "\n;&|()":
            end_command()
        elif char in "<>":
            if in_word and "".join(word).isdigit():  # `2>`: a file descriptor
                word.clear()
                in_word = False
            end_word()
            skip_next_word = True
            while i + 1 < len(text) and text[i + 1] in "<>&":
                i += 1
        else:
            if not in_word:
                word_start = i
            word.append(char)
            in_word = True
        i += 1
    end_command()
    return commands


def readme_commands() -> list[Command]:
    _, blocks = split_markdown(README.read_text(encoding="utf-8"))
    commands: list[Command] = []
    for block in blocks:
        info = block.info.split()[0].lower() if block.info.split() else ""
        if info in SHELL_INFO_STRINGS:
            commands.extend(shell_commands(block))
    return commands


def makefile_targets() -> set[str]:
    targets: set[str] = set()
    for line in MAKEFILE.read_text(encoding="utf-8").splitlines():
        match = MAKE_TARGET.match(line)
        if match:
            targets.add(match.group(1))
    return targets


@functools.cache
def cli_help(path: tuple[str, ...]) -> str:
    """`behaviorlm *path --help`, as the console script (behaviorlm.cli:main) prints it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "behaviorlm.cli", *path, "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    shown = " ".join(("behaviorlm", *path, "--help"))
    assert result.returncode == 0, f"`{shown}` failed ({result.returncode}):\n{result.stderr}"
    assert result.stdout.startswith("usage:"), f"`{shown}` printed no usage:\n{result.stdout}"
    return result.stdout


def subcommands(help_text: str) -> set[str]:
    """The subcommands argparse lists under "positional arguments:" (indented by 4)."""
    names: set[str] = set()
    in_positionals = False
    for line in help_text.splitlines():
        if line and not line[0].isspace():
            in_positionals = line.rstrip().endswith(":") and line.startswith("positional")
            continue
        match = re.match(r"^ {4}([a-z][a-z0-9_-]*)(?: {2,}|$)", line)
        if in_positionals and match:
            names.add(match.group(1))
    return names


def mentions_flag(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def check_behaviorlm(command: Command, args: list[str]) -> list[str]:
    """Problems with one `behaviorlm ...` command: flags are checked against the help of the
    subcommand they follow (`behaviorlm -v data prepare --input x`: -v at the top level)."""
    problems: list[str] = []
    path: list[str] = []
    descending = True
    for arg in args:
        if arg.startswith("-") and arg not in ("-", "--") and not re.match(r"^-\d", arg):
            flag = arg.split("=", 1)[0]
            shown = " ".join(("behaviorlm", *path, "--help"))
            if not mentions_flag(cli_help(tuple(path)), flag):
                problems.append(f"README.md:{command.line}: `{command}`: {flag} not in `{shown}`")
        elif descending and arg in subcommands(cli_help(tuple(path))):
            path.append(arg)
        else:
            descending = False  # a positional argument or an option's value
    return problems


def test_readme_commands_exist() -> None:
    targets = makefile_targets()
    assert {"help", "serve", "test"} <= targets, f"Makefile targets not parsed: {targets}"
    problems: list[str] = []
    make_targets_checked = 0
    behaviorlm_checked = 0
    for command in readme_commands():
        words = list(command.words)
        while words and ENV_ASSIGNMENT.match(words[0]):
            words.pop(0)
        if not words:
            continue
        program, args = os.path.basename(words[0]), words[1:]
        if program == "make":
            for arg in args:
                if arg.startswith("-") or "=" in arg:
                    continue
                make_targets_checked += 1
                if arg not in targets:
                    problems.append(
                        f"README.md:{command.line}: `{command}`: no target {arg!r} in Makefile"
                    )
        elif program == "behaviorlm":
            behaviorlm_checked += 1
            problems.extend(check_behaviorlm(command, args))
    assert not problems, "README commands that do not exist:\n" + "\n".join(problems)
    assert make_targets_checked > 0, "no `make` target found in README.md's shell blocks"
    assert behaviorlm_checked > 0, "no `behaviorlm` command found in README.md's shell blocks"
