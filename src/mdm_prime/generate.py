"""Generation for a trained run, whatever its family, and writing samples where people look at them:
text to stdout and ``.txt``, images as a PNG grid and ``.npy``, the 2-D toy as a density next to
its target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

__all__ = ["generate_tokens", "write_samples"]


@torch.no_grad()
def generate_tokens(model, task, *, num: int, steps: int | None = None, seed: int = 0, condition=None,
                    temperature: float = 1.0, top_p: float = 1.0, method: str = "joint", cache: bool = True,
                    corrector_scale: float = 0.0, grid: str = "uniform", prefix: torch.Tensor | None = None):
    """``LongTensor[num, L]`` samples and a stats dict (network calls, idle steps, wall time).

    Diffusion models use :func:`mdm_prime.sampling.sample` with ``steps`` (default ``T = L``);
    the autoregressive baseline uses its key/value-cached ``generate``."""
    model.eval()
    device = next(model.parameters()).device
    if getattr(model, "family", None) == "ar":
        g = torch.Generator(device=device).manual_seed(seed)
        import time

        start = time.perf_counter()
        tokens = model.generate(num, task.seq_len, temperature=temperature, top_p=top_p, generator=g,
                                prefix=None if prefix is None else prefix.to(device))
        L = task.seq_len
        stats = {"steps": L, "network_calls_mean": float(L - (0 if prefix is None else prefix.shape[-1])),
                 "idle_steps_mean": 0.0, "wall_time_s": time.perf_counter() - start}
        return tokens.cpu(), stats
    from .sampling import prefix_condition, sample

    sub = model.subtokenizer
    if prefix is not None and condition is None:
        condition = prefix_condition(prefix.to(device), task.seq_len, sub, num_samples=num)
    res = sample(model, sub, steps=steps or task.seq_len, num_samples=None if condition is not None else num,
                 num_tokens=None if condition is not None else task.seq_len, condition=condition, method=method,
                 schedule=model.schedule, grid=grid, temperature=temperature, top_p=top_p, cache=cache,
                 corrector_scale=corrector_scale, seed=seed, device=device)
    stats = {"steps": res.steps, "network_calls_mean": float(res.network_calls.double().mean()),
             "idle_steps_mean": float(res.idle_steps.double().mean()), "idle_fraction": res.idle_fraction,
             "wall_time_s": res.wall_time}
    return res.tokens.cpu(), stats


def write_samples(tokens: torch.Tensor, task, folder: str | Path, stem: str, *, stats: dict | None = None,
                  echo: bool = False) -> list[Path]:
    """Write samples of any task kind under ``folder``; returns the written paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if stats is not None:
        p = folder / f"{stem}.stats.json"
        p.write_text(json.dumps(stats, indent=2))
        written.append(p)
    if task.kind == "text" and task.tokenizer is not None:
        texts = task.decode_text(tokens)
        p = folder / f"{stem}.txt"
        p.write_text("".join(f"=== sample {i} ===\n{t}\n" for i, t in enumerate(texts)))
        written.append(p)
        if echo:
            for i, t in enumerate(texts):
                print(f"--- sample {i} ---\n{t.strip()}")
    elif task.kind == "image":
        from .plotting import save_image_grid

        images = tokens.reshape(tokens.shape[0], *task.image_shape).numpy()
        np.save(folder / f"{stem}.npy", images)
        written += [folder / f"{stem}.npy",
                    save_image_grid(images, folder / f"{stem}.png", levels=task.num_classes)]
    elif task.kind == "toy":
        from .plotting import save_toy_density

        written.append(save_toy_density(tokens.numpy(), task.info.get("density"), task.num_classes,
                                        folder / f"{stem}.png"))
        np.save(folder / f"{stem}.npy", tokens.numpy())
        written.append(folder / f"{stem}.npy")
    else:
        p = folder / f"{stem}.txt"
        p.write_text("\n".join(" ".join(map(str, row.tolist())) for row in tokens) + "\n")
        written.append(p)
    return written
