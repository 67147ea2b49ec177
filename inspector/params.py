"""The normal profile's hyper-parameters (`[profile]` in config.toml): a plain dataclass, apart from profile.py so
that loading a config (every command) does not import OpenCV and NumPy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProfileParams:
    """Hyper-parameters of the normal profile; defaults come from config.py / config.toml."""

    n_colours: int = 12
    chroma_weight: float = 2.0
    palette_balance: float = 0.0
    softness: float = 0.5
    width: int = 128
    cells_across: int = 64
    window_strides: int = 2
    n_rings: int = 4
    coarse: int = 4
    neighbours: tuple[int, ...] = (5, 10, 20)
    top_fraction: float = 0.002
    global_k: int = 5
    global_weight: float = 0.5
    global_margin: float = 3.0
    novel_quantile: float = 0.999
    false_alarm_rate: float = 0.01
    n_folds: int = 5
    pixel_samples: int = 200_000
    seed: int = 0
    rotation: str = "auto"
    max_shift: float = 0.1
    normalise_lighting: bool = True
    max_exposure_change: float = 0.2
    max_offset: float = 15.0
    max_colour_cast: float = 0.1
    fine_width: int = 320
    texture_weight: float = 1.0
    lighting_copies: int = 1
    shading: bool | str = "auto"  # true (grid), false, "smooth", or "auto": the grid where parts turn freely
    even_light: bool = False  # a flagged part is judged again with its light evened out (where no shading divides it)
