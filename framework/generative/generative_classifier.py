"""The registered ``generative_classifier``: a trained class-conditional generator used as a classifier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import registry
from framework.core import ClasszooModule
from framework.errors import ConfigError
from framework.generative import classify
from framework.generative.base import GenerativeModule

__all__ = ["GenerativeClassifier", "NetCallCounter", "load_generator"]

MODES = ("error", "exact")
NOISES = ("shared", "independent")
PRIORS = ("uniform", "train")
#: Seed salt of the independent-noise pairs of class c: ``c + 1`` (0 is the shared set).
_INDEPENDENT = 1


class NetCallCounter:
    """Counts the rows that go through a module's forward (one row = one net evaluation of one sample).

    A forward hook on the generator: both families route every net call through the module
    (diffusion's formulation calls it as its net, flow's velocity field calls it), so the count
    is what really ran, classifier-free-guidance branches and ODE steps included.
    """

    def __init__(self, module: nn.Module) -> None:
        self.rows = 0
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        self.rows += int(inputs[0].shape[0]) if inputs and isinstance(inputs[0], Tensor) else 1

    def remove(self) -> None:
        self._handle.remove()


def load_generator(
    generator: str | GenerativeModule, model: str | None, num_classes: int, data_shape: Sequence[int], role: str = "generator"
) -> GenerativeModule:
    """A frozen class-conditional generator from its checkpoint (through ``load_trained``) or as given, checked."""
    from framework.loading import load_trained

    if isinstance(generator, nn.Module):
        if not isinstance(generator, GenerativeModule) or not generator.num_classes:
            raise ConfigError(f"{role}: a class-conditional GenerativeModule is needed, got {type(generator).__name__}")
        if generator.num_classes != num_classes or tuple(generator.data_shape) != tuple(data_shape):
            raise ConfigError(
                f"{role}: has {generator.num_classes} classes of shape {tuple(generator.data_shape)}, "
                f"the data have {num_classes} of shape {tuple(data_shape)}"
            )
        return generator.eval().requires_grad_(False)
    if not generator:
        raise ConfigError(f"{role}: give the checkpoint of a trained class-conditional generator ({role}: PATH)")
    return load_trained(generator, model, role=role, base=GenerativeModule, conditional=True,
                        num_classes=num_classes, data_shape=data_shape)


@registry.register("model", "generative_classifier", aliases=("diffusion_classifier",))
class GenerativeClassifier(ClasszooModule):
    """A trained class-conditional generator as a classifier (Li et al. 2023), for ``test`` / ``predict``.

    ``error`` mode: for each image and candidate class, the generator's conditional error
    (:meth:`~framework.generative.base.GenerativeModule.conditional_error`: the diffusion
    formulation's own training error, the flow's velocity error) averaged over (noise level,
    noise) pairs that are the same for every class; the prediction is the class of lowest error.
    Stages (``n_samples``, ``to_keep``) run the paper's adaptive evaluation: all classes on the
    first ``n_samples[0]`` pairs, the ``to_keep[0]`` best on the first ``n_samples[1]`` (reusing
    the earlier pairs), and so on. ``exact`` mode: Bayes' rule over the exact ``log p(x | c)`` of
    the generator's ``log_likelihood`` (probability-flow ODE), with a uniform prior or the
    training split's label frequencies. Scores are ``-error / T`` (error) or the log posterior
    divided by ``T`` (exact), with the temperature ``T`` fitted by NLL on the validation split
    before testing (``calibrate``). NFE per image counts real generator net evaluations.

    Test logs ``test/acc``, ``test/nfe_per_image``, ``test/ece``, ``test/nll`` and
    ``test/temperature``; predict writes ``generative_scores.npz`` (per-class errors or log
    posteriors, probabilities, predictions, labels, NFE) in the run's log dir.

    Args:
        num_classes: Number of classes; linked from the data, must be the generator's.
        data_shape: Sample shape; linked from the data, must be the generator's.
        generator: Checkpoint of a trained class-conditional generator (``diffusion``, ``flow``, ...),
            or the generator itself (notebooks; it is frozen and put in eval mode).
        generator_model: Registry name of the model that wrote it (default: recorded in the checkpoint).
        mode: ``error`` (denoising / velocity error) or ``exact`` (Bayes' rule over log p(x | c)).
        n_samples: Pairs evaluated by the end of each stage, strictly increasing (one value: full).
        to_keep: Classes kept after each stage, strictly decreasing, the first at most ``num_classes``.
        loss: Error of a residual: ``l2`` (the training loss), ``l1`` or ``huber``.
        noise: ``shared`` (the same pairs for every class: the paper's) or ``independent``
            (a separate set per class, for comparison).
        seed: Seed of the pairs (with the image's bytes: pairs depend on the image only).
        prior: Exact mode's class prior: ``uniform`` or ``train`` (the training split's label frequencies).
        likelihood_args: Options of the generator's ``log_likelihood`` in exact mode (``solver``,
            ``steps``, ``divergence``, ...).
        batch_rows: Most (image, class, pair) rows per generator call.
        calibrate: Fit the temperature on the validation split before test / predict.
        calibration_batches: Validation batches used to fit it (None: all; 1 under fast_dev_run).
        ece_bins: Confidence bins of the expected calibration error.
    """

    def __init__(
        self,
        num_classes: int = 10,
        data_shape: Sequence[int] = (1, 8, 8),
        generator: str | GenerativeModule = "",
        generator_model: str | None = None,
        mode: str = "error",
        n_samples: Sequence[int] = (20, 100),
        to_keep: Sequence[int] = (3, 1),
        loss: str = "l2",
        noise: str = "shared",
        seed: int = 0,
        prior: str = "uniform",
        likelihood_args: dict[str, Any] | None = None,
        batch_rows: int = 4096,
        calibrate: bool = True,
        calibration_batches: int | None = None,
        ece_bins: int = 15,
    ) -> None:
        super().__init__(num_classes=num_classes, data_shape=data_shape)
        if isinstance(generator, nn.Module):
            self.hparams_ignore = (*self.hparams_ignore, "generator")
        self.save_hyperparameters()
        for name, value, allowed in (("mode", mode, MODES), ("loss", loss, classify.LOSSES),
                                     ("noise", noise, NOISES), ("prior", prior, PRIORS)):
            if value not in allowed:
                raise ConfigError(f"generative_classifier: unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        if mode == "error":
            classify.check_schedule(n_samples, to_keep, num_classes)
        if batch_rows < 1:
            raise ConfigError(f"batch_rows must be >= 1, got {batch_rows}")
        self.generator: GenerativeModule = load_generator(generator, generator_model, num_classes, data_shape)
        self.mode, self.loss_name, self.noise, self.seed, self.prior = mode, loss, noise, seed, prior
        self.n_samples, self.to_keep = [int(n) for n in n_samples], [int(k) for k in to_keep]
        self.likelihood_args = dict(likelihood_args or {})
        self.batch_rows, self.calibrate = batch_rows, calibrate
        self.calibration_batches, self.ece_bins = calibration_batches, ece_bins
        #: Temperature of the scores (1 until fitted on the validation split).
        self.temperature = 1.0
        self.log_prior: Tensor | None = None
        self._outputs: list[dict[str, Tensor]] = []

    # -- scoring ---------------------------------------------------------------------------
    def _pairs(self, x: Tensor, classes: int) -> tuple[Tensor, Tensor]:
        """Levels (B, [C,] N) and noise (B, [C,] N, *shape): one set per image, or per (image, class)."""
        n = self.n_samples[-1]
        if self.noise == "shared":
            levels, noise = classify.draw_pairs(classify.image_seeds(x, self.seed), n, self.data_shape)
        else:
            rows = x.repeat_interleave(classes, 0)
            salt = [c + _INDEPENDENT for _ in range(len(x)) for c in range(classes)]
            levels, noise = classify.draw_pairs(classify.image_seeds(rows, self.seed, salt), n, self.data_shape)
            levels, noise = levels.view(len(x), classes, n), noise.view(len(x), classes, n, *self.data_shape)
        return levels.to(x.device), noise.to(x.device)

    def _errors_fn(self, x: Tensor, levels: Tensor, noise: Tensor):
        def errors(candidates: Tensor, start: int, stop: int) -> Tensor:
            b, k = candidates.shape
            p = stop - start
            img = torch.arange(b).view(b, 1, 1).expand(b, k, p).reshape(-1)
            cls = candidates.view(b, k, 1).expand(b, k, p).reshape(-1).to(x.device)
            pair = torch.arange(start, stop).view(1, 1, p).expand(b, k, p).reshape(-1)
            if self.noise == "shared":
                lv, nz = levels[img, pair], noise[img, pair]
            else:
                lv, nz = levels[img, cls.cpu(), pair], noise[img, cls.cpu(), pair]
            out = torch.empty(len(img), dtype=torch.float64)
            for i in range(0, len(img), self.batch_rows):
                j = slice(i, i + self.batch_rows)
                out[j] = self.generator.conditional_error(x[img[j]], cls[j], lv[j], nz[j], self.loss_name).double().cpu()
            return out.view(b, k, p)

        return errors

    @torch.no_grad()
    def score(self, x: Tensor) -> dict[str, Tensor]:
        """Per-class raw scores of a batch: ``errors`` (error mode) or ``log_posterior`` (exact), plus NFE.

        Returns a dict with ``logits`` (B, C) (higher is likelier, before the temperature),
        ``predictions`` (B,), ``nfe`` (B,) generator net evaluations per image, and ``errors``
        and ``counts`` (error mode) or ``log_likelihood`` (exact mode).
        """
        counter = NetCallCounter(self.generator)
        try:
            if self.mode == "error":
                levels, noise = self._pairs(x, self.num_classes)
                result = classify.adaptive_classify(
                    self._errors_fn(x, levels, noise), len(x), self.num_classes, self.n_samples, self.to_keep
                )
                out = {"logits": -result.errors, "errors": result.errors, "counts": result.counts,
                       "predictions": result.predictions}
            else:
                loglik = self._log_likelihoods(x)
                post = classify.bayes_log_posterior(loglik, self.log_prior)
                out = {"logits": post, "log_likelihood": loglik, "predictions": post.argmax(1)}
        finally:
            counter.remove()
        out["nfe"] = torch.full((len(x),), counter.rows / max(len(x), 1), dtype=torch.float64)
        return out

    def _log_likelihoods(self, x: Tensor) -> Tensor:
        if not hasattr(self.generator, "log_likelihood"):
            raise ConfigError(f"mode exact needs a generator with log_likelihood; {type(self.generator).__name__} has none")
        seeds = [s % 2**31 for s in classify.image_seeds(x, self.seed)]
        columns = []
        for c in range(self.num_classes):
            labels = torch.full((len(x),), c, dtype=torch.long, device=x.device)
            with torch.enable_grad():  # exact divergences differentiate the field
                result = self.generator.log_likelihood(x, labels, seeds=seeds, **self.likelihood_args)
            columns.append(result.logp.detach().double().cpu())
        return torch.stack(columns, 1)

    # -- calibration -------------------------------------------------------------------------
    def _datamodule(self):
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    def _prepare(self) -> None:
        """The training-split prior (exact mode) and the temperature fitted on the validation split."""
        dm = self._datamodule()
        if self.mode == "exact" and self.prior == "train":
            if dm is None:
                raise ConfigError("prior: train needs the DataModule's training labels")
            counts = torch.bincount(dm.targets("train"), minlength=self.num_classes).double()
            self.log_prior = (counts / counts.sum()).log()
        if not self.calibrate:
            return
        if dm is None:
            raise ConfigError("calibrate needs a DataModule with a validation split (or calibrate: false)")
        dm.setup("validate")
        limit = self.calibration_batches
        if limit is None and getattr(self.trainer, "fast_dev_run", False):
            limit = 1
        logits, labels = [], []
        for i, (x, y) in enumerate(dm.val_dataloader()):
            if limit is not None and i >= limit:
                break
            logits.append(self.score(x.to(self.device))["logits"])
            labels.append(y)
        if not logits:
            raise ConfigError("calibrate: the validation split is empty (set calibrate: false)")
        self.temperature = classify.fit_temperature(torch.cat(logits), torch.cat(labels))

    def probabilities(self, logits: Tensor) -> Tensor:
        """``softmax(logits / T)``."""
        return torch.softmax(logits.double() / self.temperature, dim=1)

    # -- Lightning ---------------------------------------------------------------------------
    def on_test_start(self) -> None:
        self._prepare()
        self._outputs = []

    def on_predict_start(self) -> None:
        self._prepare()
        self._outputs = []

    def _step(self, batch: Any) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        out = self.score(x)
        out["labels"] = y.cpu()
        self._outputs.append({k: v.cpu() for k, v in out.items()})
        return out

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch)

    def _collected(self) -> dict[str, Tensor]:
        merged = {k: torch.cat([o[k] for o in self._outputs]) for k in self._outputs[0]}
        if self.trainer.world_size > 1:
            gathered = self.all_gather({k: v.to(self.device) for k, v in merged.items()})
            merged = {k: v.reshape(-1, *v.shape[2:]).cpu() for k, v in gathered.items()}
        return merged

    def on_test_epoch_end(self) -> None:
        if not self._outputs:
            return
        out = self._collected()
        probs = self.probabilities(out["logits"])
        y = out["labels"]
        self.log_dict({
            "test/acc": float((out["predictions"] == y).double().mean()),
            "test/nfe_per_image": float(out["nfe"].mean()),
            "test/ece": classify.expected_calibration_error(probs, y, self.ece_bins),
            "test/nll": float(-probs.clamp_min(1e-300).log().gather(1, y[:, None]).mean()),
            "test/temperature": self.temperature,
        }, rank_zero_only=True)

    def on_predict_epoch_end(self) -> None:
        if not self._outputs:
            return
        out = self._collected()
        if self.trainer.global_rank != 0:
            return
        from framework.io import write_atomic

        arrays = {k: v.numpy() for k, v in out.items()}
        arrays["probabilities"] = self.probabilities(out["logits"]).numpy()
        arrays["temperature"] = np.array(self.temperature)
        directory = self.trainer.log_dir or self.trainer.default_root_dir
        write_atomic(f"{directory}/generative_scores.npz", lambda f: np.savez(f, **arrays))

    def configure_optimizers(self) -> Any:
        raise ConfigError("generative_classifier is not trained: run it with `lightning test` or `lightning predict`")

