"""Beam search exactly as transformers 4.25 runs it for Tag2Text's captions, in numpy.

The reference captions with ``generate(num_beams=3, min_length=10, max_length=50,
repetition_penalty=1.0)`` (length_penalty 1.0, early_stopping False). Caption ids are compared
with the golden outputs exactly, so every rule of that version is kept (docs/ram-plus.md):

* log-softmax over the vocabulary; processors act on log-probs (repetition penalty, then
  ``eos`` set to -inf while the sequence, prompt included, is shorter than ``min_length``);
* beam scores start at 0 for beam 0 and -1e9 for the others, so step one expands beam 0 only;
* the top ``2 * beams`` of beams x vocabulary are scanned in order; an ``eos`` candidate ends a
  hypothesis (stored without the eos, scored sum-logprob / length ** length_penalty) only if it
  ranks within the first ``beams``; the first ``beams`` other candidates continue;
* an image is done once it holds ``beams`` hypotheses and none of this step's candidates could
  beat the worst of them (``BeamHypotheses.is_done``); at ``max_length`` the live beams join
  the hypotheses; the best one gets ``eos`` appended if it is shorter than ``max_length``.

Images in a batch are independent (as in the reference: its padding of finished images never
reaches their output), so finished images are dropped from the decoder's rows.
The model is behind :class:`Decoder`, which owns whatever cache it keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

INITIAL_OTHER_BEAMS = np.float32(-1e9)


class Decoder(Protocol):
    """A language model over rows (image x beam), with its own cache of the rows' prefixes."""

    def __call__(self, new_ids: np.ndarray) -> np.ndarray:
        """(rows, t) int64 new tokens appended to every row -> (rows, vocab) logits of the last one."""
        ...

    def reorder(self, rows: np.ndarray) -> None:
        """Keep rows ``rows`` of the current ones, in that order (beam reordering, dropping images)."""
        ...


@dataclass(frozen=True)
class BeamSettings:
    num_beams: int = 3
    max_length: int = 50  # prompt included
    min_length: int = 10  # prompt included
    eos_id: int = 102
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    early_stopping: bool = False


class Hypotheses:
    """transformers' ``BeamHypotheses``: the best ``num_beams`` finished sequences of one image."""

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool) -> None:
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.beams: list[tuple[float, np.ndarray]] = []
        self.worst_score = 1e9

    def add(self, ids: np.ndarray, sum_logprobs: float) -> None:
        score = sum_logprobs / (ids.shape[-1] ** self.length_penalty)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, ids.copy()))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, cur_len: int) -> bool:
        if len(self.beams) < self.num_beams:
            return False
        if self.early_stopping:
            return True
        return self.worst_score >= best_sum_logprobs / cur_len**self.length_penalty

    def best(self) -> np.ndarray:
        """Highest score; among equal scores the one added last (a stable sort, then pop())."""
        return sorted(self.beams, key=lambda b: b[0])[-1][1]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float32, copy=True)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def _penalise_repeats(logp: np.ndarray, ids: np.ndarray, penalty: float) -> None:
    """transformers' RepetitionPenaltyLogitsProcessor, once per distinct earlier token."""
    p = np.float32(penalty)
    for row in range(len(ids)):
        seen = np.unique(ids[row])
        vals = logp[row, seen]
        logp[row, seen] = np.where(vals < 0, vals * p, vals / p)


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k largest (values, flat indices), best first; equal values: lower index first."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(scores, idx, axis=1), idx


def beam_search(decoder: Decoder, prompts: np.ndarray, settings: BeamSettings) -> list[list[int]]:
    """(images, P) prompt ids -> one id list per image, prompt included (the reference's output)."""
    k = settings.num_beams
    n_images, prompt_len = prompts.shape
    if settings.max_length <= prompt_len:
        raise ValueError(f"max_length {settings.max_length} leaves no room after a {prompt_len}-token prompt")
    hyps = [Hypotheses(k, settings.length_penalty, settings.early_stopping) for _ in range(n_images)]
    live = list(range(n_images))  # images still searching, in the decoder's row order (k rows each)
    ids = np.repeat(np.asarray(prompts, dtype=np.int64), k, axis=0)
    beam_scores = np.zeros((n_images, k), dtype=np.float32)
    beam_scores[:, 1:] = INITIAL_OTHER_BEAMS
    logits = decoder(ids)
    while True:
        cur_len = ids.shape[1]
        logp = log_softmax(logits)
        if settings.repetition_penalty != 1.0:
            _penalise_repeats(logp, ids, settings.repetition_penalty)
        if cur_len < settings.min_length:
            logp[:, settings.eos_id] = -np.inf
        vocab = logp.shape[1]
        total = (logp + beam_scores.reshape(-1, 1)).reshape(len(live), k * vocab)
        cand_scores, cand = _top(total, 2 * k)
        next_scores = np.zeros((len(live), k), dtype=np.float32)
        next_tokens = np.zeros((len(live), k), dtype=np.int64)
        next_rows = np.zeros((len(live), k), dtype=np.int64)
        still: list[int] = []  # positions in ``live`` of images not done after this step
        for j, image in enumerate(live):
            beam = 0
            for rank in range(2 * k):
                row, token = j * k + int(cand[j, rank]) // vocab, int(cand[j, rank]) % vocab
                if token == settings.eos_id:
                    if rank < k:  # an eos ranked below the first k candidates is ignored
                        hyps[image].add(ids[row], float(cand_scores[j, rank]))
                else:
                    next_scores[j, beam], next_tokens[j, beam], next_rows[j, beam] = cand_scores[j, rank], token, row
                    beam += 1
                    if beam == k:
                        break
            if not hyps[image].is_done(float(cand_scores[j].max()), cur_len):
                still.append(j)
        ids = np.concatenate([ids[next_rows.reshape(-1)], next_tokens.reshape(-1, 1)], axis=1)
        beam_scores = next_scores
        if ids.shape[1] >= settings.max_length:
            for j in still:
                for b in range(k):
                    hyps[live[j]].add(ids[j * k + b], float(beam_scores[j, b]))
            break
        if not still:
            break
        keep_rows = (np.asarray(still)[:, None] * k + np.arange(k)).reshape(-1)
        decoder.reorder(next_rows.reshape(-1)[keep_rows])
        ids, beam_scores = ids[keep_rows], beam_scores[still]
        live = [live[j] for j in still]
        logits = decoder(ids[:, -1:])
    return [_with_eos(h.best(), settings) for h in hyps]


def _with_eos(ids: np.ndarray, settings: BeamSettings) -> list[int]:
    out = [int(i) for i in ids]
    return [*out, settings.eos_id] if len(out) < settings.max_length else out

