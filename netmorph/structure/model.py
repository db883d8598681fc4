"""What recognition returns: ``Structure`` = stem ``D`` + levels ``L`` (switch ``C`` +
templates ``T``) + tail ``F``, each part a ``Block`` naming the graph's nodes and values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Block:
    """A block of the DynamicNet structure.

    Attributes
    ----------
    name : str
        ``"level2.block3"`` (position in the recognised structure), ``"stem"`` or ``"tail"``.
    kind : str
        ``"switch"`` (channel-switching block ``C``), ``"template"`` (``T``), ``"stem"``, ``"tail"``.
    nodes : list of str
        Node names in topological order (auxiliary weight nodes used only here included).
    input, output : str
        Value names entering and leaving the block (cut values of the data flow).
    convs : list of str
        Main-path Conv node names in order (shortcut convs excluded).
    shortcut : None, "identity", "scaled" or "conv"
        ``None`` for plain blocks.
    residual_ratio : float or None
        ``r`` of an ``r·Id`` shortcut (``1.0`` for the identity), else ``None``.
    add : str or None
        The Add node joining main path and shortcut.
    stride : int
        Spatial down-sampling of the block (product of conv and pooling strides).
    in_channels, out_channels : int or None
        Widths entering and leaving (when known).
    """

    name: str
    kind: str
    nodes: list[str]
    input: str
    output: str
    convs: list[str] = field(default_factory=list)
    shortcut: str | None = None
    residual_ratio: float | None = None
    add: str | None = None
    stride: int = 1
    in_channels: int | None = None
    out_channels: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Level:
    """A level block ``L``: an optional channel switch, then repeatable template blocks."""

    index: int
    width: int
    blocks: list[Block]
    spatial: tuple[int, int] | None = None

    @property
    def switch(self) -> Block | None:
        return self.blocks[0] if self.blocks and self.blocks[0].kind == "switch" else None

    @property
    def templates(self) -> list[Block]:
        return [b for b in self.blocks if b.kind == "template"]

    def to_dict(self) -> dict:
        return {
            "index": self.index, "width": self.width,
            "spatial": None if self.spatial is None else list(self.spatial),
            "switch": None if self.switch is None else self.switch.name,
            "blocks": [b.to_dict() for b in self.blocks],
        }


@dataclass
class Structure:
    """The DynamicNet shape of a graph: ``family``, ``stem``, ``levels``, ``tail``, ``depth``."""

    family: str
    stem: Block | None
    levels: list[Level]
    tail: Block
    depth: int

    @property
    def blocks_per_level(self) -> list[int]:
        return [len(lv.blocks) for lv in self.levels]

    def blocks(self) -> list[Block]:
        """Every level block, in order."""
        return [b for lv in self.levels for b in lv.blocks]

    def to_dict(self) -> dict:
        return {
            "family": self.family, "depth": self.depth,
            "blocks_per_level": self.blocks_per_level,
            "stem": None if self.stem is None else self.stem.to_dict(),
            "levels": [lv.to_dict() for lv in self.levels],
            "tail": self.tail.to_dict(),
        }

    def summary(self) -> str:
        """A few human-readable lines: family, depth, per level width, size and blocks."""
        lines = [
            f"{self.family} DynamicNet, depth {self.depth}, {len(self.levels)} levels, "
            f"blocks per level {'/'.join(map(str, self.blocks_per_level))}"
        ]
        if self.stem is None:
            lines.append("  stem    none")
        else:
            lines.append(
                f"  stem    {len(self.stem.convs)} conv, stride {self.stem.stride}, "
                f"-> {self.stem.out_channels} ch  ({', '.join(self.stem.convs)})"
            )
        for lv in self.levels:
            size = "" if lv.spatial is None else f" {lv.spatial[0]}x{lv.spatial[1]},"
            parts = []
            if lv.switch is not None:
                parts.append(f"switch{_shortcut_text(lv.switch)}")
            if lv.templates:
                plural = "s" if len(lv.templates) > 1 else ""
                parts.append(f"{len(lv.templates)} template{plural}{_shortcut_text(lv.templates[-1])}")
            lines.append(
                f"  level{lv.index}  width {lv.width},{size} {len(lv.blocks)} blocks "
                f"({' + '.join(parts)}), {sum(len(b.convs) for b in lv.blocks)} convs"
            )
        t = self.tail
        lines.append(f"  tail    {len(t.nodes)} nodes, from {t.input!r} to {t.output!r}")
        return "\n".join(lines)


def _shortcut_text(b: Block) -> str:
    if b.shortcut is None:
        return ""
    if b.shortcut == "scaled":
        return f" [r={b.residual_ratio:g}]"
    return f" [{b.shortcut}]"
