"""Log-likelihood of candidate continuations under a GGUF model, with the shared prefix kept.

The reader never lets the model write: it asks how likely each candidate text is after the
prompt, the way lm-evaluation-harness scores multiple choice. This module is the llama.cpp
side of that:

- one context whose sequence 0 holds the prompt so far (``extend``; ``mark`` / ``rollback``
  return to an earlier point without evaluating it again);
- ``score`` evaluates every candidate in one batched call, each as its own sequence that
  shares sequence 0's cached keys and values (llama.cpp's unified KV cache), and returns the
  sum of log-probabilities of each candidate's tokens plus the log-probability of each
  requested next token (the terminators) after it;
- ``greedy`` follows a token trie (an open set such as image ids) one token at a time;
- the state of a fixed prefix is saved to a file and loaded by the next process, so a cold
  CLI process does not evaluate the prefix again. The file name is a hash of the model's
  sha256, the llama.cpp build and the prefix tokens, and the loaded tokens are compared with
  the prefix: a state from another model or another catalog is never used.

Example::

    s = Scorer(path, sha256)
    s.reset(s.tokenize("Question: Dice of model 2?\\nModel:"))
    scores = s.score([s.tokenize(" model 2", bos=False), s.tokenize(" balanced", bos=False)],
                     follow=[s.tokenize("\\n", bos=False)[0]])
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ModelError

__all__ = ["Mark", "Scored", "Scorer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mark:
    """A point in a sequence to roll back to: its length and the log-probabilities after it."""

    n_past: int
    logprobs: np.ndarray
    seq: int = 0


@dataclass
class _Seq:
    logprobs: np.ndarray
    n_past: int = 0
    tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Scored:
    """One candidate: the sum of its tokens' log-probabilities, how many tokens, and the
    log-probability of each ``follow`` token right after it."""

    logprob: float
    n_tokens: int
    follow: tuple[float, ...]


_LOG_CALLBACK = None


def _quiet_llama(C) -> None:
    """Route llama.cpp's own messages away: errors to our log, the rest (load and context
    reports, hundreds of lines) nowhere."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        @C.llama_log_callback
        def callback(level, text, _user):  # GGML_LOG_LEVEL_ERROR = 3
            if level == 3:
                log.error("llama.cpp: %s", text.decode("utf-8", errors="replace").rstrip())

        _LOG_CALLBACK = callback  # kept: llama.cpp holds only the C pointer
        C.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


def _log_softmax(row: np.ndarray) -> np.ndarray:
    m = row.max()
    return row - (m + np.log(np.exp(row - m).sum()))


class Scorer:
    """One GGUF model and one llama.cpp context for scoring (serialised by a lock)."""

    def __init__(self, path: str | Path, sha256: str, n_ctx: int = 4096, threads: int = 0,
                 n_seq_max: int = 64, n_batch: int = 1024, adapter: str | Path | None = None,
                 adapter_sha256: str = ""):
        try:
            import llama_cpp as C
        except ImportError:
            raise ModelError("llama-cpp-python is not installed (pip install llama-cpp-python==0.3.36)") from None
        self._C = C
        self.path, self.sha256 = Path(path), sha256
        self.n_ctx, self.n_seq_max, self.n_batch = n_ctx, n_seq_max, n_batch
        threads = threads or os.cpu_count() or 1
        _quiet_llama(C)
        C.llama_backend_init()
        self._model = C.llama_model_load_from_file(str(path).encode(), C.llama_model_default_params())
        if not self._model:
            raise ModelError(f"{path}: llama.cpp cannot load this GGUF")
        self._vocab = C.llama_model_get_vocab(self._model)
        params = C.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, n_batch
        params.n_seq_max, params.kv_unified = n_seq_max, True
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        self._ctx = C.llama_init_from_model(self._model, params)
        if not self._ctx:
            C.llama_model_free(self._model)
            raise ModelError(f"{path}: llama.cpp cannot create a context of {n_ctx} tokens")
        self._mem = C.llama_get_memory(self._ctx)
        self._batch = C.llama_batch_init(n_batch, 0, n_seq_max)
        self._adapter = None
        self.adapter_sha256 = ""
        if adapter is not None:  # after the batch: a refused adapter closes everything allocated so far
            self._set_adapter(Path(adapter), adapter_sha256)
        self.n_vocab = C.llama_vocab_n_tokens(self._vocab)
        self.lock = threading.RLock()
        self._seqs: dict[int, _Seq] = {0: _Seq(np.zeros(self.n_vocab, dtype=np.float32))}
        self.prefix_source = ""  # "computed" or "cache" after reset_prefix
        self.decode_calls = 0
        self.decoded_tokens = 0

    def _set_adapter(self, path: Path, sha256: str) -> None:
        """Apply a LoRA adapter (GGUF) over the base model; its hash joins the state key."""
        C = self._C
        self._adapter = C.llama_adapter_lora_init(self._model, str(path).encode())
        if not self._adapter:
            self.close()
            raise ModelError(f"{path}: llama.cpp cannot load this LoRA adapter over {self.path.name}")
        arr = (C.llama_adapter_lora_p_ctypes * 1)(self._adapter)
        scales = (ctypes.c_float * 1)(1.0)
        if C.llama_set_adapters_lora(self._ctx, arr, 1, scales) != 0:
            self.close()
            raise ModelError(f"{path}: llama.cpp refused the LoRA adapter")
        self.adapter_sha256 = sha256

    def close(self) -> None:
        C = self._C
        if self._ctx:
            C.llama_batch_free(self._batch)
            C.llama_free(self._ctx)
            if self._adapter:
                C.llama_adapter_lora_free(self._adapter)
                self._adapter = None
            C.llama_model_free(self._model)
            self._ctx = self._model = None

    # -- tokens -----------------------------------------------------------------------------
    def tokenize(self, text: str, bos: bool = True) -> list[int]:
        C = self._C
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (C.llama_token * cap)()
        n = C.llama_tokenize(self._vocab, data, len(data), buf, cap, bos, False)
        if n < 0:
            raise ModelError(f"llm: cannot tokenize {text[:40]!r}")
        return list(buf[:n])

    def detokenize(self, tokens: Sequence[int]) -> str:
        C = self._C
        out = b""
        buf = ctypes.create_string_buffer(64)
        for t in tokens:
            n = C.llama_token_to_piece(self._vocab, t, buf, len(buf), 0, False)
            out += buf.raw[:max(n, 0)]
        return out.decode("utf-8", errors="replace")

    # -- sequence 0 -------------------------------------------------------------------------
    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence, wants logits) entries in one llama_decode call."""
        b = self._batch
        b.n_tokens = len(entries)
        for i, (tok, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        self._run_batch(len(entries))

    def _run_batch(self, n: int) -> None:
        code = self._C.llama_decode(self._ctx, self._batch)
        if code != 0:
            raise ModelError(f"llm: llama_decode returned {code} (KV cache of {self.n_ctx} tokens full?)")
        self.decode_calls += 1
        self.decoded_tokens += n

    def _row(self, i: int) -> np.ndarray:
        ptr = self._C.llama_get_logits_ith(self._ctx, i)
        return _log_softmax(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())

    # Sequences 0 and 1 hold prompts (the question; a content-free question to calibrate
    # against); candidates are scored as sequences 2, 3, ... that share one of them.
    FIRST_CANDIDATE = 2

    @property
    def n_past(self) -> int:
        return self._seqs[0].n_past

    @property
    def logprobs(self) -> np.ndarray:
        return self._seqs[0].logprobs

    def next_logprobs(self, seq: int = 0) -> np.ndarray:
        """Log-probabilities of the next token after sequence ``seq``."""
        return self._seqs[seq].logprobs

    @property
    def tokens(self) -> list[int]:
        return self._seqs[0].tokens

    def reset(self, tokens: Sequence[int]) -> None:
        """Sequence 0 := ``tokens`` (evaluated), everything else cleared."""
        self._clear()
        self.extend(tokens)

    def _clear(self) -> None:
        self._C.llama_memory_clear(self._mem, True)
        self._seqs = {0: _Seq(self._seqs[0].logprobs)}

    def fork(self, src: int, dst: int) -> None:
        """Sequence ``dst`` := sequence ``src`` (shared cache cells, nothing evaluated)."""
        self._C.llama_memory_seq_rm(self._mem, dst, -1, -1)
        self._C.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        a = self._seqs[src]
        self._seqs[dst] = _Seq(a.logprobs, a.n_past, list(a.tokens))

    def drop(self, seq: int) -> None:
        """Forget sequence ``seq`` (its cells leave the cache unless another sequence shares them)."""
        self._C.llama_memory_seq_rm(self._mem, seq, -1, -1)
        self._seqs.pop(seq, None)

    def extend(self, tokens: Sequence[int], seq: int = 0) -> None:
        """Append ``tokens`` to sequence ``seq``; its log-probabilities become those after the last one."""
        tokens = list(tokens)
        if not tokens:
            return
        st = self._seqs[seq]
        if st.n_past + len(tokens) > self.n_ctx:
            raise ModelError(f"llm: prompt of {st.n_past + len(tokens)} tokens exceeds n_ctx {self.n_ctx}")
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            last = start + len(chunk) == len(tokens)
            self._decode([(t, st.n_past + i, seq, last and i == len(chunk) - 1) for i, t in enumerate(chunk)])
            st.n_past += len(chunk)
        st.logprobs = self._row(len(chunk) - 1)
        st.tokens += tokens

    def mark(self, seq: int = 0) -> Mark:
        st = self._seqs[seq]
        return Mark(st.n_past, st.logprobs, seq)

    def rollback(self, mark: Mark) -> None:
        """Back to ``mark``: later cells leave the cache, nothing is evaluated again."""
        self._C.llama_memory_seq_rm(self._mem, mark.seq, mark.n_past, -1)
        st = self._seqs[mark.seq]
        st.n_past, st.logprobs = mark.n_past, mark.logprobs
        del st.tokens[mark.n_past:]

    # -- candidates -------------------------------------------------------------------------
    def score(self, candidates: Sequence[Sequence[int]], follow: Sequence[int] = (),
              first_margin: float | None = None, seq: int = 0, keep: Sequence[bool] | None = None,
              beam: float | None = None) -> list[Scored]:
        """Each candidate's log-likelihood after sequence 0, in batched calls; sequence 0 is unchanged.

        The candidates are decoded as a token trie: a token shared by several candidates'
        beginnings is evaluated once, tagged with each of their sequence ids, and every
        sequence sees sequence 0's cached prefix (tree attention over llama.cpp's unified KV
        cache). A candidate's first token is read from the log-probabilities already held.

        ``first_margin`` prunes: a candidate whose first token is that many nats less likely
        than the likeliest first token among the candidates is not evaluated (its score is
        ``-inf``); ``keep`` prunes by the caller's own rule (False: not evaluated). What a question names starts where the question starts naming it, so the
        first token carries most of the choice and the rest of the trie is decoded for a few.

        ``beam`` decodes the trie level by level instead, one call per token depth, and before
        each level drops the candidates whose log-probability so far is more than ``beam``
        nats below the best candidate's so far (``-inf``, as if pruned): phrases that share a
        likely first token (" the", " model") but part after it are not decoded to their end.
        The survivors' scores are exactly those of the one-call trie.
        """
        out: list[Scored | None] = [None] * len(candidates)
        pending = []
        base = self._seqs[seq]
        first = base.logprobs
        cut = -math.inf
        if first_margin is not None and candidates:
            cut = max(float(first[c[0]]) for c in candidates) - first_margin
        for i, cand in enumerate(candidates):
            if not cand:
                raise ValueError("empty candidate")
            if float(first[cand[0]]) < cut or (keep is not None and not keep[i]):
                out[i] = Scored(-math.inf, len(cand), tuple(-math.inf for _ in follow))
            elif len(cand) == 1 and not follow:
                out[i] = Scored(float(first[cand[0]]), 1, ())
            else:
                pending.append(i)
        width = self.n_seq_max - self.FIRST_CANDIDATE
        for g in range(0, len(pending), width):
            group = pending[g:g + width]
            if beam is not None:
                self._score_levels(candidates, group, follow, seq, beam, out)
                continue
            # Trie node = a distinct token prefix of some candidate (including whole candidates
            # when their follow tokens are wanted): one batch entry each.
            nodes: dict[tuple[int, ...], list[int]] = {}
            for s, i in enumerate(group, start=self.FIRST_CANDIDATE):
                cand = tuple(candidates[i])
                upto = len(cand) if follow else len(cand) - 1
                for j in range(1, upto + 1):
                    nodes.setdefault(cand[:j], []).append(s)
            if len(nodes) > self.n_batch:
                raise ModelError(f"llm: {len(nodes)} candidate tokens exceed the batch of {self.n_batch}")
            seq_ids = range(self.FIRST_CANDIDATE, self.FIRST_CANDIDATE + len(group))
            for s in seq_ids:
                self._C.llama_memory_seq_cp(self._mem, seq, s, -1, -1)
            order = sorted(nodes, key=len)  # parents before children
            row = {key: r for r, key in enumerate(order)}
            b = self._batch
            b.n_tokens = len(order)
            for r, key in enumerate(order):
                b.token[r], b.pos[r], b.logits[r] = key[-1], base.n_past + len(key) - 1, True
                seqs = nodes[key]
                b.n_seq_id[r] = len(seqs)
                for k, s in enumerate(seqs):
                    b.seq_id[r][k] = s
            self._run_batch(len(order))
            rows: dict[int, np.ndarray] = {}

            def lp(r: int) -> np.ndarray:
                if r not in rows:
                    rows[r] = self._row(r)
                return rows[r]

            for i in group:
                cand = tuple(candidates[i])
                total = float(first[cand[0]])
                for j in range(1, len(cand)):
                    total += float(lp(row[cand[:j]])[cand[j]])
                after = tuple(float(lp(row[cand])[f]) for f in follow) if follow else ()
                out[i] = Scored(total, len(cand), after)
            for s in seq_ids:
                self._C.llama_memory_seq_rm(self._mem, s, -1, -1)
        return out  # type: ignore[return-value]

    def _score_levels(self, candidates: Sequence[Sequence[int]], group: list[int], follow: Sequence[int], seq: int,
                      beam: float, out: list) -> None:
        """``score`` with ``beam``: the candidates of ``group`` (at most one per free sequence)."""
        base = self._seqs[seq]
        seq_of = {i: s for s, i in enumerate(group, start=self.FIRST_CANDIDATE)}
        for s in seq_of.values():
            self._C.llama_memory_seq_cp(self._mem, seq, s, -1, -1)
        cands = {i: tuple(candidates[i]) for i in group}
        total = {i: float(base.logprobs[cands[i][0]]) for i in group}
        alive, done, depth = set(group), set(), 1  # every live candidate has ``depth`` tokens scored

        def finish(i: int, after: tuple[float, ...]) -> None:
            out[i] = Scored(total[i], len(cands[i]), after)
            alive.discard(i)
            done.add(i)

        try:
            while alive:
                # The leader so far (live or scored to its end) is never dropped.
                best = max(total[i] for i in alive | done)
                for i in [i for i in alive if total[i] < best - beam]:
                    alive.discard(i)
                    out[i] = Scored(-math.inf, len(cands[i]), tuple(-math.inf for _ in follow))
                for i in [i for i in alive if not follow and len(cands[i]) == depth]:
                    finish(i, ())
                if not alive:
                    break
                # One call per level: the last token of each live prefix of ``depth`` tokens, once
                # per distinct prefix, in the sequences of every candidate sharing it. The last
                # candidate standing is decoded to its end in the same call.
                last = len(alive) == 1
                nodes: dict[tuple[int, ...], list[int]] = {}
                for i in sorted(alive):
                    deepest = len(cands[i]) if follow else len(cands[i]) - 1
                    for d in range(depth, (deepest if last else depth) + 1):
                        nodes.setdefault(cands[i][:d], []).append(seq_of[i])
                b = self._batch
                order = list(nodes)
                b.n_tokens = len(order)
                for r, key in enumerate(order):
                    b.token[r], b.pos[r], b.logits[r] = key[-1], base.n_past + len(key) - 1, True
                    b.n_seq_id[r] = len(nodes[key])
                    for k, s in enumerate(nodes[key]):
                        b.seq_id[r][k] = s
                self._run_batch(len(order))
                rows = {key: self._row(r) for r, key in enumerate(order)}
                for i in list(alive):
                    d = depth
                    while cands[i][:d] in rows:
                        row = rows[cands[i][:d]]
                        if d == len(cands[i]):
                            finish(i, tuple(float(row[f]) for f in follow))
                            break
                        total[i] += float(row[cands[i][d]])
                        d += 1
                    if i in alive and not follow and d == len(cands[i]):
                        finish(i, ())
                depth += 1
        finally:
            for s in seq_of.values():
                self._C.llama_memory_seq_rm(self._mem, s, -1, -1)

    def greedy(self, sequences: Sequence[Sequence[int]], seq: int = 0) -> tuple[int, float]:
        """Follow the token trie of ``sequences`` greedily: (index chosen, its logprob).

        The open-set choice (an image id among thousands): one token at a time, only tokens
        that continue some sequence. Sequences should end with a terminator token so none is
        a prefix of another. Sequence 0 is left as it was.
        """
        mark = self.mark(seq)
        st = self._seqs[seq]
        alive = list(range(len(sequences)))
        depth, total = 0, 0.0
        try:
            while True:
                nxt = {sequences[i][depth] for i in alive if len(sequences[i]) > depth}
                if not nxt:
                    return alive[0], total
                tok = max(nxt, key=lambda t: st.logprobs[t])
                total += float(st.logprobs[tok])
                alive = [i for i in alive if len(sequences[i]) > depth and sequences[i][depth] == tok]
                depth += 1
                if len(alive) == 1:
                    rest = list(sequences[alive[0]][depth:])
                    if rest:  # one way left: its remaining tokens are forced; score them at once
                        self.extend([tok], seq)
                        total += self.score([rest], seq=seq)[0].logprob
                    return alive[0], total
                self.extend([tok], seq)
        finally:
            self.rollback(mark)

    # -- persisted prefix -------------------------------------------------------------------
    def _state_key(self, tokens: Sequence[int]) -> str:
        from llama_cpp import __version__ as llama_version

        h = hashlib.sha256(f"{self.sha256}|{self.adapter_sha256}|llama-cpp-python {llama_version}|".encode())
        h.update(np.asarray(tokens, dtype=np.int32).tobytes())
        return h.hexdigest()[:32]

    def reset_prefix(self, tokens: Sequence[int], cache_dir: str | Path | None) -> None:
        """``reset(tokens)``, loading the evaluated prefix from ``cache_dir`` when a state for
        exactly this model and these tokens was saved there, else evaluating and saving it."""
        tokens = list(tokens)
        path = Path(cache_dir) / f"{self._state_key(tokens)}.llstate" if cache_dir else None
        self._clear()
        if path is not None and path.is_file() and self._load(path, tokens):
            self.prefix_source = "cache"
            return
        self.extend(tokens)
        self.prefix_source = "computed"
        if path is not None:
            self._save(path, tokens)

    def _load(self, path: Path, tokens: list[int]) -> bool:
        C = self._C
        cap = len(tokens) + 1
        out = (C.llama_token * cap)()
        n_out = ctypes.c_size_t(0)
        try:
            ok = C.llama_state_seq_load_file(self._ctx, str(path).encode(), 0, out, cap, ctypes.byref(n_out))
        except Exception as exc:  # noqa: BLE001 - any failure means: evaluate instead
            log.warning("llm: prefix state %s unreadable (%s); evaluating the prefix", path, exc)
            ok = 0
        # The state holds every prefix token but the last (evaluated here for its logits).
        if not ok or list(out[:n_out.value]) != tokens[:-1]:
            log.info("llm: prefix state %s does not match this model and prompt; not used", path.name)
            self._C.llama_memory_seq_rm(self._mem, 0, -1, -1)
            return False
        self._seqs[0] = _Seq(self._seqs[0].logprobs, len(tokens) - 1, tokens[:-1])
        self.extend(tokens[-1:])
        return True

    def _save(self, path: Path, tokens: list[int]) -> None:
        C = self._C
        self.rollback(Mark(len(tokens) - 1, self.logprobs))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
            os.close(fd)
            arr = (C.llama_token * (len(tokens) - 1))(*tokens[:-1])
            if C.llama_state_seq_save_file(self._ctx, tmp.encode(), 0, arr, len(tokens) - 1):
                os.replace(tmp, path)  # readers see a whole file or none
            else:
                os.unlink(tmp)
        except OSError as exc:
            log.warning("llm: prefix state not saved to %s (%s)", path, exc)
        finally:
            self.extend(tokens[-1:])
