from dataclasses import dataclass
from pathlib import Path

import pytest

from jobfleet.core.errors import SettingsError
from jobfleet.core.settings import resolve_settings, setting, setting_options


@dataclass(frozen=True)
class ExampleSettings:
    poll_interval: float = setting(5.0, help="Seconds between two status queries.")
    max_queries: int = setting(60, help="Status queries per minute at most.")
    use_sacct: bool = setting(True, help="Ask accounting for finished jobs.")
    account: str | None = setting(None, help="Account charged for every job.")
    log_dir: Path = setting(Path("logs"), help="Where job logs go.")


def test_fields_become_flags_and_variables():
    options = {o.field: o for o in setting_options("slurm", ExampleSettings)}
    assert options["poll_interval"].flag == "--slurm-poll-interval"
    assert options["poll_interval"].envvar == "JOBFLEET_SLURM_POLL_INTERVAL"
    assert options["account"].optional
    assert options["account"].type is str
    assert options["log_dir"].type is Path
    assert options["use_sacct"].default is True


def test_command_line_wins_over_environment_over_default():
    environ = {"JOBFLEET_SLURM_POLL_INTERVAL": "2.5", "JOBFLEET_SLURM_MAX_QUERIES": "10"}
    settings = resolve_settings("slurm", ExampleSettings, {"max_queries": 3}, environ)
    assert settings.poll_interval == 2.5
    assert settings.max_queries == 3
    assert settings.use_sacct is True


@pytest.mark.parametrize(
    ("variable", "text", "field", "value"),
    [
        ("JOBFLEET_SLURM_USE_SACCT", "no", "use_sacct", False),
        ("JOBFLEET_SLURM_USE_SACCT", " YES ", "use_sacct", True),
        ("JOBFLEET_SLURM_ACCOUNT", "", "account", None),
        ("JOBFLEET_SLURM_ACCOUNT", "proj-7", "account", "proj-7"),
        ("JOBFLEET_SLURM_LOG_DIR", "/scratch/logs", "log_dir", Path("/scratch/logs")),
        ("JOBFLEET_SLURM_MAX_QUERIES", " 12 ", "max_queries", 12),
    ],
)
def test_environment_values_are_parsed_by_type(variable, text, field, value):
    settings = resolve_settings("slurm", ExampleSettings, environ={variable: text})
    assert getattr(settings, field) == value


@pytest.mark.parametrize(
    ("variable", "text", "expected"),
    [
        ("JOBFLEET_SLURM_USE_SACCT", "maybe", "one of 1, true"),
        ("JOBFLEET_SLURM_POLL_INTERVAL", "nan", "a finite number"),
        ("JOBFLEET_SLURM_POLL_INTERVAL", "fast", "a finite number"),
        ("JOBFLEET_SLURM_MAX_QUERIES", "1.5", "a whole number"),
        ("JOBFLEET_SLURM_LOG_DIR", "", "a file system path"),
    ],
)
def test_bad_environment_values_name_the_variable_and_the_form(variable, text, expected):
    with pytest.raises(SettingsError) as caught:
        resolve_settings("slurm", ExampleSettings, environ={variable: text})
    assert variable in str(caught.value)
    assert expected in str(caught.value)


def test_unknown_cli_values_are_refused():
    with pytest.raises(SettingsError, match="Unknown slurm settings: partiton"):
        resolve_settings("slurm", ExampleSettings, {"partiton": "debug"})


def test_post_init_errors_become_settings_errors():
    @dataclass(frozen=True)
    class Checked:
        limit: int = setting(1, help="A positive limit.")

        def __post_init__(self):
            if self.limit < 1:
                raise ValueError("limit must be positive")

    with pytest.raises(SettingsError, match="limit must be positive"):
        resolve_settings("x", Checked, {"limit": 0})


def test_default_factory_counts_as_default():
    import dataclasses

    @dataclass(frozen=True)
    class WithFactory:
        name: str = dataclasses.field(default_factory=lambda: "made", metadata={"help": "A name."})

    (option,) = setting_options("x", WithFactory)
    assert option.default == "made"
