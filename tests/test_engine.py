"""Engine helpers: background loading, one-shot sessions, precision variants."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from ramcli import store
from ramcli.engine import EngineOptions, _session, in_background
from ramcli.errors import RamcliError


def test_in_background_runs_concurrently_and_hands_back_value_and_error() -> None:
    started = threading.Event()
    go_on = threading.Event()

    def make() -> str:
        started.set()
        assert go_on.wait(10), "the caller never got control back: not in the background"
        return "loaded"

    result = in_background(make)
    assert started.wait(10)  # runs before anyone asks for it...
    go_on.set()  # ...while this thread goes on
    assert result() == "loaded" and result() == "loaded"

    def broken() -> str:
        raise RamcliError("cannot load")

    with pytest.raises(RamcliError, match="cannot load"):
        in_background(broken)()


def test_one_shot_session_gives_the_same_numbers(tiny_model) -> None:
    """Skipping weight prepacking changes load time, not results."""
    path = os.fspath(tiny_model.path / store.HEAD)
    rng = np.random.default_rng(0)
    feeds = {"image_embeds": rng.normal(size=(2, 145, 512)).astype(np.float32),
             "tag_embeds": rng.normal(size=(2, 7, 512)).astype(np.float32)}
    normal = _session(path, EngineOptions(device="cpu")).run(None, feeds)[0]
    once = _session(path, EngineOptions(device="cpu", one_shot=True)).run(None, feeds)[0]
    np.testing.assert_allclose(once, normal, rtol=0, atol=1e-5)


def test_graph_variants_are_named_beside_the_fp32_graph(tmp_path) -> None:
    head = tmp_path / store.HEAD
    assert store.graph_variant(head, "fp32") == head
    assert store.graph_variant(head, "int8") == tmp_path / "tag_head.int8.onnx"
    with pytest.raises(RamcliError, match="no int8 version"):
        _session(os.fspath(head), EngineOptions(precision="int8"))
