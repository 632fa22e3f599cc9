"""The registered ``diffusion`` model: score-based diffusion with any formulation and sampler."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

import registry
from framework.errors import ConfigError, DataNotFoundError
from framework.generative.base import GenerativeModule
from framework.generative.diffusion.augment import EDM_CIFAR10, AugmentPipe
from framework.generative.diffusion.formulations import Formulation
from framework.generative.diffusion.samplers import (
    Denoiser,
    SampleResult,
    pf_velocity,
    sample,
)
from framework.generative.guidance import Guidance, GuidanceInput, NetCalls, build_guidance
from framework.generative.noise import PerSampleNoise, seeded_randn

__all__ = ["Diffusion"]


@registry.register("model", "diffusion", aliases=("score_sde", "edm"))
class Diffusion(GenerativeModule):
    """Score-based diffusion (Song et al. 2021; Karras et al. 2022), class-conditional.

    Training minimises the formulation's denoising loss (score matching for ``vp``,
    ``subvp``, ``ve``; EDM's preconditioned loss for ``edm``); labels are replaced by the
    null class ``num_classes`` with probability ``label_dropout`` so that classifier-free
    guidance works. With ``augment_p > 0`` the training images go through EDM's non-leaking
    augmentation pipeline (:mod:`framework.generative.diffusion.augment`) and the net is
    conditioned on the augment labels; sampling gives it none (no augmentation). Sampling
    runs any registered sampler on the denoiser ``D(x, sigma, y)`` (``lightning list
    sampler``); every sample's initial and per-step noise comes from its own seed.

    Args:
        num_classes: Number of classes (0: unconditional); linked from the data by the CLI.
        data_shape: Shape of one sample; linked from the data by the CLI.
        net: Registry name of a denoiser net (``unet``, ``dit``, ``resmlp``) or a module.
        net_args: Keyword arguments of the net.
        formulation: ``vp``, ``subvp``, ``ve`` or ``edm`` (``lightning list formulation``).
        formulation_args: Its arguments (``beta_min``, ``sigma_max``, ``sigma_data``, ...).
        likelihood_weighting: score_sde's likelihood weighting of the SDE losses.
        label_dropout: Probability of training a sample with the null label (1: an unconditional
            generator in the null class, to be steered by a classifier: `elucd` with `unconditional`).
        augment_p: Probability multiplier of EDM's augmentations (0: off; EDM CIFAR-10: 0.12).
            The net (``unet``, ``song_unet`` or ``dit``) gets ``augment_dim`` set to the labels' width.
        augment_args: Overrides of EDM CIFAR-10's multipliers (``xflip`` 1e8, ``yflip``,
            ``scale``, ``rotate_frac``, ``aniso``, ``translate_frac`` 1; also ``rotate_int``,
            ``translate_int``) and ranges (``scale_std`` 0.2, ...); see ``AugmentPipe``.
        grad_nan_to_num: Replace NaN / +-inf gradients by 0 / +-1e5 before each optimizer
            step, as EDM's training loop does (its CIFAR-10 recipe has it on).
        sampler: Default sampler (``edm_heun``, ``dpmpp_2m``, ``ddim``, ``pc``, ``pf_ode``, ...).
        steps: Default number of noise levels (EDM Heun: 18 steps = 35 NFE).
        schedule: Noise levels: ``karras``, ``time`` or ``vp`` (DDPM's grid) (default: the formulation's own).
        sampler_args: Default options of the sampler (``eta``, ``churn``, ``snr``, ``solver``, ...).
        guidance: Default guidance rule (``cfg``, ``classifier``, ``cfg+classifier``) or None.
        guidance_scale: Default guidance scale (cfg: 1 = conditional, 0 = unconditional).
        classifier_scale: Classifier scale of the ``cfg+classifier`` combination.
        guidance_classifier: Checkpoint of a ``noisy_classifier`` for classifier guidance.
        clean_classifier: Checkpoint of a registered ``classifier`` of clean data for the
            ``elucd`` and ``gfcg`` guidance rules and the ``classifier`` verifier (docs/guidance.md).
        optimizer: Optimizer factory.
        scheduler: Optional learning-rate scheduler factory, stepped every optimizer step.
    """

    def __init__(
        self,
        num_classes: int = 10,
        data_shape: Sequence[int] = (1, 8, 8),
        net: str | nn.Module = "unet",
        net_args: dict[str, Any] | None = None,
        formulation: str = "edm",
        formulation_args: dict[str, Any] | None = None,
        likelihood_weighting: bool = False,
        label_dropout: float = 0.1,
        augment_p: float = 0.0,
        augment_args: dict[str, Any] | None = None,
        grad_nan_to_num: bool = False,
        sampler: str = "edm_heun",
        steps: int = 18,
        schedule: str | None = None,
        sampler_args: dict[str, Any] | None = None,
        guidance: str | None = None,
        guidance_scale: float = 1.0,
        classifier_scale: float = 1.0,
        guidance_classifier: str | None = None,
        clean_classifier: str | None = None,
        optimizer: OptimizerCallable = lambda p: torch.optim.Adam(p, lr=1e-3),
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes, data_shape=data_shape)
        if isinstance(net, nn.Module):
            self.hparams_ignore = (*self.hparams_ignore, "net")
        self.save_hyperparameters()
        if not 0 <= label_dropout <= 1:
            raise ConfigError(f"label_dropout must be in [0, 1] (1: unconditional training, every label dropped), got {label_dropout}")
        #: EDM's augmentation pipeline applied to training batches (None: off).
        self.augment_pipe = build_augment_pipe(augment_p, augment_args)
        augment_dim = self.augment_pipe.label_dim if self.augment_pipe is not None else 0
        if isinstance(net, nn.Module):
            if augment_dim and getattr(net, "augment_dim", 0) != augment_dim:
                raise ConfigError(f"augment_p > 0 needs a net built with augment_dim={augment_dim}")
            self.net = net
        else:
            net_args = dict(net_args or {})
            if augment_dim:
                if "augment_dim" not in inspect.signature(registry.get("net", net)).parameters:
                    raise ConfigError(f"net {net!r} takes no augment labels; augment_p > 0 needs unet, song_unet or dit")
                if net_args.setdefault("augment_dim", augment_dim) != augment_dim:
                    raise ConfigError(f"net_args.augment_dim {net_args['augment_dim']} != the augment labels' width {augment_dim}")
            self.net = registry.create("net", net, data_shape=self.data_shape, num_classes=self.num_classes, **net_args)
        try:
            self.formulation: Formulation = registry.create("formulation", formulation, **(formulation_args or {}))
        except TypeError as err:
            raise ConfigError(f"formulation {formulation!r}: {err}") from None
        registry.entry("sampler", sampler)  # an unknown default sampler fails at construction
        self.likelihood_weighting = likelihood_weighting
        self.grad_nan_to_num = grad_nan_to_num
        self.label_dropout = label_dropout if self.num_classes > 0 else 0.0
        self.sample_defaults = {"sampler": sampler, "steps": steps, "schedule": schedule, **(sampler_args or {})}
        self.guidance, self.guidance_scale, self.classifier_scale = guidance, guidance_scale, classifier_scale
        self.optimizer, self.scheduler = optimizer, scheduler
        #: Noise-aware classifier ``(x_hat, sigma) -> logits`` used by classifier guidance.
        self.guidance_classifier: nn.Module | None = None
        if guidance_classifier:
            self.guidance_classifier = load_noisy_classifier(guidance_classifier)
        if clean_classifier:
            self.set_clean_classifier(clean_classifier)
        #: NFE of the last :meth:`generate` call (net evaluations, guidance branches included).
        self.last_nfe = 0

    @property
    def null_label(self) -> int:
        """The label meaning "no class" (classifier-free guidance's unconditional branch)."""
        return self.num_classes

    # -- the net and the denoiser ---------------------------------------------------------
    def forward(
        self, x: Tensor, noise_level: Tensor, labels: Tensor | None = None, augment_labels: Tensor | None = None
    ) -> Tensor:
        """The raw net ``F(x, noise_level, labels[, augment_labels])`` in the net's dtype; returns ``x``'s dtype."""
        dtype = next(self.net.parameters()).dtype
        extra = {} if augment_labels is None else {"augment_labels": augment_labels.to(dtype)}
        if labels is not None and self.label_dropout == 1:
            labels = torch.full_like(labels, self.null_label)  # trained with every label dropped
        out = self.net(x.to(dtype), noise_level.to(dtype), labels if self.num_classes > 0 else None, **extra)
        return out.to(x.dtype)

    def denoise(self, x: Tensor, sigma: Tensor, labels: Tensor | None = None) -> Tensor:
        """``D(x_hat, sigma, labels) ~ E[x_0 | x_hat]`` (sigma a (B,) tensor)."""
        return self.formulation.denoise(self, x, sigma, labels)

    def denoiser(
        self,
        labels: Tensor | None,
        guidance: str | Guidance | None = None,
        guidance_scale: float | None = None,
        guidance_args: dict[str, Any] | None = None,
    ) -> Denoiser:
        """The counting (and guided) denoiser the samplers run on, for fixed ``labels``."""
        rule = None
        if guidance is not None and guidance != "none":
            combined = isinstance(guidance, str) and registry.entry("guidance", guidance).name == "cfg+classifier"
            extra = {"classifier_scale": self.classifier_scale} if combined else {}
            rule = build_guidance(guidance, guidance_scale, **extra, **(guidance_args or {}))
            if rule.conditional and (self.num_classes == 0 or self.label_dropout == 1):
                raise ConfigError(f"guidance {guidance!r} needs a class-conditional model (num_classes > 0, label_dropout < 1)")

        calls = NetCalls()

        def fn(x: Tensor, sigma: Tensor) -> Tensor:
            # Guidance may batch both branches (2B rows): repeat sigma to the rows asked.
            net = calls.counting(lambda xx, yy: self.denoise(xx, sigma.repeat(len(xx) // len(sigma)), yy), len(x))
            if rule is None:
                return net(x, labels)
            inp = GuidanceInput(
                x=x,
                labels=labels,
                null_label=self.null_label,
                classifier=self.counted_guidance_classifier,  # counted in classifier_calls
                noise_level=sigma,
                score_coef=sigma**2,  # D = x + sigma^2 score, so D moves by sigma^2 grad log p(y|x)
                clean_classifier=self.clean_classifier,
                denoise=lambda d, at=None: d,  # the prediction is the denoised estimate
                undenoise=lambda d: d,
                data_range=self.data_range,
                sigma=sigma,
            )
            return rule(net, inp)

        return Denoiser(fn, self.formulation, calls)

    # -- training ---------------------------------------------------------------------------
    def loss(self, x0: Tensor, labels: Tensor | None, augment: bool = True) -> Tensor:
        """The formulation's denoising loss on a batch, labels dropped to the null class at random.

        With the augmentation pipeline on (and ``augment``), the denoiser learns to restore the
        augmented images, told how they were augmented (EDM's ``loss.py``).
        """
        y = labels if self.num_classes > 0 else None
        if y is not None and self.label_dropout > 0:
            drop = torch.rand(len(y), device=y.device) < self.label_dropout
            y = torch.where(drop, torch.full_like(y, self.null_label), y)
        net: Any = self
        if augment and self.augment_pipe is not None:
            with torch.autocast(x0.device.type, enabled=False):  # resampling in float32, as EDM
                x0, augment_labels = self.augment_pipe(x0.float())
            net = functools.partial(self, augment_labels=augment_labels)
        return self.formulation.loss(net, x0, y, self.likelihood_weighting).mean()

    def conditional_residual(self, x: Tensor, labels: Tensor, levels: Tensor, noise: Tensor) -> Tensor:
        """The formulation's training residual at times ``train_times(levels)`` (no label dropout, no augmentation).

        vp / subvp / ve: ``eps_hat - noise`` (Li et al. 2023's epsilon error; times ``g / std``
        under likelihood weighting); edm: ``sqrt(lambda(sigma)) (D - x)`` at EDM's log-normal
        ``sigma``, i.e. the loss each was trained on, at the level distribution it was trained on.
        """
        t = self.formulation.train_times(levels.to(x.dtype))
        y = labels if self.num_classes > 0 else None
        return self.formulation.residual(self, x, y, t, noise.to(x.dtype), self.likelihood_weighting)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        loss = self.loss(x, y)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        # The same noise every epoch, so that validation losses compare across epochs.
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(batch_idx)
            loss = self.loss(x, y, augment=False)  # the task sampling solves: un-augmented images
        self.log("val/loss", loss, prog_bar=True, batch_size=len(x), sync_dist=True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.grad_nan_to_num:
            replace_nonfinite_gradients(self.parameters())

    def configure_optimizers(self) -> Any:
        from framework.models.classifier import configure_optimizer

        return configure_optimizer(self.parameters(), self.optimizer, self.scheduler, interval="step")

    # -- sampling ---------------------------------------------------------------------------
    def sample_from(
        self,
        x: Tensor,
        labels: Tensor | None,
        sigmas: Tensor,
        noise=None,
        sampler: str | None = None,
        guidance: str | None = None,
        guidance_scale: float | None = None,
        guidance_args: dict[str, Any] | None = None,
        **options: Any,
    ) -> SampleResult:
        """Run a sampler from the state ``x`` (in ``x_hat`` space) down the noise levels ``sigmas``."""
        model = self.denoiser(labels, guidance, guidance_scale, guidance_args)
        calls = self.classifier_calls
        result = sample(sampler or self.sample_defaults["sampler"], model, x, sigmas, noise, **options)
        self.last_nfe = result.nfe
        self.last_classifier_evaluations = self.classifier_calls - calls
        return result

    @torch.no_grad()
    def generate(
        self,
        labels: Tensor,
        seeds: Tensor | Sequence[int],
        sampler: str | None = None,
        steps: int | None = None,
        schedule: str | None = None,
        guidance: str | None = None,
        guidance_scale: float | None = None,
        dtype: torch.dtype | str = torch.float64,
        guidance_args: dict[str, Any] | None = None,
        search: str | None = None,
        search_args: dict[str, Any] | None = None,
        verifier: str = "classifier",
        **sampler_options: Any,
    ) -> Tensor:
        """Samples for ``labels``; sample i depends only on ``seeds[i]``, ``labels[i]`` and the options.

        Args:
            labels: (B,) int64 classes.
            seeds: One seed per sample (initial noise and the stochastic samplers' noise).
            sampler: Registered sampler (default: the model's ``sampler``).
            steps: Number of noise levels (default: the model's ``steps``).
            schedule: ``karras``, ``time`` or ``vp`` (default: the model's, else the formulation's).
            guidance: ``cfg``, ``classifier``, ``cfg+classifier`` or ``none`` (default: the model's).
            guidance_scale: The rule's scale (default: the model's ``guidance_scale``).
            dtype: Dtype of the sampler state, or its name (EDM keeps it in float64; the net
                runs in its own).
            guidance_args: Further arguments of the guidance rule (``elucd``: ``tau1``, ``tau2``,
                ``kappa``, ``softplus_beta``).
            search: Inference-time search (``random``, ``zero_order``, ``paths``; ``lightning list
                search``) that keeps the candidate the verifier scores best (docs/guidance.md).
            search_args: Its arguments (``n``, ``rounds``, ``threshold``, ``m``, ``sigma_start``, ...).
            verifier: Registered verifier of the search (``classifier``: the ``clean_classifier``'s
                log-probability of the label at ``x0_hat``).
            **sampler_options: The sampler's options (``eta``, ``churn``, ``snr``, ``solver``, ...).

        Returns:
            Samples (B, *data_shape) in float32; ``self.last_nfe`` holds the NFE used.
        """
        labels = labels.to(self.device)  # an unconditional net ignores them; a clean classifier reads them
        if search is not None:
            from framework.generative.search import search_generate

            path = self.trajectory(sampler, steps, schedule, guidance, guidance_scale, dtype, guidance_args,
                                   **sampler_options)  # fmt: skip
            return search_generate(self, path, labels, seeds, search, search_args, verifier).float()
        sampler, sigmas, guidance, scale, opts = self._sampling(sampler, steps, schedule, guidance, guidance_scale, dtype)
        x = seeded_randn(seeds, self.data_shape, device=self.device, dtype=sigmas.dtype)
        x = x * self.formulation.init_scale(sigmas[0])
        noise = PerSampleNoise(seeds)
        result = self.sample_from(
            x, labels, sigmas, noise, sampler, guidance, scale, guidance_args, **{**opts, **sampler_options}
        )
        return result.x.float()

    def _sampling(self, sampler, steps, schedule, guidance, guidance_scale, dtype):
        """The model's defaults filled in: ``(sampler, sigmas, guidance, scale, sampler options)``."""
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype.removeprefix("torch."))
        opts = dict(self.sample_defaults)
        default_sampler, default_steps, default_schedule = opts.pop("sampler"), opts.pop("steps"), opts.pop("schedule")
        if sampler and sampler != default_sampler:
            opts = {}  # the model's sampler_args belong to its own default sampler
        sampler, steps, schedule = sampler or default_sampler, steps or default_steps, schedule or default_schedule
        guidance = self.guidance if guidance is None else guidance
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        sigmas = self.formulation.sigmas(int(steps), schedule, dtype=dtype).to(self.device)
        return sampler, sigmas, guidance, scale, opts

    def trajectory(
        self,
        sampler: str | None = None,
        steps: int | None = None,
        schedule: str | None = None,
        guidance: str | None = None,
        guidance_scale: float | None = None,
        dtype: torch.dtype | str = torch.float64,
        guidance_args: dict[str, Any] | None = None,
        **sampler_options: Any,
    ) -> DiffusionTrajectory:
        """The sampling path as inference-time search walks it (:class:`framework.generative.search.Trajectory`)."""
        sampler, sigmas, guidance, scale, opts = self._sampling(sampler, steps, schedule, guidance, guidance_scale, dtype)
        return DiffusionTrajectory(self, sampler, sigmas, guidance, scale, guidance_args, {**opts, **sampler_options})

    # -- likelihood ----------------------------------------------------------------------------
    def log_likelihood(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        divergence: str = "hutchinson",
        probe: str = "rademacher",
        solver: str = "dopri5",
        steps: int = 100,
        eps: float | None = None,
        generator: torch.Generator | None = None,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        seeds: Tensor | Sequence[int] | None = None,
    ):
        """``log p(x | labels)`` in nats through the probability-flow ODE (score_sde's ``likelihood.py``).

        Integrates ``dx/dt = f - g^2 score / 2`` and its divergence from ``eps`` to ``T``,
        adds the prior's log-density. Dequantise images first and convert with
        ``result.bits_per_dim()`` (:mod:`framework.generative.likelihood`).

        Args:
            x: Data (B, *data_shape).
            labels: Classes of ``x`` (None for an unconditional model: the null label).
            divergence: ``hutchinson`` (Hutchinson-Skilling trace estimator) or ``exact``.
            probe: Hutchinson probe, ``rademacher`` or ``gaussian``.
            solver: ODE solver (``dopri5`` with rtol = atol = 1e-5, as score_sde).
            steps: Steps of a fixed-step solver.
            eps: Data-end time (default: the formulation's ``likelihood_eps``, score_sde's 1e-5).
            generator: CPU generator that draws the per-sample probe seeds when ``seeds`` is None.
            rtol: Relative tolerance of ``dopri5`` (score_sde: 1e-5).
            atol: Absolute tolerance of ``dopri5`` (score_sde: 1e-5).
            seeds: One probe seed per sample, so a sample's estimate does not depend on its
                batch (see :func:`framework.generative.likelihood.log_likelihood`).
        """
        from framework.generative.likelihood import log_likelihood

        f = self.formulation
        labels = labels.to(x.device) if labels is not None and self.num_classes > 0 else None
        if labels is None and self.num_classes > 0:
            labels = torch.full((len(x),), self.null_label, dtype=torch.long, device=x.device)
        eps = f.likelihood_eps if eps is None else eps
        model = self.denoiser(labels)
        lo, hi = eps, f.t_max

        def velocity(t: Tensor, x_t: Tensor) -> Tensor:
            # torchdiffeq steps past the end time and interpolates: keep the field defined there.
            return pf_velocity(model, x_t, t.clamp(lo, hi))

        return log_likelihood(
            velocity, x, t_data=eps, t_noise=f.t_max, prior_logp=f.prior_logp, divergence=divergence,
            probe=probe, generator=generator, seeds=seeds, solver=solver, steps=steps, rtol=rtol, atol=atol,
        )


class DiffusionTrajectory:
    """A diffusion sampler's path on search's shared level: ``sigma = level / (1 - level)`` (``x_hat`` space).

    Segments run the model's sampler on its own noise levels between the two ends (a sampler
    in sigma space, ``edm_heun``, ``euler``, ``ddim``, ``dpmpp_2m``, for segments that end above
    0); forward noising adds ``sqrt(sigma_to^2 - sigma_from^2) n``, exact for every formulation
    (``x_hat = x0 + sigma n``).
    """

    def __init__(self, model, sampler, sigmas, guidance, scale, guidance_args, options) -> None:
        self.model, self.sampler, self.sigmas = model, sampler, sigmas
        self.guidance, self.scale, self.guidance_args, self.options = guidance, scale, guidance_args, options
        self.shape = tuple(model.data_shape)
        self.rows_nfe = self.rows_classifier = 0.0

    def sigma(self, level: float) -> Tensor:
        if level >= 1:
            return self.sigmas[0]
        if level <= 0:
            return self.sigmas[0] * 0
        return (self.sigmas[0] * 0 + level / (1 - level)).clamp(float(self.sigmas[-2]), float(self.sigmas[0]))

    def start(self, z: Tensor) -> Tensor:
        return z.to(self.model.device, self.sigmas.dtype) * self.model.formulation.init_scale(self.sigmas[0])

    def run(self, x: Tensor, labels: Tensor, seeds: Tensor, level_from: float, level_to: float) -> Tensor:
        hi, lo = self.sigma(level_from), self.sigma(level_to)
        inner = self.sigmas[(self.sigmas < hi) & (self.sigmas > lo)]
        sigmas = torch.cat([hi.view(1), inner, lo.view(1)])
        m = self.model
        result = m.sample_from(x, labels, sigmas, PerSampleNoise(seeds), self.sampler, self.guidance, self.scale,
                               self.guidance_args, **self.options)  # fmt: skip
        self.rows_nfe += result.nfe * len(x)
        self.rows_classifier += m.last_classifier_evaluations * len(x)
        return result.x

    def denoised(self, x: Tensor, labels: Tensor, level: float) -> Tensor:
        model = self.model.denoiser(labels, self.guidance, self.scale, self.guidance_args)
        calls = self.model.classifier_calls
        out = model(x, self.sigma(level))
        self.rows_nfe += model.nfe * len(x)
        self.rows_classifier += (self.model.classifier_calls - calls) * len(x)
        return out

    def renoise(self, x: Tensor, level_from: float, level_to: float, noise: Tensor) -> Tensor:
        return x + (self.sigma(level_to) ** 2 - self.sigma(level_from) ** 2).clamp_min(0).sqrt() * noise

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[0])

    def branches(self, x_hat: Tensor, labels: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        m = self.model
        if m.num_classes == 0 or m.label_dropout in (0, 1):
            raise ConfigError("fkc needs a class-conditional model trained with label dropout (0 < label_dropout < 1)")
        null = torch.full_like(labels, m.null_label)
        s = torch.full((2 * len(x_hat),), float(sigma), dtype=x_hat.dtype, device=x_hat.device)
        out = m.denoise(torch.cat([x_hat, x_hat]), s, torch.cat([null, labels]))
        self.rows_nfe += 2 * len(x_hat)
        return out.chunk(2)


@torch.no_grad()
def replace_nonfinite_gradients(parameters: Iterable[nn.Parameter], bound: float = 1e5) -> None:
    """NaN gradients become 0 and +-inf become +-``bound``, in place (EDM ``training_loop.py``).

    One bad sample then costs a step's worth of noise instead of NaN weights for the rest of
    the run; with a GradScaler (fp16) Lightning calls this after unscaling, where an inf
    already made the scaler skip the step.
    """
    for p in parameters:
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0.0, posinf=bound, neginf=-bound, out=p.grad)


def build_augment_pipe(augment_p: float, augment_args: dict[str, Any] | None) -> AugmentPipe | None:
    """EDM CIFAR-10's pipeline at probability ``augment_p`` with ``augment_args`` overriding it; None when off."""
    if not 0 <= augment_p <= 1:
        raise ConfigError(f"augment_p must be in [0, 1], got {augment_p}")
    if augment_p == 0:
        if augment_args:
            raise ConfigError("augment_args given but augment_p is 0: set augment_p (EDM CIFAR-10: 0.12)")
        return None
    try:
        return AugmentPipe(p=augment_p, **{**EDM_CIFAR10, **(augment_args or {})})
    except TypeError as err:
        raise ConfigError(f"augment_args: {err}") from None


def load_noisy_classifier(path: str) -> nn.Module:
    """A ``noisy_classifier`` from its Lightning checkpoint, in eval mode and frozen."""
    from framework.generative.diffusion.noisy_classifier import NoisyClassifier
    from framework.loading import load_trained

    return load_trained(path, NoisyClassifier, role="guidance_classifier", base=NoisyClassifier)
