"""Metrics of generated samples: Fréchet distance, feature extractors (kind ``feature``), FID/KID, memorisation."""

from framework.metrics.features import ClassifierFeatures, FrozenExtractor, InceptionFeatures
from framework.metrics.frechet import (
    frechet_distance,
    frechet_distance_of_features,
    frechet_distance_of_subsets,
    gaussian_statistics,
)
from framework.metrics.generation import build_extractor, extract, fid_metric, kid_metric
from framework.metrics.memorization import memorization_check, nearest_distances

__all__ = [
    "ClassifierFeatures",
    "FrozenExtractor",
    "InceptionFeatures",
    "build_extractor",
    "extract",
    "fid_metric",
    "frechet_distance",
    "frechet_distance_of_features",
    "frechet_distance_of_subsets",
    "gaussian_statistics",
    "kid_metric",
    "memorization_check",
    "nearest_distances",
]
