"""Pinned requirements from what is installed: the distributions a server imports and everything
they depend on (walked through the installed metadata, markers evaluated for this interpreter),
each at its installed version, the local label dropped (``2.13.0+cpu`` is pinned ``==2.13.0``;
the Dockerfile takes torch from the CPU index). A root that is not installed is a clear error: the
export would pin something corral never ran the model with."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import Distribution, PackageNotFoundError, distribution

from corral.errors import UsageError


@dataclass(frozen=True)
class Pin:
    name: str  # the distribution's own spelling
    version: str  # without a local label

    def line(self) -> str:
        return f"{self.name}=={self.version}"


def canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def _installed(name: str) -> Distribution | None:
    try:
        return distribution(name)
    except PackageNotFoundError:
        return None


def _needs(dist: Distribution, extras: frozenset[str]) -> Iterable[tuple[str, frozenset[str]]]:
    """(distribution, its extras) that ``dist`` requires here, with the given extras of it asked for."""
    from packaging.requirements import InvalidRequirement, Requirement

    for text in dist.requires or ():
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            continue
        yield req.name, frozenset(req.extras)


def pin_of(dist: Distribution) -> Pin:
    """The installed distribution at its version, the local label dropped."""
    return Pin(str(dist.metadata["Name"]), str(dist.version).split("+", 1)[0])


def installed_pin(name: str) -> Pin:
    """``name`` (a distribution that is installed) pinned at its installed version."""
    return pin_of(distribution(name))


def pin_closure(roots: Iterable[str]) -> list[Pin]:
    """Every installed distribution ``roots`` need (the roots included), sorted by name."""
    found: dict[str, Pin] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str], bool]] = [(r, frozenset(), True) for r in roots]
    while todo:
        name, extras, is_root = todo.pop()
        key = (canonical(name), extras)
        if key in seen:
            continue
        seen.add(key)
        dist = _installed(name)
        if dist is None:
            if is_root:
                raise UsageError(f"{name} is not installed, so there is no version to pin for the export",
                                 f"install what the model runs with first (pip install {name}), run the model once, "
                                 "then export")
            continue  # an optional dependency left out of this environment: the export needs it no more
        found[key[0]] = pin_of(dist)
        todo.extend((dep, dep_extras, False) for dep, dep_extras in _needs(dist, extras))
    return sorted(found.values(), key=lambda p: canonical(p.name))


def cuda_pins(pins: list[Pin], swaps: dict[str, str]) -> list[Pin]:
    """The CUDA build's requirements: a distribution with a CUDA twin (onnxruntime -> onnxruntime-gpu)
    replaced by it at the same version; the rest unchanged (torch's default wheels are CUDA builds)."""
    named = {canonical(k): v for k, v in swaps.items()}
    return [Pin(named[canonical(p.name)], p.version) if named.get(canonical(p.name)) else p for p in pins]
