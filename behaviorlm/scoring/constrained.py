"""Constrained scoring on any Hugging Face causal LM (plain or peft-wrapped), in one forward pass.

Each row of the batch holds a prompt followed by the answer trie's internal nodes laid out as a
token tree ("tree attention"): every answer prefix appears once, as its last token at position
``len(prompt) + depth``, and attends to the whole prompt and to its own ancestors only. The
root is read at the last prompt token, every other internal node at its last prefix token.
This is exactly what a forward of ``prompt + prefix`` would compute for every prefix, but the
prompt is processed once and all nodes of all requests share the same single pass (no KV-cache
copies per node, no forward per candidate). A vocabulary of ~400 names has ~1,000 internal
nodes: the tree, not the prompt, is most of the work.

Rows are left-padded; pads attend only to themselves and nothing attends to them, and position
ids are counted from each row's first real token, so a padded row equals the row scored alone
(up to floating-point summation order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from behaviorlm.trie import AnswerTrie, Prefix

# Most (request, trie node) logit rows in one forward: 4096 x 49k vocabulary = 400 MB in bf16.
READ_BUDGET = 4096


@dataclass(frozen=True)
class TreeLayout:
    """The tokens appended after the prompt for one trie, and where each queried node is read."""

    tokens: tuple[int, ...]  # one token per tree node (the last token of its prefix)
    depths: tuple[int, ...]  # len(prefix) - 1: position offset after the prompt
    ancestors: np.ndarray  # bool [n, n]: node i attends to node j (its ancestors and itself)
    read_at: tuple[int, ...]  # per query (trie.queries order): -1 = last prompt token, else node
    children: tuple[tuple[int, ...], ...]  # per query: the child token ids to read there
    # The same children flattened (token id, its query) and each query's slice of them: the
    # gather after the forward pass, computed once per trie rather than per row.
    child_tokens: np.ndarray
    child_query: np.ndarray
    child_bounds: np.ndarray

    @classmethod
    def of(cls, trie: AnswerTrie) -> TreeLayout:
        queries = trie.queries
        nodes: set[Prefix] = set()
        for prefix, _ in queries[1:]:
            nodes.update(prefix[:k] for k in range(1, len(prefix) + 1))
        order = sorted(nodes, key=lambda p: (len(p), p))
        column = {p: i for i, p in enumerate(order)}
        n = len(order)
        ancestors = np.zeros((n, n), dtype=bool)
        for p, i in column.items():
            for k in range(1, len(p) + 1):
                ancestors[i, column[p[:k]]] = True
        read_at = tuple(-1 if prefix == () else column[prefix] for prefix, _ in queries)
        children = tuple(kids for _, kids in queries)
        return cls(
            tokens=tuple(p[-1] for p in order),
            depths=tuple(len(p) - 1 for p in order),
            ancestors=ancestors,
            read_at=read_at,
            children=children,
            child_tokens=np.asarray([t for kids in children for t in kids], dtype=np.int64),
            child_query=np.repeat(np.arange(len(children)), [len(k) for k in children]),
            child_bounds=np.cumsum([0] + [len(k) for k in children]),
        )


def constrained_scores(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    tries: Sequence[AnswerTrie],
    temperatures: Sequence[float] | None = None,
    batch_size: int = 32,
    prompt_ids: Sequence[Sequence[int]] | None = None,
) -> list[tuple[np.ndarray, float]]:
    """(probabilities over ``trie.names``, label_mass) for each prompt, one forward per batch.

    ``model`` is any transformers causal LM (a peft model scores with its active adapter; the
    caller picks it). ``prompt_ids`` may be given instead of re-tokenising ``prompts``.
    Runs under ``torch.no_grad`` and leaves the model's train/eval mode as it was.
    """
    import torch

    if len(prompts) != len(tries):
        raise ValueError(f"{len(prompts)} prompts but {len(tries)} tries")
    temps = list(temperatures) if temperatures is not None else [1.0] * len(prompts)
    if len(temps) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(temps)} temperatures")
    ids = (
        [list(p) for p in prompt_ids]
        if prompt_ids is not None
        else [list(tokenizer.encode(p)) for p in prompts]
    )
    layouts: dict[int, TreeLayout] = {}
    for trie in tries:
        if id(trie) not in layouts:
            layouts[id(trie)] = TreeLayout.of(trie)
    rows = [layouts[id(t)] for t in tries]

    # Similar lengths together: less padding (results do not depend on the grouping).
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]) + len(rows[i].tokens))
    out: list[tuple[np.ndarray, float] | None] = [None] * len(ids)
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.no_grad():
            for chunk in _chunks(order, [len(rows[i].read_at) for i in order], batch_size):
                reads = _forward_reads(model, [ids[i] for i in chunk], [rows[i] for i in chunk])
                for i, node_lp in zip(chunk, reads, strict=True):
                    trie = tries[i]
                    node_logprobs = {
                        prefix: node_lp[q] for q, (prefix, _) in enumerate(trie.queries)
                    }
                    out[i] = trie.combine(node_logprobs, float(temps[i]))
    finally:
        if was_training:
            model.train()
    return [r for r in out if r is not None]


def _forward_reads(
    model: Any, ids: Sequence[Sequence[int]], layouts: Sequence[TreeLayout]
) -> list[list[np.ndarray]]:
    """One forward over the batch; per row, per query, the children's full-vocab log-probs."""
    import torch

    lengths = [len(p) + len(lay.tokens) for p, lay in zip(ids, layouts, strict=True)]
    total = max(lengths)
    batch = len(ids)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    input_ids = torch.zeros((batch, total), dtype=torch.long)
    positions = torch.zeros((batch, total), dtype=torch.long)
    allowed = torch.zeros((batch, total, total), dtype=torch.bool)
    read_cols: list[list[int]] = []
    for r, (prompt, lay) in enumerate(zip(ids, layouts, strict=True)):
        n_prompt, n_tree = len(prompt), len(lay.tokens)
        pad = total - lengths[r]
        t0 = pad + n_prompt  # first tree column
        input_ids[r, pad:t0] = torch.tensor(prompt, dtype=torch.long)
        positions[r, pad:t0] = torch.arange(n_prompt)
        allowed[r, pad:t0, pad:t0] = torch.tril(torch.ones(n_prompt, n_prompt, dtype=torch.bool))
        if n_tree:
            input_ids[r, t0:] = torch.tensor(lay.tokens, dtype=torch.long)
            positions[r, t0:] = n_prompt + torch.tensor(lay.depths, dtype=torch.long)
            allowed[r, t0:, pad:t0] = True
            allowed[r, t0:, t0:] = torch.from_numpy(lay.ancestors)
        # Pads attend to themselves only: their rows stay finite and nothing reads them.
        idx = torch.arange(pad)
        allowed[r, idx, idx] = True
        read_cols.append([t0 - 1 if c < 0 else t0 + c for c in lay.read_at])

    mask = torch.zeros((batch, 1, total, total), dtype=dtype)
    mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)

    # Only the read positions go through the output head: full logits over every position of
    # a batch would take gigabytes (batch x length x vocabulary).
    width = max(len(c) for c in read_cols)
    gather = torch.tensor([c + [c[-1]] * (width - len(c)) for c in read_cols], device=device)

    def _gather_hidden(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        index = gather.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return (torch.gather(hidden, 1, index), *args[1:])

    head = model.get_output_embeddings()
    handle = head.register_forward_pre_hook(_gather_hidden)
    try:
        logits = model(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=False,
        ).logits
    finally:
        handle.remove()
    if logits.shape[1] != width:
        raise RuntimeError(
            f"{type(model).__name__}: the output head was not applied once to the gathered "
            f"positions (got {logits.shape[1]} positions, expected {width})"
        )
    result: list[list[np.ndarray]] = []
    for r, lay in enumerate(layouts):
        # One row at a time in fp32: a float copy of the whole batch's logits can be large.
        # Only the children's logits leave the device; the normaliser is one number per node.
        row = logits[r, : len(lay.children)].float()
        lse = torch.logsumexp(row, dim=-1)
        q_idx = torch.from_numpy(lay.child_query).to(row.device)
        tokens = torch.from_numpy(lay.child_tokens).to(row.device)
        values = (row[q_idx, tokens] - lse[q_idx]).double().cpu().numpy()
        bounds = lay.child_bounds
        result.append([values[bounds[q] : bounds[q + 1]] for q in range(len(lay.children))])
    return result


def _chunks(order: Sequence[int], reads: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive groups of at most ``batch_size`` rows and ``READ_BUDGET`` logit rows.

    Logits are (rows x reads x vocabulary): a large vocabulary of behaviors with many
    internal nodes would otherwise need gigabytes at batch 32.
    """
    chunks: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for i, n in zip(order, reads, strict=True):
        wider = max(widest, n)
        if current and (len(current) >= batch_size or (len(current) + 1) * wider > READ_BUDGET):
            chunks.append(current)
            current, wider = [], n
        current.append(i)
        widest = wider
    if current:
        chunks.append(current)
    return chunks
