"""Auto-folding: the fastest design that fits a board, chosen before synthesis.

Given a network and a :class:`Budget` (a board from :data:`BOARDS`, or explicit LUT4 / block RAM / SPRAM counts
on a family), :func:`auto_fold` chooses each dense and convolution layer's PE/SIMD and where its weights live
(block-RAM ROM or, on an iCE40UP, the SPRAM pool, for some or all of a layer's PEs) to minimize the cycles per
inference, and reports the choice. Layers the network already folds keep their folding and storage; a dense
layer it folds gets the storage the search chooses (weights in logic stay in logic).

The search, with :mod:`hwnet.estimate` as the cost model (no synthesis):

1. Candidate intervals ``T``: every cycle count a foldable layer can take, and every count of SPRAM words per
   inference a choice of step 3 can take, ascending (fastest first).
2. For one ``T`` each layer has a few foldings that reach ``T``: the PE counts, each with the smallest SIMD that
   reaches ``T`` (a dense layer's input padded to whole beats if need be) and the smallest that divides its input
   (weights in block RAM); a convolution that no folding brings to ``T`` (bound by its sliding window, one
   pixel per cycle) is unrolled per pixel with the fewest output pixels per cycle (``pixels``, FINN's MMV) that
   reach it, if the max-pool after it keeps up. By themselves the layers would each take the one whose estimated
   matrix-vector unit costs least, counting a block RAM as :data:`EBR_IN_LUTS` LUT4s (a fixed exchange rate per
   family, about a typical part's LUT4 per block RAM): every layer balanced to ``T``, and a wide-and-shallow
   weight ROM that would waste block RAMs loses to a folding that fills them. That combination is tried first;
   then the others on the frontier of block RAMs against logic (for each count of block RAMs, the combination
   with the least logic), cheapest at the exchange rate first, for a budget short of one and rich in the other.
3. On a family with SPRAM and a budget that has it, the layers whose weights could stream from the pool are tried
   there too, each choice with every combination of step 2: none; then the largest layers streamed whole (the
   largest, the two largest, ...), each at its fewest words (the widest folding whose weights for one cycle fit
   the pool's 64-bit word); and, before the next largest joins them, each other layer split by PE beside them
   (:attr:`hwnet.ir.Dense.spram_pes`): some of its PEs stream, as many as the word holds, the others keep their
   ROMs, at a folding (per count of words, the fewest PEs) whose words fit the pool's words left. The pool reads
   one word per cycle for all streamed layers, so their words per inference must not exceed ``T``.
4. The first ``T`` (and the first candidate for it) whose whole design, estimated with every block, fits the
   budget wins. With a throughput goal (``target_cycles``), the search stops at the slowest ``T`` meeting it: the
   cheapest design that is fast enough.

The candidates for a given ``T``, and their order, are independent of the budget, and fitting is monotone in the
budget, so a larger budget never gives a slower design. LUT4 and flip-flop budgets are filled only to
:attr:`Budget.fill` (85% by default): the estimate's error (docs/benchmarks.md) and placement need the margin. When nothing fits, not even
the slowest folding, :func:`auto_fold` raises :class:`~hwnet.errors.HwnetError` with what the smallest design
needs and what the budget has.
"""

from dataclasses import dataclass, replace

from . import compiler
from .errors import HwnetError
from .ir import Conv2d, Dense, MaxPool2d

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
    "hx1k": Budget("ice40", 1280, 16, 0, name="iCE40HX1K"),
    "hx8k": Budget("ice40", 7680, 32, 0, name="iCE40HX8K"),
    "ecp5-12f": Budget("ecp5", 12288, 32, 0, name="ECP5 LFE5U-12F"),
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


def _cycles(layer, pe, simd, pixels=1):
    if isinstance(layer, Conv2d):
        return compiler.conv_cycles(layer, pe, simd, pixels)
    return compiler.dense_cycles(layer, pe, simd)


class _Search:
    def __init__(self, network, budget):
        from . import estimate
        self.estimate = estimate
        self.network, self.budget, self.family = network, budget, budget.family
        self.rate = EBR_IN_LUTS[budget.family]
        self._stages = {}
        self._menus = {}
        self._measured = {}

    def stage(self, index, pe, simd, spram_pes=0, pixels=1):
        """``(stage, resources)``: the dense stage of layer ``index`` at a folding, its first ``spram_pes`` PEs
        streaming from SPRAM (a convolution: ``pixels`` output pixels per cycle), and its estimate (built
        once)."""
        key = (index, pe, simd, spram_pes, pixels)
        if key not in self._stages:
            layer = self.network.layers[index]
            dense = _matmul(layer).replace(pe=pe, simd=simd, weight_storage="rom", spram_pes=None)
            dense.bind(layer.in_type, dense.in_features)
            stage = replace(compiler._dense_stage(dense), spram_pes=spram_pes)
            if isinstance(layer, Conv2d):
                oh, ow, _ = layer.out_shape
                stage = replace(stage, vectors=oh * ow // pixels, pixels=pixels)
            self._stages[key] = (stage, self.estimate.dense_stage(stage, self.family))
        return self._stages[key]

    def _lane_bits(self, index):
        dense = _matmul(self.network.layers[index])
        return 1 if dense.bit_serial else dense.weight_type.bits

    def options(self, index, target, storage="rom", room=None):
        """``(pe, simd, spram_pes)`` of the foldings of layer ``index`` to choose from at ``target`` cycles, by
        where its weights live: ``"rom"``, per PE count the smallest SIMD that reaches ``target``, and the smallest that needs no padding; ``"spram"``
        (streamed whole), the foldings with the fewest words (the widest that fit the pool's word), since the pool
        reads one word per cycle for every streamed layer; ``"split"``, the foldings of :meth:`split_menu` that
        reach ``target`` in at most ``room`` words."""
        layer = self.network.layers[index]
        dense = _matmul(layer)
        if storage == "split":
            return [fold for words, fold in self.split_menu(index) if words <= min(target, room)]
        if storage == "spram":
            bits = self._lane_bits(index)
            fits = [(pe, simd) for pe in compiler._divisors(dense.out_features)
                    for simd in compiler.simd_options(layer) if pe * simd * bits <= compiler.SPRAM_WIDTH]
            fewest = min(_cycles(layer, pe, simd) for pe, simd in fits)
            return [(pe, simd, pe) for pe, simd in fits if _cycles(layer, pe, simd) == fewest <= target]
        pairs = []
        for pe in compiler._divisors(dense.out_features):
            reach = [d for d in compiler.simd_options(layer) if _cycles(layer, pe, d) <= target]
            exact = [d for d in reach if dense.in_features % d == 0]
            for simd in sorted(set(reach[:1] + exact[:1])):
                pairs.append((pe, simd, 0))
        if isinstance(layer, Conv2d) and not pairs:  # bound by its window: several output pixels per cycle
            pe, simd = layer.out_channels, layer.patch_size
            pixels = next((p for p in compiler.pixel_options(layer)[1:] if _cycles(layer, pe, simd, p) <= target
                           and self._pool_keeps_up(index, p, target)), None)
            if pixels is not None:
                pairs.append((pe, simd, 0, pixels))
        return pairs

    def _pool_keeps_up(self, index, pixels, target):
        """A max-pool right behind convolution ``index`` takes its ``pixels`` per cycle fast enough for
        ``target`` (:func:`hwnet.compiler.pool_lanes`)."""
        layers = self.network.layers
        pool = layers[index + 1] if index + 1 < len(layers) else None
        if not isinstance(pool, MaxPool2d):
            return True
        simd, p = compiler.pool_lanes(pool, pixels * pool.in_shape[2])
        return pool.in_size // (simd * p) <= target

    def split_menu(self, index):
        """``[(words, (pe, simd, spram_pes))]``, ascending: the foldings of dense layer ``index`` split by PE
        between SPRAM and block RAM, one per count of words per inference (its cycles): the fewest PEs that
        leave some in block RAM, and as many of them streaming as the pool's word holds (``spram_pes * simd *
        weight bits <= 64``)."""
        if index not in self._menus:
            layer = self.network.layers[index]
            bits = self._lane_bits(index)
            menu = {}
            for pe in reversed(compiler._divisors(layer.out_features)):
                for simd in compiler.simd_options(layer):
                    k = min(pe, compiler.SPRAM_WIDTH // (simd * bits))
                    if 0 < k < pe:
                        menu[_cycles(layer, pe, simd)] = (pe, simd, k)
            self._menus[index] = sorted(menu.items())
        return self._menus[index]

    def spram_words(self, whole):
        """Words per inference of the layers in ``whole``, each streamed whole at its fewest words."""
        return sum(_cycles(self.network.layers[index], *self.options(index, float("inf"), "spram")[0][:2])
                   for index in whole)

    def designs(self, target, spram):
        """The candidate designs for ``target`` with the SPRAM choice ``spram`` (``(whole, split)``: the layers
        streamed whole, and the layer split by PE or None), as ``(units, folded)``: the estimated resources of
        its matrix-vector units alone (a lower bound of the design's), and a function giving the network
        folded (built only when asked for, since most candidates fail on their units alone). Each layer takes
        one of its :meth:`options`; of all the combinations, those on the frontier of block RAMs against logic
        (the least logic for each count of block RAMs), the cheapest at the exchange rate (a block RAM worth
        :data:`EBR_IN_LUTS` LUT4s: every layer at its own cheapest) first. None (an empty list) if some layer
        cannot reach ``target`` that way."""
        whole, split = spram
        room = min(target, compiler.SPRAM_DEPTH) - self.spram_words(whole)
        if room < 0:
            return []
        frontier = {0: (0.0, ())}   # block RAMs -> (least logic, the options taken)
        for index, layer in enumerate(self.network.layers):
            if not _foldable(layer):
                continue
            storage = "spram" if index in whole else "split" if index == split else "rom"
            options = [(fold, self.stage(index, *fold)[1]) for fold in self.options(index, target, storage, room)]
            if not options:
                return []
            grown = {}
            for ebr, (logic, taken) in frontier.items():
                for fold, res in options:
                    key, value = ebr + res.ebr, (logic + self.budget.logic(res), taken + ((index, fold, res),))
                    if key not in grown or value[0] < grown[key][0]:
                        grown[key] = value
            frontier = {}
            for ebr in sorted(grown):   # drop a combination with more block RAMs and no less logic
                if not frontier or grown[ebr][0] < min(logic for logic, _ in frontier.values()):
                    frontier[ebr] = grown[ebr]
        out = []
        for ebr, (logic, taken) in sorted(frontier.items(), key=lambda e: (e[1][0] + self.rate * e[0], e[0])):
            units = self.estimate.Resources(self.family)
            for _, _, res in taken:
                units = units + res
            out.append((units, lambda taken=taken: self._folded(taken)))
        return out

    def _folded(self, taken):
        """The network with the foldings ``taken`` (``(index, (pe, simd, spram_pes), resources)`` per layer)."""
        layers = list(self.network.layers)
        for index, (pe, simd, k, *pixels), _ in taken:
            changes = dict(pe=pe, simd=simd)
            if pixels and pixels[0] > 1:
                changes.update(pixels=pixels[0])
            if isinstance(layers[index], Dense) and layers[index].weight_storage != "logic":
                changes.update(weight_storage="spram" if k else "rom", spram_pes=k if 0 < k < pe else None)
            layers[index] = layers[index].replace(**changes)
        return self.network.replace_layers(layers)

    def measure(self, network):
        """``(plan, resources)`` of the whole design (estimated once per folding)."""
        key = tuple((layer.pe, layer.simd, getattr(layer, "weight_storage", None), getattr(layer, "spram_pes", None),
                     getattr(layer, "pixels", 1))
                    for layer in network.layers if isinstance(layer, (Dense, Conv2d)))
        if key not in self._measured:
            plan = compiler.plan(network)
            total, _ = self.estimate.estimate_design(plan, self.family)
            self._measured[key] = (plan, total)
        return self._measured[key]


def _targets(network):
    """Every cycle count a foldable layer can take (ascending), not below the fixed layers' own."""
    floor = 1
    values = set()
    for layer in network.layers:
        if _foldable(layer):
            dense = _matmul(layer)
            for pe in compiler._divisors(dense.out_features):
                for simd in compiler.simd_options(layer):
                    values.add(_cycles(layer, pe, simd))
            if isinstance(layer, Conv2d):
                for pixels in compiler.pixel_options(layer)[1:]:
                    values.add(_cycles(layer, layer.out_channels, layer.patch_size, pixels))
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
                   if isinstance(layer, Dense) and _foldable(layer) and layer.weight_storage != "logic"]
        streamable = [i for i, _ in sorted(weights, key=lambda w: -w[1])]
    # (whole, split): the largest layers streamed whole, then, before the next largest joins them, each other
    # layer split by PE beside them
    spram_sets = [(frozenset(), None)]
    for k in range(len(streamable)):
        whole = frozenset(streamable[:k])
        spram_sets += [(whole, split) for split in streamable[k:]] + [(whole | {streamable[k]}, None)]
    if target_cycles is None:  # the SPRAM pool's own bound of each choice is a candidate interval too
        pool = {search.spram_words(whole) + words for whole, split in spram_sets[1:]
                for words in ([0] if split is None else [w for w, _ in search.split_menu(split)])}
        targets = sorted(set(targets) | {t for t in pool if t <= compiler.SPRAM_DEPTH})

    rejected = []  # (target, reason) of faster targets that did not fit
    for target in targets:
        reasons = []
        for units, folding in (d for spram in spram_sets for d in search.designs(target, spram)):
            over = budget.over(units)  # the units alone already too big: no need to plan the whole design
            if over:
                reasons.append(over)
                continue
            folded = folding()
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
    smallest = search.designs(targets[-1], spram_sets[-1]) or search.designs(targets[-1], spram_sets[0])
    need = ""
    if smallest:
        _, total = search.measure(smallest[0][1]())
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
            where = ("logic" if stage.weights_in_logic else "block RAM" if not stage.streamed else "SPRAM"
                     if stage.spram_pes == stage.pe else f"SPRAM (PEs 0..{stage.spram_pes - 1}) and block RAM "
                     f"(PEs {stage.spram_pes}..{stage.pe - 1})")
            pixels = f" pixels={stage.pixels}" if stage.pixels > 1 else ""
            lines.append(f"  {stage.name}: pe={stage.pe} simd={stage.simd}{pixels}, {stage.cycles} cycles, weights in "
                         f"{where}")
    limit = [s.name for s in plan.stages if s.cycles == plan.cycles_per_inference]
    if plan.spram_words == plan.cycles_per_inference:
        limit.append("the SPRAM pool")
    lines.append(f"limited by: {', '.join(limit)}")
    if rejected:
        target, reason = rejected[-1]
        lines.append(f"why not faster: {target} cycles per inference would need {reason}")
    return lines
