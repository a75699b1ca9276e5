"""Lazy forks: a stream read by several consumers hands a beat on only when every consumer takes it.

Used by both top-level emitters of graphs (``top`` for vector designs, ``stream`` for pixel streams):
the producer's ready is the AND of its consumers' readies, and each consumer sees the producer's valid
only while every *other* consumer is ready, so all of them take the beat in the same cycle. A stream
with one consumer is passed through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable


class LazyForks:
    """The fork wiring of every stream of one top: ``consumers[src]`` lists the consumer edges of each
    source stream in a fixed order; ``streams[src]`` is its (data, valid, ready) wires (both dicts are
    the caller's own, read when a fork is written, so they may still grow); ``ready[edge]`` is the ready
    of one consumer edge as the producer sees it (set by the caller or by :meth:`finish`)."""

    def __init__(self, lines: list[str], consumers: dict, streams: dict, label: Callable[[Hashable], str],
                 consumer: str, beat: str, ready: dict | None = None):
        self.lines, self.consumers, self.streams, self.label = lines, consumers, streams, label
        self.consumer, self.beat = consumer, beat
        self.ready: dict = {} if ready is None else ready
        self._valid: dict = {}
        self._done: dict = {}

    def valid(self, src: Hashable, edge: Hashable, wire: str) -> str:
        """The valid that consumer ``edge`` of ``src`` sees: the source's own, or a new ``wire``."""
        if len(self.consumers[src]) == 1:
            return self.streams[src][1]
        self.lines.append(f"    wire {wire};   // lazy fork of {self.label(src)}")
        self._valid[edge] = wire
        return wire

    def finish(self, src: Hashable, edge: Hashable, ready: str | None = None) -> None:
        """Consumer ``edge`` of ``src`` is wired (its ready is ``ready``, or already in ``self.ready``);
        after the last one, the fork's assigns."""
        if ready is not None:
            self.ready[edge] = ready
        cons, lines, (_, valid, src_ready) = self.consumers[src], self.lines, self.streams[src]
        if len(cons) == 1:
            lines.append(f"    assign {src_ready} = {self.ready[edge]};")
            return
        self._done[src] = self._done.get(src, 0) + 1
        if self._done[src] < len(cons):
            return
        lines.append(f"    // fork of {self.label(src)}: every {self.consumer} takes the {self.beat} in the same cycle")
        lines.append(f"    assign {src_ready} = {' && '.join(f'({self.ready[c]})' for c in cons)};")
        for c in cons:
            others = [f"({self.ready[o]})" for o in cons if o != c]
            lines.append(f"    assign {self._valid[c]} = {valid} && {' && '.join(others)};")
