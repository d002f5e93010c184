"""DistilBERT: distillation-step throughput of essence.distilbert against the transformers distillation example's
``Distiller`` logic at the same shapes, same run; and the student's inference speed-up over its teacher.

The reference side re-creates ``examples/research_projects/distillation/distiller.py`` (its source is not
installed here): ``prepare_batch_mlm`` (token_probs ** smoothing, multinomial without replacement over the flattened
batch, 80/10/10 via a second multinomial), ``step`` (tuple outputs, ``masked_select`` of logits and last hidden
states, ``KLDivLoss(batchmean) * T^2``, ``CrossEntropyLoss(ignore_index=-100)``, ``CosineEmbeddingLoss``), and
``optimize`` (backward, clip 5.0, AdamW, linear schedule). Both sides run the same teacher (random-weight MiniLM-L6
shapes: 6 x 384) and the same 3-layer student from it, batch and length; steps alternate so that both see the
same machine load. The ratio is essence / reference tokens per second (> 1: essence faster).

    python benchmarks/distilbert.py --steps 5 --batch 32 --len 48
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def _models(vocab: int, layers: int, dim: int, heads: int):
    from transformers import BertConfig, BertForMaskedLM

    from essence.distilbert.model import student_from_teacher

    torch.manual_seed(0)
    teacher = BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=dim, num_hidden_layers=layers,
                                         num_attention_heads=heads, intermediate_size=4 * dim)).eval()
    return teacher, student_from_teacher(teacher)


class Reference:
    """The official Distiller's per-step logic (alpha_ce 5, alpha_mlm 2, alpha_cos 1, T 2)."""

    def __init__(self, student, teacher, counts, mask_id, steps):
        self.student, self.teacher = student, teacher
        self.token_probs = torch.maximum(counts, torch.ones_like(counts)) ** -0.7
        self.token_probs[:5] = 0
        self.pred_probs = torch.tensor([0.8, 0.1, 0.1])
        self.mask_id = mask_id
        self.ce_loss_fct = nn.KLDivLoss(reduction="batchmean")
        self.lm_loss_fct = nn.CrossEntropyLoss(ignore_index=-100)
        self.cosine_loss_fct = nn.CosineEmbeddingLoss(reduction="mean")
        self.opt = torch.optim.AdamW(student.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 1.0)

    def prepare_batch_mlm(self, token_ids, lengths):
        attn_mask = torch.arange(token_ids.size(1))[None] < lengths[:, None]
        bs, max_seq_len = token_ids.size()
        mlm_labels = token_ids.new(token_ids.size()).copy_(token_ids)
        x_prob = self.token_probs[token_ids.flatten()]
        n_tgt = math.ceil(0.15 * lengths.sum().item())
        tgt_ids = torch.multinomial(x_prob / x_prob.sum(), n_tgt, replacement=False)
        pred_mask = torch.zeros(bs * max_seq_len, dtype=torch.bool)
        pred_mask[tgt_ids] = 1
        pred_mask = pred_mask.view(bs, max_seq_len)
        pred_mask[token_ids == 0] = 0
        _token_ids_real = token_ids[pred_mask]
        _token_ids_rand = _token_ids_real.clone().random_(self.token_probs.numel())
        _token_ids_mask = _token_ids_real.clone().fill_(self.mask_id)
        probs = torch.multinomial(self.pred_probs, len(_token_ids_real), replacement=True)
        _token_ids = (_token_ids_mask * (probs == 0).long() + _token_ids_real * (probs == 1).long()
                      + _token_ids_rand * (probs == 2).long())
        token_ids = token_ids.masked_scatter(pred_mask, _token_ids)
        mlm_labels[~pred_mask] = -100
        return token_ids, attn_mask, mlm_labels

    def step(self, token_ids, lengths, autocast):
        input_ids, attention_mask, lm_labels = self.prepare_batch_mlm(token_ids, lengths)
        with autocast():
            s_out = self.student(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                                 return_dict=False)
            s_logits, s_hidden_states = s_out[0], s_out[1]
            with torch.no_grad():
                t_out = self.teacher(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                                     return_dict=False)
                t_logits, t_hidden_states = t_out[0], t_out[1]
        s_logits, t_logits = s_logits.float(), t_logits.float()
        mask = attention_mask.unsqueeze(-1).expand_as(s_logits)
        s_logits_slct = torch.masked_select(s_logits, mask).view(-1, s_logits.size(-1))
        t_logits_slct = torch.masked_select(t_logits, mask).view(-1, s_logits.size(-1))
        loss_ce = self.ce_loss_fct(F.log_softmax(s_logits_slct / 2.0, dim=-1),
                                   F.softmax(t_logits_slct / 2.0, dim=-1)) * 2.0 ** 2
        loss = 5.0 * loss_ce
        loss = loss + 2.0 * self.lm_loss_fct(s_logits.view(-1, s_logits.size(-1)), lm_labels.view(-1))
        s_h, t_h = s_hidden_states[-1].float(), t_hidden_states[-1].float()
        mask = attention_mask.unsqueeze(-1).expand_as(s_h)
        dim = s_h.size(-1)
        s_h = torch.masked_select(s_h, mask).view(-1, dim)
        t_h = torch.masked_select(t_h, mask).view(-1, dim)
        target = s_h.new(s_h.size(0)).fill_(1)
        loss = loss + 1.0 * self.cosine_loss_fct(s_h, t_h, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 5.0)
        self.opt.step()
        self.opt.zero_grad()
        self.sched.step()
        return float(loss.detach())


class Essence:
    def __init__(self, student, teacher, counts, mask_id):
        from essence.distilbert.data import token_probs
        from essence.distilbert.train import Distiller

        self.d = Distiller(student, teacher)
        self.probs = token_probs(counts, 0.7, (0, 1, 2, 3, 4))
        self.mask_id = mask_id
        self.opt = torch.optim.AdamW(student.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6)

    def step(self, token_ids, lengths, autocast):
        from essence.distilbert.data import mask_tokens

        att = (torch.arange(token_ids.size(1))[None] < lengths[:, None]).long()
        ids, labels = mask_tokens(token_ids, att, self.probs, mask_id=self.mask_id, vocab_size=self.probs.numel())
        with autocast():
            loss, _ = self.d.losses(ids, att, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.d.student.parameters(), 5.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


def main(argv=None) -> int:
    from essence.core.loop import Precision
    from essence.core.precision import machine_line
    from essence.distilbert.evaluate import time_models

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--len", type=int, default=48)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--precision", default="auto")
    p.add_argument("--speed-sentences", type=int, default=20)
    args = p.parse_args(argv)
    prec = Precision(args.precision, "cpu")
    print(machine_line("cpu", prec.mode))
    teacher, student = _models(args.vocab, args.layers, args.dim, args.heads)
    counts = torch.randint(1, 1000, (args.vocab,)).double()
    ess = Essence(student, teacher, counts, 4)
    ref = Reference(copy.deepcopy(student), teacher, counts, 4, args.steps)
    g = torch.Generator().manual_seed(0)
    times = {"essence": [], "reference": []}
    tokens = []
    for i in range(args.steps + 1):
        lengths = torch.randint(args.len // 2, args.len + 1, (args.batch,), generator=g)
        ids = torch.randint(5, args.vocab, (args.batch, args.len), generator=g)
        ids[torch.arange(args.len)[None] >= lengths[:, None]] = 0
        for name, side in (("essence", ess), ("reference", ref)) if i % 2 else (("reference", ref), ("essence", ess)):
            t0 = time.perf_counter()
            side.step(ids, lengths, prec.autocast)
            if i:                           # step 0 is the warm-up
                times[name].append(time.perf_counter() - t0)
        if i:
            tokens.append(int(lengths.sum()))
    tok = statistics.mean(tokens)
    e, r = statistics.median(times["essence"]), statistics.median(times["reference"])
    print(f"distillation step, batch {args.batch} x {args.len} (teacher {args.layers}x{args.dim}, student "
          f"{student.config.n_layers} layers), {prec.mode}, {args.steps} steps each, median:")
    print(f"  essence   {tok / e:8.0f} tokens/s ({e * 1e3:.0f} ms/step)")
    print(f"  reference {tok / r:8.0f} tokens/s ({r * 1e3:.0f} ms/step)")
    print(f"  ratio essence / reference: {r / e:.2f}")
    t = time_models({"teacher": teacher, "student": student}, args.vocab, sentences=args.speed_sentences, batches=2,
                    precision=args.precision)
    for k in ("batch1", "batch32"):
        print(f"inference {k}: teacher {statistics.median(t['teacher'][k]) * 1e3:.1f} ms, student "
              f"{statistics.median(t['student'][k]) * 1e3:.1f} ms, speed-up "
              f"{statistics.median(t['teacher'][k]) / statistics.median(t['student'][k]):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
