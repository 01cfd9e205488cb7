"""Turn a registered model into a loaded handler: safety gate, engine choice, load.

Every function reads the engine table it is given (``engines``, default the built-in
:data:`~corral.engines.table.ENGINES`), so a runtime built with extra rows (a test's fake engine)
checks, imports and loads through those rows the same way."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Mapping, Sequence

from corral.engines.base import Handler, LoadOptions, handler_class
from corral.engines.table import ENGINES, EngineSpec, check_dtype, tasks_served
from corral.errors import CorralError, InvalidModelFileError, MissingDependencyError, UnsupportedTaskError
from corral.models.inspect import is_installed
from corral.models.safety import check_trust
from corral.models.store import Entry
from corral.tasks import Task


def import_engine(entry: Entry, engines: Mapping[str, EngineSpec] = ENGINES) -> None:
    """Import the engine libraries a model needs (before its memory is measured)."""
    if entry.info.engine:
        handler_class(entry.info.engine, entry.info.tasks, engines).import_libraries(engines[entry.info.engine])


def open_model(entry: Entry, options: LoadOptions, engines: Mapping[str, EngineSpec] = ENGINES) -> Handler:
    """Check the trust opt-ins, pick the engine inspection named, and load the model."""
    check_trust(entry.name, entry.info, options.trust)
    engine = entry.info.engine
    if not engine:
        raise UnsupportedTaskError(f"corral does not know which engine runs {entry.name}",
                                   "see `corral inspect` for what was detected")
    check_dtype(engine, options.dtype, engines)
    cls = handler_class(engine, entry.info.tasks, engines)
    for req in entry.info.requirements:  # the model's own needs (the engine's were checked just now)
        if not is_installed(req.package):
            raise MissingDependencyError(f"{entry.name} needs the Python package {req.package!r}, which is not "
                                         "installed", f"install it with: pip install {req.package}")
    handler = cls(entry.path, entry.info, options, spec=engines[engine])
    try:
        handler.load()
    except (CorralError, MemoryError):
        raise  # MemoryError: the registry answers it with what the model needs and what is free
    except pickle.UnpicklingError as exc:  # with --allow-pickle: torch's weights-only unpickler met more than tensors
        raise pickle_refused(entry.name, exc) from None
    except SystemExit as exc:  # a model's own code (trusted with --trust-remote-code) tried to end the process
        raise InvalidModelFileError(f"the code shipped with {entry.name} exited while loading: {exc}",
                                    "the model's own Python code failed; check it, or use another model") from None
    except ImportError as exc:  # e.g. a DETR whose backbone is a timm model, without timm
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MissingDependencyError(f"{entry.info.engine} could not load {entry.name}: {first}",
                                     "install the package it names, or use another model") from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if out_of_memory(exc):  # torch's OutOfMemoryError is a RuntimeError: the device ran out, the files are fine
            raise MemoryError(str(exc).strip().splitlines()[0]) from None
        # the libraries' own loading errors: a broken or incomplete model folder
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidModelFileError(f"{entry.info.engine} could not load {entry.name}: {first}",
                                    "check the model's files with `corral inspect`") from None
    return handler


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out: MemoryError, or torch's (CUDA) OutOfMemoryError when torch is loaded."""
    torch = sys.modules.get("torch")  # never imported here: an error of torch's needs torch already loaded
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return isinstance(exc, MemoryError) or (isinstance(oom, type) and isinstance(exc, oom))


def pickle_refused(name: str, exc: pickle.UnpicklingError) -> InvalidModelFileError:
    """What torch's weights-only unpickler said about a pickle that holds more than tensors (objects
    that run code when unpickled), as one clear error."""
    said = next((line.split("error:", 1)[1] for line in str(exc).splitlines() if "WeightsUnpickler error:" in line), "")
    said = said.strip().split(". ")[0][:200]
    return InvalidModelFileError(f"{name}: its pickle weights hold more than tensors" + (f" ({said})" if said else "")
                                 + "; they were not loaded, even with --allow-pickle",
                                 "such a file runs code when unpickled: use a safetensors version of the model")


def require_task(name: str, handler: Handler, *wanted: Task) -> Task:
    """The first of ``wanted`` the loaded model serves, or a clear error."""
    return first_served(name, handler.serves(), *wanted)


def entry_task(entry: Entry, *wanted: Task, engines: Mapping[str, EngineSpec] = ENGINES) -> Task:
    """The first of ``wanted`` a registered model can run, judged from its manifest entry (nothing loaded)."""
    served = tasks_served(entry.info.engine, entry.info.tasks, engines)
    return first_served(entry.name, served, *wanted, detected=entry.info.tasks)


def first_served(name: str, serves: frozenset[Task], *wanted: Task, detected: Sequence[str] = ()) -> Task:
    """The first of ``wanted`` in ``serves``, or the error that says what the model serves instead."""
    for task in wanted:
        if task in serves:
            return task
    if serves:
        instead = "it serves: " + ", ".join(sorted(t.value for t in serves))
    elif detected:
        instead = f"it is a {', '.join(detected)} model, which corral cannot run yet"
    else:
        instead = "it serves nothing corral can run yet"
    raise UnsupportedTaskError(f"{name} cannot {' or '.join(t.value for t in wanted)}; {instead}")
