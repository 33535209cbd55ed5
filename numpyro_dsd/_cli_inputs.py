"""What the ``numpyro-dsd`` command reads and writes, checked before any computation.

- paths: a file to read (:func:`check_readable`), a file or folder to write
  (:func:`check_writable`, :func:`check_writable_dir`);
- the user's model, ``--model FILE.py:FUNCTION`` or ``--model package.module:FUNCTION``
  (:func:`parse_model_spec`, :func:`load_model`);
- its keyword arguments, ``--data ARGS.json`` (a JSON object) or ``--data ARGS.npz`` (arrays)
  (:func:`load_model_kwargs`); :mod:`numpyro_dsd.cli` checks them against the model's signature
  (:func:`numpyro_dsd.mcmc.inputs.signature_mismatch`).

Every problem is a ``ValueError`` whose message names the option, the problem and the fix in
one line; :mod:`numpyro_dsd.cli` prints it and exits with status 1. This module imports nothing
from the package, and neither JAX nor NumPyro (the user's model file does).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import sys
import tempfile
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "check_readable",
    "check_writable",
    "check_writable_dir",
    "load_model",
    "load_model_kwargs",
    "parse_model_spec",
]

#: ``--model``'s form, quoted in its messages.
MODEL_FORM = "FILE.py:FUNCTION (or package.module:FUNCTION), e.g. models.py:eight_schools"
#: The name the user's model file is imported under (never clobbers an installed module).
_USER_MODULE = "numpyro_dsd_user_model"


# --- paths -----------------------------------------------------------------------------------


def check_readable(path: Path, label: str, fix: str) -> None:
    """Raise ``ValueError`` unless ``path`` is a non-empty regular file; ``fix`` ends the message.

    Examples
    --------
    >>> check_readable(Path("missing.nc"), "FILE", "give the netCDF file to diagnose.")
    Traceback (most recent call last):
    ...
    ValueError: FILE: no such file: missing.nc; give the netCDF file to diagnose.
    """
    if not path.exists():
        problem = "no such file"
    elif path.is_dir():
        problem = "a directory, not a file"
    elif path.stat().st_size == 0:
        problem = "the file is empty (0 bytes)"
    elif not os.access(path, os.R_OK):
        problem = "the file is not readable"
    else:
        return
    raise ValueError(f"{label}: {problem}: {path}; {fix}")


def check_writable(path: Path, option: str) -> None:
    """Raise ``ValueError`` unless a file can be written at ``path`` (its folder exists and takes
    new files; an existing ``path`` is a writable file)."""
    if path.is_dir():
        raise ValueError(
            f"{option} {path} is a directory; give a file name inside it, e.g. {path / 'out'}."
        )
    _check_folder(path.parent, f"{option} {path}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{option} {path}: the file is not writable; choose another path.")


def check_writable_dir(path: Path, option: str) -> None:
    """Raise ``ValueError`` unless ``path`` is a folder, or can be made one, that takes files."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is not a directory (a file is there); choose a folder.")
    existing = next(p for p in (path, *path.parents) if p.exists())
    _check_folder(existing, f"{option} {path}")


def _check_folder(folder: Path, what: str) -> None:
    if not folder.exists():
        raise ValueError(
            f"{what}: the directory {folder} does not exist; create it (mkdir -p {folder}) or "
            "choose another path."
        )
    if not folder.is_dir():
        raise ValueError(f"{what}: {folder} is not a directory; choose another path.")
    try:  # a real probe: as root, os.access says yes even on a read-only mount
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        raise ValueError(
            f"{what}: the directory {folder} is not writable; choose another path."
        ) from None


# --- the model -------------------------------------------------------------------------------


def parse_model_spec(text: str) -> tuple[str, str]:
    """``--model``'s value as ``(file or module, function name)``; an argparse ``type``.

    Examples
    --------
    >>> parse_model_spec("models.py:eight_schools")
    ('models.py', 'eight_schools')
    """
    where, _, name = text.rpartition(":")
    if not where or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected {MODEL_FORM}; got {text!r}")
    return where, name


def load_model(spec: tuple[str, str]) -> Callable[..., Any]:
    """The function ``spec[1]`` of the file or module ``spec[0]`` (:func:`parse_model_spec`).

    A file is imported as a module (its ``if __name__ == "__main__":`` block does not run), with
    its folder first on ``sys.path`` so that it can import its neighbours.
    """
    where, name = spec
    is_file = where.endswith(".py") or "/" in where or os.sep in where
    module = _import_file(Path(where)) if is_file else _import_module(where)
    model = getattr(module, name, None)
    if model is None:
        defined = ", ".join(_functions(module)) or "none"
        raise ValueError(
            f"--model: {where} defines no {name!r} (its functions: {defined}); give {MODEL_FORM}."
        )
    if not callable(model):
        raise ValueError(
            f"--model: {name!r} in {where} is a {type(model).__name__}, not a function; give "
            "the NumPyro model function."
        )
    return model


def _import_file(path: Path) -> ModuleType:
    check_readable(path, "--model", f"give {MODEL_FORM}.")
    spec = importlib.util.spec_from_file_location(_USER_MODULE, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--model: cannot import {path} as Python; give a .py file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_USER_MODULE] = module  # dataclasses and pickling look the module up
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's code: report where it failed, in one line
        raise ValueError(f"--model: importing {path} failed{_where(e, path)}: {_brief(e)}") from e
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ValueError(
            f"--model: cannot import module {name!r} ({e}); give {MODEL_FORM} (a path to a "
            ".py file needs the .py)."
        ) from e


def _functions(module: ModuleType) -> list[str]:
    """The functions ``module`` itself defines."""
    return [
        n
        for n, v in vars(module).items()
        if inspect.isfunction(v) and v.__module__ == module.__name__ and not n.startswith("_")
    ]


def _where(error: BaseException, path: Path) -> str:
    """`` at line N`` of ``path`` where ``error`` arose, or ``""``."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f" at line {error.lineno}"
    frames = traceback.extract_tb(error.__traceback__)
    lines = [f.lineno for f in frames if Path(f.filename).resolve() == path.resolve()]
    return f" at line {lines[-1]}" if lines else ""


def _brief(error: BaseException) -> str:
    message = error.msg if isinstance(error, SyntaxError) else str(error)
    return f"{type(error).__name__}: {message}"


# --- the model's arguments ---------------------------------------------------------------------


def load_model_kwargs(path: Path) -> dict[str, Any]:
    """The model's keyword arguments from ``--data``.

    - ``.json``: a JSON object ``{"J": 8, "sigma": [15, 10, ...], "y": [...]}``; lists become
      NumPy arrays, every other value (numbers, strings, ``null``) stays as it is, so an int that
      sizes a ``numpyro.plate`` stays a Python int;
    - ``.npz`` (``np.savez``): one array per keyword; a 0-d array becomes its Python scalar.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "data.json"
    >>> _ = path.write_text('{"J": 2, "y": [1.5, 2.0]}')
    >>> load_model_kwargs(path)
    {'J': 2, 'y': array([1.5, 2. ])}
    """
    check_readable(path, "--data", _DATA_FIX)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _from_json(path)
    if suffix == ".npz":
        return _from_npz(path)
    raise ValueError(f"--data {path}: unknown file type {suffix or '(none)'!r}; {_DATA_FIX}")


_DATA_FIX = (
    "give the model's keyword arguments as a .json object or an .npz of arrays "
    "(np.savez('data.npz', y=y, ...))."
)


def _from_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--data {path} is not valid JSON ({e}); {_DATA_FIX}") from e
    if not isinstance(value, dict):
        raise ValueError(
            f"--data {path} holds a JSON {type(value).__name__}, not an object; write the "
            'arguments by name: {"J": 8, "y": [...]}.'
        )
    return {key: _json_value(key, v, path) for key, v in value.items()}


def _json_value(key: str, value: Any, path: Path) -> Any:
    if not isinstance(value, list):
        return value
    try:
        return np.asarray(value)
    except ValueError as e:
        raise ValueError(
            f"--data {path}: {key!r} is not a rectangular array ({e}); give equal-length rows."
        ) from e


def _from_npz(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {k: arrays[k].item() if arrays[k].ndim == 0 else arrays[k] for k in arrays}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"--data {path} is not an .npz of arrays ({e}); {_DATA_FIX}") from e
