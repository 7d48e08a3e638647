"""docs/hooks.md documents every hook with its exact signature, and no hook that is gone."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from jobfleet.core import hookspecs

HOOKS_DOC = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"


def hook_specs() -> dict[str, object]:
    return {
        name: function
        for name, function in vars(hookspecs).items()
        if inspect.isfunction(function) and hasattr(function, f"{hookspecs.PROJECT_NAME}_spec")
    }


def signature_line(function) -> str:
    """`def name(params) -> return`, written as in the source (annotations stay strings)."""
    signature = inspect.signature(function)
    return f"def {function.__name__}{signature}".replace("'", "")


def test_there_are_hooks_and_the_required_ones_are_specs():
    specs = hook_specs()
    assert set(hookspecs.REQUIRED_HOOKS) <= set(specs)


def test_every_hook_is_documented_with_its_exact_signature():
    text = HOOKS_DOC.read_text()
    for name, function in hook_specs().items():
        assert re.search(rf"^## `{name}`", text, re.MULTILINE), (
            f"docs/hooks.md has no section for {name}"
        )
        assert signature_line(function) in text, (
            f"docs/hooks.md must show the exact signature: {signature_line(function)}"
        )


def test_no_documented_hook_is_missing_from_the_specs():
    documented = set(re.findall(r"^## `(\w+)`", HOOKS_DOC.read_text(), re.MULTILINE))
    assert documented == set(hook_specs())
