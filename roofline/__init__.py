"""Roofline package: ceilings (peak bandwidth/compute, measured profiles), the model (where a record sits) and
figures. ``python -m roofline plot RESULTS... -o FIGS`` redraws figures from stored records on any machine.

Public API (the runner calls these):
    ceilings: nvml_peak_bandwidth, theoretical_peak, Profile, theoretical_profile, measure_profile, get_profile,
              load_profile, known_profile
    model:    intensity, attainable, ridge, ridges, annotate, predicted_floor_ms
    plot:     draw_all, roofline_figure, throughput_figure, ladder_figure, save   (import roofline.plot: matplotlib)
"""

from roofline.ceilings import (
    Profile,
    get_profile,
    known_profile,
    load_profile,
    measure_profile,
    nvml_peak_bandwidth,
    theoretical_peak,
    theoretical_profile,
)
from roofline.model import annotate, attainable, intensity, predicted_floor_ms, ridge, ridges

__all__ = [
    "Profile", "annotate", "attainable", "get_profile", "intensity", "known_profile", "load_profile",
    "measure_profile", "nvml_peak_bandwidth", "predicted_floor_ms", "ridge", "ridges", "theoretical_peak",
    "theoretical_profile",
]
