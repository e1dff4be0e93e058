"""``QuantSpec``: what to quantize to. ``fgq/conf/bits/*.yaml`` set only these fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass

GRIDS = ("flatquant", "gptq")


@dataclass(frozen=True)
class QuantSpec:
    """Bit-widths and quantizer shapes (16 bits = off).

    Weights: per output channel, or per group of ``N`` input columns (``w_granularity="group:N"``).
    Activations: dynamic, per token (recomputed on every forward), the input of each quantized linear.
    ``grid``: ``flatquant`` is the convention FlatQuant, QuantVGGT and FGQ share (signed codes −2^(b−1)..2^(b−1)−1
    for symmetric); ``gptq`` is the GPTQ repository's unsigned-code grid, kept as an option.
    """

    w_bits: int = 16
    a_bits: int = 16
    w_sym: bool = True
    a_sym: bool = True
    w_granularity: str = "channel"
    w_clip_ratio: float = 1.0
    a_clip_ratio: float = 1.0
    grid: str = "flatquant"

    def __post_init__(self) -> None:
        for name in ("w_bits", "a_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 16:
                raise ValueError(f"bits.{name}={value!r}: must be an integer from 2 to 16 (16 = not quantized)")
        for name in ("w_clip_ratio", "a_clip_ratio"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"bits.{name}={value!r}: must be in (0, 1]")
        if self.grid not in GRIDS:
            raise ValueError(f"bits.grid={self.grid!r}: use one of {', '.join(GRIDS)}")
        self.group_size  # noqa: B018 — validates w_granularity

    @property
    def group_size(self) -> int | None:
        """Columns per weight group, or None for per-channel."""
        if self.w_granularity == "channel":
            return None
        kind, _, size = self.w_granularity.partition(":")
        if kind == "group" and size.isdigit() and int(size) > 0:
            return int(size)
        raise ValueError(f"bits.w_granularity={self.w_granularity!r}: use 'channel' or 'group:N' (N > 0)")

    @property
    def quantizes_weights(self) -> bool:
        return self.w_bits < 16

    @property
    def quantizes_activations(self) -> bool:
        return self.a_bits < 16

    @property
    def is_fp(self) -> bool:
        return not (self.quantizes_weights or self.quantizes_activations)

    @property
    def tag(self) -> str:
        return f"w{self.w_bits}a{self.a_bits}"

    def to_dict(self) -> dict:
        return asdict(self)
