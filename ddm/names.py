"""Name tables: each sampler, time grid and loss weighting is registered by its params.yaml name
where it is defined, with what the rest of the package needs to know about it.

A :class:`Names` table maps a name to an object; ``register(name, **info)`` is a decorator that
adds the object and keeps ``info`` beside it (``info(name)``): for a sampler the processes it
fits and the values of its ``final_step`` option, for a grid the processes it fits, for each a
``label`` (how the tables write it). A table may join others: ``Names("sampler", a, b)`` reads
through ``a`` and ``b`` in order, and what is registered on it is its own, so ``ddm.registry``
joins ``ddm.sampling``'s and ``ddm.sde_samplers``' tables without editing either. Every view of a
table is live: a name registered later (a test, a user's module) is seen everywhere at once.

The h_t families (Table 4) register themselves as subclasses of ``ddm.families.HtFamily``, the
forward processes as subclasses of ``ddm.process.Process`` (in :data:`PROCESSES`).
This module imports nothing from ddm, so every module may import it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, TypeVar

__all__ = ["Names", "sampler_table", "grid_table", "PROCESSES", "GAUSSIAN", "EXTRACTORS"]

T = TypeVar("T")

class Names(Mapping[str, T]):
    """params.yaml name -> object of one ``kind`` (``"sampler"``, ``"grid"``, ``"weighting"``).

    ``required``: the info keys every registration gives; ``defaults``: the optional ones and
    their values (``label`` is always optional, default None). Any other key is refused, so a
    misspelt option fails where it is written.
    """

    def __init__(self, kind: str, *joined: "Names", required: tuple[str, ...] = (),
                 defaults: Mapping[str, Any] | None = None):
        self.kind = kind
        self.required = tuple(required)
        self.defaults = {"label": None, **(defaults or {})}
        self._own: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._joined = joined

    def register(self, name: str, **info) -> Callable[[T], T]:
        """Decorator: add the object under ``name`` with ``info``; returns the object unchanged."""
        missing = [k for k in self.required if k not in info]
        unknown = sorted(set(info) - set(self.required) - set(self.defaults))
        if missing or unknown:
            raise TypeError(f"{self.kind} '{name}': " + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else [])
                + ([f"unknown {', '.join(unknown)} (allowed: {', '.join([*self.required, *self.defaults])})"]
                   if unknown else [])))

        def add(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._own[name] = obj
            self._info[name] = {**self.defaults, **info}
            return obj

        return add

    def unregister(self, name: str) -> None:
        """Remove a name registered on this table (not one of a joined table)."""
        if name not in self._own:
            raise ValueError(f"{self.kind} '{name}' was not registered on this table")
        del self._own[name], self._info[name]

    def info(self, name: str) -> dict[str, Any]:
        """What was registered with ``name`` (defaults filled in)."""
        if name in self._own:
            return dict(self._info[name])
        for table in self._joined:
            if name in table:
                return table.info(name)
        raise KeyError(name)

    def lookup(self, name: str) -> T:
        """The object named ``name``; an unknown name is a ValueError listing the valid ones."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} '{name}'; valid names: {', '.join(sorted(self))}")
        return self[name]

    def column(self, key: str) -> Mapping[str, Any]:
        """A live view name -> ``info(name)[key]``."""
        return _Column(self, key)

    def __getitem__(self, name: str) -> T:
        if name in self._own:
            return self._own[name]
        for table in self._joined:
            if name in table:
                return table[name]
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        """Names of the joined tables in order, then this table's own."""
        seen = set()
        for table in (*self._joined, self._own):
            for name in table:
                if name not in seen:
                    seen.add(name)
                    yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"Names({self.kind!r}: {', '.join(self)})"


#: The forward processes of params.yaml (``process:``) by name: DDM (``ddm.process.DecoupledProcess``,
#: Eq. 6-11), the VP-SDE (DDPM, Eq. 1-5) and the VE-SDE (``ddm.baselines``). Each
#: ``ddm.process.Process`` subclass that sets ``name`` registers itself where it is defined; the
#: table is complete once ``ddm.baselines`` is imported (``ddm.registry`` imports it).
PROCESSES: Names[type] = Names("process")
#: The FID feature extractors of params.yaml (``fid: extractor:``) by name -> the feature layer FID
#: uses (torch-fidelity's name); ``weights`` says where the weights file comes from (``"params"``:
#: the file ``fid: weights:`` names, checked when params are validated; ``"default"``: that file or
#: a default place; ``"made"``: ``ddm extractor`` makes it). torch-fidelity's own registry holds the
#: classes. Every extractor, the package's two included, registers with
#: ``ddm.extractors.register_extractor`` (``ddm.metrics.register_extractor``).
EXTRACTORS: Names[str] = Names("extractor", defaults={"weights": "params"})
#: Every Gaussian path x_t = alpha_t x0 + sigma_t eps ("ddm/constant": DDM with h_t = c, Eq. 7).
GAUSSIAN = ("ddm/constant", "vp", "ve")


class _Column(Mapping[str, Any]):
    def __init__(self, table: Names, key: str):
        self._table, self._key = table, key

    def __getitem__(self, name: str) -> Any:
        return self._table.info(name)[self._key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


def sampler_table(*joined: Names) -> Names:
    """A table of samplers: ``fits`` (the processes a sampler fits: "ddm" = every h_t family,
    "ddm/constant" = h_t = c only, "vp", "ve") is required; ``final_steps`` (the values of its
    ``final_step`` option) defaults to the paper's last step only; ``label`` names it in the tables."""
    return Names("sampler", *joined, required=("fits",), defaults={"final_steps": ("paper",)})


def grid_table(*joined: Names) -> Names:
    """A table of time grids: ``fits`` as for samplers (default: every process, :data:`PROCESSES`,
    a live view: a process registered later fits too), ``label``."""
    return Names("grid", *joined, defaults={"fits": PROCESSES})
