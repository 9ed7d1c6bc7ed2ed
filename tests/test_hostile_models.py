"""Damaged models, hostile vocabularies, unusable index paths, no network: one line each, never a traceback.

Issue 15 ("Nothing lost, ever"), defects 6 and 8. Every case writes real broken files on disk (a copy
of a tiny model built by the real converter, never the shared fixture itself) and runs the real CLI
as a subprocess, as a user would meet it. A failure must be: a non-zero exit, exactly one
``error:`` line that names the file and a way to repair it, and no traceback.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_TAGS, make_photo, run_cli, write_tag_files

MODEL = "bad"  # the damaged copy's name in every test cache


# ------------------------------------------------------------------------------- helpers


def model_cache(tmp_path: Path, source: Path, *names: str) -> dict[str, str]:
    """A cache of its own holding a copy of the model folder ``source`` under each name: the CLI's env."""
    for name in names:
        shutil.copytree(source, tmp_path / "cache" / "models" / name)
    return {"RAMCLI_CACHE_DIR": str(tmp_path / "cache"), "RAMCLI_DATA_DIR": str(tmp_path / "data")}


def error_line(result, *, allowed_notes: tuple[str, ...] = ()) -> str:
    """The one ``error:`` line of a failed run (any other stderr line must be an expected note)."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    others = [line for line in lines if line not in errors]
    assert all(line in allowed_notes for line in others), result.stderr
    return errors[0]


def edit_meta(folder: Path, change: Callable[[dict], object]) -> None:
    """meta.json changed in place by ``change`` (what it returns is ignored: ``dict.pop`` returns a value)."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    change(meta)
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def truncate(path: Path, keep: int = 1000) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def scramble(path: Path) -> None:
    """Same size, random bytes: what a bad sector or a botched copy leaves."""
    path.write_bytes(np.random.default_rng(0).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())


def forget_sizes(folder: Path) -> None:
    """As a model converted before meta.json recorded file sizes: onnxruntime is the last line of defence."""
    edit_meta(folder, lambda m: m.pop("file_bytes"))


def object_npy(path: Path) -> None:
    np.save(path, np.array([{"tag": i} for i in range(3)], dtype=object), allow_pickle=True)


# (what is done to the copy, the file the error must name, words the error must say)
DAMAGE: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "labels truncated": (lambda m: truncate(m / "label_embed.npy"), "label_embed.npy", "bytes"),
    "labels random bytes": (lambda m: scramble(m / "label_embed.npy"), "label_embed.npy", "not a NumPy"),
    "labels pickled objects": (lambda m: object_npy(m / "label_embed.npy"), "label_embed.npy", "pickle"),
    "labels wrong shape": (lambda m: np.save(m / "label_embed.npy", np.zeros((7, 512), np.float32)),
                           "label_embed.npy", "shape"),
    "labels float64": (lambda m: np.save(m / "label_embed.npy", np.zeros((TINY_TAGS * 51, 512))),
                       "label_embed.npy", "float32"),
    "meta bad JSON": (lambda m: (m / "meta.json").write_text('{"family": "ram_plus",', encoding="utf-8"),
                      "meta.json", "not valid JSON"),
    "meta not an object": (lambda m: (m / "meta.json").write_text('["ram_plus"]', encoding="utf-8"), "meta.json",
                           "not a JSON object"),
    "meta missing": (lambda m: (m / "meta.json").unlink(), "meta.json", "missing"),
    "meta without preprocess": (lambda m: edit_meta(m, lambda d: d.pop("preprocess")), "meta.json", "preprocess"),
    "meta num_tags a string": (lambda m: edit_meta(m, lambda d: d.update(num_tags="forty")), "meta.json",
                               "num_tags"),
    "meta unknown family": (lambda m: edit_meta(m, lambda d: d.update(family="martian")), "meta.json", "martian"),
    "meta descriptions_per_tag null": (lambda m: edit_meta(m, lambda d: d.update(descriptions_per_tag=None)),
                                       "meta.json", "descriptions_per_tag"),
    "encoder truncated": (lambda m: truncate(m / "image_encoder.onnx", 100_000), "image_encoder.onnx", "bytes"),
    "head random bytes": (lambda m: scramble(m / "tag_head.onnx"), "tag_head.onnx", "ONNX"),
    "few-tags head truncated": (lambda m: truncate(m / "tag_head_few.onnx"), "tag_head_few.onnx", "bytes"),
    "weights gone": (lambda m: (m / "tag_head.onnx").unlink(), "tag_head.onnx", "missing"),
    "encoder truncated, sizes not recorded": (
        lambda m: (forget_sizes(m), truncate(m / "image_encoder.onnx", 100_000)), "image_encoder.onnx",
        "onnxruntime cannot load it"),
    "tag list missing": (lambda m: (m / "tag_list.txt").unlink(), "tag_list.txt", "missing"),
    "tag list short": (lambda m: (m / "tag_list.txt").write_text("a\nb\nc\n", encoding="utf-8"), "tag_list.txt",
                       f"3 lines, but the model has {TINY_TAGS} tags"),
    "chinese names long": (lambda m: (m / "tag_list_chinese.txt").write_text("标签\n" * (TINY_TAGS + 1),
                                                                               encoding="utf-8"),
                           "tag_list_chinese.txt", "lines"),
    "tag list not UTF-8": (lambda m: (m / "tag_list.txt").write_bytes(b"\xff\xfe\x00bad\n" * TINY_TAGS),
                           "tag_list.txt", "UTF-8"),
    "threshold not a number": (lambda m: (m / "thresholds.txt").write_text("0.5\nhigh\n" * (TINY_TAGS // 2),
                                                                           encoding="utf-8"),
                               "thresholds.txt", "not a number"),
}


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photo(tmp_path_factory.mktemp("photo") / "p.jpg")


# ------------------------------------------------------------------------------- opening a damaged model


@pytest.mark.parametrize("case", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_model_is_one_line_naming_the_file_and_the_repair(case: str, tiny_model, photo: Path,
                                                                     tmp_path: Path) -> None:
    damage, file, words = DAMAGE[case]
    env = model_cache(tmp_path, tiny_model.path, MODEL)
    damage(tmp_path / "cache" / "models" / MODEL)
    result = run_cli("tag", "--dry-run", "--model", MODEL, str(photo), env=env)
    # onnxruntime is reached only for a graph whose size was not recorded: its load follows this note
    line = error_line(result, allowed_notes=(f"model {MODEL} on CPU",))
    assert str(tmp_path / "cache" / "models" / MODEL / file) in line
    assert words in line
    assert "ramcli models rm bad" in line  # the way out is always there
    assert "ramcli models import" in line  # the copy's source checkpoint still exists: import it again


def test_the_repair_of_a_known_model_is_pull(tiny_model, photo: Path, tmp_path: Path) -> None:
    """A model installed under a name the manifests know is converted again by `models pull`."""
    env = model_cache(tmp_path, tiny_model.path, "ram_plus_swin_large_14m")
    truncate(tmp_path / "cache" / "models" / "ram_plus_swin_large_14m" / "label_embed.npy")
    result = run_cli("tag", "--dry-run", "--model", "ram_plus_swin_large_14m", str(photo), env=env)
    line = error_line(result)
    assert "label_embed.npy" in line and "ramcli models pull ram_plus_swin_large_14m" in line


def test_the_undamaged_copy_tags(tiny_model, photo: Path, tmp_path: Path) -> None:
    """The control: the copy itself is whole, so every failure above comes from the damage."""
    env = model_cache(tmp_path, tiny_model.path, MODEL)
    result = run_cli("tag", "--dry-run", "--json", "--model", MODEL, str(photo), env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["model"] == MODEL


def test_models_list_shows_the_broken_ones_and_lists_the_rest(tiny_model, tmp_path: Path) -> None:
    env = model_cache(tmp_path, tiny_model.path, "good", MODEL, "bad_labels")
    models = tmp_path / "cache" / "models"
    (models / MODEL / "meta.json").write_text("{not json", encoding="utf-8")
    truncate(models / "bad_labels" / "label_embed.npy")

    listed = run_cli("models", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["good"]["installed"] and "broken" not in rows["good"] and rows["good"]["num_tags"] == TINY_TAGS
    assert "ram_plus_swin_large_14m" in rows  # the manifests too
    assert rows[MODEL]["broken"].startswith("meta.json: is not valid JSON")
    assert rows["bad_labels"]["broken"].startswith("label_embed.npy: ")
    assert "ramcli models rm bad_labels" in rows["bad_labels"]["fix"]

    table = run_cli("models", "list", env=env)
    assert table.returncode == 0 and "Traceback" not in table.stderr
    assert "BROKEN" in table.stdout and "good" in table.stdout
    assert "broken: bad: meta.json: is not valid JSON" in table.stderr


def test_doctor_reports_broken_models(tiny_model, tmp_path: Path) -> None:
    env = model_cache(tmp_path, tiny_model.path, "good", MODEL)
    scramble(tmp_path / "cache" / "models" / MODEL / "tag_head.onnx")
    result = run_cli("doctor", "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["models_installed"] == ["good"]
    [broken] = report["models_broken"]
    assert broken["name"] == MODEL and broken["problem"] == "tag_head.onnx: is not an ONNX graph"
    assert "ramcli models rm bad" in broken["fix"]
    human = run_cli("doctor", env=env)
    assert human.returncode == 0 and "Traceback" not in human.stderr
    assert "models_broken" in human.stdout and "tag_head.onnx" in human.stdout


def test_removing_a_broken_model_works(tiny_model, tmp_path: Path) -> None:
    """The repair the error offers must itself work on the damaged folder."""
    env = model_cache(tmp_path, tiny_model.path, MODEL)
    (tmp_path / "cache" / "models" / MODEL / "meta.json").write_text("[", encoding="utf-8")
    assert run_cli("models", "rm", MODEL, env=env).returncode == 0
    assert not (tmp_path / "cache" / "models" / MODEL).exists()


def test_verify_without_a_recorded_source_is_one_line(tiny_model, tmp_path: Path) -> None:
    """A model folder whose meta.json records no source checkpoint (converted by hand, or by an older
    ramcli) cannot be verified against it: one line saying so, not a KeyError."""
    env = model_cache(tmp_path, tiny_model.path, MODEL)
    edit_meta(tmp_path / "cache" / "models" / MODEL, lambda m: m.pop("source", None))
    line = error_line(run_cli("models", "verify", MODEL, env=env))
    assert "meta.json" in line and "no source checkpoint" in line and "import" in line, line


# ------------------------------------------------------------------------------- graphs with external weights


@pytest.fixture(scope="module")
def tiny_t2t_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny Tag2Text (its graphs keep their weights in .onnx.data files), converted into a cache of
    its own; returns (model folder, checkpoint, tag list)."""
    from test_tag2text import SYNTH_VOCAB

    from ramcli.models.convert.checkpoint import load_state_dict
    from ramcli.models.convert.tag2text import random_model, save_checkpoint, tiny_config
    from ramcli.models.convert.tag2text_export import import_tag2text

    src = tmp_path_factory.mktemp("t2t-src")
    files = write_tag_files(src)
    vocab = src / "vocab.txt"
    vocab.write_text("\n".join(SYNTH_VOCAB) + "\n", encoding="utf-8")
    ckpt = save_checkpoint(random_model(tiny_config(vocab_size=len(SYNTH_VOCAB) + 2)), src / "t2t.pth")
    cache = tmp_path_factory.mktemp("t2t-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAMCLI_CACHE_DIR", str(cache))
        model = import_tag2text(ckpt, "t2t", load_state_dict(ckpt), tag_list=files["tag_list"], vocab=vocab)
    return model.path, ckpt, files["tag_list"]


@pytest.mark.parametrize("recorded", [True, False], ids=["sizes recorded", "sizes not recorded"])
@pytest.mark.parametrize("graph", ["image_encoder.onnx", "tag_head.onnx"])
def test_truncated_external_weights_are_one_line(graph: str, recorded: bool, tiny_t2t_folder, photo: Path,
                                                 tmp_path: Path) -> None:
    folder, _, _ = tiny_t2t_folder
    env = model_cache(tmp_path, folder, MODEL)
    copy = tmp_path / "cache" / "models" / MODEL
    if not recorded:
        forget_sizes(copy)
    truncate(copy / f"{graph}.data")
    result = run_cli("tag", "--dry-run", "--model", MODEL, str(photo), env=env)
    line = error_line(result, allowed_notes=(f"model {MODEL} on CPU",))
    # recorded: the weights file itself; otherwise onnxruntime's refusal of the graph that needs it
    assert str(copy / (f"{graph}.data" if recorded else graph)) in line
    assert "ramcli models rm bad" in line
    assert "onnxruntime_src" not in result.stderr and ".cc:" not in line  # none of onnxruntime's internals


def test_a_weights_checksum_mismatch_is_one_line(tiny_t2t_folder, tmp_path: Path) -> None:
    """The BERT vocabulary Tag2Text's import fetches is pinned by sha256 in the manifest; a damaged copy
    in the Hugging Face cache is refused in one line that names the cached file to delete."""
    _, ckpt, tags = tiny_t2t_folder
    repo = tmp_path / "hf" / "hub" / "models--google-bert--bert-base-uncased"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    damaged = repo / "snapshots" / commit / "vocab.txt"
    damaged.parent.mkdir(parents=True)
    damaged.write_text("[PAD]\nnot bert's vocabulary\n", encoding="utf-8")
    env = {"RAMCLI_CACHE_DIR": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf")}
    result = run_cli("models", "import", str(ckpt), "--name", "tag2text_swin_14m", "--tag-list", str(tags), env=env)
    line = error_line(result, allowed_notes=(f"reading {ckpt}",))
    assert "checksum mismatch" in line and str(damaged) in line and "delete this file" in line
    assert not (tmp_path / "cache" / "models" / "tag2text_swin_14m").exists()


# ------------------------------------------------------------------------------- tags import


def _vocabulary(tags: list[dict]) -> dict:
    return {"format": "ramcli-vocabulary", "version": 1, "tags": tags, "disabled": []}


def _embeds(rows: int = 2, fill: float = 0.1) -> str:
    return base64.b64encode(np.full((rows, 512), fill, "<f4").tobytes()).decode("ascii")


HOSTILE_VOCABULARIES = {
    "bad base64": ({"name": "heron", "embeds": "!!not base64$$"}, "not valid base64"),
    "length no whole embedding": ({"name": "heron", "embeds": base64.b64encode(b"\0" * 700 * 4).decode()},
                                  "2800 bytes"),
    "NaN embedding": ({"name": "heron", "embeds": _embeds(1, float("nan"))}, "not finite"),
    "no name": ({"embeds": _embeds()}, '"name"'),
    "threshold text": ({"name": "heron", "embeds": _embeds(), "threshold": "high"}, '"threshold"'),
    "descriptions not a list": ({"name": "heron", "embeds": _embeds(), "descriptions": "grey bird"},
                                '"descriptions"'),
}


@pytest.mark.parametrize("case", HOSTILE_VOCABULARIES, ids=list(HOSTILE_VOCABULARIES))
def test_tags_import_refuses_a_hostile_vocabulary_whole(case: str, tmp_path: Path) -> None:
    """One bad tag after a good one: one line naming the file and the tag, and nothing imported."""
    bad, words = HOSTILE_VOCABULARIES[case]
    path = tmp_path / "vocabulary.json"
    path.write_text(json.dumps(_vocabulary([{"name": "egret", "embeds": _embeds()}, bad])), encoding="utf-8")
    index = tmp_path / "index.db"
    line = error_line(run_cli("tags", "import", str(path), "--index", str(index)))
    assert str(path) in line and "tag 2" in line and words in line
    listed = run_cli("tags", "list", "--custom", "--json", "--index", str(index))
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(x) for x in listed.stdout.splitlines()] in ([], [[]])


def test_tags_import_of_a_good_vocabulary_still_works(tmp_path: Path) -> None:
    """The control for the cases above: the same file without the bad tag is imported."""
    path = tmp_path / "vocabulary.json"
    path.write_text(json.dumps(_vocabulary([{"name": "egret", "embeds": _embeds()}])), encoding="utf-8")
    index = tmp_path / "index.db"
    result = run_cli("tags", "import", str(path), "--index", str(index))
    assert result.returncode == 0, result.stderr
    listed = run_cli("tags", "list", "--custom", "--json", "--index", str(index))
    assert "egret" in listed.stdout


# ------------------------------------------------------------------------------- where the index cannot be


def test_an_index_under_a_file_is_one_line(tiny_model, photo: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder", encoding="utf-8")
    result = run_cli("tag", "--model", "tiny_ram_plus", "--index", str(tmp_path / "notes.txt" / "lib" / "index.db"),
                     str(photo))
    line = error_line(result, allowed_notes=("model tiny_ram_plus on CPU",))
    assert f"{tmp_path / 'notes.txt'}: cannot create the index's folder: this file is in the way" in line


def test_an_index_that_is_a_folder_is_one_line(tiny_model, photo: Path, tmp_path: Path) -> None:
    result = run_cli("tag", "--model", "tiny_ram_plus", "--index", str(tmp_path), str(photo))
    line = error_line(result, allowed_notes=("model tiny_ram_plus on CPU",))
    assert f"{tmp_path}: is a folder" in line and "index.db" in line


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be made")
def test_a_lock_file_that_cannot_be_made_is_said_as_such(tiny_model, photo: Path) -> None:
    """/proc takes no new files, even from root: the lock file cannot be made. That must not read
    as another run holding the library."""
    result = run_cli("tag", "--model", "tiny_ram_plus", "--index", "/proc/ramcli-test-index.db", str(photo))
    line = error_line(result, allowed_notes=("model tiny_ram_plus on CPU",))
    assert "/proc/ramcli-test-index.db.lock: cannot create the index's lock file" in line
    assert "another ramcli run" not in line


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="root writes into read-only folders (the /proc case covers it)")
def test_a_new_index_in_a_read_only_folder_is_one_line(tiny_model, photo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = run_cli("tag", "--model", "tiny_ram_plus", "--index", str(folder / "index.db"), str(photo))
    finally:
        folder.chmod(0o755)
    line = error_line(result, allowed_notes=("model tiny_ram_plus on CPU",))
    assert f"{folder / 'index.db.lock'}: cannot create the index's lock file" in line


# ------------------------------------------------------------------------------- blank search


@pytest.mark.parametrize("query", ["", "   ", "\t\n", "\u3000"], ids=["empty", "spaces", "tab-newline", "ideographic"])
def test_a_blank_query_is_a_usage_error(query: str, tmp_path: Path) -> None:
    result = run_cli("search", query, "--index", str(tmp_path / "index.db"))
    assert result.returncode == 2, result.stdout + result.stderr
    line = error_line(result)
    assert "give a QUERY or --like PHOTO" in line
    assert result.stdout == ""


def test_a_blank_query_is_a_usage_error_for_scripts_too(tmp_path: Path) -> None:
    from ramcli import Library
    from ramcli.errors import UsageError

    with pytest.raises(UsageError, match="blank"):
        Library(tmp_path / "index.db").search("  ")


# ------------------------------------------------------------------------------- no network


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released): connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _online_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Downloads allowed, into caches of their own, and no proxy from the machine's environment."""
    return {"HF_HUB_OFFLINE": "0", "RAMCLI_OFFLINE": "0", "RAMCLI_CACHE_DIR": str(tmp_path / "cache"),
            "RAMCLI_DATA_DIR": str(tmp_path / "data"), "HF_HOME": str(tmp_path / "hf"), "HTTPS_PROXY": "",
            "https_proxy": "", "HTTP_PROXY": "", "http_proxy": "", "ALL_PROXY": "", "all_proxy": "",
            "NO_PROXY": "", "no_proxy": "", **extra}


def test_a_first_tag_without_the_hub_fails_at_once_in_one_line(photo: Path, tmp_path: Path) -> None:
    """The default model is not installed and the hub cannot be reached: one line that names the host
    and the ways out (import a local checkpoint, a mirror, a proxy), none of huggingface_hub's retries."""
    port = _closed_port()
    env = _online_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{port}")
    result = run_cli("tag", str(photo), env=env)
    line = error_line(result)
    assert f"127.0.0.1:{port} cannot be reached" in line
    assert "ramcli models import ram_plus_swin_large_14m.pth --name ram_plus_swin_large_14m" in line
    assert "HF_ENDPOINT" in line and "HTTPS_PROXY" in line
    assert "Retry" not in result.stderr
    assert not (tmp_path / "cache" / "models").exists()


def test_an_unreachable_proxy_is_named(photo: Path, tmp_path: Path) -> None:
    port = _closed_port()
    proxy = f"http://127.0.0.1:{port}"
    env = _online_env(tmp_path, HF_ENDPOINT="https://hub.ramcli-test.invalid", HTTPS_PROXY=proxy, https_proxy=proxy)
    line = error_line(run_cli("models", "pull", "ram_plus_swin_large_14m", env=env))
    assert f"127.0.0.1:{port} through the proxy cannot be reached" in line
