"""Per-sample importance on transformers models and an LSTM, against one plain forward+backward.

For each model, on one synthetic batch, side by side in one process and interleaved:
- plain:      forward + backward of the batch-mean loss (the cost floor);
- per_sample: ssd_fast.per_sample.PerSampleAccumulator on the same batch (dict batch,
              the model's own per-sample loss, every rule exact, no vmap).
Reports the best (minimum) seconds of each over the repeats and their ratio (the issue's
target: <= 2.5x on CPU); the minimum is the figure least disturbed by other work on a
shared machine.

    python benchmarks/bench_per_sample_hf.py                        # small CPU configs, ~1 minute
    python benchmarks/bench_per_sample_hf.py --models gpt2 --preset gpt2-small --seq 512 --device cuda
Not part of CI. Models are built from configs: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssd_fast.per_sample import PerSampleAccumulator  # noqa: E402

VOCAB = 2048


class LSTMClassifier(nn.Module):
    def __init__(self, vocab: int, dim: int, hidden: int, layers: int, classes: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.rnn = nn.LSTM(dim, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(input_ids))
        return self.head(out[:, -1])


def build(name: str, preset: str):
    import transformers

    transformers.logging.set_verbosity_error()
    big = preset == "gpt2-small"
    width, layers, heads = (768, 12, 12) if big else (128, 4, 4)
    vocab = 50257 if big else VOCAB
    if name == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab, n_positions=1024, n_embd=width, n_layer=layers, n_head=heads)
        return transformers.GPT2LMHeadModel(config), "lm", vocab
    if name == "bert":
        config = transformers.BertConfig(
            vocab_size=vocab,
            hidden_size=width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * width,
            max_position_embeddings=1024,
            num_labels=4,
        )
        return transformers.BertForSequenceClassification(config), "classes", vocab
    if name == "lstm":
        return LSTMClassifier(vocab, width, width, 2), "classes", vocab
    raise ValueError(name)


def make_batch(kind: str, vocab: int, batch: int, seq: int, device: torch.device) -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[::2, seq * 3 // 4 :] = 0  # half the batch padded
    if kind == "lm":
        labels = ids.masked_fill(mask == 0, -100)
        inputs = {"input_ids": ids, "attention_mask": mask}
    else:
        labels = torch.randint(0, 4, (batch,), generator=g)
        inputs = {"input_ids": ids, "attention_mask": mask}
    return {k: v.to(device) for k, v in inputs.items()}, labels.to(device)


def plain_step(model: nn.Module, inputs: dict, labels: torch.Tensor, params: list) -> None:
    out = model(**inputs, labels=labels) if hasattr(model, "config") else None
    if out is not None:
        loss = out.loss
    else:
        loss = nn.functional.cross_entropy(model(**inputs), labels)
    torch.autograd.grad(loss, params, allow_unused=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    model, kind, vocab = build(name, args.preset)
    model = model.to(device).eval()
    inputs, labels = make_batch(kind, vocab, args.batch, args.seq, device)
    if name == "lstm":
        inputs = {"input_ids": inputs["input_ids"]}
    params = dict(model.named_parameters())
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    acc = PerSampleAccumulator(model, params)
    steps = {
        "plain": lambda: plain_step(model, inputs, labels, list(params.values())),
        "per_sample": lambda: acc(inputs, labels, sums),
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    with torch.enable_grad():
        for step in steps.values():  # warm-up; the first per_sample call also checks the plan
            step()
        for _ in range(args.repeats):
            for key, step in steps.items():
                sync(device)
                start = time.perf_counter()
                step()
                sync(device)
                times[key].append(time.perf_counter() - start)
    acc.close()
    fallbacks = [u.name for u in acc.plan.fallbacks]
    med = {k: min(v) for k, v in times.items()}
    return {
        "model": name,
        "params": sum(p.numel() for p in params.values()),
        "batch": args.batch,
        "seq": args.seq,
        "plain_s": med["plain"],
        "per_sample_s": med["per_sample"],
        "ratio": med["per_sample"] / med["plain"],
        "vmap_fallbacks": fallbacks,
        "device": str(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gpt2", "bert", "lstm"])
    parser.add_argument("--preset", default="small", choices=["small", "gpt2-small"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 keeps a shared machine's noise down)")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    rows = [run(name, args, device) for name in args.models]
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, seq {args.seq}"
    )
    print(f"{'model':6} {'params':>10} {'plain s':>9} {'per_sample s':>13} {'ratio':>6}  vmap fallbacks")
    for r in rows:
        print(
            f"{r['model']:6} {r['params']:>10,} {r['plain_s']:>9.4f} {r['per_sample_s']:>13.4f} {r['ratio']:>6.2f}  {r['vmap_fallbacks'] or 'none'}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
