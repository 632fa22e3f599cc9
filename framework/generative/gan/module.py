"""Class-conditional GANs: ADC-GAN and the AC-GAN, TAC-GAN and projection baselines in one module."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

import registry
from framework.errors import ConfigError
from framework.generative.base import GenerativeModule
from framework.generative.gan.diffaugment import diff_augment, parse_policy
from framework.generative.gan.discriminator import (
    ConditionalDiscriminator,
    DiscriminatorOutput,
)
from framework.generative.gan.ema import ema_update_
from framework.generative.gan.standing_stats import StandingStatsCache
from framework.generative.noise import seeded_randn
from registry import register


def _adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=2e-4, betas=(0.0, 0.999))


def _check_standing_stats(num: int) -> None:
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        raise ConfigError(f"standing_stats must be an int >= 0 (number of accumulation batches; 0: off), got {num!r}")


@register("model", "adcgan", aliases=("conditional_gan", "cgan"))
class ADCGAN(GenerativeModule):
    """Class-conditional GAN; ADC-GAN (Hou et al. 2022) by default, AC/TAC/projection by name.

    Training follows the reference (liang-hou/adcgan, BigGAN-PyTorch's ``train_fns.py``): each
    training batch is one discriminator step on real data and as many fakes from uniformly
    drawn classes (real and fake go through D in one call); after every ``n_dis``-th D step,
    one generator step on a fresh batch of fakes, whose single D call gives both the
    adversarial and the class-aware terms. With manual optimisation Lightning counts every
    optimizer step in ``trainer.global_step``, so ``max_steps`` = D steps + G steps
    = (n_dis + 1) x G iterations; ``generator_steps`` (a buffer) counts G iterations.

    Under DDP the D step leaves G's parameters unused: run with
    ``strategy: ddp_find_unused_parameters_true`` (see docs/gan.md).

    Args:
        num_classes: Number of classes K (linked from the data).
        data_shape: (C, H, W) of the images (linked from the data).
        conditioning: Registered ``gan_loss``: ``adc``, ``ac``, ``tac``, ``projection`` or
            ``adc+projection``.
        adversarial_loss: Registered ``adversarial_loss``: ``hinge``, ``nonsaturating`` or
            ``wasserstein``.
        generator: Registered generator net (``factory(data_shape, num_classes, **args)``).
        generator_args: Keyword arguments of the generator.
        discriminator: Registered discriminator trunk (``factory(data_shape, **args)``).
        discriminator_args: Keyword arguments of the trunk; its ``spectral_norm`` and ``init``
            also apply to the heads.
        d_lambda: Weight of the class-aware term in D's loss (reference ``D_lambda``).
        g_lambda: Weight of the class-aware term in G's loss (reference ``G_lambda``).
        classifier_hinge: Multi-class hinge instead of cross-entropy (reference ``--hinge``).
        n_dis: Discriminator steps per generator step.
        ema: Keep an exponential moving average of G; everything that samples (``generate``) then uses it.
        ema_decay: EMA decay per G step.
        ema_start: G iteration from which the EMA averages; before it the EMA copies G.
        diffaugment: DiffAugment policy for every image D sees, e.g. ``"color,translation,cutout"``; "" for none.
        standing_stats: Sample with BigGAN's standing statistics: G's batch-norm statistics
            re-estimated on this many batches of random latents and labels before sampling
            (the reference's ``--accumulate_stats --num_standing_accumulations``, 16 there);
            0 (default, as the ADC-GAN scripts) samples with the running statistics.
            ``generate(..., standing_stats=N)`` overrides it per call.
        standing_stats_batch_size: Batch size of those passes (the reference's ``G_batch_size``).
        generator_optimizer: Optimizer of G (reference: Adam lr 2e-4, betas (0, 0.999)).
        discriminator_optimizer: Optimizer of D (same default).
    """

    hparams_ignore = ("generator_optimizer", "discriminator_optimizer")

    def __init__(
        self,
        num_classes: int = 10,
        data_shape: Sequence[int] = (1, 8, 8),
        conditioning: str = "adc",
        adversarial_loss: str = "hinge",
        generator: str = "dcgan_generator",
        generator_args: dict[str, Any] | None = None,
        discriminator: str = "dcgan_discriminator",
        discriminator_args: dict[str, Any] | None = None,
        d_lambda: float = 1.0,
        g_lambda: float = 1.0,
        classifier_hinge: bool = False,
        n_dis: int = 4,
        ema: bool = True,
        ema_decay: float = 0.9999,
        ema_start: int = 1000,
        diffaugment: str = "",
        standing_stats: int = 0,
        standing_stats_batch_size: int = 256,
        generator_optimizer: OptimizerCallable = _adam,
        discriminator_optimizer: OptimizerCallable = _adam,
    ) -> None:
        super().__init__(num_classes=num_classes, data_shape=data_shape)
        if self.num_classes < 1:
            raise ConfigError(f"a class-conditional GAN needs num_classes >= 1, got {num_classes}")
        if n_dis < 1:
            raise ConfigError(f"n_dis must be >= 1, got {n_dis}")
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {ema_decay}")
        _check_standing_stats(standing_stats)
        if standing_stats_batch_size < 1:
            raise ConfigError(f"standing_stats_batch_size must be >= 1, got {standing_stats_batch_size}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.conditioning = registry.create("gan_loss", conditioning, hinge=classifier_hinge)
        self.adversarial = registry.create("adversarial_loss", adversarial_loss)
        self.diffaugment = parse_policy(diffaugment)
        self.d_lambda, self.g_lambda, self.n_dis = d_lambda, g_lambda, n_dis
        self.ema_decay, self.ema_start = ema_decay, ema_start
        self.standing_stats, self.standing_stats_batch_size = standing_stats, standing_stats_batch_size
        # A plain attribute, not a submodule: the re-estimated copy stays out of the state dict,
        # the optimizers and DDP.
        self._standing_cache = StandingStatsCache()
        self.generator_optimizer, self.discriminator_optimizer = generator_optimizer, discriminator_optimizer

        self.generator = registry.create(
            "net", generator, data_shape=self.data_shape, num_classes=self.num_classes, **(generator_args or {})
        )
        trunk = registry.create("net", discriminator, data_shape=self.data_shape, **(discriminator_args or {}))
        d_args = discriminator_args or {}
        self.discriminator = ConditionalDiscriminator(
            trunk,
            self.num_classes,
            self.conditioning,
            spectral_norm=d_args.get("spectral_norm", True),
            init=d_args.get("init", "N02"),
        )
        # The EMA copy has no gradients, so neither the optimizers nor DDP's reducer see it;
        # it is part of the state dict, so checkpoints carry it.
        self.generator_ema: nn.Module | None = None
        if ema:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.register_buffer("discriminator_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("generator_steps", torch.zeros((), dtype=torch.long))
        has_classifier = self.discriminator.has_classifier
        self.val_accuracy = MulticlassAccuracy(self.num_classes, average="micro") if has_classifier else None
        self.test_accuracy = MulticlassAccuracy(self.num_classes, average="micro") if has_classifier else None
        self._base_seed: int | None = None

    # -- sampling ------------------------------------------------------------------------
    @property
    def sampling_generator(self) -> nn.Module:
        """The generator that :meth:`generate` uses: the EMA copy when there is one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def generate(
        self, labels: Tensor, seeds: Tensor | Sequence[int], use_ema: bool = True, standing_stats: int | None = None
    ) -> Tensor:
        """Samples of G (the EMA G unless ``use_ema=False``) in eval mode; sample i's latent is drawn from ``seeds[i]``.

        Batch norm uses the running statistics, or with ``standing_stats`` > 0 (default: the
        module's ``standing_stats``) statistics re-estimated on that many seeded batches
        (:mod:`framework.generative.gan.standing_stats`); either way a sample does not depend
        on its batch. The standing statistics live in a private copy of G, made once and
        reused while G's weights are unchanged; G itself is left as it was.
        """
        net = self.sampling_generator if use_ema else self.generator
        accumulations = self.standing_stats if standing_stats is None else standing_stats
        _check_standing_stats(accumulations)
        if accumulations > 0:
            net = self._standing_cache.get(net, accumulations, self.standing_stats_batch_size)
        was_training = net.training
        net.eval()
        try:
            z = seeded_randn(seeds, (net.latent_dim,), device=self.device)
            return net(z, labels.to(self.device))
        finally:
            net.train(was_training)

    # -- training ------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._base_seed = torch.initial_seed()

    def _fake_batch(self, batch_size: int, stream: int, counter: int) -> tuple[Tensor, Tensor]:
        """Latents and uniformly drawn class labels (below ``train_classes``) for one batch of fakes.

        Drawn from a generator seeded by (run seed, rank, ``stream``, ``counter``): ranks
        started with the same seed still draw different fakes, and a run resumed from a
        checkpoint (the step counters are buffers) draws the same fakes as an uninterrupted one.
        """
        if self._base_seed is None:
            self._base_seed = torch.initial_seed()
        lane = 2 * self.global_rank + stream
        seed = (self._base_seed + 0x9E3779B97F4A7C15 * (lane + 1) + 0xBF58476D1CE4E5B9 * counter) % 2**64
        noise = torch.Generator(device=self.device).manual_seed(seed)
        z = torch.randn(batch_size, self.generator.latent_dim, device=self.device, generator=noise)
        classes = self.num_classes if self.train_classes is None else self.train_classes
        labels = torch.randint(0, classes, (batch_size,), device=self.device, generator=noise)
        return z, labels

    def _discriminate(self, images: Tensor, labels: Tensor) -> DiscriminatorOutput:
        if self.diffaugment:
            images = diff_augment(images, self.diffaugment)
        return self.discriminator(images, labels)

    def discriminator_loss(self, real: Tensor, real_labels: Tensor) -> dict[str, Tensor]:
        """D's loss on a real batch and as many fakes: adversarial + d_lambda * class-aware term."""
        z, fake_labels = self._fake_batch(real.shape[0], stream=0, counter=int(self.discriminator_steps))
        with torch.no_grad():
            fake = self.generator(z, fake_labels)
        out = self._discriminate(torch.cat([real, fake]), torch.cat([real_labels, fake_labels]))
        out_real, out_fake = out.split([real.shape[0], fake.shape[0]])
        loss_real, loss_fake = self.adversarial.discriminator(out_real.adversarial, out_fake.adversarial)
        terms = {"d_loss_real": loss_real, "d_loss_fake": loss_fake}
        class_term = self.conditioning.discriminator_term(out_real.logits, real_labels, out_fake.logits, fake_labels)
        loss = loss_real + loss_fake
        if class_term is not None:
            terms["d_class"] = class_term
            loss = loss + self.d_lambda * class_term
        terms["d_loss"] = loss
        return terms

    def generator_loss(self, batch_size: int) -> dict[str, Tensor]:
        """G's loss on a fresh batch of fakes: adversarial + g_lambda * class-aware term, from one D call."""
        z, fake_labels = self._fake_batch(batch_size, stream=1, counter=int(self.generator_steps))
        out = self._discriminate(self.generator(z, fake_labels), fake_labels)
        loss = self.adversarial.generator(out.adversarial)
        terms = {"g_adversarial": loss}
        class_term = self.conditioning.generator_term(out.logits, fake_labels)
        if class_term is not None:
            terms["g_class"] = class_term
            loss = loss + self.g_lambda * class_term
        terms["g_loss"] = loss
        return terms

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real, real_labels = batch
        opt_g, opt_d = self.optimizers()
        with self.toggled_optimizer(opt_d):
            d_terms = self.discriminator_loss(real, real_labels)
            opt_d.zero_grad()
            self.manual_backward(d_terms["d_loss"])
            opt_d.step()
        self.discriminator_steps += 1
        logs = {f"train/{k}": v.detach() for k, v in d_terms.items()}
        if int(self.discriminator_steps) % self.n_dis == 0:
            with self.toggled_optimizer(opt_g):
                g_terms = self.generator_loss(real.shape[0])
                opt_g.zero_grad()
                self.manual_backward(g_terms["g_loss"])
                opt_g.step()
            self.generator_steps += 1
            self.update_ema()
            logs.update({f"train/{k}": v.detach() for k, v in g_terms.items()})
        self.log_dict(logs)

    @torch.no_grad()
    def update_ema(self) -> None:
        """One EMA step of G (the reference pegs the EMA to G before ``ema_start``)."""
        if self.generator_ema is None:
            return
        decay = 0.0 if int(self.generator_steps) < self.ema_start else self.ema_decay
        ema_update_(self.generator_ema, self.generator, decay)

    # -- validation and test: D as a classifier of the real held-out data ----------------
    def _evaluate_discriminator(self, batch: tuple[Tensor, Tensor], stage: str, accuracy: MulticlassAccuracy | None) -> None:
        images, labels = batch
        out = self.discriminator(images, labels)
        self.log(f"{stage}/d_adversarial_real", out.adversarial.mean(), sync_dist=True)
        if accuracy is not None:
            accuracy(self.conditioning.class_logits(out.logits), labels)
            self.log(f"{stage}/discriminator_accuracy", accuracy, prog_bar=stage == "val")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate_discriminator(batch, "val", self.val_accuracy)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate_discriminator(batch, "test", self.test_accuracy)

    def configure_optimizers(self):
        # Order matters: training_step unpacks (G, D).
        return [self.generator_optimizer(self.generator.parameters()), self.discriminator_optimizer(self.discriminator.parameters())]


@register("model", "acgan")
class ACGAN(ADCGAN):
    """AC-GAN (Odena et al. 2017): :class:`ADCGAN` with ``conditioning: ac`` by default."""

    def __init__(self, *args: Any, conditioning: str = "ac", **kwargs: Any) -> None:
        super().__init__(*args, conditioning=conditioning, **kwargs)


@register("model", "tacgan")
class TACGAN(ADCGAN):
    """TAC-GAN (Gong et al. 2019): :class:`ADCGAN` with ``conditioning: tac`` by default."""

    def __init__(self, *args: Any, conditioning: str = "tac", **kwargs: Any) -> None:
        super().__init__(*args, conditioning=conditioning, **kwargs)


@register("model", "pdgan", aliases=("projection_gan",))
class PDGAN(ADCGAN):
    """Projection-discriminator GAN (Miyato & Koyama 2018): :class:`ADCGAN` with ``conditioning: projection``."""

    def __init__(self, *args: Any, conditioning: str = "projection", **kwargs: Any) -> None:
        super().__init__(*args, conditioning=conditioning, **kwargs)
