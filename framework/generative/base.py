"""Base class of the class-conditional generators (diffusion, flow matching, GANs)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from framework.core import ClasszooModule
from framework.errors import ConfigError
from framework.generative.output import sample_seeds


class GenerativeModule(ClasszooModule):
    """A model that turns class labels into samples.

    Subclasses implement :meth:`generate`. Everything that produces samples (``lightning
    sample``, ``lightning predict``, the sample-grid callback, validation metrics) goes
    through it, so a subclass that overrides it changes all of them at once.

    ``predict_step`` takes batches ``(index, labels)`` of sample requests (see
    :class:`framework.generative.output.SampleRequests`) and generates sample ``index``
    from the seed ``sample_seeds(index, sample_seed)`` (``index`` itself for seed 0);
    ``sample_options`` are passed to ``generate``. ``ClasszooTrainer.sample`` sets both.
    The options it may pass are ``sampler``, ``steps``, ``guidance`` and ``guidance_scale``
    (each only when the user gives it) and whatever the user puts in ``options``; declare
    the ones your ``generate`` understands as keyword arguments (a GAN declares ``use_ema``
    and ``standing_stats``, no sampler), so that an option it does not take is reported to
    the user instead of being ignored.

    Args:
        num_classes: Number of classes (0: unconditional).
        data_shape: Shape of one sample.
    """

    def __init__(self, num_classes: int = 10, data_shape: Sequence[int] = (1, 8, 8)) -> None:
        super().__init__(num_classes=num_classes, data_shape=data_shape)
        self.sample_seed = 0
        self.sample_options: dict[str, Any] = {}
        #: Classes that training draws its own labels from (a GAN's fakes): labels below this
        #: number; None: all ``num_classes``. Class-incremental compositions (generative replay)
        #: set it to the classes seen so far; generators that learn only the data's labels ignore it.
        self.train_classes: int | None = None
        #: Classifier evaluations of the last :meth:`generate` call (guidance, verifiers), per sample.
        self.last_classifier_evaluations = 0
        object.__setattr__(self, "_clean_classifier", None)
        object.__setattr__(self, "_guidance_counter", None)

    @property
    def data_range(self) -> tuple[float, float] | None:
        """``(-1, 1)`` for images (every image data module scales to it); None for vector data (toy 2-D)."""
        return (-1.0, 1.0) if len(self.data_shape) == 3 else None

    # -- a classifier of clean data that steers sampling (guidance, verifiers) -----------------
    @property
    def clean_classifier(self) -> Any:
        """The :class:`~framework.generative.guidance_clean.CountingClassifier` steering sampling, or None.

        Kept outside the module tree (not in the generator's checkpoint, not moved by ``.to``:
        the rules move it to the samples' device).
        """
        return self._clean_classifier

    def set_clean_classifier(self, classifier: Any) -> None:
        """Use ``classifier`` (an ``nn.Module`` ``x -> logits``, or a checkpoint path) to steer sampling."""
        from framework.generative.guidance_clean import CountingClassifier, load_clean_classifier

        if isinstance(classifier, (str, bytes)) or hasattr(classifier, "__fspath__"):
            classifier = load_clean_classifier(classifier, self.num_classes, self.data_shape)
        object.__setattr__(self, "_clean_classifier", None if classifier is None else CountingClassifier(classifier))

    @property
    def counted_guidance_classifier(self) -> Any:
        """The noise-aware ``guidance_classifier`` wrapped in a call counter (None without one).

        The counter stays outside the module tree (the classifier itself remains the
        generator's submodule, its checkpoint keys unchanged); a classifier set later is wrapped
        anew, its count carried over.
        """
        from framework.generative.guidance_clean import CountingClassifier

        net = getattr(self, "guidance_classifier", None)
        counter = self._guidance_counter
        if net is None:
            return None
        if counter is None or counter.classifier is not net:
            fresh = CountingClassifier(net)
            fresh.calls = counter.calls if counter is not None else 0
            object.__setattr__(self, "_guidance_counter", fresh)
            counter = fresh
        return counter

    @property
    def classifier_calls(self) -> int:
        """Forward calls so far of every classifier that steers sampling (clean and noise-aware), all batches."""
        return sum(c.calls for c in (self._clean_classifier, self._guidance_counter) if c is not None)

    @property
    def sample_classes(self) -> int:
        """Classes ``lightning sample`` asks for: the model's, or a steering classifier's for an unconditional one."""
        if self.num_classes == 0 and self.clean_classifier is not None:
            return int(self.clean_classifier.num_classes or 0)
        return self.num_classes

    @abstractmethod
    def generate(self, labels: Tensor, seeds: Tensor | Sequence[int], **options: Any) -> Tensor:
        """Samples for ``labels`` (int64, shape (B,)), as float32 in [-1, 1] shaped (B, *data_shape).

        Sample i must depend only on ``seeds[i]``, ``labels[i]`` and the options (use
        :func:`framework.generative.noise.seeded_randn` and ``PerSampleNoise``).
        """
        # LightningModule is not an ABC, so @abstractmethod alone would let this return None.
        raise NotImplementedError(f"{type(self).__name__} must implement generate(labels, seeds, **options)")

    def conditional_residual(self, x: Tensor, labels: Tensor, levels: Tensor, noise: Tensor) -> Tensor:
        """The training residual of data ``x`` under ``labels`` at given noise levels and noise.

        The model's own training loss is the mean square of this residual over the data dims
        when ``levels`` (B,) are drawn uniformly in (0, 1) and ``noise`` (shaped like ``x``)
        from N(0, I): a family maps the quantiles ``levels`` to its own training distribution of
        noise levels (diffusion: the formulation's :meth:`train_times`; flow: its training times)
        and uses ``noise`` as its noise (diffusion) or source draw (flow). The generative
        classifier (:mod:`framework.generative.classify`) compares classes on it. Families
        without such an error (GANs) raise ConfigError.
        """
        raise ConfigError(
            f"{type(self).__name__} has no conditional denoising error to classify with "
            "(diffusion and flow models have one; use mode: exact for a model with log_likelihood)"
        )

    def conditional_error(
        self, x: Tensor, labels: Tensor, levels: Tensor, noise: Tensor, loss: str = "l2"
    ) -> Tensor:
        """Per-sample (B,) conditional error: :meth:`conditional_residual` reduced by ``loss`` (l2, l1, huber).

        With ``l2`` it is the model's per-sample training loss at the given levels and noise.
        """
        from framework.generative.classify import reduce_residual

        return reduce_residual(self.conditional_residual(x, labels, levels, noise), loss)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        index, labels = batch
        # Guidance that differentiates a classifier enables grad itself (the `sample`
        # command runs predict with inference_mode off for that reason).
        images = self.generate(labels, sample_seeds(index, self.sample_seed), **self.sample_options)
        images = images.detach().float()
        if self.data_range is not None:  # images live in [-1, 1]; vector data (toy 2-D) has no such range
            images = images.clamp(*self.data_range)
        return {"index": index.cpu(), "labels": labels.cpu(), "images": images.cpu()}
