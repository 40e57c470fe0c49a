"""A real torch MoE layer with the *physical gating* of paper 001, and its expert-parallel
execution across vehicles.

Physical gating (our formulation of the abstract's "physical gating network that dynamically
adapts to wireless environments"): the gate's softmax scores are multiplied by the link quality
q_e in [0, 1] of the vehicle hosting expert e (rate, outage probability, remaining V2V contact),
experts with q_e = 0 (unreachable, or not placed) are masked, and the top-k of the re-weighted
scores are combined with weights renormalised over the chosen k. With q = 1 everywhere it is the
ordinary top-k gate.

:func:`expert_parallel` runs the same layer the distributed way: the task vehicle gates, sends
each host vehicle the tokens routed to its experts (serialised, so the bytes on the air are
measured), each host runs its own copy of its experts, and the task vehicle combines the
results in expert order — the same arithmetic as :meth:`MoELayer.forward`, so the output is
identical (tested).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import math
import re
from dataclasses import dataclass, field

import torch
from torch import nn


class Expert(nn.Module):
    def __init__(self, dim: int, ffn: int):
        super().__init__()
        self.up = nn.Linear(dim, ffn)
        self.down = nn.Linear(ffn, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(x)))


def route_from_logits(logits: torch.Tensor, top_k: int, quality: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(expert index, combine weight), each (tokens, k), from gate logits (tokens, E).

    Physical gating: softmax scores times the hosts' link quality; quality 0 masks an expert
    (weight 0 even if fewer than k experts are reachable)."""
    scores = torch.softmax(logits, dim=-1)
    if quality is not None:
        q = quality.to(scores.dtype)
        scores = torch.where(q > 0, scores * q, -1.0)
    top, idx = torch.topk(scores, top_k, dim=-1)
    top = top.clamp_min_(0.0)
    total = top.sum(dim=-1, keepdim=True)
    kept = total > 0  # (scalar fills instead of full/ones/zeros tensors: the same values, fewer calls)
    weights = torch.where(kept, top / torch.where(kept, total, 1.0), 0.0)
    return idx, weights


class MoELayer(nn.Module):
    def __init__(self, dim: int, ffn: int, experts: int, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(Expert(dim, ffn) for _ in range(experts))

    def route(self, x: torch.Tensor, quality: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return route_from_logits(self.gate(x), self.top_k, quality)

    def forward(self, x: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        """The monolithic layer: every expert local."""
        return self.forward_routed(x, quality)[0]

    def forward_routed(self, x: torch.Tensor, quality: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(output, expert index, combine weight) of the monolithic layer."""
        idx, w = self.route(x, quality)
        return self.combine(x, idx, w), idx, w

    def weights(self) -> tuple[list[torch.Tensor], ...]:
        """The experts' (up weights, up biases, down weights, down biases), each a list in expert order.

        Kept after the first call (issue 32, fourth pass: collecting them walks 32 module
        attributes, ~37 us a block): the same parameter tensors, which ``load_state_dict`` and
        in-place edits update where they are; :meth:`_apply` (``.to(device)`` and the like, which
        may replace them) and :meth:`_load_from_state_dict` (``load_state_dict(..., assign=True)``
        replaces them) forget them. Assigning a new parameter to an expert's submodule
        (``layer.experts[1].up.weight = nn.Parameter(...)``) is not seen: call
        :meth:`forget_weights` after it (or edit the tensor in place, or load a state dict)."""
        kept = self.__dict__.get("_weights")
        if kept is None:
            ups, downs = [e.up for e in self.experts], [e.down for e in self.experts]
            kept = [m.weight for m in ups], [m.bias for m in ups], [m.weight for m in downs], [m.bias for m in downs]
            self.__dict__["_weights"] = kept
        return kept

    def forget_weights(self) -> None:
        """:meth:`weights` collects the parameters afresh at its next call."""
        self.__dict__.pop("_weights", None)

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202
        """:meth:`nn.Module._apply`, then :meth:`weights` collects the parameters afresh."""
        self.forget_weights()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        """:meth:`nn.Module._load_from_state_dict` (called once for this module by every
        ``load_state_dict``; with ``assign=True`` the experts' parameters are replaced), then
        :meth:`weights` collects the parameters afresh."""
        self.forget_weights()
        super()._load_from_state_dict(*args, **kwargs)

    def combine(self, x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The experts' weighted outputs summed per token, for the routing (``idx``, ``w``)
        (:func:`combine_experts`)."""
        return _kernels(x.is_cpu).combine(x, idx, w, *self.weights())[0]


def combine_experts(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, up_w: list[torch.Tensor],
                    up_b: list[torch.Tensor], down_w: list[torch.Tensor], down_b: list[torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the experts' weighted outputs summed per token, tokens per expert) for the routing
    (``idx``, ``w``) of tokens ``x``; expert ``e`` is ``down(gelu(up(x)))`` with ``up_w[e]``,
    ``up_b[e]``, ``down_w[e]``, ``down_b[e]`` (``nn.Linear``'s weight and bias).

    The kept (token, slot) pairs are grouped by expert with one stable sort (tokens ascending
    within an expert, as ``(idx == e).nonzero()`` lists them), so each expert runs on the same
    rows in the same order as a loop of masks would give it, and the results are added in
    expert order: the same operations on the same operands, bit for bit (tested against that
    loop), with a fifth of the small tensor calls (issue 32). Second pass: each expert's two
    products write into one buffer for all pairs (``torch.addmm(bias, rows, weight.t(), out=)``,
    what ``nn.Linear`` calls: :func:`grouped_linear`), GELU, the combine weights and the sum per
    token (``index_add_``, which adds the rows in their order: expert order per token) then run
    once on the whole buffer instead of once per expert — elementwise or row-ordered, so the same
    bits (tested).
    Third pass: the rows gathered with ``index_select`` (a copy, as ``x[tok]``, at a fifth of its
    CPU), the tokens per expert returned (the bincount the grouping needs is the block's load),
    and the function compiled by TorchScript (:func:`_kernels`)."""
    tok_slot = (w > 0).nonzero()  # kept (token, slot) pairs, row-major: tokens ascending
    tok, slot = tok_slot[:, 0], tok_slot[:, 1]
    e_kept = idx[tok, slot]
    order = torch.sort(e_kept, stable=True).indices  # grouped by expert, tokens still ascending
    per_expert = torch.bincount(e_kept, minlength=len(up_w))
    counts: list[int] = per_expert.tolist()
    tok, slot = tok[order], slot[order]
    xs = x.index_select(0, tok)
    hidden = grouped_linear(xs, counts, up_w, up_b, x.new_empty([tok.shape[0], up_w[0].shape[0]]))
    ys = grouped_linear(torch.nn.functional.gelu(hidden), counts, down_w, down_b, torch.empty_like(xs))
    ys.mul_(w[tok, slot].unsqueeze(1))
    if x.is_cuda:  # index_add_ adds with atomics there: in whatever order the threads arrive
        return add_in_expert_order(x, idx, tok, slot, ys), per_expert
    return torch.zeros_like(x).index_add_(0, tok, ys), per_expert


def grouped_linear(rows: torch.Tensor, counts: list[int], weight: list[torch.Tensor], bias: list[torch.Tensor],
                   out: torch.Tensor) -> torch.Tensor:
    """``out`` with expert ``e``'s ``nn.Linear`` (``weight[e]``, ``bias[e]``) applied to its
    ``counts[e]`` consecutive rows of ``rows`` (the rows grouped by expert, experts ascending):
    ``torch.addmm(bias, rows, weight.t(), out=)`` per expert with rows, what ``nn.Linear`` calls.
    :func:`combine_experts`' up and down projections (TorchScript compiles it with it)."""
    start = 0
    for e in range(len(counts)):
        n = counts[e]
        if n > 0:
            torch.addmm(bias[e], rows[start:start + n], weight[e].t(), out=out[start:start + n])
            start += n
    return out


def add_in_expert_order(x: torch.Tensor, idx: torch.Tensor, tok: torch.Tensor, slot: torch.Tensor,
                        ys: torch.Tensor) -> torch.Tensor:
    """``torch.zeros_like(x).index_add_(0, tok, ys)`` for :meth:`MoELayer.combine`'s rows (the
    kept (token, slot) pairs grouped by expert), without atomics: the same sums in the same order.

    On the CPU ``index_add_`` adds the rows one after another, so each token's output is
    ``(0 + y_e1) + y_e2 + ...`` with its experts ascending (the rows are grouped by expert). On
    CUDA it adds with atomics, in whatever order the threads arrive: a float sum of three or more
    terms can then differ from run to run in its last bits, and so can a later block's routing
    (issue 32). Here each row is written once to its (token, slot) cell of a (tokens, k, width)
    buffer (each cell at most once: no two writes meet), each token's slots are sorted by their
    expert (a token's k experts are distinct: ``topk``) and the k cells added to zeros in that
    order, one elementwise add per slot: the CPU's additions in the CPU's order, deterministic on
    any device. A slot with no row (weight 0) adds +0.0, which changes no sum (a sum started from
    +0.0 is never -0.0): the same bits as ``index_add_`` on the CPU (tested, k = 2 and 3)."""
    n, k = idx.shape[0], idx.shape[1]  # (written so that TorchScript compiles it too: _kernels)
    cells = x.new_zeros([n, k, x.shape[1]])
    cells[tok, slot] = ys
    order = torch.sort(idx, dim=1, stable=True).indices  # each token's slots, experts ascending
    cells = cells.gather(1, order[:, :, None].expand([n, k, x.shape[1]]))
    out = torch.zeros_like(x)
    for r in range(k):
        out += cells[:, r]
    return out


def _wire(obj) -> tuple[object, int]:
    """Serialise and deserialise ``obj`` as it would cross a V2V link; returns (copy, bytes)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    n = buf.tell()
    buf.seek(0)
    return torch.load(buf, weights_only=True), n


@dataclass
class Host:
    """One infrastructure vehicle: its own copies of the experts placed on it."""

    name: str
    experts: dict = field(default_factory=dict)  # expert index -> module
    bytes_in: int = 0
    bytes_out: int = 0
    tokens: int = 0


def place(layer: MoELayer, host_of_expert: list[str | None]) -> dict[str, Host]:
    """Copy each expert's weights to its host vehicle (None: not placed)."""
    hosts: dict[str, Host] = {}
    for e, h in enumerate(host_of_expert):
        if h is not None:
            hosts.setdefault(h, Host(h)).experts[e] = copy.deepcopy(layer.experts[e])
    return hosts


def expert_parallel(layer: MoELayer, x: torch.Tensor, hosts: dict[str, Host], host_of_expert: list[str | None],
                    quality: torch.Tensor | None = None) -> torch.Tensor:
    """The distributed layer: gate on the task vehicle, expert FFNs on their hosts."""
    idx, w = layer.route(x, quality)  # on the task vehicle
    results: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, host in hosts.items():
        batch = {}
        for e in host.experts:
            tok, slot = (idx == e).nonzero(as_tuple=True)
            keep = w[tok, slot] > 0
            if keep.any():
                batch[e] = x[tok[keep]]
                results[e] = (tok[keep], slot[keep])
        if not batch:
            continue
        arrived, n_in = _wire(batch)  # TV -> host
        host.bytes_in += n_in
        host.tokens += sum(len(v) for v in arrived.values())
        with torch.no_grad():
            done = {e: host.experts[e](v) for e, v in arrived.items()}
        back, n_out = _wire(done)  # host -> TV
        host.bytes_out += n_out
        for e, y in back.items():
            results[e] = (*results[e][:2], y)
    out = torch.zeros_like(x)
    for e in range(len(host_of_expert)):  # combine in expert order, as the monolithic layer does
        if e in results and len(results[e]) == 3:
            tok, slot, y = results[e]
            out.index_add_(0, tok, w[tok, slot, None] * y)
    return out


# -- the gate's data: real text through a small MoE transformer ------------------------------
#: A small built-in corpus (our own sentences: what a vehicle's generative-AI assistant is asked).
#: A task's prompt is a sequence of these sentences drawn from the task's seed.
CORPUS = """\
Find a charging station with a free fast charger within ten minutes of the next exit.
Summarise the traffic report for the ring road and suggest a faster route home.
Describe the scene in front of the car for the passenger who cannot see it.
Translate the road sign ahead into English and read it aloud.
Draw a picture of a quiet street at night with rain on the windows.
Write a short story about a delivery robot that gets lost in the city.
How long will it take to reach the airport if the bridge is closed?
Is there parking near the museum, and how much does it cost per hour?
Explain why the engine warning light came on and whether it is safe to keep driving.
Compose a calm message to tell my team that I will be twenty minutes late.
Generate a map sketch of the detour around the road works on the main street.
What is the weather going to be like on the mountain pass this evening?
Play some music that fits a long drive through the countryside.
Recommend a restaurant on the way that is open late and serves vegetarian food.
Answer the question my child asked about why the sky is blue.
Plan a stop for coffee and a short walk halfway through the journey.
Check whether the ferry leaves on time and book two seats for the car.
Describe the pedestrians waiting at the crossing and predict who will step out first.
Turn the meeting notes from this morning into a list of tasks for tomorrow.
Create an image of the car parked by the sea at sunset for my photo album.
The truck ahead is slowing down; estimate the gap and advise a safe following distance.
Tell me a joke about traffic lights that my grandmother would enjoy.
List the cheapest fuel prices along the motorway for the next fifty kilometres.
Read my new emails and reply to the one from the school about the trip.
Why is there a queue at the toll gate, and which lane moves fastest?
Write a poem about the city waking up while the buses start their routes.
Show the nearest hospital with an emergency department and the time to get there.
Help me practise French phrases for ordering food during the holiday.
Draw the junction as seen from above with the cyclists and the tram lines.
Estimate how much battery is left after climbing the hill with four passengers.
Find a hotel with a garage near the old town and check the reviews.
Explain the new speed limit rules near schools in simple words.
Suggest a scenic route along the river that avoids the toll roads.
Describe the damage on the bumper from the camera images for the insurance form.
Is the bridge open for cars tonight, or only for buses and bicycles?
Remind me to call the garage when we arrive at the office.
Generate a cartoon of a dog driving a bus through a busy market.
What are the opening hours of the pharmacy next to the station?
Summarise the news about the festival and the roads that will be closed.
Guide me into the narrow parking space behind the blue van.
"""


def tokenize(text: str) -> list[str]:
    """Lower-case words and punctuation marks."""
    return re.findall(r"[a-z]+|[0-9]+|[^\sa-z0-9]", text.lower())


class Vocabulary:
    """The corpus's words and marks, sorted, plus ``<unk>`` (index 0)."""

    def __init__(self, text: str = CORPUS):
        self.words = ["<unk>", *sorted(set(tokenize(text)))]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.sentences = [torch.tensor([self.index[w] for w in tokenize(s)]) for s in text.splitlines() if s.strip()]

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.index.get(w, 0) for w in tokenize(text)])

    def prompt(self, tokens: int, generator: torch.Generator) -> torch.Tensor:
        """``tokens`` token ids: corpus sentences drawn at random (with replacement), cut to length."""
        ids: list[torch.Tensor] = []
        n = 0
        while n < tokens:
            s = self.sentences[int(torch.randint(len(self.sentences), (1,), generator=generator))]
            ids.append(s)
            n += len(s)
        return torch.cat(ids)[:tokens]


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (once per process; True where it took).

    The gate's blocks allocate and free buffers of 256 KB (the attention's 256 x 256 scores, the
    experts' hidden layer of 512 x 128) many times per task. glibc serves requests of 128 KB and
    up with a fresh ``mmap`` and trims the heap's top back to the system at 128 KB free, so each
    such buffer arrives as new pages and is paid for in page faults (measured: ~76 minor faults
    and ~0.15 ms of a ~1.4 ms block). With the mmap threshold at 32 MB (glibc's maximum) and the
    trim threshold at 128 MB they come from the heap and are reused: the same buffers, the same
    values — only where the memory comes from (issue 32, second pass). Process-wide; at most
    ~128 MB stays mapped after a peak. No-op off glibc (``mallopt`` missing or refusing)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 << 20)) & bool(mallopt(m_trim_threshold, 128 << 20))


@functools.lru_cache(maxsize=4)
def _causal_mask(n: int, device: torch.device) -> torch.Tensor:
    """(n, n) float32 on ``device``: 0 on and below the diagonal, -inf above (an ordinary tensor,
    also when first built under inference mode)."""
    with torch.inference_mode(False):
        return torch.zeros(n, n).masked_fill_(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf")).to(device)


@functools.lru_cache(maxsize=16)
def _split_rows(n: int, dim: int, device: torch.device, threads: int) -> int:
    """:func:`masked_attention`'s ``split`` for ``n`` tokens of width ``dim`` on ``device`` with
    ``threads`` threads: the first half of the rows (rounded down to a multiple of 16) where that
    gives the whole square's bits, else 0 (the whole square). Once per process and shape.

    Whether it does is the BLAS's business, not ours: the shorter weighted sum (inner length
    ``split``) must add its terms as the full one (inner length ``n``, its other terms exactly 0)
    adds its first ``split``. MKL 2024.2 on this machine's AMD EPYC (AVX-512) cuts an inner
    dimension of 193..383 into two halves summed apart and one of up to 192 not at all, so
    ``split`` <= the first cut gives the same bits and a longer one does not (measured: rows
    128..191 against 192 keys differ from the 256-key sum in 1,709 of 4,096 values, up to 2.7e-5
    relative; issue 32, fifth pass, docs/performance.md); another CPU or BLAS may cut elsewhere (MKL's
    AVX2 path, seen under valgrind, which hides AVX-512: there 128 differs and 64 is taken). So
    the split is checked here, on the caller's device and thread count, against the whole square on
    four fixed pseudo-random inputs (q, k, v as the block's views of one (n, 3 dim) product, at
    scales 0.3 to 30): any byte that differs and the next smaller candidate is tried (halved, down
    to 64 rows; e.g. 512 tokens: 256 differs here, 128 does not), else the square is kept. Where
    the cut lies depends on the shapes, not on the values, so a cut that differs shows on such
    inputs (in ~40 % of the values above). Below 128 tokens the saving is smaller than the extra
    calls cost: 0."""
    split = n // 2 // 16 * 16
    mask = _causal_mask(n, device) if n >= 128 else None
    while split >= 64:
        if _same_bits(n, dim, device, mask, split):
            return split
        split = split // 2 // 16 * 16
    return 0


def _same_bits(n: int, dim: int, device: torch.device, mask: torch.Tensor, split: int) -> bool:
    """Whether :func:`masked_attention` with ``split`` gives the square's bytes on :func:`_split_rows`'
    four inputs."""
    gen = torch.Generator().manual_seed(n)
    with torch.inference_mode():
        for scale in (0.3, 1.0, 3.0, 30.0):
            q, k, v = (torch.randn(n, 3 * dim, generator=gen) * scale).to(device).chunk(3, dim=-1)
            a, b = masked_attention(q, k, v, mask), masked_attention(q, k, v, mask, split)
            if not torch.equal(a.view(torch.int32), b.view(torch.int32)):
                return False
    return True


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, split: int = 0
                     ) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v, as torch's ``scaled_dot_product_attention`` computes it on
    CPU for (T, d) tensors and a causal mask (its math path: q and k^T each scaled by d^-1/4, the
    mask added in place, a softmax, the weighted sum) — the same operations in the same order, so
    the same bits (tested against it on real prompts) — without building the mask and checking for
    fully masked rows at every call (a causal row always keeps its diagonal): half the attention's
    CPU (issue 32).

    ``split`` > 0 (issue 32, fifth pass): rows ``0..split-1`` against keys ``0..split-1`` only (the
    columns they can see; the others are masked: weight exactly 0), the other rows against all
    keys — for T = 256, split 128, a quarter of the square's scores, softmax and weighted sum not
    computed. Each value is the same dot product and the same softmax row as in the square (an
    exact 0 more or less at a row's end changes no float sum), so the same bits wherever the BLAS
    adds the shorter weighted sum (inner length ``split``) as it adds the first ``split`` terms of
    the full one: :func:`_split_rows` picks a split only after checking that it does; 0: the square."""
    s = math.sqrt(1.0 / math.sqrt(q.shape[-1]))
    if split <= 0:
        att = (q * s) @ (k.transpose(-2, -1) * s)
        att.add_(mask)
        return torch.softmax(att, dim=-1) @ v
    qs, kt = q * s, k.transpose(-2, -1) * s
    out = q.new_empty([q.shape[0], v.shape[1]])
    att = torch.mm(qs[:split], kt[:, :split])
    att.add_(mask[:split, :split])
    torch.mm(torch.softmax(att, dim=-1), v[:split], out=out[:split])
    att = torch.mm(qs[split:], kt)
    att.add_(mask[split:])
    torch.mm(torch.softmax(att, dim=-1), v, out=out[split:])
    return out


def attend_block(x: torch.Tensor, norm1_w: torch.Tensor, norm1_b: torch.Tensor, norm2_w: torch.Tensor,
                 norm2_b: torch.Tensor, eps: float, qkv_w: torch.Tensor, out_w: torch.Tensor, gate_w: torch.Tensor,
                 mask: torch.Tensor, split: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:meth:`Block.attend` on the block's weights: (x + attention, its norm, the gate's logits);
    ``split``: :func:`masked_attention`'s (:func:`_split_rows`)."""
    h = torch.nn.functional.layer_norm(x, [x.shape[-1]], norm1_w, norm1_b, eps)
    qkv = torch.nn.functional.linear(h, qkv_w).chunk(3, dim=-1)
    x = x + torch.nn.functional.linear(masked_attention(qkv[0], qkv[1], qkv[2], mask, split), out_w)
    h = torch.nn.functional.layer_norm(x, [x.shape[-1]], norm2_w, norm2_b, eps)
    return x, h, torch.nn.functional.linear(h, gate_w)


def finish_block(x: torch.Tensor, h: torch.Tensor, logits: torch.Tensor, quality: torch.Tensor | None, top_k: int,
                 route_only: bool, up_w: list[torch.Tensor], up_b: list[torch.Tensor], down_w: list[torch.Tensor],
                 down_b: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:meth:`Block.finish` on the experts' weights: (output — ``x`` itself when ``route_only`` —,
    expert index, combine weight, tokens per expert)."""
    idx, w = route_from_logits(logits, top_k, quality)
    if route_only:
        return x, idx, w, torch.bincount(idx[w > 0], minlength=len(up_w))
    y, per_expert = combine_experts(h, idx, w, up_w, up_b, down_w, down_b)
    return x + y, idx, w, per_expert


@dataclass(frozen=True)
class _Kernels:
    attend: object
    finish: object
    combine: object
    scripted: bool


@functools.lru_cache(maxsize=2)
def _kernels(script: bool) -> _Kernels:
    """The block's functions, compiled by TorchScript where ``script``, else the Python functions
    themselves. The blocks ask for the compiled ones on the CPU only: on CUDA TorchScript's
    profiling executor may fuse elementwise operators into kernels of its own (its GPU fuser is
    on by default), which would sum in other orders than the Python path.

    Third pass of issue 32: TorchScript runs the same aten operators with the same arguments in the
    same order, its interpreter between them instead of Python's (~0.1-0.15 ms of a ~1.1 ms full
    block). It fuses nothing on CPU (``torch._C._jit_can_fuse_on_cpu()`` is False by default, and
    no fuser is turned on here), so each operator runs its own kernel: the same bits (tested
    against the Python functions and against the code before issue 32). ``torch.jit.script`` is
    deprecated in favour of ``torch.compile``, which generates its own kernels (other bits); its
    DeprecationWarning is silenced here. Torch is pinned (2.13.0), so a function TorchScript
    cannot compile raises here rather than leaving the layer slower unnoticed; with
    ``PYTORCH_JIT=0`` in the environment ``torch.jit.script`` returns the Python functions
    themselves, and ``scripted`` says so (the same results, Python's interpreter between the
    operators)."""
    fns = attend_block, finish_block, combine_experts
    if script:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            fns = tuple(torch.jit.script(f) for f in fns)
    return _Kernels(*fns, scripted=isinstance(fns[0], torch.jit.ScriptFunction))


class Block(nn.Module):
    """Pre-norm single-head causal self-attention, then an MoE layer (the experts' FFNs)."""

    def __init__(self, dim: int, ffn: int, experts: int, top_k: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.moe = MoELayer(dim, ffn, experts, top_k)

    def attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The part of the block that depends on its input alone, not on the gate's quality:
        (x + attention, its norm (the experts' input), the gate's logits) (:func:`attend_block`,
        on the modules' weights: ``F.layer_norm``, ``F.linear`` — what their ``forward`` calls)."""
        n1, n2, n = self.norm1, self.norm2, x.shape[0]
        return _kernels(x.is_cpu).attend(x, n1.weight, n1.bias, n2.weight, n2.bias, n1.eps, self.qkv.weight,
                                         self.out.weight, self.moe.gate.weight, _causal_mask(n, x.device),
                                         _split_rows(n, x.shape[1], x.device, torch.get_num_threads()))

    def finish(self, attended: tuple, quality: torch.Tensor | None, route_only: bool = False
               ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(output, expert index, combine weight, tokens per expert) from :meth:`attend`'s result
        and the quality (:func:`finish_block`); output None when ``route_only``."""
        x, idx, w, per_expert = _kernels(attended[0].is_cpu).finish(*attended, quality, self.moe.top_k, route_only,
                                                                    *self.moe.weights())
        return None if route_only else x, idx, w, per_expert

    def forward(self, x: torch.Tensor, quality: torch.Tensor | None, route_only: bool = False
                ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(output, expert index, combine weight); ``route_only``: the routing alone (output
        None: the experts' FFNs do not change which experts this block picks, only what later
        blocks see — so the last block of :meth:`GateModel.load` skips them)."""
        return self.finish(self.attend(x), quality, route_only)[:3]


class GateModel(nn.Module):
    """A small MoE transformer built from a fixed seed (untrained: no download, no shipped
    weights): token embeddings of the prompt (plus sinusoidal positions), then ``layers`` blocks
    of attention + MoE. :meth:`load` runs the real forward pass — with physical gating, the
    experts each layer can use and their link quality change what every later layer sees — and
    returns how many tokens each expert of each layer received."""

    def __init__(self, vocab: int, dim: int, ffn: int, layers: int, experts: int, top_k: int, seed: int = 0):
        super().__init__()
        g = torch.random.fork_rng(devices=[])
        with g:
            torch.manual_seed(seed)
            self.embed = nn.Embedding(vocab, dim)
            self.blocks = nn.ModuleList(Block(dim, ffn, experts, top_k) for _ in range(layers))
        self.experts = experts
        self.device = self.embed.weight.device  # kept by _apply: what .to(), .cuda(), .cpu() call
        self.eval()

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202
        """:meth:`nn.Module._apply` (under ``.to(device)`` and the like), then :attr:`device` is
        where the weights now are (an attribute: looking it up through the parameters costs ~2.6 us
        per routing)."""
        out = super()._apply(fn, recurse)
        self.device = self.embed.weight.device
        return out

    def positions(self, n: int) -> torch.Tensor:
        dim = self.embed.embedding_dim
        pos = torch.arange(n, dtype=torch.float32)[:, None]
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        pe = torch.zeros(n, dim)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
        return pe

    def load(self, ids: torch.Tensor, quality: torch.Tensor | None = None, memo: dict | None = None) -> torch.Tensor:
        """Tokens routed to each expert, (layers, experts) int64 on the CPU, for prompt ``ids``
        (T,); ``quality`` (layers, experts, on the CPU): the physical gating of each layer (0 masks
        an expert).

        On the model's device (``GateModel(...).to(device)``, issue 32): the prompt and the
        quality are copied there, the memo keeps that device's tensors, and the loads come back to
        the CPU once per call. On any device the pass runs in IEEE float32 (:func:`float32_exact`:
        a user's TF32 for cuBLAS, or TF32/bf16 for oneDNN on the CPU, off while it runs, then
        back), and on CUDA with no atomic float sums (:func:`add_in_expert_order`): two runs give
        the same loads.

        ``memo``: a dict kept with one prompt (the caller's: empty at first, then passed again
        with the same ``ids`` only). Block l's output depends on the prompt and on the quality of
        layers 0..l alone, so each block's output is remembered under those rows; a later call
        starts after the longest prefix it shares with an earlier one (the policies of one task
        share their placement's rows; a reroute changes only the layers still to run). The same
        operations on the same inputs: the same result, bit for bit (tested).

        Issue 32: the last block routes only (its experts' outputs reach no later block), and the
        pass runs under ``torch.inference_mode`` (no autograd bookkeeping; the same kernels).
        Second pass: block l's attention and gate logits (:meth:`Block.attend`) depend on the
        quality of layers 0..l-1 alone (its input), so they are remembered under those rows too:
        routings that share a block's input but not its quality (every placement at block 0, a
        reroute's or a masking's first changed layer, the routing-only last block) run only
        the gate's top-k and the experts there. Third pass: a block's tokens per expert come from
        :meth:`Block.finish` (the bincount its experts' grouping computes anyway), and the memo's
        rows are prefixes of the quality table's bytes (one conversion a routing, not one a layer)."""
        with float32_exact():
            return self._load(ids, quality, memo, None if self.device.type == "cpu" else self.device)

    @torch.inference_mode()
    def _load(self, ids: torch.Tensor, quality: torch.Tensor | None, memo: dict | None,
              device: torch.device | None) -> torch.Tensor:
        """:meth:`load` on ``device`` (the model's; None: the CPU, where nothing is copied)."""
        layers = len(self.blocks)
        out = torch.zeros(layers, self.experts, dtype=torch.int64, device=device)
        if memo is None or quality is None:
            rows = [None] * (layers + 1)
        else:  # the bytes of quality[:layer] (C order): prefixes of the whole table's bytes
            whole, row = quality.numpy().tobytes(), quality[0].numel() * quality.element_size()
            rows = [whole[:layer * row] for layer in range(layers + 1)]
        gate_q = quality if quality is None or device is None else quality.to(device)
        keys = [(layer, rows[layer + 1]) for layer in range(layers)]
        first = 0
        if memo is not None:
            while first < layers and keys[first] in memo:
                first += 1
            for layer in range(first):
                out[layer] = memo[keys[layer]][1]
            if first == layers:
                return out if device is None else out.cpu()
        if first == 0:
            x = memo.get("embed") if memo is not None else None
            if x is None:
                x = (self.embed(ids) + self.positions(len(ids)) if device is None
                     else self.embed(ids.to(device)) + self.positions(len(ids)).to(device))
                if memo is not None:
                    memo["embed"] = x
        else:
            x = memo[keys[first - 1]][0]
        for layer in range(first, layers):
            block = self.blocks[layer]
            attended = None if memo is None else memo.get(("attend", layer, rows[layer]))
            if attended is None:
                attended = block.attend(x)
                if memo is not None:
                    memo[("attend", layer, rows[layer])] = attended
            x, _, _, out[layer] = block.finish(attended, None if gate_q is None else gate_q[layer],
                                               route_only=layer == layers - 1)
            if memo is not None:
                memo[keys[layer]] = (x, out[layer].clone())
        return out if device is None else out.cpu()


@contextlib.contextmanager
def float32_exact():
    """Float32 matmuls in IEEE float32 for the whole :meth:`GateModel.load` (cuBLAS on CUDA,
    oneDNN on the CPU), then torch's settings back as they were (also on an error). A user's
    choice for their own model can lower them: ``torch.set_float32_matmul_precision("high")``
    (TF32: operands rounded to 10 mantissa bits), ``"medium"`` (oneDNN then multiplies in bf16 on
    a CPU that has it: 7 bits — measured: every block's output changed), or the new per-backend
    ``fp32_precision`` settings ("tf32"/"bf16" on ``torch.backends.cuda.matmul``,
    ``torch.backends.mkldnn.matmul``, or a parent they inherit from). ~1e-3 relative or worse on
    the gate's scores, enough to move routings.

    Torch's default is IEEE float32 already (both backends' matmul ``fp32_precision``
    "none"/"ieee", precision "highest"): then nothing is changed at all (two attribute reads a
    call). Otherwise the pass sets "highest" (torch's one call that sets the legacy flag and the
    new per-backend ones together: setting one family alone makes torch refuse a later matmul as
    a "mix of the legacy and new APIs") and restores the legacy precision, then the cuBLAS and
    oneDNN matmul settings as read (what each resolved to). cuDNN's TF32 setting (on by default)
    and oneDNN's for convolutions are left alone: they govern convolutions and RNNs, and the gate
    model has neither (its attention is written out as matmuls and a softmax, its norms, softmax
    and embedding are ATen's own kernels), so they cannot reach the gate's arithmetic. Beyond its
    reach (docs/moe.md, "On a GPU"): two environment variables act beneath torch's flags —
    ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1`` (read by torch; set in NVIDIA's PyTorch containers)
    puts cuBLAS's float32 matmuls in TF32 whatever the flags say, ``NVIDIA_TF32_OVERRIDE``
    (read by NVIDIA's libraries; 0 forces TF32 off) overrides them too; this function neither
    sees nor undoes either."""
    import torch.backends

    matmul, onednn = torch.backends.cuda.matmul, torch.backends.mkldnn.matmul
    saved = (matmul.fp32_precision, onednn.fp32_precision)
    if saved[0] in _FULL and saved[1] in _FULL:  # IEEE float32 already: leave every setting alone
        yield
        return
    try:
        legacy = torch.get_float32_matmul_precision()
    except RuntimeError:  # the new API set alone: the legacy flag is at its default
        legacy = "highest"
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(legacy)
        matmul.fp32_precision, onednn.fp32_precision = saved


#: a backend's matmul ``fp32_precision`` values that mean IEEE float32 ("none": inherited, and the
#: root's default is IEEE)
_FULL = ("none", "ieee")
