"""The real `ramcli` CLI, run as a subprocess on real files with a tiny random model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import TINY_TAGS, make_photo, run_cli

COMMANDS = [["tag"], ["untag"], ["doctor"], ["search"], ["dupes"], ["watch"], ["bench"], ["add-tag"], ["models"],
            ["models", "list"], ["models", "pull"], ["models", "import"], ["models", "verify"], ["models", "quantize"],
            ["models", "rm"],
            ["tags"], *(["tags", c] for c in ("list", "show", "set", "remove", "disable", "enable", "export",
                                              "import", "apply"))]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(cmd: list[str]) -> None:
    result = run_cli(*cmd, "--help")
    assert result.returncode == 0, result.stderr
    assert "Example" in result.stdout


def test_top_level_help_and_typos_see_every_command() -> None:
    """A run builds only the command it names (cli._only_the_named_command); the listing and the
    did-you-mean suggestions must still see them all."""
    listing = run_cli("--help")
    assert listing.returncode == 0
    for name in ("tag", "untag", "search", "dupes", "watch", "add-tag", "tags", "models", "bench", "doctor"):
        assert f" {name} " in listing.stdout
    typo = run_cli("serch", "dog")
    assert typo.returncode == 2 and "search" in typo.stderr


def test_version() -> None:
    from ramcli import __version__

    result = run_cli("--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_console_script_is_installed() -> None:
    assert (Path(sys.executable).parent / "ramcli").exists()


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small folder tree: good photos in several formats, broken files, things to ignore."""
    root = tmp_path_factory.mktemp("Photos")
    good = [
        make_photo(root / "a.jpg", (400, 300), seed=1, quality=92),
        make_photo(root / "trip" / "b.png", (300, 400), seed=2),
        make_photo(root / "trip" / "c.webp", (256, 256), seed=3),
        make_photo(root / "trip" / "deep" / "d.tiff", (200, 150), seed=4),
    ]
    (root / "trip" / "empty.jpg").write_bytes(b"")
    (root / "notes.png").write_text("not an image")
    (root / "readme.txt").write_text("ignored: not a photo extension")
    make_photo(root / ".hidden" / "x.jpg", (50, 50))
    make_photo(root / ".dotfile.jpg", (50, 50))
    return {"root": root, "good": good, "bad": [root / "notes.png", root / "trip" / "empty.jpg"]}


def test_models_list_shows_manifests_and_imports(tiny_model) -> None:
    result = run_cli("models", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"ram_plus_swin_large_14m", "ram_swin_large_14m", "tag2text_swin_14m", "clip_vit_b16_text"} <= set(rows)
    assert rows["ram_plus_swin_large_14m"]["default"] is True
    assert rows["tiny_ram_plus"]["installed"] is True and rows["tiny_ram_plus"]["num_tags"] == TINY_TAGS


def test_tag_dry_run_json_over_a_folder(tiny_model, library: dict) -> None:
    result = run_cli("tag", "--dry-run", "--json", "--model", "tiny_ram_plus", str(library["root"]))
    assert result.returncode == 1  # two broken files
    records = [json.loads(line) for line in result.stdout.splitlines()]
    paths = [Path(r["path"]) for r in records]
    assert sorted(paths) == sorted(library["good"] + library["bad"])  # hidden + .txt skipped
    for r in records:
        assert r["model"] == "tiny_ram_plus"
        if Path(r["path"]) in library["bad"]:
            assert str(r["path"]) in r["error"]
        else:
            scores = [t["score"] for t in r["tags"]]
            assert scores == sorted(scores, reverse=True)
            assert all(t["name"].startswith("tag ") and t["name_zh"].startswith("标签") for t in r["tags"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all(any(str(b) in e for b in library["bad"]) for e in errors)
    assert "Traceback" not in result.stderr
    assert result.stderr.count("on CPU") == 1  # the provider is said once


def test_threshold_zero_lists_all_and_top_k_limits(tiny_model, library: dict) -> None:
    photo = str(library["good"][0])
    every = run_cli("tag", "--dry-run", "--json", "-m", "tiny_ram_plus", "--threshold", "0", photo)
    top = run_cli("tag", "--dry-run", "--json", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "3", photo)
    assert every.returncode == 0 and top.returncode == 0
    all_tags = json.loads(every.stdout)["tags"]
    assert len(all_tags) == TINY_TAGS
    assert json.loads(top.stdout)["tags"] == all_tags[:3]


def test_thresholds_decide_the_default_tags(tiny_model, library: dict) -> None:
    """Default output = the tags whose score beats their own threshold from the thresholds file."""
    photo = str(library["good"][1])
    every = json.loads(run_cli("tag", "--dry-run", "--json", "-m", "tiny_ram_plus", "--threshold", "0", photo).stdout)
    fired = json.loads(run_cli("tag", "--dry-run", "--json", "-m", "tiny_ram_plus", photo).stdout)
    thresholds = {f"tag {i:03d}": (0.65 if i % 3 else 0.8) for i in range(TINY_TAGS)}
    want = [t["name"] for t in every["tags"] if t["score"] > thresholds[t["name"]]]
    assert [t["name"] for t in fired["tags"]] == want


def test_human_output(tiny_model, library: dict) -> None:
    result = run_cli("tag", "--dry-run", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "2",
                     str(library["good"][0]))
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(str(library["good"][0]) + ": tag ") and line.count(",") == 1


def test_missing_model_with_no_download(library: dict) -> None:
    result = run_cli("tag", "--dry-run", "--no-download", str(library["good"][0]))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ramcli models pull ram_plus_swin_large_14m" in lines[0]


def test_unknown_model(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "x.jpg")  # a path that exists: a missing one is refused before the model
    result = run_cli("tag", "--dry-run", "--no-download", "-m", "nope", str(photo))
    assert result.returncode == 1 and "not installed" in result.stderr


def test_offline_pull_is_one_clear_line() -> None:
    result = run_cli("models", "pull", "ram_plus_swin_large_14m", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "offline" in lines[0] and "ramcli models import" in lines[0]


def test_pull_without_network_is_one_clear_line() -> None:
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2",
           "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    result = run_cli("models", "pull", "ram_plus_swin_large_14m", env=env)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot download" in errors[0] and "Traceback" not in result.stderr


def test_pull_offline_says_what_to_do() -> None:
    result = run_cli("models", "pull", "tag2text_swin_14m")
    assert result.returncode == 1 and "offline: cannot download tag2text_swin_14m weights" in result.stderr
    assert "ramcli models import" in result.stderr


def test_import_corrupt_checkpoint(tmp_path: Path, tiny_checkpoint: dict) -> None:
    bad = tmp_path / "cut.pth"
    data = tiny_checkpoint["checkpoint"].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    result = run_cli("models", "import", str(bad), "--name", "cut", "--tag-list", str(tiny_checkpoint["tag_list"]))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(bad) in lines[0] and "truncated" in lines[0]
    assert "Traceback" not in result.stderr
    listed = {r["name"] for r in json.loads(run_cli("models", "list", "--json").stdout)}
    assert "cut" not in listed
    assert not any(p.name.startswith(".cut") for p in (Path(os.environ["RAMCLI_CACHE_DIR"]) / "models").iterdir())


def test_import_needs_a_tag_list_for_unknown_names(tiny_checkpoint: dict) -> None:
    result = run_cli("models", "import", str(tiny_checkpoint["checkpoint"]), "--name", "mine")
    assert result.returncode == 2 and "--tag-list" in result.stderr


def test_import_verify_rm_cycle(tiny_checkpoint: dict, library: dict) -> None:
    f = tiny_checkpoint
    imported = run_cli("models", "import", str(f["checkpoint"]), "--name", "tiny_copy", "--tag-list",
                       str(f["tag_list"]), "--json")
    assert imported.returncode == 0, imported.stderr
    verified = run_cli("models", "verify", "tiny_copy", "--json")
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] and report["logits_max_abs"] < 1e-4 and report["image_embeds_max_abs"] < 1e-4
    human = run_cli("models", "verify", "tiny_copy")
    assert "max |Δ logits|" in human.stdout
    removed = run_cli("models", "rm", "tiny_copy")
    assert removed.returncode == 0
    again = run_cli("tag", "--dry-run", "--no-download", "-m", "tiny_copy", str(library["good"][0]))
    assert again.returncode == 1 and "not installed" in again.stderr
    assert run_cli("models", "rm", "tiny_copy").returncode == 1


def test_verify_catches_a_broken_export(tiny_checkpoint: dict, tmp_path: Path) -> None:
    """verify can fail: swap the label embeddings under the installed model and it must say so."""
    import numpy as np

    from ramcli.models import store

    f = tiny_checkpoint
    assert run_cli("models", "import", str(f["checkpoint"]), "--name", "tiny_broken", "--tag-list",
                   str(f["tag_list"])).returncode == 0
    labels = store.get("tiny_broken").path / store.LABELS
    np.save(labels, np.load(labels)[::-1].copy())
    result = run_cli("models", "verify", "tiny_broken", "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["ok"] is False


def test_doctor_reports_the_provider_that_loads(tiny_model) -> None:
    result = run_cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["provider_in_use"] in {"CPU", "CUDA"}
    assert "tiny_ram_plus" in report["models_installed"]
    assert Path(report["manifests"], "ram_plus_swin_large_14m.json").is_file()
    assert "tiny_ram_plus" not in report["models_to_convert_again"]


def test_doctor_names_models_converted_without_the_few_tags_head(tiny_model) -> None:
    import shutil

    from ramcli.models import store

    old = tiny_model.path.parent / "tiny_converted_earlier"
    shutil.copytree(tiny_model.path, old)
    try:
        (old / store.HEAD_FEW).unlink()
        report = json.loads(run_cli("doctor", "--json").stdout)
        assert "tiny_converted_earlier" in report["models_to_convert_again"]
        assert "tiny_ram_plus" not in report["models_to_convert_again"]
    finally:
        shutil.rmtree(old)


def test_tagging_imports_no_torch(tiny_model, library: dict) -> None:
    result = run_cli("tag", "--dry-run", "--json", "-m", "tiny_ram_plus", str(library["good"][0]),
                     env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported  # the check itself works
    assert not {m for m in imported if m.split(".")[0] in {"torch", "torchvision", "open_clip", "timm"}}


def test_bench_measures_stages_on_copies(tiny_model, tmp_path: Path) -> None:
    res = run_cli("bench", "-m", "tiny_ram_plus", "--synthetic", "3", "--batch", "2", "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["photos"] == 3 and got["provider"] == "CPU" and got["peak_rss_mb"] > 50
    # 3 photos in batches of 2: the pair side by side where the CPU has 2 cores (one "inference"
    # stage), the last one through the encoder and then the head
    together = {"inference"} if got["side_by_side"] == 2 else set()
    assert got["side_by_side"] in (1, 2)
    assert set(got["ms_per_photo"]) == {"decode", "encoder", "head", "metadata", "index"} | together
    assert all(v > 0 for v in got["ms_per_photo"].values())
    assert abs(1 / got["photos_per_s"] - got["s_per_photo"]) < 0.01

    good = make_photo(tmp_path / "mine.jpg", (200, 150), seed=5)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    before = good.read_bytes()
    res = run_cli("bench", "-m", "tiny_ram_plus", "--photos", str(tmp_path), "--json")
    assert res.returncode == 1 and "broken.jpg" in res.stderr
    assert json.loads(res.stdout)["photos"] == 1 and good.read_bytes() == before  # only a copy was written
