"""The command line: ``lightning``, ``classzoo`` and ``python -m framework``.

    lightning fit --config recipes/quickstart.yaml
    lightning sample --config R.yaml --ckpt_path C.ckpt --num_per_class 10 --output DIR
    lightning list [kind]

A LightningCLI in subclass mode for both the model and the DataModule. Before jsonargparse
sees them, registry names in ``class_path`` values (``model: classifier``, ``class_path:
Classifier``) are rewritten to import paths, so YAML may name a module by registry key,
class name or import path. ``data.num_classes`` and ``data.data_shape`` are linked into the
model. User errors print one line on stderr and exit with code 2 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, Optional

import yaml

import registry
from framework.errors import USER_ERRORS, ClasszooError

OUR_COMMANDS = ("fit", "validate", "test", "predict", "sample", "list")
# Where a class_path sits decides which registry kind its short names come from.
_ROOT_KINDS = {"model": "model", "data": "data"}


# -- registry names in configs ---------------------------------------------------------------
def _class_name_index() -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for e in registry.entries():
        if isinstance(e.obj, type):
            index.setdefault(e.obj.__name__.lower(), []).append(e.path)
    return index


def resolve_class_path(value: str, kind: str | None) -> str:
    """Import path for a registry key, alias or registered class name; other values unchanged.

    Nested values (``kind`` None) are looked up among models, DataModules and callbacks.

    With ``kind`` given (the top-level ``model``/``data``), a bare name that is none of these
    is an error naming the closest registered names.
    """
    if not isinstance(value, str) or "." in value:
        return value
    for k in [kind] if kind else ["model", "data", "callback"]:
        if (k, value) in registry.REGISTRY:
            return registry.entry(k, value).path
    paths = _class_name_index().get(value.lower(), [])
    if len(paths) == 1:
        return paths[0]
    if kind is not None:
        raise registry.UnknownNameError(kind, value, registry.names(kind))
    return value


def resolve_config(node: Any, kind: str | None = None, top: bool = True) -> Any:
    """Copy of a parsed YAML config with registry names in ``class_path`` values resolved."""
    if isinstance(node, list):
        return [resolve_config(v, kind, False) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        child_kind = _ROOT_KINDS.get(key) if top else None
        if top and key in OUR_COMMANDS and isinstance(value, dict):  # a config nested under the sub-command
            out[key] = resolve_config(value, None, True)
        elif child_kind and isinstance(value, str):
            out[key] = resolve_class_path(value, child_kind)
        elif key == "class_path" and isinstance(value, str):
            out[key] = resolve_class_path(value, kind)
        else:
            out[key] = resolve_config(value, child_kind if child_kind else (kind if key == "init_args" else None), False)
            if child_kind and isinstance(value, dict) and "class_path" in value:
                out[key]["class_path"] = resolve_class_path(value["class_path"], child_kind)
    return out


def _read_config(value: str) -> Any:
    """A ``--config`` value: a file path, or the YAML text itself (as DDP's re-launched processes get it)."""
    inline = "\n" in value or value.lstrip().startswith("{")
    if not inline and not os.path.isfile(value):
        raise ClasszooError(f"config file not found: {value}")
    try:
        if inline:
            return yaml.safe_load(value) or {}
        with open(value) as f:
            return yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        raise ClasszooError(f"config {value if not inline else '(inline)'} is not valid YAML: {str(err).splitlines()[0]}") from None


def preprocess_args(args: Sequence[str]) -> list[str]:
    """Rewrite registry names in ``--config`` files and ``--model``/``--data`` values."""
    out: list[str] = []
    it = iter(range(len(args)))
    for i in it:
        arg = args[i]
        key, eq, inline = arg.partition("=")
        value_given = bool(eq)
        if key in ("--config", "-c") or key in ("--model", "--data", "--model.class_path", "--data.class_path"):
            if value_given:
                value = inline
            elif i + 1 < len(args):
                value = args[i + 1]
                next(it, None)
            else:
                out.append(arg)
                continue
            if key in ("--config", "-c"):
                value = yaml.safe_dump(resolve_config(_read_config(value)), sort_keys=False)
            else:
                value = resolve_class_path(value, key[2:].split(".")[0])
            out += [key, value]
        else:
            out.append(arg)
    return out


# -- the LightningCLI --------------------------------------------------------------------------
def _data_shape(datamodule: Any) -> tuple[int, ...]:
    for attr in ("data_shape", "image_shape"):
        shape = getattr(datamodule, attr, None)
        if shape is not None:
            return tuple(shape)
    if getattr(datamodule, "dim", None) is not None:
        return (int(datamodule.dim),)
    raise ClasszooError(f"{type(datamodule).__name__} exposes neither data_shape, image_shape nor dim")


def _num_classes(datamodule: Any) -> int:
    if not hasattr(datamodule, "num_classes"):
        raise ClasszooError(f"{type(datamodule).__name__} has no num_classes attribute")
    return int(datamodule.num_classes)


def _make_cli_class():
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    class ClasszooCLI(LightningCLI):
        """LightningCLI with registry names, linked data shapes, ``sample`` and default loggers."""

        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            return {**LightningCLI.subcommands(), "sample": {"model", "datamodule"}}

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument(
                "--torch_threads",
                type=Optional[int],
                default=None,
                help="torch's intra-op threads (torch.set_num_threads); null keeps torch's default. "
                "Small models on a few shared CPU cores run several times faster with 1 "
                "(docs/benchmarks.md).",
            )
            parser.link_arguments("data", "model.init_args.num_classes", compute_fn=_num_classes, apply_on="instantiate")
            parser.link_arguments("data", "model.init_args.data_shape", compute_fn=_data_shape, apply_on="instantiate")

        def before_instantiate_classes(self) -> None:
            threads = self._get(self.config, "torch_threads")
            if threads is not None:
                import torch

                if threads < 1:
                    raise ClasszooError(f"torch_threads must be >= 1, got {threads}")
                torch.set_num_threads(threads)

        def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
            if config.get("logger") in (None, True):
                config["logger"] = default_loggers(config.get("default_root_dir") or ".")
            return super()._instantiate_trainer(config, callbacks)

        def after_fit(self) -> None:
            print_fit_summary(self.trainer)

        def _parse_ckpt_path(self) -> None:
            # LightningCLI reads the checkpoint's hyper-parameters before anything is built.
            # Its ``_class_path`` would silently replace the configured model class.
            sub = self.config.get("subcommand")
            ckpt_path = self.config[sub].get("ckpt_path") if sub else None
            if isinstance(ckpt_path, str) and ckpt_path not in ("best", "last", "hpc", "registry"):
                from framework.loading import resolve_checkpoint

                # A pattern (lightning_logs/version_*/checkpoints/x.ckpt) names its newest match.
                self.config[sub]["ckpt_path"] = resolve_checkpoint(ckpt_path, "ckpt_path")
            model_class = lambda: (self.config[sub].get("model") or {}).get("class_path") if sub else None
            model_before = model_class()
            try:
                super()._parse_ckpt_path()
            except ClasszooError:
                raise
            except Exception as err:
                from framework.trainer import checkpoint_error_message

                path = str(self.config[self.config.subcommand].get("ckpt_path"))
                raise ClasszooError(checkpoint_error_message(path, None, None, err)) from err
            model_after = model_class()
            if model_before and model_after != model_before:
                path = self.config[sub].get("ckpt_path")
                raise ClasszooError(
                    f"ckpt_path {path} is a checkpoint of {model_after}, but the config's model is "
                    f"{model_before}: give the config that trained it"
                )

        def _run_subcommand(self, subcommand: str) -> None:
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            try:
                super()._run_subcommand(subcommand)
            except SystemExit as exit_:
                # Lightning ends a run on SIGTERM with SIGTERMException (exit code 0), and on
                # Ctrl-C with sys.exit(1) raised while handling the KeyboardInterrupt.
                if isinstance(exit_, SIGTERMException):
                    raise RunInterrupted(self.trainer, "terminated (SIGTERM)", 143) from None
                if isinstance(exit_.__context__, KeyboardInterrupt):
                    raise RunInterrupted(self.trainer, "interrupted", 130) from None
                raise

    return ClasszooCLI


class RunInterrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM; the message names the newest checkpoint to resume from.

    ``exit_code`` is what a shell reports for a program killed by the signal (128 + its number).
    """

    def __init__(self, trainer: Any, what: str, exit_code: int) -> None:
        self.rank, self.exit_code = trainer.global_rank, exit_code
        if trainer.state.fn != "fit":
            super().__init__(what)
            return
        path = latest_checkpoint(trainer)
        resume = f"newest checkpoint {path} (resume: --ckpt_path {path})" if path else "no checkpoint was saved"
        super().__init__(f"{what} at step {trainer.global_step}; {resume}")


def latest_checkpoint(trainer: Any) -> str | None:
    """The most recently written checkpoint of the run's checkpoint callbacks, if any exists."""
    paths = set()
    for callback in trainer.checkpoint_callbacks:
        paths |= {getattr(callback, key, "") for key in ("last_model_path", "best_model_path", "ckpt_path")}
    found = [p for p in paths if isinstance(p, str) and p and os.path.isfile(p)]
    return max(found, key=os.path.getmtime) if found else None


def default_loggers(root: str) -> list:
    """CSV logs (always) and TensorBoard logs when tensorboard is installed, in one version folder."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    csv = CSVLogger(save_dir=root, name="lightning_logs")
    loggers = [csv]
    if importlib.util.find_spec("tensorboard") is not None:
        loggers.append(TensorBoardLogger(save_dir=root, name="lightning_logs", version=csv.version, sub_dir="tensorboard"))
    return loggers


def print_fit_summary(trainer: Any) -> None:
    """One block at the end of ``fit``: final validation metrics, checkpoint and log folder."""
    if not trainer.is_global_zero:
        return
    metrics = {
        k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val", "gen")) and v.numel() == 1
    }
    lines = [f"  {k}: {v:.4f}" for k, v in sorted(metrics.items())]
    ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or getattr(
        trainer.checkpoint_callback, "last_model_path", ""
    )
    print("\nfit finished" + (":\n" + "\n".join(lines) if lines else ""))
    if ckpt:
        print(f"  checkpoint: {ckpt}")
    log_dir = trainer.loggers[0].log_dir if trainer.loggers else None  # trainer.log_dir is a collective
    if log_dir:
        print(f"  logs: {log_dir}")


def run_cli(args: Sequence[str], **kwargs: Any) -> Any:
    """Build and run the CLI on ``args`` (without the program name); returns the CLI object."""
    import lightning as L

    import framework  # noqa: F401 - registers everything

    from framework.trainer import ClasszooTrainer

    cli_class = _make_cli_class()
    _set_argv(preprocess_args(list(args)))
    return cli_class(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_class=ClasszooTrainer,
        auto_configure_optimizers=False,
        parser_kwargs={"exit_on_error": False},
        **kwargs,
    )


def _set_argv(args: list[str]) -> None:
    # LightningCLI reads sys.argv, and DDP's subprocess launcher re-runs sys.argv in every
    # process: both must see the rewritten arguments.
    sys.argv = [sys.argv[0] if sys.argv else "lightning", *args]


# -- `list` ------------------------------------------------------------------------------------
def list_registry(kind: str | None = None, out=None) -> None:
    """Print registered names by kind with their one-line descriptions."""
    import framework  # noqa: F401

    out = out or sys.stdout
    kinds = registry.kinds()
    if kind is not None and kind not in kinds:
        raise ClasszooError(f"unknown kind {kind!r}; known kinds: {', '.join(kinds)}")
    for k in [kind] if kind else kinds:
        print(f"{k}:", file=out)
        for e in registry.entries(k):
            alias = f" (aliases: {', '.join(e.aliases)})" if e.aliases else ""
            print(f"  {e.name:<24} {e.summary}{alias}", file=out)


# -- entry point -------------------------------------------------------------------------------
def _delegate_to_lightning_sdk(argv: list[str]) -> int | None:
    """Run lightning-sdk's own ``lightning`` command for sub-commands that are not ours."""
    if importlib.util.find_spec("lightning_sdk") is None:
        return None
    from importlib.metadata import entry_points

    for ep in entry_points(group="console_scripts", name="lightning"):
        if not ep.value.startswith("framework."):
            sys.argv = ["lightning", *argv]
            result = ep.load()()
            return int(result or 0)
    return None


def _one_line(err: BaseException) -> str:
    """One readable line from an error message (jsonargparse's are nested, several lines)."""
    text = str(err).strip() or type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) == 1:
        return lines[0]
    key = ".".join(re.findall(r'Parser key "([^"]+)"', text))
    prefix = f"{key}: " if key else ""
    expected = re.search(r"Expected a <class '([^']+)'>\. Got value: (.*)", text)
    if expected:
        return f"{prefix}expected {expected[1]}, got {expected[2]!r}"
    nested = re.search(r"NestedArg\(key='([^']+)'", text)
    if nested:
        return f"{prefix}no argument {nested[1]!r} (list them with --{key or 'model'}.help CLASS)"
    subtypes, given = re.search(r"Subtypes: \[(.*)\]", text), re.search(r"Given value: (.*)", text)
    if subtypes and given:
        types = " or ".join(t.rsplit(".", 1)[-1] for t in re.findall(r"<class '([^']+)'>", subtypes[1]))
        return f"{prefix}expected {types}, got {given[1]!r}"
    problem = [l for l in lines if l.startswith(("- Problem", "Problem", "Unexpected", "Unrecognized"))]
    return prefix + (problem[-1].lstrip("- ") if problem else lines[-1])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    prog = prog if prog in ("lightning", "classzoo") else "classzoo"
    if argv and not argv[0].startswith("-") and argv[0] not in OUR_COMMANDS:
        delegated = _delegate_to_lightning_sdk(argv)
        if delegated is not None:
            return delegated
    try:
        if argv and argv[0] == "list":
            if len(argv) > 2:
                raise ClasszooError("usage: list [KIND]")
            try:
                list_registry(argv[1] if len(argv) > 1 else None)
            except BrokenPipeError:  # `lightning list | head`
                sys.stdout = open(os.devnull, "w")
            return 0
        run_cli(argv)
        return 0
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    except RunInterrupted as stop:
        if debug:
            raise
        if stop.rank == 0:  # DDP: every process gets the signal, one line is enough
            print(f"{prog}: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:  # before the run started (parsing, building, downloading)
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # jsonargparse's ArgumentError and friends
        from argparse import ArgumentError as StdArgumentError

        import jsonargparse

        arg_errors = (StdArgumentError, getattr(jsonargparse, "ArgumentError", StdArgumentError))
        if isinstance(err, arg_errors) or _caused_by_user_error(err):
            if debug:
                raise
            print(f"{prog}: error: {_one_line(_user_cause(err))}", file=sys.stderr)
            return 2
        raise
    finally:
        leave_process_group()


def leave_process_group() -> None:
    """Destroy the default process group if this process joined one.

    Lightning leaves it alive; a gloo group still alive at interpreter exit sometimes aborts
    the process ("terminate called without an active exception"), turning a finished run
    into a SIGABRT exit.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _user_cause(err: BaseException) -> BaseException:
    seen = err
    while seen is not None:
        if isinstance(seen, USER_ERRORS):
            return seen
        seen = seen.__cause__ or seen.__context__
    return err


def _caused_by_user_error(err: BaseException) -> bool:
    return isinstance(_user_cause(err), USER_ERRORS)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
