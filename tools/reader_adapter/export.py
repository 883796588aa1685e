"""Write the trained LoRA adapter as a GGUF file llama.cpp loads over the pinned base GGUF.

Names follow llama.cpp's (``blk.N.attn_q.weight.lora_a`` ...), metadata ``general.type =
adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``. llama.cpp's GGUF stores the query
and key projections with their rows permuted (its RoPE layout; transformers undoes it when
loading a GGUF), so the B matrices of those two get the same permutation. A probe file holds
the training-side log-probabilities of a few answer lines, which the project's tests compare
with what llama.cpp computes with the adapter loaded.

    /work/venv-train/bin/python tools/reader_adapter/export.py --adapter build/reader-adapter/adapter.pt \\
        --gguf <base.gguf> --data build/reader-adapter/data.jsonl --out glassbox_audit/llm/adapters/smollm2-reader.gguf
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch

_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
          "mlp.down_proj": "ffn_down"}


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute, on the output rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(lora: dict[str, torch.Tensor], n_head: int, n_kv: int) -> dict[str, np.ndarray]:
    out = {}
    for key, t in lora.items():
        m = re.search(r"layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.lora_([AB])", key)
        if not m:
            raise ValueError(f"unexpected adapter tensor {key}")
        layer, module, ab = int(m.group(1)), m.group(2), m.group(3)
        arr = t.detach().float().numpy()
        if ab == "B" and module == "self_attn.q_proj":
            arr = permute_rows(arr, n_head)
        elif ab == "B" and module == "self_attn.k_proj":
            arr = permute_rows(arr, n_kv)
        out[f"blk.{layer}.{_NAMES[module]}.weight.lora_{ab.lower()}"] = np.ascontiguousarray(arr.astype(np.float16))
    return out


def probe(adapter: dict, gguf_path: Path, data: Path, n: int = 6) -> list[dict]:
    """Training-side log-probabilities of each answer token of ``n`` examples."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from train import load_base, with_lora

    model = with_lora(load_base(gguf_path), adapter["rank"], adapter["alpha"], 0.0)
    model.load_state_dict(adapter["lora"], strict=False)
    model.eval()
    rows = [json.loads(line) for _, line in zip(range(n * 50), data.open())][::50][:n]
    out = []
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["ids"]])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            lp = [float(logp[i - 1, r["ids"][i]]) for i in range(1, len(r["ids"])) if r["target"][i]]
            out.append({"ids": r["ids"], "target": r["target"], "logprobs": lp})
    return out


def main() -> None:
    import gguf

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", type=Path, required=True)
    ap.add_argument("--gguf", type=Path, required=True, help="the base model")
    ap.add_argument("--data", type=Path, required=True, help="training data (probe examples come from it)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--loss", type=Path, help="the training run's loss.jsonl (for the card)")
    args = ap.parse_args()
    adapter = torch.load(args.adapter)
    base = gguf.GGUFReader(str(args.gguf))
    n_head = int(base.fields["llama.attention.head_count"].parts[-1][0])
    n_kv = int(base.fields["llama.attention.head_count_kv"].parts[-1][0])
    tensors = gguf_tensors(adapter["lora"], n_head, n_kv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".part")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(adapter["alpha"]))
    w.add_string("general.name", "glassbox-audit question reader (LoRA over SmolLM2-135M-Instruct Q4_1)")
    for name in sorted(tensors, key=lambda s: (int(s.split(".")[1]), s)):
        w.add_tensor(name, tensors[name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    probe_path = args.out.with_suffix(".probe.json")
    probe_path.write_text(json.dumps(probe(adapter, args.gguf, args.data)))
    write_card(args, adapter, digest, len(tensors))
    print(f"{args.out}: {len(tensors)} tensors, {args.out.stat().st_size / 1e6:.2f} MB, sha256 {digest}")


def write_card(args, adapter: dict, digest: str, n_tensors: int) -> None:
    """CARD.md beside the adapter: what it was trained on, how, the loss curve, its hash."""
    settings = adapter.get("settings", {})
    data_sha = hashlib.sha256(args.data.read_bytes()).hexdigest()
    n_rows = sum(1 for _ in args.data.open())
    base_sha = hashlib.sha256(args.gguf.read_bytes()).hexdigest()
    curve = [json.loads(line) for line in args.loss.open()] if args.loss and args.loss.is_file() else []
    rows = []
    for k in range(0, len(curve), max(1, len(curve) // 12)):
        window = curve[k:k + max(1, len(curve) // 12)]
        rows.append(f"| {window[0]['step']}-{window[-1]['step']} | {sum(w['loss'] for w in window) / len(window):.4f} |")
    from importlib.metadata import version

    versions = {mod: version(mod) for mod in ("torch", "transformers", "peft", "gguf", "numpy")}
    text = f"""# Question-reader LoRA adapter for SmolLM2-135M-Instruct (Q4_1)

What it is: a LoRA adapter (rank {adapter['rank']}, alpha {adapter['alpha']:g}, on every attention and MLP
projection of the 30 layers, {n_tensors} tensors, float16) that task-tunes the pinned base GGUF to
read audit questions the way `glassbox_audit/llm/reader.py` asks: under the run's model list and
batches, a question, then one line per field copying the question's words that name the model(s),
metric(s), part of the test set and averaging (or "not stated", "other model" for a model the run
does not hold, "no" for a question not about the audit). The reader still never lets the model
write: it scores this run's own candidate phrases under the adapter.

- adapter file: `{args.out.name}`, sha256 `{digest}` (pinned in `glassbox_audit/llm/runtime.py`)
- base model: `{args.gguf.name}`, sha256 `{base_sha}`, dequantised by transformers' GGUF loader for
  training (the Q4_1 values llama.cpp runs with)
- training data: `{args.data.name}`, {n_rows} generated examples (of which the first
  {settings.get('limit') or n_rows} used), sha256 `{data_sha}`; made by `tools/reader_adapter/make_data.py`
  (seed {20261202}) from random catalogs (1-5 models with random names and losses, batches, image-id
  styles) and that script's own templates; no benchmark or test question (exact matches dropped)
- settings: {json.dumps({k: v for k, v in settings.items() if k not in ('data', 'gguf', 'out')})}
- packages: {json.dumps(versions)}
- check: `{args.out.with_suffix('.probe.json').name}` holds the training-side log-probabilities of the
  answer tokens of 6 training examples; `tests/test_llm_adapter.py` compares them with llama.cpp's
  with the adapter loaded

Reproduce from scratch: `make reader-adapter` (a separate venv for torch; nothing of it enters the
runtime install).

## Loss (cross-entropy of the answer tokens, mean per window of steps)

| steps | loss |
|---|---|
""" + "\n".join(rows) + "\n"
    args.out.with_name("CARD.md").write_text(text)


if __name__ == "__main__":
    main()
