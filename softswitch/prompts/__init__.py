"""The prompt set: names, where each prompt's audio lives, and a startup check that all exist.

Every prompt the service plays has a stable snake_case name (`PROMPT_NAMES`, the same order as
`prompts/manifest.toml`, which also holds each prompt's English and Japanese text) and one audio
file per language at ``<root>/<lang>/<name>.wav``; ``root`` defaults to the repository's
`prompts/` directory. The files are made offline by `scripts/make_prompts.py` or replaced by
studio recordings of the same name, so nothing here synthesises speech: the service asks for a
path with `prompt_path(lang, name)` (or `digit_prompts` for a read-back) and hands it to the
player, which decodes and caches it.

A missing prompt would otherwise surface mid-call as a decode error on one customer's leg, so the
node calls `check_prompts()` at startup: it looks for every name in every language (optionally
decoding each file, which also warms the player's cache) and raises `MissingPromptsError` naming
every file that is missing or unreadable, not just the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from media.player import load_audio

__all__ = [
    "DIGIT_PROMPTS",
    "LANGUAGES",
    "PROMPTS_DIR",
    "PROMPT_NAMES",
    "MissingPromptsError",
    "check_prompts",
    "digit_prompts",
    "missing_prompts",
    "prompt_path",
]

PROMPTS_DIR = Path(__file__).resolve().parent
LANGUAGES: tuple[str, ...] = ("ja", "en")
SUFFIX = ".wav"

# The digit a customer pressed -> the prompt that speaks it, for read-backs.
DIGIT_PROMPTS: dict[str, str] = {
    **{d: f"digit_{d}" for d in "0123456789"},
    "*": "digit_star",
    "#": "digit_pound",
}

PROMPT_NAMES: tuple[str, ...] = (
    "greeting",
    "dial_prompt",
    "invalid_number",
    "blocked_number",
    "no_credit",
    "over_limit",
    "destination_busy",
    "one_minute_warning",
    "connecting_customer_service",
    "goodbye",
    "security_code_enter",
    "security_code_wrong",
    "security_code_locked",
    "location_enter_number",
    "location_enter_extension",
    "location_you_entered",
    "location_extension",
    "location_confirm",
    "location_call_back_now",
    "location_saved",
    "name_menu",
    "name_record",
    "name_saved",
    "beep",
    *DIGIT_PROMPTS.values(),
    "call_failed",
    "no_answer",
    "unknown_speed_dial",
    "location_unavailable",
    "no_name",
)

_NAMES = frozenset(PROMPT_NAMES)


class MissingPromptsError(RuntimeError):
    """Some prompt files are missing or unreadable; `missing` lists every one of them."""

    def __init__(self, root: Path, missing: list[Path], unreadable: list[tuple[Path, str]]):
        self.root = root
        self.missing = missing
        self.unreadable = unreadable
        lines = [f"prompt set in {root} is incomplete:"]
        lines += [f"  missing: {p}" for p in missing]
        lines += [f"  unreadable: {p} ({why})" for p, why in unreadable]
        lines.append("regenerate with scripts/make_prompts.py or copy recordings of those names")
        super().__init__("\n".join(lines))


def prompt_path(lang: str, name: str, root: Path | None = None) -> Path:
    """The audio file of prompt `name` in language `lang` (ValueError for unknown ones).

    The path is computed, not checked: `check_prompts()` at startup guarantees it exists.
    """
    if lang not in LANGUAGES:
        raise ValueError(f"unknown prompt language {lang!r} (have {', '.join(LANGUAGES)})")
    if name not in _NAMES:
        raise ValueError(f"unknown prompt {name!r}")
    return (PROMPTS_DIR if root is None else root) / lang / f"{name}{SUFFIX}"


def digit_prompts(lang: str, digits: str, root: Path | None = None) -> list[Path]:
    """The prompts that read `digits` back one by one ("81*" -> eight, one, star)."""
    try:
        return [prompt_path(lang, DIGIT_PROMPTS[d], root) for d in digits]
    except KeyError as exc:
        raise ValueError(f"no prompt reads back {exc.args[0]!r}") from None


def missing_prompts(root: Path | None = None, names: Iterable[str] | None = None) -> list[Path]:
    """Every expected prompt file (``names``, default all; all languages) that is missing."""
    wanted = PROMPT_NAMES if names is None else tuple(names)
    out = []
    for lang in LANGUAGES:
        for name in wanted:
            path = prompt_path(lang, name, root)
            if not path.is_file() or path.stat().st_size == 0:
                out.append(path)
    return out


def check_prompts(
    root: Path | None = None, *, names: Iterable[str] | None = None, decode: bool = False
) -> None:
    """Raise `MissingPromptsError` unless every prompt (of ``names``) exists in every language.

    The node passes the names its call flow can play (``callflow.PROMPTS_PLAYED``), so a set
    that lacks one of them (an operator's studio recordings, a new prompt not yet recorded)
    stops the node at start-up instead of playing silence to a customer.

    With `decode=True` each file is also decoded through the player's loader (which caches it,
    so the first call of the day does not pay for decoding) and files that do not decode, or
    decode to nothing, are reported as unreadable.
    """
    base = PROMPTS_DIR if root is None else root
    wanted = PROMPT_NAMES if names is None else tuple(names)
    unknown = sorted(set(wanted) - _NAMES)
    if unknown:
        raise ValueError(f"not prompt names: {', '.join(unknown)}")
    missing = missing_prompts(base, wanted)
    unreadable: list[tuple[Path, str]] = []
    if decode:
        absent = set(missing)
        for lang in LANGUAGES:
            for name in wanted:
                path = prompt_path(lang, name, base)
                if path in absent:
                    continue
                try:
                    if len(load_audio(path)) == 0:
                        unreadable.append((path, "no audio"))
                except Exception as exc:  # PyAV raises many types; the report names the cause.
                    unreadable.append((path, f"{type(exc).__name__}: {exc}"))
    if missing or unreadable:
        raise MissingPromptsError(base, missing, unreadable)
