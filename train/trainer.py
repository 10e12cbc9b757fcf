"""The training loop: `get_lr`, `train_step`, `evaluate`, `train`.

Rules:
- A step consumes `batch_tokens / seq_len` packed rows. Every rank reads the same row stream and
  trains on its contiguous slice, in `micro_batch`-row forward passes (gradient accumulation).
- The loss of a step is the sum of token losses over the whole global batch divided by its number
  of target tokens, whatever the split into ranks and micro-batches: N processes, or N micro-batches,
  compute the same step as one.
- Learning rate is a pure function of the step (warm-up, then cosine or WSD), so the scheduler's
  state is the step number. With a time budget (`train.budget`) the run ends when its WSD decay,
  placed from the measured throughput, is done; the placement is stored in each checkpoint.
- Resuming from a checkpoint restores model, optimizer, RNG and loader position: the resumed run is
  the same computation as an uninterrupted one.
- SIGINT/SIGTERM finish the current step, write a checkpoint and return (0 for SIGTERM, 130 for
  SIGINT); ranks agree on stopping at the same step.
- A non-finite loss or gradient norm, or non-finite weights about to be checkpointed, stop the run
  with `TrainingDiverged` (one line): no checkpoint is written for that step and no model is
  published; the checkpoints already written stay.
- `--resume` starts from the newest checkpoint that verifies (`train.state.verify_checkpoint`); when
  newer ones are damaged it says so in one line and falls back.
"""
from __future__ import annotations

import contextlib
import json
import dataclasses
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from infill.checkpoint import CheckpointError
from infill.engines import InfillRequest
from infill.engines.local import LocalEngine
from infill.generation import GenerationConfig
from infill.model import Transformer, tied_state
from infill.tokenizer import CodeTokenizer
from train import parallel
from train.budget import BudgetPlan, parse_duration
from train.config import TrainConfig
from train.loader import START, Corpus, Loader, corpora
from train.logs import RunLog
from train.masking import chunk_document
from train.optim import configure_optimizer
from train.packing import IGNORE, Batch, Row, collate, pack
from train.state import (checkpoint_dirs, checkpoints_dir, file_digest, read_checkpoint, remove_partial,
                         resume_point, verify_checkpoint, write_checkpoint)


class TrainingDiverged(ValueError):
    """The loss, gradient norm or weights became NaN or infinite; the message is one line."""


PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def get_lr(step: int, config: TrainConfig, plan: BudgetPlan | None = None) -> float:
    """Learning rate of step `step` (0-based): linear warm-up, then cosine or warmup-stable-decay.

    With a time budget (`plan`), WSD's decay runs from `plan.decay_start` to `plan.end_step` once
    placed (`train.budget`), and the learning rate is flat until then."""
    peak, low = config.lr, config.lr * config.min_lr_ratio
    if plan is not None and plan.decay_start is not None and step >= plan.decay_start:
        span = plan.end_step - plan.decay_start
        return peak + (low - peak) * min(1.0, (step - plan.decay_start + 1) / span)
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    if plan is not None:
        return peak
    if config.schedule == "cosine":
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    decay_start = config.steps - max(1, int(config.decay_fraction * config.steps))
    if step < decay_start:
        return peak
    return peak + (low - peak) * min(1.0, (step - decay_start + 1) / (config.steps - decay_start))


def resolve_tokenizer(config: TrainConfig, train_corpus: Corpus, vocab_size: int) -> CodeTokenizer:
    """The run's tokenizer: `config.tokenizer`, else DATA/tokenizer.json, else trained on the corpus."""
    if config.tokenizer:
        return CodeTokenizer.load(config.tokenizer)
    if config.data and (Path(config.data) / "tokenizer.json").is_file():
        return CodeTokenizer.load(Path(config.data))
    return CodeTokenizer.train((r["text"] for r in train_corpus.iter_records()), vocab_size)


# evaluation ---------------------------------------------------------------------------------------

@dataclass
class EvalSet:
    """Held-out data, fixed for the whole run."""

    rows: list[Row] = field(default_factory=list)
    """Validation rows with the training objective: the validation loss."""
    bpb_rows: list[tuple[str, Row, int]] = field(default_factory=list)
    """(language, left-to-right row, bytes of its predicted tokens): bits per byte per language."""
    spans: list[tuple[str, str, str | None, str]] = field(default_factory=list)
    """(prefix, suffix, extension, true middle line): infill exact match."""
    fmt: str = "spm"


def build_evalset(corpus: Corpus | None, tok: CodeTokenizer, config: TrainConfig) -> EvalSet:
    """Validation rows, bits-per-byte rows and held-out single-line spans (seeded, so fixed)."""
    out = EvalSet(fmt=config.objective.eval_format)
    if corpus is None or not corpus.shards or config.eval_every == 0:
        return out
    out.rows = Loader(corpus, tok, dataclasses.replace(config, num_workers=0), position=START).take(config.eval_rows) if config.eval_rows else []
    records = []
    for record in corpus.iter_records():
        records.append(record)
        if len(records) >= max(config.eval_bpb_docs, config.eval_infill):
            break
    for record in records[:config.eval_bpb_docs]:
        chunks = chunk_document(tok, record["text"], config.seq_len)
        if not chunks:
            continue
        ids = tok.encode(chunks[0])[:config.seq_len]
        if len(ids) < 2:
            continue
        row = next(pack([({}, ids, [True] * len(ids))], config.seq_len, pad_id=tok.pad_id, pad_last=True))
        out.bpb_rows.append((record.get("language", "unknown"), row, len(tok.token_bytes_concat(ids[1:]))))
    rng = random.Random(f"{config.seed}:infill-eval")
    budget = (config.seq_len - config.eval_max_tokens) // 2
    for record in (records[i % len(records)] for i in range(config.eval_infill) if records):
        chunks = [c for c in chunk_document(tok, record["text"], max(8, budget - 8)) if c.strip()]
        if not chunks:
            continue
        chunk = rng.choice(chunks)
        lines = chunk.splitlines(keepends=True)
        candidates = [i for i, line in enumerate(lines) if len(line.strip()) >= 3]
        if not candidates:
            continue
        i = rng.choice(candidates)
        prefix, middle, suffix = "".join(lines[:i]), lines[i], "".join(lines[i + 1:])
        ext = Path(record.get("path", "")).suffix or None
        out.spans.append((prefix, suffix, ext, middle))
    return out


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _forward_loss(module, batch: Batch, amp, flatten: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token losses, per-row sums) of a batch."""
    if flatten:  # kernels with cu_seqlens take one packed row
        flat = batch.flatten()
        with amp:
            logits = module(flat.tokens, positions=flat.positions, doc_ids=flat.doc_ids)
        logits = logits.view(*batch.tokens.shape, -1)
    else:
        with amp:
            logits = module(batch.tokens, positions=batch.positions, doc_ids=batch.doc_ids)  # (B, T, V)
    losses = F.cross_entropy(logits.float().flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE,
                             reduction="none").view(batch.targets.shape)  # (B, T)
    return losses.sum(), losses.sum(1)


@torch.no_grad()
def evaluate(model: Transformer, module, evalset: EvalSet, tok: CodeTokenizer, config: TrainConfig,
             device: torch.device, amp_dtype, flatten: bool) -> dict:
    """Validation loss, bits per byte per language and infill exact match (first generated line)."""
    was_training = module.training
    module.eval()
    result: dict = {}
    amp = _autocast(device, amp_dtype)
    mb = config.micro_batch
    if evalset.rows:
        total, count = 0.0, 0
        for i in range(0, len(evalset.rows), mb):
            batch = collate(evalset.rows[i:i + mb]).to(device)
            total += float(_forward_loss(module, batch, amp, flatten)[0])
            count += batch.n_targets
        result["val_loss"] = total / max(1, count)
    if evalset.bpb_rows:
        nats: dict[str, float] = {}
        nbytes: dict[str, int] = {}
        for i in range(0, len(evalset.bpb_rows), mb):
            part = evalset.bpb_rows[i:i + mb]
            batch = collate([row for _, row, _ in part]).to(device)
            per_row = _forward_loss(module, batch, amp, flatten)[1].tolist()
            for (lang, _, b), n in zip(part, per_row):
                nats[lang] = nats.get(lang, 0.0) + n
                nbytes[lang] = nbytes.get(lang, 0) + b
        result["bpb"] = {lang: nats[lang] / math.log(2) / max(1, nbytes[lang]) for lang in sorted(nats)}
    if evalset.spans:
        result["infill_em"] = infill_exact_match(model, tok, evalset, config, amp)
    module.train(was_training)
    return result


def infill_exact_match(model: Transformer, tok: CodeTokenizer, evalset: EvalSet, config: TrainConfig, amp) -> float:
    """The share of held-out lines the model completes exactly, asked of a `LocalEngine` over the
    training model as the server asks it (the same prompt fitting, token healing, stop rule and
    decode loop): the middle up to its first newline against the true line."""
    engine = LocalEngine(model, tok, prompt_format=evalset.fmt, cache_mb=0)
    gen = GenerationConfig(max_tokens=config.eval_max_tokens)
    hits = 0
    with amp:
        for prefix, suffix, ext, middle in evalset.spans:
            out = engine.infill(InfillRequest(prefix, suffix, gen, stop=("\n",), ext=ext))
            hits += out.text == middle.rstrip("\r\n")
    return hits / len(evalset.spans)


# training -----------------------------------------------------------------------------------------

def train_step(module, optimizer, batches: list[Batch], n_targets: int, lr: float, config: TrainConfig,
               d: parallel.Dist, amp, flatten: bool) -> tuple[float, float]:
    """One optimizer step over this rank's micro-batches; returns (global mean loss, gradient norm).

    Each micro-batch's loss is its token-loss sum / `n_targets` (the global batch's count) times the
    world size, because DDP and FSDP average gradients over ranks.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    local = 0.0
    for i, batch in enumerate(batches):
        with parallel.no_sync(module, last=i == len(batches) - 1):
            loss_sum, _ = _forward_loss(module, batch, amp, flatten)
            (loss_sum * (d.world_size / max(1, n_targets))).backward()
        local += float(loss_sum.detach())
    max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.grad is not None], max_norm)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss = parallel.all_reduce_sum(local, d, batches[0].tokens.device) / max(1, n_targets)
    return loss, float(norm)


def _device(config: TrainConfig, d: parallel.Dist) -> torch.device:
    want = config.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device=cuda but no CUDA device is available")
        torch.cuda.set_device(d.local_rank)
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


def _amp_dtype(config: TrainConfig, device: torch.device):
    if config.dtype == "float32":
        return None
    if config.dtype == "bfloat16":
        return torch.bfloat16
    # auto: bf16 autocast where it is faster (CUDA with bf16 support); fp32 on CPU
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def flops_per_token(model_config, seq_len: int) -> float:
    """Training FLOPs per token: 6 N (matmul weights, input embedding excluded) + 12 L T D (attention)."""
    n = model_config.num_params() - (0 if model_config.tie_embeddings else model_config.vocab_size * model_config.dim)
    return 6 * n + 12 * model_config.n_layer * seq_len * model_config.dim


class _Stop:
    """Records SIGINT/SIGTERM so the loop can finish its step and checkpoint."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self):
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: no handlers
            pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def _budget_plan(config: TrainConfig, trainer_state: dict) -> BudgetPlan | None:
    """The time-budget plan of a run (None without a budget), continued from a checkpoint's."""
    if not config.time_budget:
        return None
    plan = BudgetPlan(parse_duration(config.time_budget), config.decay_fraction, config.warmup_steps)
    saved = trainer_state.get("budget") or {}
    for name in ("elapsed_s", "decay_start", "end_step"):
        if name in saved:
            setattr(plan, name, saved[name])
    return plan


def _planned_steps(config: TrainConfig, plan: BudgetPlan | None) -> int | None:
    """Steps of the whole run: `config.steps`, or with a time budget the last step once placed."""
    return config.steps if plan is None else plan.end_step


def _finished(step: int, config: TrainConfig, plan: BudgetPlan | None) -> bool:
    return plan.done(step) if plan is not None else step >= config.steps


class _Clock:
    """A time-budgeted run's wall clock: seconds spent in all (earlier invocations included) and the
    steps/s since this invocation's first step, the same on every rank (mean over ranks)."""

    def __init__(self, plan: BudgetPlan | None, step: int):
        self.plan, self.t_start = plan, time.perf_counter()
        self.first: tuple[int, float] | None = None  # (step, elapsed) after this invocation's first step
        self.elapsed = plan.elapsed_s if plan is not None else 0.0

    def now(self, d: parallel.Dist, device) -> float:
        local = self.plan.elapsed_s + time.perf_counter() - self.t_start
        return parallel.all_reduce_sum(local, d, device) / d.world_size

    def tick(self, step: int, d: parallel.Dist, device) -> None:
        """After `step`: update the elapsed time and let the plan place the decay."""
        self.elapsed = self.now(d, device)
        if self.first is None:
            self.first = (step, self.elapsed)
        done_steps, spent = step - self.first[0], self.elapsed - self.first[1]
        rate = done_steps / spent if done_steps > 0 and spent > 0 else None
        self.plan.update(step, self.elapsed, rate)


def _check_finite(step: int, loss: float, gnorm: float, last_good: Path | None) -> None:
    """Raise `TrainingDiverged` when the loss or the gradient norm of `step` is NaN or infinite."""
    bad = [f"{name} {value}" for name, value in (("loss", loss), ("gradient norm", gnorm))
           if not math.isfinite(value)]
    if bad:
        raise TrainingDiverged(_diverged(f"non-finite {' and '.join(bad)} at step {step}", last_good))


def _diverged(what: str, last_good: Path | None) -> str:
    kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written"
    return f"{what}; stopped without writing a checkpoint or publishing a model ({kept})"


def _save(run_dir: Path, step: int, raw: Transformer, optimizer, tok, config: TrainConfig, loader: Loader,
          d: parallel.Dist, extra: dict, last_good: Path | None = None) -> Path | None:
    model_state, optim_state = parallel.full_state(raw, optimizer, d)
    bad = None
    if d.is_main:
        bad = next((k for k, v in model_state.items() if not bool(torch.isfinite(v).all())), None)
    # every rank learns the main rank's verdict, so all stop together instead of waiting at a barrier
    if parallel.all_reduce_sum(1 if bad else 0, d, next(raw.parameters()).device) > 0:
        where = bad or "on rank 0"
        raise TrainingDiverged(_diverged(f"non-finite weights ({where}) at step {step}", last_good))
    path = None
    if d.is_main:
        model_config = config.model_config()
        model_config.vocab_size = raw.config.vocab_size
        model_state = tied_state(model_state, model_config, saving=False)
        trainer = {"format": 1, "tokens": step * config.batch_tokens, "loader": loader.position,
                   "config": config.to_dict(), **extra}
        path = write_checkpoint(run_dir, step, model_config=model_config, model_state=model_state,
                                optim_state=optim_state, tokenizer=tok, trainer=trainer,
                                keep_last=config.keep_last)
    parallel.barrier(d)
    return path


def _publish_model(run_dir: Path, checkpoint: Path) -> None:
    """Copy the model files of `checkpoint` to OUT/model (a plain model directory), atomically; the
    checkpoint must verify and the copies must match its manifest, else nothing is replaced."""
    reason = verify_checkpoint(checkpoint)
    if reason is not None:
        raise CheckpointError(f"{checkpoint}: {reason}; the model was not published")
    manifest = json.loads((checkpoint / "trainer.json").read_text())["manifest"]
    tmp = run_dir / ".tmp-model"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy2(checkpoint / name, tmp / name)
        if file_digest(tmp / name) != manifest[name]:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"{tmp / name}: the copy does not match {checkpoint}; "
                                  f"the model was not published")
    final = run_dir / "model"
    old = run_dir / ".old-model"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def train(config: TrainConfig, run_dir: str | Path, *, resume: bool = False, stop_after: int = 0,
          overrides: list[str] | None = None) -> int:
    """Run (or resume) training into `run_dir`; returns the process exit status.

    `stop_after`: stop with a checkpoint after this step in this invocation (the schedule still
    runs to `config.steps`, or to the time budget); 0 runs to the end. With `resume`, the config stored in the latest
    checkpoint is used, with `overrides` (`key=value`) applied on top; with no checkpoint yet, the
    run starts fresh.
    """
    from train.config import apply_overrides

    run_dir = Path(run_dir)
    if not resume and checkpoint_dirs(run_dir):
        raise ValueError(f"{run_dir} already holds checkpoints; pass --resume to continue that run or "
                         f"choose another --out")
    checkpoint = _resume_checkpoint(run_dir) if resume else None
    if checkpoint is not None:
        saved = json.loads((checkpoint / "trainer.json").read_text())["config"]
        config = apply_overrides(TrainConfig.from_dict(saved), overrides or [])
    probe = parallel.Dist(local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    device = _device(config, probe)
    d = parallel.init(device.type)
    try:
        return _train(config, run_dir, checkpoint, stop_after, device, d)
    finally:
        parallel.shutdown(d)


def _resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest intact checkpoint (None: no checkpoint at all, start fresh). Damaged newer ones are
    skipped with one line on stderr; when every checkpoint is damaged, a `CheckpointError`."""
    checkpoint, damaged = resume_point(run_dir)
    if damaged:
        names = ", ".join(p.name for p, _ in damaged)
        reason = damaged[0][1]
        if checkpoint is None:
            raise CheckpointError(f"{checkpoints_dir(run_dir)}: no intact checkpoint to resume from "
                                  f"({names}: {reason})")
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"infill train: {names} failed verification ({reason}); resuming from {checkpoint.name}",
                  file=sys.stderr)
    return checkpoint


def _train(config: TrainConfig, run_dir: Path, checkpoint: Path | None, stop_after: int, device, d) -> int:
    accum = config.accumulation(d.world_size)
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_partial(run_dir)
    parallel.barrier(d)
    torch.manual_seed(config.seed)
    train_corpus, val_corpus = corpora(config)
    model_config = config.model_config()
    if checkpoint is not None:
        tok = CodeTokenizer.load(checkpoint)
    elif d.enabled:  # one rank trains the tokenizer, the others read it
        if d.is_main:
            resolve_tokenizer(config, train_corpus, model_config.vocab_size).save(run_dir)
        parallel.barrier(d)
        tok = CodeTokenizer.load(run_dir)
    else:
        tok = resolve_tokenizer(config, train_corpus, model_config.vocab_size)
    if len(tok) > model_config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tok)} tokens but the model's vocab_size is "
                         f"{model_config.vocab_size}; set model.vocab_size")
    backend = config.attention_backend
    if backend == "auto":
        backend = "triton" if device.type == "cuda" else "sdpa"
    model_config.attention_backend = backend
    raw = Transformer(model_config).to(device)
    module = parallel.parallelize(raw, config.parallel, d, device)
    optimizer = configure_optimizer(raw, config, device)
    step, position = 0, None
    if checkpoint is not None:
        model_state, optim_state, trainer_state = read_checkpoint(checkpoint)
        parallel.load_full_state(raw, optimizer, model_state, optim_state, d)
        step, position = trainer_state["step"], trainer_state["loader"]
    plan = _budget_plan(config, trainer_state if checkpoint is not None else {})
    if config.compile:
        module = torch.compile(module)
    flatten = backend in ("triton", "flash_attn") and device.type == "cuda"
    amp_dtype = _amp_dtype(config, device)
    loader = Loader(train_corpus, tok, config, position=position)
    evalset = build_evalset(val_corpus, tok, config)
    log = RunLog(run_dir, tensorboard=config.tensorboard) if d.is_main else None
    peak = _peak_flops(device)
    fpt = flops_per_token(model_config, config.seq_len)
    rows_per_rank = config.rows_per_step // d.world_size
    if d.is_main:
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    bar = None
    if config.progress and d.is_main:
        from tqdm import tqdm

        bar = tqdm(total=_planned_steps(config, plan), initial=step, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)
    amp = _autocast(device, amp_dtype)
    status, last_saved = 0, None
    module.train()
    try:
        with _Stop() as stop:
            clock = _Clock(plan, step)
            while not _finished(step, config, plan):
                t0 = time.perf_counter()
                rows = loader.take(config.rows_per_step)
                mine = rows[d.rank * rows_per_rank:(d.rank + 1) * rows_per_rank]
                cpu = [collate(mine[i * config.micro_batch:(i + 1) * config.micro_batch]) for i in range(accum)]
                # the global batch's target count, known on every rank without communication
                n_targets = collate(rows).n_targets if d.enabled else sum(b.n_targets for b in cpu)
                batches = [b.to(device) for b in cpu]
                lr = get_lr(step, config, plan)
                loss, gnorm = train_step(module, optimizer, batches, n_targets, lr, config, d, amp, flatten)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                step += 1
                _check_finite(step, loss, gnorm, last_saved or checkpoint)
                dt = time.perf_counter() - t0
                if plan is not None:
                    clock.tick(step, d, device)
                    if bar is not None and bar.total != _planned_steps(config, plan):
                        bar.total = _planned_steps(config, plan)
                final = _finished(step, config, plan)
                tps = config.batch_tokens / dt
                if d.is_main and (step % config.log_every == 0 or final):
                    record = {"kind": "train", "step": step, "loss": loss, "lr": lr, "grad_norm": gnorm,
                              "tokens": step * config.batch_tokens, "tokens_per_s": tps,
                              "loader_tokens_per_s": loader.tokens / max(loader.busy_s, 1e-9)}
                    if peak:
                        record["mfu"] = fpt * tps / (peak * d.world_size)
                    if plan is not None:
                        record["elapsed_s"] = clock.elapsed
                    log.write(record)
                if bar is not None:
                    post = {"loss": f"{loss:.3f}", "tok/s": f"{tps:,.0f}"}
                    if peak:
                        post["mfu"] = f"{fpt * tps / (peak * d.world_size):.1%}"
                    bar.set_postfix(post)
                    bar.update(1)
                if config.eval_every and (step % config.eval_every == 0 or final):
                    result = evaluate(raw, module, evalset, tok, config, device, amp_dtype, flatten)
                    if d.is_main and result:
                        log.write({"kind": "eval", "step": step, **result})
                signalled = parallel.all_reduce_sum(1 if stop.signum is not None else 0, d, device) > 0
                done = final or (stop_after and step >= stop_after) or signalled
                if done or (config.ckpt_every and step % config.ckpt_every == 0):
                    extra = {"loss": loss}
                    if plan is not None:
                        extra["budget"] = {**plan.to_dict(), "elapsed_s": clock.now(d, device)}
                    last_saved = _save(run_dir, step, raw, optimizer, tok, config, loader, d, extra,
                                       last_saved or checkpoint) or last_saved
                if signalled:
                    status = 130 if stop.signum == signal.SIGINT else 0
                    if d.is_main:
                        print(f"\ninfill train: stopped by signal at step {step}; checkpoint written, "
                              f"continue with --resume", file=sys.stderr)
                    break
                if done:
                    break
    finally:
        loader.close()
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
    if d.is_main and last_saved is not None:
        _publish_model(run_dir, last_saved)
    return status
