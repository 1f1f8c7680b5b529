"""Train the decoder of ``host/models/decoder.py`` on digit reversal and write its weights.

    python -m openlpu.host.models.train_decoder [--steps N] [--qat-steps N] [--out DIR]

Needs torch (the optional extra ``train``: ``pip install -e '.[train]'``); nothing else in the
project does. CPU, one thread, fixed seeds: the same command writes the same files.

1. Float training (AdamW, warm-up then cosine decay) on random reversal examples (never a
   held-out string); the loss is the cross-entropy of the answer tokens.
2. Calibration: the float model runs on calibration batches and every int8 activation of the
   integer model gets the real scale ``percentile(|x|, 99.99) / 127`` (the residual stream
   one scale for all its points, as the residual adds need).
3. Quantization-aware fine-tuning: the same model with weights fake-quantized per tensor
   (``max|W| / 127``, the norms' gammas as ``rmsnorm_consts`` quantizes them) and every int8
   activation fake-quantized at its calibrated scale (straight-through gradients); the scales
   are re-calibrated on the fake-quantized model before the last quarter of the steps.
4. Output: ``decoder_int8.npz`` (int8 tensors, scales, config, and torch's float logits on
   fixed check sequences, against which the tests check the numpy float model) and
   ``decoder_float.npz`` (float32 weights) in ``host/models/data``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from openlpu.host.models.decoder import (DATA_DIR, MATRICES, RMS_EPS, DecoderConfig,
                                         DecoderWeights, ReverseTask, Tokenizer)

SEED = 0
PCT = 99.99


def _torch():
    try:
        import torch
    except ImportError:
        raise SystemExit("train_decoder needs torch: pip install -e '.[train]'") from None
    return torch


def build(torch, cfg: DecoderConfig):
    nn = torch.nn
    F = torch.nn.functional

    def fq(x, s):
        """Fake int8 quantization at scale ``s`` (saturating), straight-through gradient."""
        q = torch.clamp(torch.round(x / s), -128, 127) * s
        return x + (q - x).detach()

    def fq_w(w, lim=127):
        s = (w.detach().abs().max() / lim).clamp_min(1e-12)
        q = torch.clamp(torch.round(w / s), -lim, lim) * s
        return w + (q - w).detach()

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            d, f, v = cfg.d_model, cfg.d_ff, cfg.vocab
            P = lambda *shape, std=0.02: nn.Parameter(torch.randn(*shape) * std)
            self.p = nn.ParameterDict()
            self.p["tok"] = P(v, d, std=0.5)
            self.p["pos"] = P(cfg.context, d, std=0.5)
            proj = 0.02 / math.sqrt(2 * cfg.n_layers)
            for i in range(cfg.n_layers):
                self.p[f"l{i}_g1"] = nn.Parameter(torch.ones(d))
                self.p[f"l{i}_g2"] = nn.Parameter(torch.ones(d))
                for m, shape in (("wq", (d, d)), ("wk", (d, d)), ("wv", (d, d)), ("w1", (d, f))):
                    self.p[f"l{i}_{m}"] = P(*shape, std=1 / math.sqrt(shape[0]))
                self.p[f"l{i}_wo"] = P(d, d, std=proj * 4)
                self.p[f"l{i}_w2"] = P(f, d, std=proj * 2)
            self.p["gf"] = nn.Parameter(torch.ones(d))
            self.p["wout"] = P(d, v, std=1 / math.sqrt(d))

        def forward(self, tokens, act=None, record=None):
            """Logits (B, T, vocab). ``act``: activation scales (fake-quantized model);
            ``record``: dict collecting |activations| for calibration."""
            p = self.p
            B, T = tokens.shape
            H, dh = cfg.n_heads, cfg.head_dim
            qa = act is not None
            W = (lambda n: fq_w(p[n])) if qa else (lambda n: p[n])
            G = (lambda n: fq_w(p[n])) if qa else (lambda n: p[n])

            def Q(x, name):
                if record is not None:
                    record.setdefault(name, []).append(x.detach().abs().reshape(-1))
                return fq(x, act[name]) if qa else x

            def norm(x, g, name):
                y = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + RMS_EPS) * G(g)
                return Q(y, name)

            if qa:
                x = fq(p["tok"], act["res"])[tokens] + fq(p["pos"], act["res"])[:T][None]
            else:
                x = p["tok"][tokens] + p["pos"][:T][None]
            x = Q(x, "res")
            mask = torch.ones(T, T, dtype=torch.bool).tril()
            for i in range(cfg.n_layers):
                L = f"l{i}_"
                Ls = f"l{i}."
                h = norm(x, L + "g1", Ls + "n1")
                q = Q(h @ W(L + "wq"), Ls + "q").view(B, T, H, dh).transpose(1, 2)
                k = Q(h @ W(L + "wk"), Ls + "k").view(B, T, H, dh).transpose(1, 2)
                v = Q(h @ W(L + "wv"), Ls + "v").view(B, T, H, dh).transpose(1, 2)
                s = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
                s = s.masked_fill(~mask, float("-inf"))
                o = torch.softmax(s, -1) @ v
                o = o.transpose(1, 2).reshape(B, T, cfg.d_model)
                if qa:
                    o = fq(o, act[Ls + "v"])
                x = Q(x + Q(o @ W(L + "wo"), "res"), "res")
                h = norm(x, L + "g2", Ls + "n2")
                u = Q(F.relu(h @ W(L + "w1")), Ls + "u")
                x = Q(x + Q(u @ W(L + "w2"), "res"), "res")
            h = norm(x, "gf", "nf")
            return h @ W("wout")

    return Decoder()


def calibrate(torch, model, task, rng, act=None, batches=4, size=128) -> dict:
    rec = {}
    with torch.no_grad():
        for _ in range(batches):
            tok, _, _ = task.batch(rng, size)
            valid = torch.from_numpy(tok != Tokenizer.PAD)
            r = {}
            model(torch.from_numpy(tok), act=act, record=r)
            for k, vs in r.items():
                # keep the real (non-padding) positions only
                per = [v.view(valid.shape[0], valid.shape[1], -1)[valid].reshape(-1)
                       for v in vs]
                rec.setdefault(k, []).extend(per)
    out = {}
    for k, vs in rec.items():
        a = torch.cat(vs).numpy().astype(np.float64)
        out[k] = float(np.percentile(a, PCT) / 127)
    return out


def accuracy(torch, model, task, n=200, act=None) -> float:
    """Greedy exact-match accuracy of the torch model on the first ``n`` held-out prompts."""
    ok = 0
    with torch.no_grad():
        for p, a in task.heldout(n):
            seq = list(p)
            for _ in range(len(a)):
                lg = model(torch.tensor([seq]), act=act)[0, -1]
                seq.append(int(lg.argmax()))
            ok += seq[len(p):] == a
    return ok / n


def train(model, torch, task, rng, steps, lr, act=None, log_every=100, batch=64):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = min(100, steps // 10)
    F = torch.nn.functional
    t0 = time.process_time()
    for step in range(steps):
        f = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(
            math.pi * (step - warm) / max(1, steps - warm)))
        for g in opt.param_groups:
            g["lr"] = lr * max(f, 0.02)
        tok, tgt, m = task.batch(rng, batch)
        logits = model(torch.from_numpy(tok), act=act)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               torch.from_numpy(tgt).reshape(-1), reduction="none")
        mt = torch.from_numpy(m).reshape(-1).float()
        loss = (loss * mt).sum() / mt.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            print(f"  step {step:5d} loss {loss.item():.4f} ({time.process_time() - t0:.0f} s CPU)",
                  flush=True)


def export(torch, model, cfg, act, task) -> DecoderWeights:
    p = {k: v.detach().double().numpy() for k, v in model.p.items()}
    fw = {k.replace("_", "."): v for k, v in p.items()}
    q, ws = {}, {}
    for name in ["wout"] + [f"l{i}.{m}" for i in range(cfg.n_layers) for m in MATRICES]:
        w = fw[name]
        s = float(np.abs(w).max() / 127)
        ws[name] = s
        q[name] = np.clip(np.round(w / s), -127, 127).astype(np.int64)
    for name in ("tok", "pos"):
        q[name] = np.clip(np.round(fw[name] / act["res"]), -128, 127).astype(np.int64)
    # check sequences: torch's float logits, for the numpy float model's test
    check_tok = np.array([task.prompt_ids(d) + task.answer_ids(d)[:-1]
                          for d in ("0123456789012345", "9081726354637281")], dtype=np.int64)
    with torch.no_grad():
        ref = model(torch.from_numpy(check_tok)).double().numpy()
    check = {"tokens": check_tok, "logits": ref.astype(np.float32)}
    return DecoderWeights(cfg, fw, q, ws, dict(act), check)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1200, help="float training steps")
    ap.add_argument("--qat-steps", type=int, default=400, help="quantization-aware steps")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    args = ap.parse_args(argv)
    torch = _torch()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    cfg = DecoderConfig()
    cfg.check()
    task = ReverseTask()
    model = build(torch, cfg)
    t0 = time.process_time()
    print(f"float training: {args.steps} steps", flush=True)
    train(model, torch, task, rng, args.steps, args.lr)
    print(f"float accuracy (torch, 200 held-out): {accuracy(torch, model, task):.3f}", flush=True)
    act = calibrate(torch, model, task, rng)
    if args.qat_steps:
        q1 = args.qat_steps * 3 // 4
        print(f"quantization-aware training: {args.qat_steps} steps", flush=True)
        train(model, torch, task, rng, q1, args.lr / 4, act=act)
        act = calibrate(torch, model, task, rng, act=act)
        train(model, torch, task, rng, args.qat_steps - q1, args.lr / 8, act=act)
        act = calibrate(torch, model, task, rng, act=act)
    print(f"fake-quantized accuracy (torch, 200 held-out): "
          f"{accuracy(torch, model, task, act=act):.3f}", flush=True)
    w = export(torch, model, cfg, act, task)
    args.out.mkdir(parents=True, exist_ok=True)
    w.save(args.out / "decoder_int8.npz", args.out / "decoder_float.npz")
    print(f"wrote {args.out}/decoder_int8.npz and decoder_float.npz "
          f"({time.process_time() - t0:.0f} s CPU in all)")


if __name__ == "__main__":
    main()
