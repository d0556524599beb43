"""One registry for everything plugins contribute by name: methods' datasets, models, robustness
metrics and cost profiles. A name belongs to one package: a second package registering it is refused
with both named; an unknown name lists the installed ones and the nearest to what was asked."""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from benchbed.errors import BenchbedError

T = TypeVar("T")


class UnknownName(BenchbedError, KeyError):
    """A name no installed plugin registered (a ``KeyError`` too, so the registry is a ``Mapping``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class Registry(Mapping[str, T], Generic[T]):
    """``kind`` names what it holds in messages ("dataset"), ``hook`` the hook that contributes them;
    ``entries`` are (package, item) pairs, each item named by its ``name``."""

    def __init__(self, kind: str, hook: str, entries: Iterable[tuple[str, T]]):
        self.kind, self.hook = kind, hook
        self._items: dict[str, T] = {}
        self._packages: dict[str, str] = {}
        for package, item in entries:
            name = item.name
            if name in self._items:
                raise BenchbedError(f"two packages register a {kind} named {name!r}: {self._packages[name]} and "
                                    f"{package}; disable one of them with BENCHBED_DISABLE")
            self._items[name], self._packages[name] = item, package

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownName(f"unknown {self.kind} {name!r}; installed: {', '.join(self._items) or 'none'}"
                              f"{did_you_mean(name, self._items)} (a plugin adds one through the `{self.hook}` "
                              "hook)") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def package(self, name: str) -> str:
        """The package that registered ``name``."""
        self[name]
        return self._packages[name]
