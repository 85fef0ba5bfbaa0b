#!/usr/bin/env python3
"""llama.cpp as an oracle: logits and greedy continuations of a GGUF model.

Runs the reference llama.cpp build (scripts/llama-cpp-build.sh) through the
ctypes bindings from the same llama-cpp-python sdist. Use it through
scripts/reference/run.sh, which sets up the paths.

  llama_ref.py logits MODEL --tokens 1,2,3 --out FILE [--kv f16|f32] [--f16]
      all-position logits as little-endian f32 (or f16), n_tokens x n_vocab
  llama_ref.py greedy MODEL --prompt TEXT --n 32 [--kv f16|f32] [--batch N]
                     [--spread-batch M] [--logits-out FILE]
      prompt ids, greedy continuation ids and the top-two logit gap per
      step, as one JSON line; with --spread-batch, also how far llama.cpp
      moves from itself when the prompt runs in batches of M tokens
"""
import argparse
import json
import sys

import numpy as np
import llama_cpp


def open_model(path, kv, n_ctx, n_batch=512):
    kv_type = {"f16": llama_cpp.GGML_TYPE_F16, "f32": llama_cpp.GGML_TYPE_F32}[kv]
    return llama_cpp.Llama(
        model_path=path,
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_ubatch=n_batch,
        n_threads=2,
        logits_all=True,
        type_k=kv_type,
        type_v=kv_type,
        # llama.cpp's own defaults (negative: the model's values); the
        # Python class would otherwise force YaRN's betas to 32 and 1 over
        # what a file says.
        yarn_attn_factor=-1.0,
        yarn_beta_fast=-1.0,
        yarn_beta_slow=-1.0,
        verbose=False,
    )


def cmd_logits(a):
    llm = open_model(a.model, a.kv, a.ctx, a.batch)
    tokens = [int(t) for t in a.tokens.split(",")]
    llm.eval(tokens)
    scores = np.asarray(llm.scores[: len(tokens)], dtype=np.float32)
    scores.astype("<f2" if a.f16 else "<f4").tofile(a.out)
    print(json.dumps({"tokens": tokens, "n_vocab": int(scores.shape[1]), "out": a.out}))


def greedy_run(llm, prompt, n):
    """The prompt's last-position logits, then up to n greedy ids and
    llama.cpp's top-two logit gap at each step."""
    llm.eval(prompt)
    first_logits = np.asarray(llm.scores[len(prompt) - 1], dtype=np.float32).copy()
    out, gaps = [], []
    for _ in range(n):
        logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top2 = np.argsort(logits)[-2:]
        tok = int(top2[1])
        gaps.append(float(logits[top2[1]] - logits[top2[0]]))
        out.append(tok)
        if llm.token_eos() == tok:
            break
        llm.eval([tok])
    return first_logits, out, gaps


def cmd_greedy(a):
    llm = open_model(a.model, a.kv, a.ctx, a.batch)
    prompt = llm.tokenize(a.prompt.encode(), add_bos=True, special=False)
    first_logits, out, gaps = greedy_run(llm, prompt, a.n)
    if a.logits_out:
        first_logits.astype("<f2").tofile(a.logits_out)
    line = {"text": a.prompt, "prompt": prompt, "continuation": out, "gaps": gaps}
    if a.spread_batch:
        # llama.cpp against itself: the same prompt in batches of another
        # size, which only changes the order its kernels sum in.
        del llm
        other = open_model(a.model, a.kv, a.ctx, a.spread_batch)
        logits, out2, _ = greedy_run(other, prompt, a.n)
        ref = first_logits.astype(np.float64)
        nmse = float(((logits - ref) ** 2).sum() / (ref ** 2).sum())
        part = next((k for k, (x, y) in enumerate(zip(out, out2)) if x != y), None)
        line["self"] = {
            "batch": a.spread_batch,
            "nmse": nmse,
            "part_step": part,
            "part_gap": None if part is None else gaps[part],
        }
    print(json.dumps(line))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    lg = sub.add_parser("logits")
    lg.add_argument("model")
    lg.add_argument("--tokens", required=True)
    lg.add_argument("--out", required=True)
    lg.add_argument("--f16", action="store_true", help="store the logits as f16")
    lg.add_argument("--batch", type=int, default=16,
                    help="tokens per llama.cpp batch; its GEMM paths for large batches sum in another order")
    gr = sub.add_parser("greedy")
    gr.add_argument("model")
    gr.add_argument("--prompt", required=True)
    gr.add_argument("--n", type=int, default=32)
    gr.add_argument("--logits-out", help="write the prompt's last-position logits as f16")
    gr.add_argument("--batch", type=int, default=512,
                    help="tokens per llama.cpp batch for the prompt")
    gr.add_argument("--spread-batch", type=int,
                    help="run again in batches of this size and report how far llama.cpp moves")
    for sp in (lg, gr):
        sp.add_argument("--kv", default="f16", choices=["f16", "f32"])
        sp.add_argument("--ctx", type=int, default=4096)
    a = p.parse_args()
    {"logits": cmd_logits, "greedy": cmd_greedy}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
