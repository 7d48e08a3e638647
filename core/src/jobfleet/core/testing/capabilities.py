"""What a backend declares it cannot do, so the kit skips (and says so) instead of failing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Capabilities:
    """Flags a backend's conformance tests set; every flag defaults to the full contract."""

    runs_commands: bool = True
    """Submitted commands really run (the dummy backend runs nothing)."""
    arrays: bool = True
    """`submit_array_to_batch_distributor` is implemented (not the NotImplementedError default)."""

    def require(self, flag: str, backend: str) -> None:
        """Skip the calling test, naming the flag, when the backend declares it cannot."""
        if not getattr(self, flag):
            pytest.skip(
                f"the {backend} backend declares it cannot: {flag} (Capabilities.{flag}=False)"
            )
