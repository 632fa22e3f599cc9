"""The registered ``flow`` model: class-conditional flow matching with ODE sampling."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

import registry
from framework.errors import ConfigError
from framework.generative.base import GenerativeModule
from framework.generative.flow.paths import (
    TIME_SAMPLINGS,
    ProbabilityPath,
    build_path,
    denoised_from_velocity,
    path_noise_level,
    quantile_times,
    sample_times,
    velocity_from_denoised,
)
from framework.generative.flow.sources import build_source
from framework.generative.guidance import GuidanceInput, NetCalls, build_guidance
from framework.generative.likelihood import LikelihoodResult, log_likelihood
from framework.generative.ode import ODEResult, odesolve

__all__ = ["FlowMatching"]


# Paths whose x_t is t x1 + (1 - t) x0 with x0 ~ N(0, I): a noise-aware classifier p(y | x0 + sigma n)
# sees them at sigma = (1 - t) / t after rescaling by 1 / t (FlowTimeClassifier).
STRAIGHT_GAUSSIAN_PATHS = ("cfm", "ot_cfm", "class_ot_cfm")
# Straight Gaussian paths whose (source, data) pairs are not independent.
OT_COUPLED_PATHS = ("ot_cfm", "class_ot_cfm")

log = logging.getLogger(__name__)


def warn_inexact_classifier_guidance(path: str) -> None:
    """Warn (a Python warning and a log line) that flow classifier guidance is approximate on ``path``."""
    message = (
        f"classifier guidance with path {path!r} is approximate: FlowTimeClassifier reads x_t = t x1 + (1 - t) x0 "
        f"as x1 plus independent Gaussian noise, which holds for the independent coupling (cfm) only; an OT "
        f"coupling makes the noise depend on x1 (docs/flow.md, 'Classifier guidance and couplings')"
    )
    warnings.warn(message, UserWarning, stacklevel=3)
    log.warning(message)


@registry.register("model", "flow", aliases=("flow_matching", "cfm"))
class FlowMatching(GenerativeModule):
    """Conditional flow matching (Lipman et al. 2023; Tong et al. 2024; Liu et al. 2023).

    Training regresses a velocity net ``v(x_t, t, y)`` onto the conditional velocity of a
    registered probability path (``lightning list path``) at times drawn uniformly or
    logit-normally; sampling integrates ``dx/dt = v`` from the source (t = 0) to the data
    (t = 1) with a registered ODE solver. Labels are dropped to the null class with
    probability ``label_dropout`` so that classifier-free guidance can be used at sampling.

    Args:
        num_classes: Number of classes (0: unconditional); linked from the data by the CLI.
        data_shape: Shape of one sample; linked from the data by the CLI.
        net: Registry name of a denoiser net ``net(x, noise_level, labels)`` (``unet``,
            ``dit``, ``resmlp``), or an already built module (notebooks).
        net_args: Keyword arguments of the net.
        path: Registry name of the probability path: ``cfm``, ``ot_cfm``, ``class_ot_cfm``,
            ``target_cfm``, ``vp_path``, ``sb_cfm``.
        path_args: Keyword arguments of the path (``sigma``, ``resample``, ...).
        source: Source distribution: ``gaussian`` (N(0, I)) or a toy 2-D distribution name
            (``8gaussians``, ``moons``, ...) for source-to-target transport.
        source_args: Keyword arguments of the toy source (e.g. its ``scale``).
        time_sampling: Training times, ``uniform`` or ``logit_normal``.
        time_mean: Mean of the logit-normal's normal.
        time_std: Standard deviation of the logit-normal's normal.
        label_dropout: Probability of replacing a label by the null class in training (1: an
            unconditional generator in the null class, to be steered by a classifier: `elucd`).
        solver: Default ODE solver of :meth:`generate` (``euler``, ``midpoint``, ``heun``,
            ``rk4``, ``dopri5``).
        steps: Default number of solver steps.
        grid: Default time grid, ``uniform`` or ``edm``.
        rtol: Relative tolerance of ``dopri5``.
        atol: Absolute tolerance of ``dopri5``.
        guidance: Default guidance rule (``cfg``, ``classifier``, ``cfg+classifier``) or None.
        guidance_scale: Default guidance scale (cfg: 1 = conditional).
        optimizer: Optimizer factory.
        scheduler: Optional learning-rate scheduler factory, stepped every optimizer step
            (e.g. ``LinearLR`` as torchcfm's warmup).
        init_checkpoint: Optional checkpoint of a ``flow`` model whose net weights initialise
            this one (reflow starts the 2-rectified flow from the 1-rectified one).
        guidance_classifier: Checkpoint of a ``noisy_classifier`` (``recipes/noisy_classifier_digits.yaml``)
            for classifier guidance, seen in flow time (``x_t = t x1 + (1 - t) x0``): straight
            paths from the Gaussian source only.
        clean_classifier: Checkpoint of a registered ``classifier`` of clean data for the
            ``elucd`` and ``gfcg`` guidance rules and the ``classifier`` verifier (docs/guidance.md).
    """

    def __init__(
        self,
        num_classes: int = 10,
        data_shape: Sequence[int] = (1, 8, 8),
        net: str | nn.Module = "unet",
        net_args: dict[str, Any] | None = None,
        path: str = "cfm",
        path_args: dict[str, Any] | None = None,
        source: str = "gaussian",
        source_args: dict[str, Any] | None = None,
        time_sampling: str = "uniform",
        time_mean: float = 0.0,
        time_std: float = 1.0,
        label_dropout: float = 0.1,
        solver: str = "euler",
        steps: int = 20,
        grid: str = "uniform",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        guidance: str | None = None,
        guidance_scale: float = 1.0,
        optimizer: OptimizerCallable = lambda p: torch.optim.Adam(p, lr=2e-4),
        scheduler: LRSchedulerCallable | None = None,
        init_checkpoint: str | None = None,
        guidance_classifier: str | None = None,
        clean_classifier: str | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes, data_shape=data_shape)
        if isinstance(net, nn.Module):
            self.hparams_ignore = (*self.hparams_ignore, "net")
        self.save_hyperparameters()
        if time_sampling not in TIME_SAMPLINGS:
            raise ConfigError(f"unknown time sampling {time_sampling!r}; choose one of {', '.join(TIME_SAMPLINGS)}")
        if not 0 <= label_dropout <= 1:
            raise ConfigError(f"label_dropout must be in [0, 1] (1: unconditional training, every label dropped), got {label_dropout}")
        if isinstance(net, nn.Module):
            self.net = net
        else:
            self.net = registry.create(
                "net", net, data_shape=self.data_shape, num_classes=self.num_classes, **(net_args or {})
            )
        if init_checkpoint:
            self._load_net(init_checkpoint)
        self.path = build_path(path, **(path_args or {}))
        self.source = build_source(source, self.data_shape, **(source_args or {}))
        if self.path.gaussian_source and source != "gaussian":
            raise ConfigError(f"path {path!r} needs the Gaussian source, not {source!r}")
        self.time_sampling, self.time_mean, self.time_std = time_sampling, time_mean, time_std
        self.label_dropout = label_dropout if num_classes > 0 else 0.0
        self.sample_defaults = {"solver": solver, "steps": steps, "grid": grid, "rtol": rtol, "atol": atol}
        self.guidance, self.guidance_scale = guidance, guidance_scale
        self.optimizer, self.scheduler = optimizer, scheduler
        #: Noise-aware classifier ``(x_t, t) -> logits`` used by classifier guidance.
        self.guidance_classifier: nn.Module | None = None
        if guidance_classifier:
            if path not in STRAIGHT_GAUSSIAN_PATHS or source != "gaussian":
                raise ConfigError(
                    f"guidance_classifier needs a straight path from the Gaussian source "
                    f"({', '.join(STRAIGHT_GAUSSIAN_PATHS)}), not path {path!r} with source {source!r}"
                )
            from framework.generative.diffusion.model import load_noisy_classifier
            from framework.generative.diffusion.noisy_classifier import FlowTimeClassifier

            self.guidance_classifier = FlowTimeClassifier(load_noisy_classifier(guidance_classifier))
            if path in OT_COUPLED_PATHS:
                warn_inexact_classifier_guidance(path)
        if clean_classifier:
            self.set_clean_classifier(clean_classifier)
        #: NFE of the last :meth:`generate` call (net evaluations, guidance branches included).
        self.last_nfe = 0

    def _load_net(self, checkpoint: str) -> None:
        from framework.errors import DataNotFoundError
        from framework.loading import read_checkpoint, resolve_checkpoint

        checkpoint = resolve_checkpoint(checkpoint, "init_checkpoint")
        if not os.path.isfile(checkpoint):
            raise DataNotFoundError(f"init_checkpoint not found: {checkpoint}")
        state = read_checkpoint(checkpoint, "init_checkpoint")["state_dict"]
        net_state = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
        try:
            self.net.load_state_dict(net_state)
        except RuntimeError as err:
            raise ConfigError(f"init_checkpoint {checkpoint} does not fit this net: {str(err).splitlines()[0]}") from None

    # -- the velocity field ------------------------------------------------------------------
    @property
    def null_label(self) -> int:
        """The label value meaning "no class" (classifier-free guidance's unconditional branch)."""
        return self.num_classes

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """The learned velocity ``v(x, t, labels)``; ``t`` is (B,) or a scalar."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        if labels is not None and self.label_dropout == 1:
            labels = torch.full_like(labels, self.null_label)  # trained with every label dropped
        return self.net(x, t, labels if self.num_classes > 0 else None)

    def velocity_field(
        self,
        labels: Tensor | None,
        guidance: str | None = None,
        guidance_scale: float | None = None,
        guidance_args: dict[str, Any] | None = None,
    ):
        """``f(t, x)`` for the ODE solvers: the (guided) velocity for fixed ``labels``."""
        rule = build_guidance(guidance, guidance_scale, **(guidance_args or {})) if guidance is not None else None
        if rule is not None and rule.conditional and (self.num_classes == 0 or self.label_dropout == 1):
            raise ConfigError(f"guidance {guidance!r} needs a class-conditional model (num_classes > 0, label_dropout < 1)")

        calls = NetCalls()

        def f(t: Tensor, x: Tensor) -> Tensor:
            # Guidance may batch both branches (2B rows): forward broadcasts the scalar t.
            net = calls.counting(lambda xx, yy: self(xx, t, yy), len(x))
            if rule is None:
                return net(x, labels)
            tb = t.expand(x.shape[0])
            # The score coefficient blows up at t = 0 (pure noise): guide from t = 0.01.
            tg = tb.clamp_min(0.01)
            a = self.path.coefficients(tg)[0]
            inp = GuidanceInput(
                x=x,
                labels=labels,
                null_label=self.null_label,
                classifier=self.counted_guidance_classifier,  # counted in classifier_calls
                noise_level=tb,
                score_coef=self.path.score_coefficient(tg),
                clean_classifier=self.clean_classifier,
                denoise=lambda v, at=x: denoised_from_velocity(self.path, at, v, tg),
                undenoise=lambda x1: velocity_from_denoised(self.path, x, x1, tg),
                data_range=self.data_range,
                sigma=path_noise_level(self.path, tg),
                hat_scale=a,
            )
            return rule(net, inp)

        f.calls = calls  # the NFE: net evaluations per sample (NetCalls)
        return f

    # -- training ------------------------------------------------------------------------------
    def loss(self, x1: Tensor, labels: Tensor | None, x0: Tensor | None = None) -> Tensor:
        """Flow-matching loss on a data batch: mean squared error to the conditional velocity.

        ``x0`` given (reflow pairs) fixes the coupling; otherwise it is drawn from the source.
        """
        if x0 is None:
            x0 = self.source.sample(len(x1), device=x1.device, dtype=x1.dtype)
        elif type(self.path).couple is not ProbabilityPath.couple:
            raise ConfigError(f"the batch brings its own (source, data) pairs; path {self.hparams.path!r} would re-pair them")
        t = sample_times(len(x1), self.time_sampling, self.time_mean, self.time_std, device=x1.device, dtype=x1.dtype)
        s = self.path.sample(x0, x1, t, labels=labels if self.num_classes > 0 else None)
        y = s.labels
        if y is not None and self.label_dropout > 0:
            drop = torch.rand(len(y), device=y.device) < self.label_dropout
            y = torch.where(drop, torch.full_like(y, self.null_label), y)
        return F.mse_loss(self(s.xt, s.t, y), s.ut)

    def conditional_residual(self, x: Tensor, labels: Tensor, levels: Tensor, noise: Tensor) -> Tensor:
        """``v(x_t, t, y) - u_t`` at training times ``t`` of quantiles ``levels``, source draw ``x0 = noise``.

        No coupling (each row keeps its own (x0, x)) and no label dropout. The point is the path's
        mean at t plus its std times its own noise where the path defines it by x0 (``target_cfm``);
        paths with extra noise (``sigma > 0``) are evaluated on their mean path (that noise set to 0).
        """
        if self.source.name != "gaussian":
            raise ConfigError(f"the conditional error needs the Gaussian source, not {self.source.name!r}")
        t = quantile_times(levels.to(x.dtype), self.time_sampling, self.time_mean, self.time_std)
        x0 = noise.to(x.dtype)
        xt, ut = self.path.conditional_point(x0, x, t)
        return self(xt, t, labels if self.num_classes > 0 else None) - ut

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        # (x, y), or (x, y, x0) when the data fixes the source samples (reflow pairs).
        x, y, *x0 = batch
        loss = self.loss(x, y, *x0)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        x, y, *x0 = batch
        # Fixed noise and times so that validation losses of different epochs compare.
        with _fork_rng(batch_idx):
            loss = self.loss(x, y, *x0)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(x), sync_dist=True)

    def configure_optimizers(self) -> Any:
        from framework.models.classifier import configure_optimizer

        return configure_optimizer(self.parameters(), self.optimizer, self.scheduler, interval="step")

    # -- sampling --------------------------------------------------------------------------------
    def solve(
        self,
        x0: Tensor,
        labels: Tensor | None,
        solver: str | None = None,
        steps: int | None = None,
        grid: str | None = None,
        guidance: str | None = None,
        guidance_scale: float | None = None,
        t_start: float = 0.0,
        t_end: float = 1.0,
        return_trajectory: bool = False,
        guidance_args: dict[str, Any] | None = None,
    ) -> ODEResult:
        """Carry ``x0`` from ``t_start`` to ``t_end`` along the learned flow; NFE counts net calls."""
        opts = self.sample_defaults
        guidance = self.guidance if guidance is None else (None if guidance == "none" else guidance)
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        f = self.velocity_field(labels, guidance, scale, guidance_args)
        calls = self.classifier_calls
        result = odesolve(
            f,
            x0,
            solver=solver or opts["solver"],
            steps=steps or opts["steps"],
            grid=grid or opts["grid"],
            t_start=t_start,
            t_end=t_end,
            rtol=opts["rtol"],
            atol=opts["atol"],
            return_trajectory=return_trajectory,
        )
        result.nfe = f.calls.count
        self.last_nfe = result.nfe
        self.last_classifier_evaluations = self.classifier_calls - calls
        return result

    @torch.no_grad()
    def generate(
        self,
        labels: Tensor,
        seeds: Tensor | Sequence[int],
        solver: str | None = None,
        steps: int | None = None,
        grid: str | None = None,
        guidance: str | None = None,
        guidance_scale: float | None = None,
        sampler: str | None = None,
        guidance_args: dict[str, Any] | None = None,
        search: str | None = None,
        search_args: dict[str, Any] | None = None,
        verifier: str = "classifier",
    ) -> Tensor:
        """Samples for ``labels``: source draws from ``seeds`` carried to t = 1 by the ODE.

        Args:
            labels: (B,) int64 classes.
            seeds: One seed per sample; sample i depends only on ``seeds[i]`` and ``labels[i]``.
            solver: ODE solver (default: the model's ``solver``).
            steps: Solver steps (default: the model's ``steps``).
            grid: Time grid (default: the model's ``grid``).
            guidance: Guidance rule (``cfg``, ``classifier``, ``cfg+classifier``, ``none``).
            guidance_scale: Its scale.
            sampler: Another name for ``solver`` (``lightning sample --sampler`` is shared with diffusion).
            guidance_args: Further arguments of the guidance rule (``elucd``: ``tau1``, ``tau2``, ...).
            search: Inference-time search (``random``, ``zero_order``, ``paths``) keeping the
                candidate the verifier scores best (docs/guidance.md; Gaussian source).
            search_args: Its arguments (``n``, ``rounds``, ``threshold``, ``m``, ``sigma_start``, ...).
            verifier: Registered verifier of the search (``classifier``: the ``clean_classifier``).

        Returns:
            Samples shaped (B, *data_shape); ``self.last_nfe`` holds the NFE used.
        """
        if solver is not None and sampler is not None and solver != sampler:
            raise ConfigError(f"solver {solver!r} and sampler {sampler!r} disagree; give one of them")
        solver = solver or sampler
        labels = labels.to(self.device)  # an unconditional net ignores them; a clean classifier reads them
        if search is not None:
            from framework.generative.search import search_generate

            path = FlowTrajectory(self, solver, steps, grid, guidance, guidance_scale, guidance_args)
            return search_generate(self, path, labels, seeds, search, search_args, verifier).to(self.dtype)
        x0 = self.source.sample_seeded(seeds, device=self.device, dtype=self.dtype)
        return self.solve(x0, labels, solver, steps, grid, guidance, guidance_scale, guidance_args=guidance_args).x

    def log_likelihood(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        divergence: str = "exact",
        solver: str = "dopri5",
        steps: int = 100,
        probe: str = "rademacher",
        generator: torch.Generator | None = None,
        seeds: Tensor | Sequence[int] | None = None,
    ) -> LikelihoodResult:
        """``log p(x | labels)`` in nats under the learned flow (needs the Gaussian source).

        Args:
            x: Data (dequantise images first: :func:`framework.generative.likelihood.dequantize`).
            labels: Classes of ``x`` (None for an unconditional model).
            divergence: ``exact`` (small dimensions) or ``hutchinson``.
            solver: ODE solver (``dopri5`` with rtol/atol 1e-5 by default).
            steps: Steps of a fixed-step solver.
            probe: Hutchinson probe distribution, ``rademacher`` or ``gaussian``.
            generator: Generator that draws the per-sample probe seeds when ``seeds`` is None.
            seeds: One probe seed per sample, so a sample's estimate does not depend on its
                batch (see :func:`framework.generative.likelihood.log_likelihood`).
        """
        if self.source.name != "gaussian":
            raise ConfigError("the likelihood needs the Gaussian source (a toy source has no density here)")
        labels = labels.to(x.device) if labels is not None and self.num_classes > 0 else None
        return log_likelihood(
            self.velocity_field(labels), x, t_data=1.0, t_noise=0.0, divergence=divergence,
            probe=probe, generator=generator, seeds=seeds, solver=solver, steps=steps,
        )


def flow_time_of_level(path: ProbabilityPath, level: float) -> float:
    """The flow time ``t`` whose noise level ``b_t / a_t`` is ``level / (1 - level)`` (search's shared level)."""
    if level >= 1:
        return 0.0
    if level <= 0:
        return 1.0
    target, lo, hi = level / (1 - level), 0.0, 1.0
    for _ in range(60):  # b/a decreases from +inf (t = 0) to 0 (t = 1): bisection
        mid = (lo + hi) / 2
        if float(path_noise_level(path, torch.tensor(mid, dtype=torch.float64))) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class FlowTrajectory:
    """A flow's ODE path on search's shared level (``t`` with ``b_t / a_t = level / (1 - level)``; cfm: ``t = 1 - level``).

    Segments integrate the ODE between the two times with the solver's steps in proportion;
    forward noising is exact in ``x_hat = x_t / a_t = x1 + sigma n``. Needs the Gaussian source.
    """

    def __init__(self, model, solver, steps, grid, guidance, scale, guidance_args) -> None:
        if model.source.name != "gaussian":
            raise ConfigError("inference-time search needs the Gaussian source (its noises are searched)")
        self.model, self.solver, self.grid = model, solver, grid
        self.steps = int(steps or model.sample_defaults["steps"])
        self.guidance, self.scale, self.guidance_args = guidance, scale, guidance_args
        self.shape = tuple(model.data_shape)
        self.rows_nfe = self.rows_classifier = 0.0

    def start(self, z: Tensor) -> Tensor:
        return z.to(self.model.device, self.model.dtype)

    def run(self, x: Tensor, labels: Tensor, seeds: Tensor, level_from: float, level_to: float) -> Tensor:
        t0, t1 = flow_time_of_level(self.model.path, level_from), flow_time_of_level(self.model.path, level_to)
        steps = max(1, round(self.steps * (t1 - t0)))
        m = self.model
        result = m.solve(x, labels, self.solver, steps, self.grid, self.guidance, self.scale, t_start=t0, t_end=t1,
                         guidance_args=self.guidance_args)  # fmt: skip
        self.rows_nfe += result.nfe * len(x)
        self.rows_classifier += m.last_classifier_evaluations * len(x)
        return result.x

    def denoised(self, x: Tensor, labels: Tensor, level: float) -> Tensor:
        m = self.model
        t = torch.tensor(flow_time_of_level(m.path, level), dtype=x.dtype, device=x.device)
        guidance = m.guidance if self.guidance is None else (None if self.guidance == "none" else self.guidance)
        f = m.velocity_field(labels, guidance, m.guidance_scale if self.scale is None else self.scale, self.guidance_args)
        calls = m.classifier_calls
        out = denoised_from_velocity(m.path, x, f(t, x), t.clamp_min(1e-4))
        self.rows_nfe += f.calls.count * len(x)
        self.rows_classifier += (m.classifier_calls - calls) * len(x)
        return out

    sigma_max = 80.0

    def branches(self, x_hat: Tensor, labels: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        m = self.model
        if m.num_classes == 0 or m.label_dropout in (0, 1):
            raise ConfigError("fkc needs a class-conditional model trained with label dropout (0 < label_dropout < 1)")
        t = torch.tensor(flow_time_of_level(m.path, sigma / (1 + sigma)), dtype=x_hat.dtype, device=x_hat.device)
        a = float(m.path.coefficients(t)[0])
        x_t = a * x_hat  # velocity -> denoised estimate -> score of x_hat (path coefficients)
        null = torch.full_like(labels, m.null_label)
        v = m(torch.cat([x_t, x_t]), t, torch.cat([null, labels]))
        self.rows_nfe += 2 * len(x_hat)
        return denoised_from_velocity(m.path, torch.cat([x_t, x_t]), v, t).chunk(2)

    def renoise(self, x: Tensor, level_from: float, level_to: float, noise: Tensor) -> Tensor:
        p = self.model.path
        t0, t1 = (torch.tensor(flow_time_of_level(p, v), dtype=torch.float64) for v in (level_from, level_to))
        a0, a1 = p.coefficients(t0)[0], p.coefficients(t1)[0]
        s0, s1 = path_noise_level(p, t0), path_noise_level(p, t1)
        x_hat = x / float(a0) + float((s1**2 - s0**2).clamp_min(0).sqrt()) * noise
        return float(a1) * x_hat


@contextmanager
def _fork_rng(seed: int) -> Iterator[None]:
    """Run a block with torch's and NumPy's global RNGs seeded, then restore them."""
    np_state = np.random.get_state()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
