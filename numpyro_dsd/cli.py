"""The ``numpyro-dsd`` command.

``numpyro-dsd demo``
    NUTS on Neal's funnel, centred (biased) and non-centred (exact), the KSD diagnostic of
    both next to R-hat and ESS, a figure and netCDF files (:mod:`numpyro_dsd.demo`).
``numpyro-dsd diagnose FILE.nc --model models.py:eight_schools --data data.json``
    The diagnostic of an ArviZ netCDF file (``az.from_numpyro(mcmc).to_netcdf(...)``): its
    ``posterior`` group with the model named on the command line and its keyword arguments
    (:mod:`numpyro_dsd._cli_inputs`).
``numpyro-dsd diagnose FILE.nc``
    The diagnostic of a file holding a ``stein_inputs`` group (draws and scores,
    :func:`numpyro_dsd.arviz.convert.add_stein_inputs`): no model code needed.

Options follow the Python names (``--num-bootstrap`` for ``num_bootstrap``, ``--num-chains``
...). The old spellings ``--n-boot``, ``--chains``, ``--flow-steps`` and ``--diffusion precond``
still work for one release, hidden from the help, with a note on stderr.

A mistake ends in one line on stderr naming the problem and the fix, no traceback: exit status 2
for a usage error (an option or value argparse rejects), 1 for everything else (a file that is
missing or not ArviZ netCDF, inputs the diagnostic rejects, an output path that cannot be
written). Paths, the model and its arguments are checked before any computation.

Compiled JAX programs are kept between runs in JAX's persistent compilation cache, in
``$XDG_CACHE_HOME/numpyro_dsd/jax`` (``~/.cache/numpyro_dsd/jax`` without ``XDG_CACHE_HOME``;
a folder set in ``JAX_COMPILATION_CACHE_DIR`` is used instead), so a second run in a new process
skips most compilation. ``--no-cache`` or ``NUMPYRO_DSD_NO_CACHE=1`` turns it off. The command
sets this up for itself; importing :mod:`numpyro_dsd` changes no JAX setting.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from numpyro_dsd import _cli_inputs as inputs
from numpyro_dsd import arviz as arviz_io
from numpyro_dsd.vocabulary import DIFFUSIONS

__all__ = ["NO_CACHE_ENV", "cache_dir", "compilation_cache", "main"]

PROG = "numpyro-dsd"
#: Set to anything but "" or "0" to run the command without the persistent compilation cache.
NO_CACHE_ENV = "NUMPYRO_DSD_NO_CACHE"
#: Compilations faster than this (seconds) are not written to the cache (JAX's default, 1 s,
#: would skip most of ours: many programs of 0.1-1 s each).
CACHE_MIN_COMPILE_SECONDS = 0.0
_NETCDF_FIX = "give an ArviZ netCDF file (az.from_numpyro(mcmc).to_netcdf('run.nc'))."


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _fail(message: str) -> NoReturn:
    """Exit with status 1 and ``message`` as one line on stderr."""
    raise SystemExit(f"{PROG}: {' '.join(str(message).split())}")


def _deprecated(new: str) -> type[argparse.Action]:
    """An argparse action for a hidden old option: stores into ``new``'s destination, with a
    note on stderr."""

    class Deprecated(argparse.Action):
        def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
            print(f"{PROG}: {option} is deprecated; use {new}.", file=sys.stderr)
            setattr(namespace, self.dest, values)

    return Deprecated


def _diffusion(value: str) -> str:
    """``--diffusion`` values; ``precond`` is the deprecated name of ``covariance``."""
    if value == "precond":
        print(f"{PROG}: --diffusion precond is deprecated; use covariance.", file=sys.stderr)
        return "covariance"
    return value


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``minimum``."""

    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number >= {minimum}; got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}; got {value}")
        return value

    return count


def cache_dir() -> Path:
    """The command's folder for JAX's persistent compilation cache:
    ``$XDG_CACHE_HOME/numpyro_dsd/jax``, ``~/.cache/numpyro_dsd/jax`` without ``XDG_CACHE_HOME``.

    Examples
    --------
    >>> cache_dir().parts[-2:]
    ('numpyro_dsd', 'jax')
    """
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "numpyro_dsd" / "jax"


@contextmanager
def compilation_cache(no_cache: bool = False) -> Iterator[Path | None]:
    """JAX's persistent compilation cache on while the block runs; yields its folder, or None
    when it is off (``no_cache``, :data:`NO_CACHE_ENV` set, or the folder cannot be made).

    A folder the user already gave JAX (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config.update("jax_compilation_cache_dir", ...)``) is kept; otherwise
    :func:`cache_dir`. Every compilation is stored (:data:`CACHE_MIN_COMPILE_SECONDS`). The
    two settings are put back afterwards, so calling :func:`main` from Python leaves JAX as it
    was. Library users turn the cache on themselves with the same two ``jax.config.update``
    calls (docs/diagnostic.md); importing :mod:`numpyro_dsd` never does.

    Examples
    --------
    >>> with compilation_cache(no_cache=True) as folder:
    ...     print(folder)
    None
    """
    if no_cache or os.environ.get(NO_CACHE_ENV, "") not in ("", "0"):
        yield None
        return
    import jax

    saved = {name: getattr(jax.config, name) for name in _CACHE_SETTINGS}
    folder = saved["jax_compilation_cache_dir"] or cache_dir()
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"{PROG}: no compilation cache ({e}); set {NO_CACHE_ENV}=1.", file=sys.stderr)
        yield None
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECONDS)
    try:
        yield Path(folder)
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)


_CACHE_SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Kernel Stein discrepancy diagnostics for NumPyro.")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="command", help="see numpyro-dsd COMMAND --help"
    )
    _add_demo(sub)
    _add_diagnose(sub)
    return parser


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="diagnose NUTS on Neal's funnel, biased and exact",
        description="NUTS on Neal's funnel, centred (biased) and non-centred (exact), diagnosed "
        "next to R-hat and ESS; writes a figure and netCDF files.",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("numpyro_dsd_demo"),
        metavar="DIR",
        help="output folder, created if missing (default %(default)s)",
    )
    counts = (
        ("--num-samples", 8, 1000, "draws per chain"),
        ("--num-chains", 1, 4, "chains"),
        ("--num-bootstrap", 1, 500, "bootstrap replicates"),
        ("--num-flow-steps", 1, 2000, "NeuTra flow fitting steps"),
    )
    for option, minimum, default, what in counts:
        demo.add_argument(
            option,
            type=_at_least(minimum),
            default=default,
            metavar="N",
            help=f"{what} (default %(default)s)",
        )
    demo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="every key is split from jax.random.key(seed) (default %(default)s)",
    )
    _add_no_cache(demo)
    for old, new in (
        ("--chains", "--num-chains"),
        ("--n-boot", "--num-bootstrap"),
        ("--flow-steps", "--num-flow-steps"),
    ):
        demo.add_argument(
            old,
            type=_at_least(1),
            dest=new[2:].replace("-", "_"),
            action=_deprecated(new),
            help=argparse.SUPPRESS,
        )


def _add_no_cache(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help=f"do not keep compiled programs between runs (also {NO_CACHE_ENV}=1); the cache "
        "is in $XDG_CACHE_HOME/numpyro_dsd/jax, else ~/.cache/numpyro_dsd/jax",
    )


_DIAGNOSE_EPILOG = """\
examples:
  numpyro-dsd diagnose run.nc --model models.py:eight_schools --data data.json
  numpyro-dsd diagnose run.nc --model mypackage.models:eight_schools --data data.npz
  numpyro-dsd diagnose run.nc --diffusion flow --save diagnosed.nc --plot trace.png

run.nc as ArviZ writes it: az.from_numpyro(mcmc).to_netcdf("run.nc") (ArviZ 0.x or 1.x).
data.json: {"J": 8, "sigma": [15, 10, ...], "y": [28, 8, ...]}, the model's keyword arguments.
"""


def _add_diagnose(sub: Any) -> None:
    diag = sub.add_parser(
        "diagnose",
        help="diagnose the draws of a saved ArviZ netCDF file",
        description="The KSD diagnostic (verdict, KSD test, Stein moment and stationarity\n"
        "tests) of the draws in an ArviZ netCDF file, beside R-hat and ESS.",
        epilog=_DIAGNOSE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diag.add_argument(
        "file",
        type=Path,
        metavar="FILE",
        help="netCDF file: its posterior group, diagnosed with --model; or, without "
        "--model, its stein_inputs group (draws and scores, add_stein_inputs)",
    )
    diag.add_argument(
        "--model",
        type=inputs.parse_model_spec,
        metavar="FILE.py:FUNCTION",
        help="the NumPyro model that produced the draws: a function in a .py file "
        "(or package.module:FUNCTION); the file is imported",
    )
    diag.add_argument(
        "--data",
        type=Path,
        metavar="ARGS",
        help="the model's keyword arguments: a .json object (lists become arrays) "
        "or an .npz of arrays (np.savez); needs --model",
    )
    diag.add_argument(
        "--diffusion",
        type=_diffusion,
        choices=DIFFUSIONS,
        default="identity",
        help="M(x) of the Stein kernel (default %(default)s). flow: reuse the flow stored in the "
        "file's stein_diagnostics group (the demo's files have one); without one, fit a flow to "
        "the model given by --model, else to the draws under test",
    )
    diag.add_argument(
        "--num-bootstrap",
        type=_at_least(1),
        default=1000,
        metavar="N",
        help="bootstrap replicates of the KSD test (default %(default)s)",
    )
    diag.add_argument(
        "--n-boot",
        type=_at_least(1),
        dest="num_bootstrap",
        action=_deprecated("--num-bootstrap"),
        help=argparse.SUPPRESS,
    )
    diag.add_argument(
        "--estimator",
        choices=("exact", "nystrom"),
        default="exact",
        help="exact KSD (O(n^2) per chain, default) or the Nystrom estimate (O(n m), for chains "
        "of 10^5 draws and more; docs/scale.md)",
    )
    diag.add_argument(
        "--num-inducing",
        type=_at_least(1),
        metavar="M",
        help="inducing points per chain for --estimator nystrom (default ceil(4 sqrt(n)))",
    )
    diag.add_argument(
        "--seed", type=int, default=0, help="rng_key = jax.random.key(seed) (default %(default)s)"
    )
    diag.add_argument(
        "--save",
        type=Path,
        metavar="OUT.nc",
        help="write the file again with the result as a stein_diagnostics group",
    )
    diag.add_argument(
        "--plot",
        type=Path,
        metavar="FIG",
        help="save the KSD-along-the-chain figure (.png, .pdf, .svg, ...)",
    )
    _add_no_cache(diag)
    diag.set_defaults(parser=diag)


def _demo(args: argparse.Namespace) -> int:
    _checked(inputs.check_writable_dir, args.out, "--out")
    import pandas as pd

    from numpyro_dsd.demo import run_demo

    table = run_demo(
        args.out,
        num_samples=args.num_samples,
        num_chains=args.num_chains,
        num_bootstrap=args.num_bootstrap,
        num_flow_steps=args.num_flow_steps,
        seed=args.seed,
    )
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print("Neal's funnel (d = 5), true v ~ N(0, 3^2): v_mean 0, v_sd 3.\n")
        print(table.round(3).to_string())
    print(
        f"\nRead (level {table.attrs['alpha']:g}): 'fail' says the draws do not represent the"
        "\nposterior (the KSD test, the Stein moment test or the stationarity test rejects);"
        "\n'inconclusive' says too few effective draws to vouch for them (or, pooled, that a chain"
        "\nfails); 'pass' says no test found a problem."
        "\nThe centred sampler misses the funnel's neck (v_sd below 3). R-hat and ESS see that only"
        "\nwhere the chains happen to disagree; the KSD compares the draws with the target"
        "\nitself. The flow diffusion (M = J^-1 of a NeuTra flow) flags it; the plain KSD"
        "\n(identity) is weak on funnels (docs/theory.md, docs/diagnostic.md)."
    )
    print(f"\nfigure and files in {args.out}/ ({table.attrs['seconds']:.0f} s)")
    print(f"try: numpyro-dsd diagnose {args.out}/centred.nc")
    return 0


def _checked(check: Callable[..., Any], *args: Any) -> Any:
    """``check(*args)``, its ``ValueError`` turned into one line on stderr and exit status 1."""
    try:
        return check(*args)
    except ValueError as e:
        _fail(str(e))


def _diagnose(args: argparse.Namespace) -> int:
    _check_paths(args)
    model, kwargs = _checked(_model_and_kwargs, args) if args.model else (None, {})
    data = _load(args.file)
    ds = _run_diagnostic(args, data, model, kwargs)
    _report(ds, data)
    if args.save:
        _checked(_write, arviz_io.save, arviz_io.add_diagnostics(data, ds), args.save)
    if args.plot:
        _checked(_write, _save_trace_plot, ds, args.plot)
    return 0


def _check_paths(args: argparse.Namespace) -> None:
    """The input file and the ``--save``/``--plot`` paths, before anything is computed."""
    if args.data is not None and args.model is None:
        args.parser.error(
            "--data gives the model's arguments: name the model with --model FILE.py:FUNCTION"
        )
    _checked(inputs.check_readable, args.file, "FILE", _NETCDF_FIX)
    for option in ("save", "plot"):
        if getattr(args, option) is not None:
            _checked(inputs.check_writable, getattr(args, option), f"--{option}")
    if args.plot is not None:
        _check_plot_format(args.plot)


def _model_and_kwargs(args: argparse.Namespace) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The model named by ``--model`` and its keyword arguments from ``--data``, checked."""
    model = inputs.load_model(args.model)
    kwargs = {} if args.data is None else inputs.load_model_kwargs(args.data)
    from numpyro_dsd.mcmc.inputs import signature_mismatch

    mismatch = signature_mismatch(model, (), kwargs)
    if mismatch is not None:
        given = f"the keywords {', '.join(kwargs)}" if kwargs else "no arguments"
        raise ValueError(
            f"--data: {mismatch} (called with {given}). Give --data a .json object or .npz "
            "whose names are the model's arguments."
        )
    return model, kwargs


def _load(path: Path) -> Any:
    try:
        return arviz_io.load(path)
    except (OSError, ValueError) as e:
        _fail(f"cannot read {path} as netCDF ({e}); {_NETCDF_FIX}")


def _run_diagnostic(
    args: argparse.Namespace, data: Any, model: Callable[..., Any] | None, kwargs: dict[str, Any]
) -> Any:
    """``ksd_diagnostic`` of the file's ``stein_inputs`` or, with a model, its posterior."""
    import jax

    from numpyro_dsd.mcmc.diagnostic import ksd_diagnostic

    if model is None and arviz_io.read_stein_inputs(data) is None:
        _fail(
            f"{args.file} has no 'stein_inputs' group (draws and scores); name the model that "
            "produced its posterior: --model FILE.py:FUNCTION --data ARGS.json (or write the "
            "group with numpyro_dsd.arviz.convert.add_stein_inputs)."
        )
    stored = arviz_io.get_group(data, "stein_diagnostics")
    reuse = args.diffusion == "flow" and stored is not None and "flow_spec_dim" in stored.attrs
    # reuse: the flow an earlier diagnostic fitted (to the model) and saved
    diffusion = data if reuse else args.diffusion
    fits_flow = args.diffusion == "flow" and not reuse
    try:
        draws = data if model is None else arviz_io.posterior_dict(data)
        return ksd_diagnostic(
            draws,
            model,
            model_kwargs=kwargs,
            diffusion=diffusion,
            num_bootstrap=args.num_bootstrap,
            rng_key=jax.random.key(args.seed),
            flow_kwargs={"progress_bar": True} if fits_flow else None,  # the bar on stderr
            estimator=args.estimator,
            num_inducing=args.num_inducing,
        )
    except (ValueError, TypeError) as e:  # bad input: the message names the problem and fix
        _fail(f"{args.file}: {e}")


def _report(ds: Any, data: Any) -> None:
    has_posterior = arviz_io.get_group(data, "posterior") is not None
    print(arviz_io.stein_summary(ds, data if has_posterior else None).to_string())
    verdict = f"{ds.verdict_pooled.values} ({ds.reason_pooled.values})"
    print(f"\npooled verdict at level {ds.attrs['alpha']:g}: {verdict}")
    print(f"{ds.attrs['kernel']} kernel, {ds.attrs['diffusion']} diffusion, {ds.attrs['test']}")
    if "flow_fitted" in ds.attrs:
        khat, steps = ds.attrs.get("flow_khat", float("nan")), ds.attrs.get("flow_num_steps", "?")
        print(f"flow: {ds.attrs['flow_fitted']}; Pareto k-hat {khat:.2f}, {steps} steps")


def _write(write: Callable[[Any, Path], None], value: Any, path: Path) -> None:
    """``write(value, path)``, an ``OSError`` (disk full, removed folder) as a ``ValueError``."""
    try:
        write(value, path)
    except OSError as e:
        raise ValueError(f"cannot write {path} ({e}); choose another path.") from e


def _check_plot_format(path: Path) -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        known = ", ".join(f".{f}" for f in sorted(formats))
        _fail(
            f"--plot {path}: matplotlib cannot write {path.suffix or 'a file without suffix'}; "
            f"end the name in one of {known}."
        )


def _save_trace_plot(ds: object, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from numpyro_dsd.arviz.plots import plot_ksd_trace

    fig, ax = plt.subplots(figsize=(6, 4.5))
    plot_ksd_trace(ds, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``numpyro-dsd`` command.

    A mistake exits with one line on stderr: status 2 for a usage error, 1 otherwise.

    Examples
    --------
    >>> main(["diagnose", "missing.nc"])
    Traceback (most recent call last):
    ...
    SystemExit: numpyro-dsd: FILE: no such file: missing.nc; give an ArviZ netCDF file ...
    """
    args = _parser().parse_args(argv)
    with compilation_cache(args.no_cache):
        return {"demo": _demo, "diagnose": _diagnose}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
