"""Auto-folding: the fastest design that fits a board, chosen before synthesis.

Given a network and a :class:`Budget` (a board from :data:`BOARDS`, or explicit LUT4 / block RAM / SPRAM counts
on a family), :func:`auto_fold` chooses each dense and convolution layer's PE/SIMD and where its weights live
(block-RAM ROM or, on an iCE40UP, the SPRAM pool) to minimize the cycles per inference, and reports the choice.
Layers the network already folds keep their folding and storage.

The search, with :mod:`hwnet.estimate` as the cost model (no synthesis):

1. Candidate intervals ``T``: every cycle count a foldable layer can take, ascending (fastest first).
2. For one ``T`` every layer gets, independently, the cheapest folding that reaches ``T``: among the PE counts,
   each with the smallest SIMD that reaches ``T``, the one whose estimated matrix-vector unit costs least, counting
   a block RAM as :data:`EBR_IN_LUTS` LUT4s (a fixed exchange rate per family, about a typical part's LUT4 per
   block RAM). So every layer is balanced to ``T``, and a wide-and-shallow weight ROM that would waste block RAMs
   loses to a folding that fills them.
3. On a family with SPRAM and a budget that has it, the layers whose weights could stream from the pool are tried
   there too: none, then the largest, then the two largest, and so on (a streamed layer's weights for one cycle
   must fit the pool's 64-bit word, and the pool reads one word per cycle for all of them, so their words per
   inference must not exceed ``T``).
4. The first ``T`` (and the first SPRAM choice for it) whose whole design, estimated with every block, fits the
   budget wins. With a throughput goal (``target_cycles``), the search stops at the slowest ``T`` meeting it: the
   cheapest design that is fast enough.

Every choice for a given ``T`` is independent of the budget, and fitting is monotone in the budget, so a larger
budget never gives a slower design. LUT4 and flip-flop budgets are filled only to :attr:`Budget.fill` (85% by
default): the estimate's error (docs/benchmarks.md) and placement need the margin. When nothing fits, not even
the slowest folding, :func:`auto_fold` raises :class:`~hwnet.errors.HwnetError` with what the smallest design
needs and what the budget has.
"""

from dataclasses import dataclass, replace

from . import compiler
from .errors import HwnetError
from .ir import Conv2d, Dense

__all__ = ["Budget", "BOARDS", "EBR_IN_LUTS", "ICE40_FF_CELLS", "FoldingChoice", "auto_fold", "parse_budget"]

#: Logic cells an iCE40 flip-flop takes beyond the LUT4s: nextpnr-ice40 packs a LUT4 and a flip-flop into one
#: cell only when the LUT4 drives it, and hwnet's designs pair few. Measured on auto-folded UP5K designs
#: (bench/bench_roofline.py): (placed cells - LUT4s) / flip-flops = 0.87 (TFC), 0.79 (SFC).
ICE40_FF_CELLS = 0.85

#: LUT4s one block RAM is worth when choosing between foldings (about a typical part's LUT4 per block RAM:
#: iCE40UP5K 5,280 / 30, ECP5-25F 24,288 / 56).
EBR_IN_LUTS = {"ice40": 176, "ecp5": 434}


@dataclass(frozen=True)
class Budget:
    """What a design may use.

    Parameters
    ----------
    family : ``"ice40"`` or ``"ecp5"``
    lut4 : int
        LUT4s: on iCE40 logic cells (:meth:`logic`), on ECP5 LUT4 equivalents (a ``CCU2C`` carry cell counts
        two).
    ebr : int
        Block RAMs (iCE40 4 Kbit, ECP5 18 Kbit).
    spram : int
        iCE40UP SPRAMs (0 or 4: hwnet uses all four as one pool).
    ff : int or None
        Flip-flops (None: as many as LUT4s, one per logic cell).
    fill : float
        The fraction of the LUT4s and flip-flops a design may fill (default 0.85).
    name : str
    """
    family: str
    lut4: int
    ebr: int
    spram: int = 0
    ff: int = None
    fill: float = 0.85
    name: str = "budget"

    def __post_init__(self):
        if self.family not in EBR_IN_LUTS:
            raise HwnetError(f"unknown FPGA family {self.family!r}; choose ice40 or ecp5")
        for what in ("lut4", "ebr", "spram"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise HwnetError(f"budget {what} must be a non-negative integer, got {v!r}")
        if self.spram not in (0, compiler.SPRAM_BLOCKS):
            raise HwnetError(f"budget spram must be 0 or {compiler.SPRAM_BLOCKS} (hwnet uses the four SPRAMs of "
                             f"an iCE40UP as one pool), got {self.spram}")
        if self.spram and self.family != "ice40":
            raise HwnetError("only iCE40UP parts have SPRAM; give spram=0 for ecp5")
        if not 0 < self.fill <= 1:
            raise HwnetError(f"budget fill must be in (0, 1], got {self.fill!r}")

    @property
    def max_ff(self):
        return self.lut4 if self.ff is None else self.ff

    def logic(self, resources):
        """The LUT4s (iCE40: logic cells) ``resources`` take: on iCE40 a logic cell holds one LUT4 and one
        flip-flop, but nextpnr pairs few of them, so a flip-flop costs :data:`ICE40_FF_CELLS` of a cell beyond the
        LUT4s; on ECP5 the LUT4 equivalents (a carry cell counts two)."""
        if self.family == "ice40":
            return resources.lut4 + ICE40_FF_CELLS * resources.ff
        return resources.lut4_equivalent

    def over(self, resources):
        """What ``resources`` (an :class:`hwnet.estimate.Resources`) exceeds, as text; empty if it fits."""
        limits = (("logic cells" if self.family == "ice40" else "LUT4", self.logic(resources), self.lut4 * self.fill),
                  ("flip-flops", resources.ff, self.max_ff * self.fill),
                  ("block RAMs", resources.ebr, self.ebr), ("SPRAMs", resources.spram, self.spram))
        return ", ".join(f"{what} {round(used)} > {limit:g}" for what, used, limit in limits if used > limit)

    def text(self):
        parts = [f"{self.lut4} LUT4 (filled to {self.fill:.0%})", f"{self.ebr} block RAMs"]
        if self.spram:
            parts.append(f"{self.spram} SPRAMs")
        return f"{self.name} ({self.family}: {', '.join(parts)})"


#: Boards and parts by name (``hwnet compile --board``).
BOARDS = {
    "up5k": Budget("ice40", 5280, 30, 4, name="iCE40UP5K"),
    "hx8k": Budget("ice40", 7680, 32, 0, name="iCE40HX8K"),
    "ecp5-25f": Budget("ecp5", 24288, 56, 0, name="ECP5 LFE5U-25F"),
    "ecp5-45f": Budget("ecp5", 43848, 108, 0, name="ECP5 LFE5U-45F"),
    "ecp5-85f": Budget("ecp5", 83640, 208, 0, name="ECP5 LFE5U-85F"),
}


def parse_budget(text, family):
    """A :class:`Budget` from ``"lut4=5000,ebr=30,spram=4"`` (``hwnet compile --budget``) on ``family``."""
    fields = {}
    for item in str(text).split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("lut4", "ebr", "spram", "ff", "fill"):
            raise HwnetError(f"budget item {item!r} must be KEY=VALUE with KEY one of lut4, ebr, spram, ff, fill "
                             f"(e.g. lut4=5000,ebr=30)")
        try:
            fields[key] = float(value) if key == "fill" else int(value)
        except ValueError:
            raise HwnetError(f"budget item {item!r}: {value!r} is not a number") from None
    missing = [k for k in ("lut4", "ebr") if k not in fields]
    if missing:
        raise HwnetError(f"the budget needs {' and '.join(missing)} (e.g. lut4=5000,ebr=30)")
    return Budget(family, name="budget", **fields)


@dataclass(frozen=True)
class FoldingChoice:
    """The outcome of :func:`auto_fold`.

    Members
    -------
    network : :class:`~hwnet.ir.Network`
        The network with every layer folded and its weight storage chosen.
    plan : :class:`~hwnet.compiler.DesignPlan`
    resources : :class:`hwnet.estimate.Resources`
        The estimate of the whole design.
    budget : Budget
    report : tuple of str
        Lines saying what was chosen and why.
    """
    network: object
    plan: object
    resources: object
    budget: Budget
    report: tuple


def _foldable(layer):
    return isinstance(layer, (Dense, Conv2d)) and (layer.pe is None or layer.simd is None)


def _matmul(layer):
    return layer.matmul if isinstance(layer, Conv2d) else layer


def _cycles(layer, pe, simd):
    if isinstance(layer, Conv2d):
        return compiler.conv_cycles(layer, pe, simd)
    return (layer.out_features // pe) * (layer.in_features // simd) * layer.planes


class _Search:
    def __init__(self, network, budget):
        from . import estimate
        self.estimate = estimate
        self.network, self.budget, self.family = network, budget, budget.family
        self.rate = EBR_IN_LUTS[budget.family]
        self._stages = {}

    def stage(self, index, pe, simd, streamed):
        """The dense stage of layer ``index`` at a folding (built once)."""
        key = (index, pe, simd, streamed)
        if key not in self._stages:
            layer = self.network.layers[index]
            dense = _matmul(layer).replace(pe=pe, simd=simd, weight_storage="rom")
            dense.bind(layer.in_type, dense.in_features)
            stage = compiler._dense_stage(dense)
            if isinstance(layer, Conv2d):
                oh, ow, _ = layer.out_shape
                stage = replace(stage, vectors=oh * ow)
            if streamed:
                stage = replace(stage, spram_base=0)
            resources = self.estimate.dense_stage(stage, self.family)
            self._stages[key] = (stage, resources, self.budget.logic(resources) + self.rate * resources.ebr)
        return self._stages[key]

    def options(self, index, target, streamed):
        """``(cost, pe, simd, stage, resources)`` of the foldings of layer ``index`` to choose from at ``target``
        cycles: per PE count the smallest SIMD that reaches it; streamed from SPRAM, the foldings with the fewest
        words (the widest that fit the pool's word), since the pool reads one word per cycle for every streamed
        layer."""
        layer = self.network.layers[index]
        dense = _matmul(layer)
        if streamed:
            bits = 1 if dense.bit_serial else dense.weight_type.bits
            fits = [(pe, simd) for pe in compiler._divisors(dense.out_features)
                    for simd in compiler._divisors(dense.in_features) if pe * simd * bits <= compiler.SPRAM_WIDTH]
            fewest = min(_cycles(layer, pe, simd) for pe, simd in fits)
            pairs = [(pe, simd) for pe, simd in fits if _cycles(layer, pe, simd) == fewest <= target]
        else:
            pairs = []
            for pe in compiler._divisors(dense.out_features):
                simd = next((d for d in compiler._divisors(dense.in_features) if _cycles(layer, pe, d) <= target),
                            None)
                if simd is not None:
                    pairs.append((pe, simd))
        return [(cost, pe, simd, stage, resources) for pe, simd in pairs
                for stage, resources, cost in [self.stage(index, pe, simd, streamed)]]

    def spram_words(self, spram):
        """Words per inference of the layers in ``spram``, each folded to its fewest words."""
        total = 0
        for index in spram:
            options = self.options(index, float("inf"), True)
            total += options[0][3].depth
        return total

    def design(self, target, spram):
        """``(network, units)``: the network folded for ``target`` with the layers in ``spram`` streamed, and the
        estimated resources of its matrix-vector units alone (a lower bound of the design's); None if some layer
        cannot reach ``target`` that way."""
        layers = list(self.network.layers)
        words = 0
        units = self.estimate.Resources(self.family)
        for index, layer in enumerate(layers):
            if not _foldable(layer):
                continue
            options = self.options(index, target, index in spram)
            if not options:
                return None
            _, pe, simd, stage, resources = min(options, key=lambda o: (o[0], o[1] * o[2], o[1]))
            units = units + resources
            words += stage.depth if index in spram else 0
            changes = dict(pe=pe, simd=simd)
            if index in spram:
                changes["weight_storage"] = "spram"
            layers[index] = layer.replace(**changes)
        if words > min(target, compiler.SPRAM_DEPTH):
            return None
        return self.network.replace_layers(layers), units

    def measure(self, network):
        plan = compiler.plan(network)
        total, _ = self.estimate.estimate_design(plan, self.family)
        return plan, total


def _targets(network):
    """Every cycle count a foldable layer can take (ascending), not below the fixed layers' own."""
    floor = 1
    values = set()
    for layer in network.layers:
        if _foldable(layer):
            dense = _matmul(layer)
            for pe in compiler._divisors(dense.out_features):
                for simd in compiler._divisors(dense.in_features):
                    values.add(_cycles(layer, pe, simd))
        elif isinstance(layer, (Dense, Conv2d)):
            floor = max(floor, _cycles(layer, layer.pe, layer.simd))
    return sorted(v for v in values if v >= floor) or [floor]


def auto_fold(network, budget, *, target_cycles=None, progress=None):
    """The fastest folding (or, with ``target_cycles``, the cheapest one reaching it) of ``network`` that fits
    ``budget``, as a :class:`FoldingChoice` (see the module documentation)."""
    if not isinstance(budget, Budget):
        raise HwnetError(f"auto_fold needs a Budget (or a board from BOARDS), not {type(budget).__name__}")
    if target_cycles is not None and (isinstance(target_cycles, bool) or not isinstance(target_cycles, int)
                                      or target_cycles < 1):
        raise HwnetError(f"target cycles must be a positive integer, got {target_cycles!r}")
    search = _Search(network, budget)
    targets = _targets(network)
    if target_cycles is not None:
        reaching = [t for t in targets if t <= target_cycles]
        targets = reaching[-1:] or targets[:1]
    streamable = []
    if budget.spram and budget.family == "ice40":
        weights = [(i, layer.weights.size * layer.weight_type.bits) for i, layer in enumerate(network.layers)
                   if isinstance(layer, Dense) and _foldable(layer)]
        streamable = [i for i, _ in sorted(weights, key=lambda w: -w[1])]
    spram_sets = [frozenset(streamable[:k]) for k in range(len(streamable) + 1)]
    if target_cycles is None:  # the SPRAM pool's own bound of each set is a candidate interval too
        targets = sorted(set(targets) | {search.spram_words(s) for s in spram_sets[1:]})

    rejected = []  # (target, reason) of faster targets that did not fit
    for target in targets:
        reasons = []
        for spram in spram_sets:
            found = search.design(target, spram)
            if found is None:
                continue
            folded, units = found
            over = budget.over(units)  # the units alone already too big: no need to plan the whole design
            if over:
                reasons.append(over)
                continue
            plan, total = search.measure(folded)
            over = budget.over(total)
            if not over:
                report = _report(plan, total, budget, target_cycles, rejected)
                return FoldingChoice(network=folded, plan=plan, resources=total, budget=budget,
                                     report=tuple(report))
            reasons.append(over)
        if reasons:
            rejected.append((target, min(reasons, key=len)))
        if progress is not None:
            progress(f"{target} cycles per inference does not fit {budget.name}"
                     + (f" ({reasons[0]})" if reasons else ""))
    smallest = search.design(targets[-1], spram_sets[-1]) or search.design(targets[-1], frozenset())
    need = ""
    if smallest is not None:
        _, total = search.measure(smallest[0])
        need = (f"; the most folded design needs about {round(total.lut4_equivalent)} LUT4, {round(total.ff)} "
                f"flip-flops, {total.ebr} block RAMs" + (f", {total.spram} SPRAMs" if total.spram else ""))
    goal = f" at {target_cycles} cycles per inference" if target_cycles is not None else ""
    raise HwnetError(f"nothing fits {budget.text()}{goal}{need}; use a larger part, a smaller network, or a "
                     f"slower throughput goal")


def _report(plan, total, budget, target_cycles, rejected):
    lines = [f"budget: {budget.text()}",
             f"chosen: {plan.cycles_per_inference} cycles per inference"
             + (f" (goal {target_cycles})" if target_cycles is not None else " (the fastest that fits)"),
             f"estimate: {round(total.lut4_equivalent)} LUT4, {round(total.ff)} flip-flops, {total.ebr} block RAMs"
             + (f", {total.spram} SPRAMs" if total.spram else "")]
    for stage in plan.stages:
        if isinstance(stage, compiler.DenseStage):
            where = "SPRAM" if stage.streamed else "logic" if stage.weights_in_logic else "block RAM"
            lines.append(f"  {stage.name}: pe={stage.pe} simd={stage.simd}, {stage.cycles} cycles, weights in "
                         f"{where}")
    limit = [s.name for s in plan.stages if s.cycles == plan.cycles_per_inference]
    if plan.spram_words == plan.cycles_per_inference:
        limit.append("the SPRAM pool")
    lines.append(f"limited by: {', '.join(limit)}")
    if rejected:
        target, reason = rejected[-1]
        lines.append(f"why not faster: {target} cycles per inference would need {reason}")
    return lines
