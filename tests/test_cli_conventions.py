"""CLI conventions, through the real `ramcli` in a subprocess: the config file and its sources,
path lists from a file or stdin, choices listed and checked by click, shell completion, doctor's
empty lists, model names never cut, `-q`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_photo, run_cli


def run_with_stdin(*args: str, stdin: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """conftest.run_cli with something on standard input (`-`)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ramcli", *args], input=stdin, capture_output=True, text=True,
                          env=full_env, check=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "config.toml"


def show(config: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, dict[str, object]]:
    res = run_cli("config", "show", "--json", *args, env={"RAMCLI_CONFIG": str(config), **(env or {})})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_config_show_names_every_source(config: Path, tmp_path: Path) -> None:
    assert all(v["source"] == "default" for v in show(config).values())  # no file yet
    config.write_text(f'lang = "zh"\ndevice = "cuda"\nthreads = 3\nindex = "{tmp_path / "lib.db"}"\n')
    got = show(config, "--decode", "draft", env={"RAMCLI_DEVICE": "cpu", "RAMCLI_INDEX": ""})
    assert got["precision"] == {"value": "auto", "source": "default"}
    assert got["lang"] == {"value": "zh", "source": f"config file {config}"}
    assert got["threads"] == {"value": 3, "source": f"config file {config}"}
    assert got["index"] == {"value": str(tmp_path / "lib.db"), "source": f"config file {config}"}
    assert got["device"] == {"value": "cpu", "source": "env RAMCLI_DEVICE"}  # environment > file
    assert got["decode"] == {"value": "draft", "source": "command line"}
    assert show(config, "--device", "auto", env={"RAMCLI_DEVICE": "cpu"})["device"]["source"] == "command line"
    human = run_cli("config", "show", env={"RAMCLI_CONFIG": str(config)})
    assert human.returncode == 0 and "config file" in human.stdout and "None" not in human.stdout


def test_config_path(config: Path, tmp_path: Path) -> None:
    res = run_cli("config", "path", env={"RAMCLI_CONFIG": str(config)})
    assert res.returncode == 0 and res.stdout.strip() == str(config)
    env = {"RAMCLI_CONFIG": "", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert run_cli("config", "path", env=env).stdout.strip() == str(tmp_path / "xdg" / "ramcli" / "config.toml")


@pytest.mark.parametrize(("text", "key"), [('lang = "fr"\n', "lang"), ("threads = -1\n", "threads"),
                                           ('colour = "red"\n', "colour"), ("batch_size = 'x'\n", "batch_size"),
                                           ("lang = \n", "")])
def test_a_bad_config_file_is_one_line_and_exit_2(config: Path, text: str, key: str) -> None:
    config.write_text(text)
    for cmd in (["tag", "--dry-run", "x.jpg"], ["search", "dog"], ["config", "show"]):
        res = run_cli(*cmd, env={"RAMCLI_CONFIG": str(config)})
        assert res.returncode == 2, (cmd, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and str(config) in lines[0] and key in lines[0] and "Traceback" not in res.stderr
    assert run_cli("config", "path", env={"RAMCLI_CONFIG": str(config)}).returncode == 0  # to find the file


def test_a_bad_environment_value_names_the_variable() -> None:
    res = run_cli("search", "dog", env={"RAMCLI_PRECISION": "int4"})
    assert res.returncode == 2 and "RAMCLI_PRECISION" in res.stderr and "fp32, int8, fp16" in res.stderr


def test_settings_become_the_defaults_of_options(config: Path) -> None:
    config.write_text('lang = "both"\nbatch_size = 7\nsidecar_name = "stem"\n')
    env = {"RAMCLI_CONFIG": str(config)}
    tag_help = run_cli("tag", "--help", env=env).stdout
    assert "[default: both]" in tag_help and "[default: 7]" in tag_help and "[default: stem]" in tag_help
    assert "[default: 7]" in run_cli("bench", "--help", env=env).stdout  # bench's --batch is batch_size too


def test_settings_apply_to_runs_and_the_command_line_wins(config: Path, tiny_model, tmp_path: Path) -> None:
    photo = str(make_photo(tmp_path / "p.jpg", seed=11))
    config.write_text('lang = "zh"\n')
    env = {"RAMCLI_CONFIG": str(config)}
    base = ("tag", "--dry-run", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "2", photo)
    assert "标签" in run_cli(*base, env=env).stdout
    assert "标签" not in run_cli(*base, "--lang", "en", env=env).stdout
    assert "标签" not in run_cli(*base, env={**env, "RAMCLI_LANG": "en"}).stdout


CHOICES = [(["tag"], "--device", "auto|cpu|cuda"), (["tag"], "--precision", "fp32|int8|fp16"),
           (["tag"], "--decode", "auto|exact|draft"), (["tag"], "--lang", "en|zh|both"),
           (["tag"], "--sidecar-name", "ext|stem"), (["bench"], "--device", "auto|cpu|cuda"),
           (["models", "quantize"], "--to", "int8|fp16")]


@pytest.mark.parametrize(("cmd", "option", "values"), CHOICES, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_choices_are_listed_in_help_and_checked(cmd: list[str], option: str, values: str) -> None:
    helped = run_cli(*cmd, "--help")
    assert helped.returncode == 0 and values in helped.stdout
    bad = run_cli(*cmd, *(["x"] if cmd == ["models", "quantize"] else []), option, "nope")
    assert bad.returncode == 2 and f"Invalid value for '{option}'" in bad.stderr


def test_tag_help_is_grouped_into_panels() -> None:
    out = run_cli("tag", "--help").stdout
    for panel in ("What to write", "Model", "Speed", "Output"):
        assert f"─ {panel} " in out


def test_paths_from_a_file_and_from_stdin(tiny_model, tmp_path: Path) -> None:
    photos = [make_photo(tmp_path / f"p{i}.jpg", seed=20 + i) for i in range(3)]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{photos[0]}\n\n{photos[1]}\n")
    base = ("tag", "--dry-run", "--json", "-m", "tiny_ram_plus")

    def tagged(res: subprocess.CompletedProcess[str]) -> list[Path]:
        assert res.returncode == 0, res.stderr
        return sorted(Path(json.loads(line)["path"]) for line in res.stdout.splitlines())

    assert tagged(run_cli(*base, "--files-from", str(listing), str(photos[2]))) == sorted(photos)
    assert tagged(run_with_stdin(*base, "-", stdin=f"{photos[2]}\n{photos[0]}\n")) == sorted([photos[0], photos[2]])
    assert tagged(run_with_stdin(*base, "--files-from", "-", stdin=f"{photos[1]}\n")) == [photos[1]]
    nothing = run_with_stdin(*base, "-", stdin="\n")
    assert nothing.returncode == 2 and "no photos or folders given" in nothing.stderr
    assert run_cli(*base, "--files-from", str(tmp_path / "missing.txt")).returncode == 2

    index = tmp_path / "lib.db"
    assert run_cli("tag", "--no-write", "-m", "tiny_ram_plus", "--index", str(index), str(tmp_path)).returncode == 0
    untag = run_with_stdin("untag", "--index", str(index), "--json", "-", stdin=f"{photos[0]}\n{photos[1]}\n")
    assert untag.returncode == 0, untag.stderr
    assert sorted(Path(json.loads(line)["path"]) for line in untag.stdout.splitlines()) == photos[:2]
    untag = run_cli("untag", "--index", str(index), "--files-from", str(listing))  # already forgotten: nothing
    assert untag.returncode == 0 and "0 restored byte for byte, 0 untagged" in untag.stderr


def test_quiet_drops_notes_not_results(tiny_model, tmp_path: Path) -> None:
    photo = str(make_photo(tmp_path / "p.jpg", seed=31))
    res = run_cli("-q", "tag", "--dry-run", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "1", photo)
    assert res.returncode == 0 and res.stdout.startswith(photo) and res.stderr == ""


def test_tags_show_says_no_none_and_export_import_through_stdio(tiny_model, tmp_path: Path) -> None:
    index = tmp_path / "lib.db"
    make_photo(tmp_path / "p.jpg", seed=41)
    assert run_cli("tag", "--no-write", "-m", "tiny_ram_plus", "--index", str(index), str(tmp_path)).returncode == 0
    shown = run_cli("tags", "show", "tag 001", "--index", str(index))
    assert shown.returncode == 0 and "tag 001" in shown.stdout and "None" not in shown.stdout
    exported = run_cli("tags", "export", "-", "--index", str(index))
    assert exported.returncode == 0, exported.stderr
    doc = json.loads(exported.stdout)
    assert doc["tags"] == [] and "standard output" in exported.stderr
    imported = run_with_stdin("tags", "import", "-", "--index", str(index), stdin=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    bad = run_with_stdin("tags", "import", "-", "--index", str(index), stdin="{}")
    assert bad.returncode == 1 and "is not a ramcli vocabulary" in bad.stderr


def _console_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed `ramcli` (completion scripts are made for the program's own name)."""
    return subprocess.run([str(Path(sys.executable).parent / "ramcli"), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, check=False)


def test_shell_completion(tmp_path: Path) -> None:
    env = {"SHELL": "/bin/bash", "HOME": str(tmp_path)}
    shown = _console_script("--show-completion", env=env)
    assert shown.returncode == 0 and "_RAMCLI_COMPLETE=complete_bash" in shown.stdout
    installed = _console_script("--install-completion", env=env)
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / ".bash_completions" / "ramcli.sh"
    assert script.is_file() and str(script) in (tmp_path / ".bashrc").read_text()
    words = _console_script(env={**env, "_RAMCLI_COMPLETE": "complete_bash", "COMP_WORDS": "ramcli tag --lang ",
                                 "COMP_CWORD": "3"})
    assert words.stdout.split() == ["en", "zh", "both"]


def test_doctor_lists_are_empty_lists_when_empty(tmp_path: Path) -> None:
    env = {"RAMCLI_CACHE_DIR": str(tmp_path / "empty-cache")}
    report = json.loads(run_cli("doctor", "--json", env=env).stdout)
    assert report["models_installed"] == [] and report["models_to_convert_again"] == []
    human = run_cli("doctor", env=env)
    assert human.returncode == 0 and "(none)" in human.stdout


def test_models_list_never_cuts_a_name(tiny_model) -> None:
    names = [r["name"] for r in json.loads(run_cli("models", "list", "--json").stdout)]
    for width in (60, 80, 120, 200):
        listed = run_cli("models", "list", env={"COLUMNS": str(width)})
        assert listed.returncode == 0
        lines = listed.stdout.splitlines()
        assert all(len(line) <= width for line in lines) and "…" not in listed.stdout
        words = {w for line in lines for w in line.replace("│", " ").split()}
        assert all(name in words for name in names), (width, listed.stdout)


@pytest.mark.parametrize("cmd", [["config"], ["config", "show"], ["config", "path"]], ids=" ".join)
def test_config_commands_have_help_with_an_example(cmd: list[str]) -> None:
    result = run_cli(*cmd, "--help")
    assert result.returncode == 0 and "Example" in result.stdout


def test_version_and_listing_with_the_lazy_command_modules() -> None:
    """`--version` builds no command and a named command only its own module; the listing has all."""
    from ramcli import __version__

    assert run_cli("--version").stdout.strip() == f"ramcli {__version__}"
    listing = run_cli("--help").stdout
    assert all(f" {name} " in listing for name in ("tag", "untag", "config", "tags", "models"))
    assert "Usage:" in run_cli("untag", "--help").stdout  # untag lives in the tag module
