"""Unlearning facts from a small language model: SSD with a tune-chosen alpha, on a TOFU-style corpus.

No download: a deterministic synthetic corpus of fictitious people, each with four facts
(birth city, profession, favourite colour, birth decade), asked as
`<bos> First Last relation` -> `answer` (one token). A small GPT-2 (transformers config,
random init) learns every fact on the CPU in a minute or two. Then:
- forget 10% of the people: importances (per-sample, the model's own token-mean loss on
  the answer) on the forget facts and on all facts, then `ssd_fast.tune` picks alpha and
  lambda, aiming at the forget accuracy of a model retrained without those people;
- the retrained model is that reference: trained the same way on the other 90% only.
Reported for each model: answer accuracy (top-1 next token) and mean answer
log-likelihood, on the forgotten people's facts and on the retained people's facts.

    python benchmarks/lm_unlearning.py                    # ~2-3 minutes on 1-2 CPU threads
    python benchmarks/lm_unlearning.py --json out.json --people 60
    python benchmarks/lm_unlearning.py --exhaustive       # also score every setting tune could pick
Not part of CI.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import transformers  # noqa: E402

import ssd_fast  # noqa: E402
from ssd_fast.tune._alpha_grid import selection_alphas  # noqa: E402
from ssd_fast.tune._layer_starts import layer_starts  # noqa: E402

transformers.logging.set_verbosity_error()

SYLLABLES = ["ka", "lo", "mi", "ra", "ten", "vi", "zo", "bel", "dor", "fen", "gu", "sha"]
SURNAMES = [f"{a}{b}son" for a in ("Al", "Bre", "Cor", "Dun", "Ev") for b in ("ar", "in", "os", "ud")]
RELATIONS = {
    "born_in": [
        f"city_{c}" for c in ("Avelar", "Brisk", "Corvo", "Dunmere", "Elst", "Fallow", "Grist", "Holm", "Iver", "Jask")
    ],
    "works_as": [
        f"job_{j}"
        for j in ("baker", "pilot", "cartographer", "luthier", "chemist", "weaver", "judge", "diver", "poet", "smith")
    ],
    "likes": [f"colour_{c}" for c in ("red", "teal", "ochre", "violet", "amber", "jade", "ivory", "coral")],
    "born": [f"decade_{d}" for d in range(1900, 2000, 10)],
}
BOS, EOS = "<bos>", "<eos>"


def make_corpus(people: int, seed: int = 0) -> tuple[list[list[str]], list[int]]:
    """Facts as token lists [bos, first, last, relation, answer, eos], and each fact's person."""
    g = torch.Generator().manual_seed(seed)
    firsts = [(a + b).capitalize() for a in SYLLABLES for b in SYLLABLES if a != b]
    order = torch.randperm(len(firsts), generator=g).tolist()
    facts, owner = [], []
    for p in range(people):
        first, last = firsts[order[p]], SURNAMES[int(torch.randint(len(SURNAMES), (1,), generator=g))]
        for relation, answers in RELATIONS.items():
            answer = answers[int(torch.randint(len(answers), (1,), generator=g))]
            facts.append([BOS, first, last, relation, answer, EOS])
            owner.append(p)
    return facts, owner


class FactLM(transformers.GPT2LMHeadModel):
    """GPT-2 that, given a prompt alone (no mask, no labels), returns the next token's logits
    (for `answer_scores` below). Everything else gets the usual ModelOutput: importance and
    `tune`, which scores the dict batches by token accuracy on the labelled positions (here
    the answer alone), as the model's own loss counts them.
    """

    def __init__(self, config: transformers.GPT2Config):
        super().__init__(config)
        self.loss_type = "ForCausalLM"

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        if attention_mask is None and labels is None:
            return out.logits[:, -1]
        return out


def encode(facts: list[list[str]], vocab: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[vocab[t] for t in f] for f in facts])
    labels = torch.full_like(ids, -100)
    labels[:, 4] = ids[:, 4]  # only the answer is scored
    return ids, labels


def dict_batches(ids: torch.Tensor, labels: torch.Tensor, size: int) -> list[dict]:
    return [
        {
            "input_ids": ids[i : i + size],
            "attention_mask": torch.ones_like(ids[i : i + size]),
            "labels": labels[i : i + size],
        }
        for i in range(0, len(ids), size)
    ]


def train(ids: torch.Tensor, labels: torch.Tensor, vocab_size: int, args: argparse.Namespace) -> FactLM:
    torch.manual_seed(args.seed)
    config = transformers.GPT2Config(
        vocab_size=vocab_size,
        n_positions=8,
        n_embd=args.width,
        n_layer=args.layers,
        n_head=4,
        bos_token_id=0,
        eos_token_id=1,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = FactLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    model.train()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(ids))
        for b in dict_batches(ids[perm], labels[perm], 32):
            loss = model(**b).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch % 20 == 19 and answer_scores(model, ids)[0] == 1.0:
            break
    return model.eval()


@torch.no_grad()
def answer_scores(model: FactLM, ids: torch.Tensor) -> tuple[float, float]:
    """(top-1 answer accuracy, mean answer log-likelihood) over the facts."""
    model.eval()
    logits = model(ids[:, :4])
    logp = torch.log_softmax(logits.float(), dim=-1).gather(1, ids[:, 4:5]).squeeze(1)
    return float((logits.argmax(1) == ids[:, 4]).float().mean()), float(logp.mean())


def exhaustive_best(model, forget, full, f_ids, r_ids, bound: float, floor: float, lams=(1.0, 0.1, 0.01)):
    """Score every setting tune's grids hold (every stage, alpha and lambda) on the whole
    sets: the best reaching the aim's bound while keeping retain accuracy, as
    (retain acc, forget acc, stage, alpha, lam), or None; and how many settings were scored.
    It checks tune's answer where tune falls short: was there anything to find?"""
    dampener = ssd_fast.prepare(model, forget, full, snapshot=True)
    best, scored = None, 0
    for stage in [None] + layer_starts(model, forget):
        view = dampener if stage is None else dampener.only_from(stage)
        for lam in lams:
            for alpha in selection_alphas(view.importance_pairs()):
                view.apply(alpha, lam)
                (fa, _), (ra, _) = answer_scores(model, f_ids), answer_scores(model, r_ids)
                view.restore()
                scored += 1
                if fa <= bound + 1e-9 and ra >= floor - 1e-9 and (best is None or ra > best[0]):
                    best = (ra, fa, stage, alpha, lam)
    return best, scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=60)
    parser.add_argument("--forget-fraction", type=float, default=0.1)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=600)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument(
        "--exhaustive", action="store_true", help="also score every setting of tune's grids on the whole sets"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    facts, owner = make_corpus(args.people, args.seed)
    tokens = [BOS, EOS] + sorted({t for f in facts for t in f} - {BOS, EOS})
    vocab = {t: i for i, t in enumerate(tokens)}
    ids, labels = encode(facts, vocab)
    forgotten = set(
        torch.randperm(args.people, generator=torch.Generator().manual_seed(args.seed + 1))[
            : max(1, round(args.people * args.forget_fraction))
        ].tolist()
    )
    is_forget = torch.tensor([p in forgotten for p in owner])
    f_ids, f_labels, r_ids, r_labels = ids[is_forget], labels[is_forget], ids[~is_forget], labels[~is_forget]

    start = time.perf_counter()
    model = train(ids, labels, len(vocab), args)
    t_train = time.perf_counter() - start
    start = time.perf_counter()
    retrained = train(r_ids, r_labels, len(vocab), args)
    t_retrain = time.perf_counter() - start
    rows = {"original": (answer_scores(model, f_ids), answer_scores(model, r_ids), t_train)}

    start = time.perf_counter()
    full = ssd_fast.importance(model, dict_batches(ids, labels, 64), mode="per_sample", progress=False)
    forget = ssd_fast.importance(model, dict_batches(f_ids, f_labels, 64), mode="per_sample", progress=False)
    t_importance = time.perf_counter() - start
    untouched = copy.deepcopy(model) if args.exhaustive else None
    result = ssd_fast.tune(
        model,
        forget,
        full,
        forget_eval=dict_batches(f_ids, f_labels, 64),
        retain_eval=dict_batches(r_ids, r_labels, 64),
        retrained=retrained,
        include_auto=False,
        progress=False,
    )
    rows["SSD (tune)"] = (answer_scores(model, f_ids), answer_scores(model, r_ids), t_importance + result.seconds)
    rows["retrained"] = (answer_scores(retrained, f_ids), answer_scores(retrained, r_ids), t_retrain)

    print(
        f"{args.people} people, {len(facts)} facts; forgetting {len(forgotten)} people ({int(is_forget.sum())} facts); "
        f"GPT-2 {args.layers}x{args.width}, {sum(p.numel() for p in model.parameters()):,} parameters"
    )
    print(f"tune: {result}")
    if untouched is not None:
        floor = result.original_retain_acc - result.max_retain_drop
        best, scored = exhaustive_best(untouched, forget, full, f_ids, r_ids, result.target.bound, floor)
        print(
            f"exhaustive: {scored} settings scored on the whole sets; best reaching forget <= {result.target.bound:.3f} "
            f"with retain >= {floor:.3f}: "
            + (
                "none"
                if best is None
                else f"retain {best[0]:.1%}, forget {best[1]:.1%} ({best[2]}, alpha {best[3]:.4g}, lambda {best[4]:g})"
            )
        )
    print("| model | forget acc | retain acc | forget log-lik | retain log-lik | seconds |")
    print("|---|---|---|---|---|---|")
    for name, ((fa, fl), (ra, rl), secs) in rows.items():
        print(f"| {name} | {fa:.1%} | {ra:.1%} | {fl:.2f} | {rl:.2f} | {secs:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "alpha": result.alpha,
                    "lam": result.lam,
                    "satisfied": result.satisfied,
                    "rows": {
                        k: {
                            "forget_acc": v[0][0],
                            "forget_loglik": v[0][1],
                            "retain_acc": v[1][0],
                            "retain_loglik": v[1][1],
                            "seconds": v[2],
                        }
                        for k, v in rows.items()
                    },
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
