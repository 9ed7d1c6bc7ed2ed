"""The authors' tagging procedure (PyTorch) and ramcli's engine (onnxruntime), side by side.

One process, one checkpoint, the same photos, the same number of threads. The photos go in
segments of one batch; each segment runs on every side in turn (the order rotating), so a machine
that gets busier or quieter meets all sides alike. Seconds per photo are medians over segments,
and the speed-up is the median of the per-segment ratios reference / ramcli.

* reference: the project's PyTorch conversion model (which reproduces the authors' code bit for
  bit on the golden checkpoints, tests/test_golden.py) driven as the authors' inference script
  drives it: PIL decode + torchvision ``Resize((S, S))``, ``ToTensor``, ``Normalize``, then the steps
  of ``generate_tag`` in their order, including the per-image reweighting loop with its
  (T, 51, 512) temporary, and the thresholds.
* ramcli: the pipeline's dry run (``pipeline.run.tag_run``: decoding overlapped with inference) on the installed model's
  ONNX graphs at ``--precision``.

Tags: the reference model run on ramcli's own preprocessed input must give the same tag sets as
ramcli at fp32 (``identical_tags``); at int8 the agreement is reported instead. (The authors'
decode ignores EXIF orientation, ramcli's applies it, so their *photo-level* tags can differ on
rotated photos; that is a decoding choice, not the engine's.)

Usage:
  python tests/benchmarks/speed.py --model random_ram_plus_swin_l [--photos DIR] [--count 8]
      [--batch 1] [--threads 2] [--rounds 3] [--variants fp32 int8 ov-fp32 bf16 screen-256 screen-1024]
      [--reference-ftz]

Variants (each one more side): ``fp32`` / ``int8`` (onnxruntime; int8 needs `ramcli models quantize`),
``ov-fp32`` / ``bf16`` (OpenVINO; bf16 on CPUs with AMX or AVX512-BF16), ``screen-K`` (fp32 with tag
screening at K). Each reports its speed-up over the reference and its agreement with the reference's
tags on the same input (shared, kept, gained). The CPU's name and flags are printed with the result.

Denormals: ramcli's sessions flush them to zero (engine._session), the authors' script does not,
and Swin's shifted-window mask makes many (the speed-up counts this). ``--reference-ftz`` adds the
authors' procedure with ``torch.set_flush_denormal(True)`` as one more side, so the note can say
how much of the speed-up is flushing alone.
The model's source checkpoint (meta.json) must still exist. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from full_size import photos  # this folder is on sys.path when a script here runs


def authors_transform(size: int, mean: tuple[float, ...], std: tuple[float, ...]):
    from torchvision import transforms

    return transforms.Compose([
        lambda img: img.convert("RGB"),
        transforms.Resize((size, size)),
        transforms.ToTensor(),
        transforms.Normalize(mean=mean, std=std),
    ])


def authors_generate_tag(model, image, thresholds):
    """``generate_tag`` of the authors' RAM/RAM++, step for step, on our module's weights."""
    import torch
    import torch.nn.functional as F

    cfg = model.cfg
    image_embeds = model.image_proj(model.visual_encoder(image))
    bs = image_embeds.shape[0]
    if cfg.family == "ram_plus":
        des = cfg.descriptions_per_tag
        cls = image_embeds[:, 0, :]
        cls = cls / cls.norm(dim=-1, keepdim=True)
        logits_per_image = model.reweight_scale.exp() * cls @ model.label_embed.t()
        weight_normalized = F.softmax(logits_per_image.view(bs, -1, des), dim=2)
        label_embed_reweight = torch.empty(bs, cfg.num_tags, cfg.embed_dim)
        for i in range(bs):
            reshaped_value = model.label_embed.view(-1, des, cfg.embed_dim)
            product = weight_normalized[i].unsqueeze(-1) * reshaped_value
            label_embed_reweight[i] = product.sum(dim=1)
        label_embed = F.relu(model.wordvec_proj(label_embed_reweight))
    else:
        label_embed = F.relu(model.wordvec_proj(model.label_embed)).unsqueeze(0).repeat(bs, 1, 1)
    logits = model.fc(model.tagging_head(label_embed, image_embeds)).squeeze(-1)
    return torch.sigmoid(logits) > thresholds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="an installed RAM/RAM++ model whose checkpoint is on disk")
    ap.add_argument("--photos", type=Path, default=None, help="folder of photos (default: ../shared/data/photos)")
    ap.add_argument("--count", type=int, default=8, help="photos per round (cycled from the folder)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", "--precision", nargs="+", default=["fp32"],
                    help="fp32 int8 ov-fp32 bf16 screen-K (see the module's docstring)")
    ap.add_argument("--reference-ftz", action="store_true",
                    help="also run the reference with torch.set_flush_denormal(True), to show what "
                         "flushing denormals alone gives it")
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from ramcli.models import store
    from ramcli.models.convert.checkpoint import build_model, infer_config, load_state_dict, remap_keys
    from ramcli.pipeline.run import TagOptions, tag_run
    from ramcli.pipeline.tagger import open_tagger
    from ramcli.runtime.engine import EngineOptions
    from ramcli.runtime.images import load_input

    torch.set_num_threads(args.threads)
    installed = store.get(args.model)
    if installed.family not in {"ram", "ram_plus"}:
        raise SystemExit("the side-by-side reference exists for RAM and RAM++")
    ckpt = Path(installed.meta["source"]["checkpoint"])
    state = remap_keys(load_state_dict(ckpt))
    model = build_model(state, infer_config(state, installed.num_tags, installed.preprocess.image_size)).eval()
    del state
    pre = installed.preprocess
    transform = authors_transform(pre.image_size, pre.mean, pre.std)
    thresholds = torch.from_numpy(np.asarray(installed.thresholds))
    names = installed.tag_names
    files = photos(args.photos, args.count)
    def engine_options(variant: str) -> EngineOptions:
        if variant.startswith("screen-"):
            return EngineOptions(threads=args.threads, screen=int(variant.split("-", 1)[1]))
        if variant in ("ov-fp32", "bf16"):
            return EngineOptions(threads=args.threads, backend="openvino", precision=variant.removeprefix("ov-"))
        return EngineOptions(threads=args.threads, precision=variant)

    taggers = {v: open_tagger(installed, engine_options(v), batch_size=args.batch) for v in args.variants}

    def reference(chunk: list[Path]) -> list[set[str]]:
        out = []
        with torch.inference_mode():
            for i in range(0, len(chunk), args.batch):
                x = torch.stack([transform(Image.open(p)) for p in chunk[i:i + args.batch]])
                for row in authors_generate_tag(model, x, thresholds):
                    out.append({names[j] for j in torch.nonzero(row).flatten().tolist()})
        return out

    def run(side: str, chunk: list[Path]) -> list[set[str]]:
        # The calling thread's denormal mode is shared: onnxruntime turns flushing on for it with
        # the first session, and the authors' script never does. Each side gets its own.
        torch.set_flush_denormal(side != "reference")
        return reference(chunk) if side.startswith("reference") else ours(side, chunk)

    def ours(precision: str, chunk: list[Path]) -> list[set[str]]:
        results = tag_run(chunk, taggers[precision], None, TagOptions(dry_run=True, batch_size=args.batch))
        return [{t.name for t in r.scored or []} for r in results]

    # warm-up: one batch each (lazy session loading, first-run allocations)
    warm = files[:args.batch]
    sides = ["reference", *(["reference_ftz"] if args.reference_ftz else []), *args.variants]
    for side in sides:
        run(side, warm)

    # Segments of `batch` photos; within each, every side in turn (the order rotating), so a
    # machine that gets busier or quieter meets all sides alike; the ratio is per segment.
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    tags: dict[str, list[set[str]]] = {side: [] for side in sides}
    step = args.batch
    for r in range(args.rounds):
        for k, start in enumerate(range(0, len(files), step)):
            chunk = files[start:start + step]
            for side in sides[k % len(sides):] + sides[:k % len(sides)]:
                t = time.perf_counter()
                got = run(side, chunk)
                seconds[side].append((time.perf_counter() - t) / len(chunk))
                if r == args.rounds - 1:
                    tags[side] += got
        print(f"round {r + 1}: " + ", ".join(f"{k} {statistics.median(v):.2f} s/photo" for k, v in seconds.items()),
              file=sys.stderr)

    # Same input tensors on both sides: the engine against the authors' procedure, tag for tag.
    same_input = []
    torch.set_flush_denormal(False)
    with torch.inference_mode():
        for p in files:
            x = torch.from_numpy(load_input(p, pre)[0][None])
            row = authors_generate_tag(model, x, thresholds)[0]
            same_input.append({names[j] for j in torch.nonzero(row).flatten().tolist()})
    ref_s = statistics.median(seconds["reference"])
    from ramcli.runtime.backends import cpu_signature

    report: dict[str, object] = {
        "cpu": cpu_signature(),
        "model": installed.name, "photos": len(files), "batch": args.batch, "threads": args.threads,
        "rounds": args.rounds, "reference_s_per_photo": round(ref_s, 3),
    }
    if args.reference_ftz:
        ftz = [a / b for a, b in zip(seconds["reference"], seconds["reference_ftz"], strict=True)]
        report["reference_ftz"] = {"s_per_photo": round(statistics.median(seconds["reference_ftz"]), 3),
                                   "speedup": round(statistics.median(ftz), 2)}
    for p in args.variants:
        ratios = [a / b for a, b in zip(seconds["reference"], seconds[p], strict=True)]
        shared = sum(len(a & b) for a, b in zip(same_input, tags[p], strict=True))
        either = sum(len(a | b) for a, b in zip(same_input, tags[p], strict=True))
        report[p] = {
            "s_per_photo": round(statistics.median(seconds[p]), 3),
            "speedup": round(statistics.median(ratios), 2),  # median of the per-segment ratios
            "speedup_quartiles": [round(q, 2) for q in statistics.quantiles(ratios, n=4)] if len(ratios) > 1
            else None,
            **({"speedup_vs_reference_ftz": round(statistics.median(
                [a / b for a, b in zip(seconds["reference_ftz"], seconds[p], strict=True)]), 2)}
               if args.reference_ftz else {}),
            "identical_tags": all(a == b for a, b in zip(same_input, tags[p], strict=True)),
            "tag_agreement": round(shared / either, 4) if either else 1.0,
            "reference_tags": sum(len(a) for a in same_input),
            "fired_kept": round(shared / fired, 4) if (fired := sum(len(a) for a in same_input)) else 1.0,
            "tags_gained": sum(len(b - a) for a, b in zip(same_input, tags[p], strict=True)),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
