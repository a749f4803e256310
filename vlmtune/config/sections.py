"""The config's sections as typed dataclasses (data, model, train, eval, teach, memory, connector) and RunConfig."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from vlmtune.config.fields import _f


@dataclass
class DataConfig:
    source: str = _f(
        "synth",
        "where examples come from: 'synth' (the built-in shapes world), 'files' (read "
        "with data.format; 'jsonl' is accepted as a synonym) or 'hf' (a Hugging Face dataset: "
        "data.hf_name and the other hf_ keys)",
    )
    format: str = _f(
        "jsonl",
        "files: the reader (jsonl | visdial | imagefolder | csv_labels | mcq_json | sharegpt | "
        "hf_disk | hf; options in docs/formats.md)",
    )
    format_options: dict = _f({}, "files: options passed to the reader, e.g. {image_dirs: [images], dense: d.json}")
    task_options: dict = _f(
        {},
        "options of the task (`vlmtune ls` lists each task's), e.g. {labels: [cat, dog]} for "
        "classify, {permutations: 2} for mcq, {bertscore: true} for dialog",
    )
    limit: int = _f(0, "read at most this many records per file (0: all); --smoke sets it", ge=0)
    sample: int = _f(
        0,
        "after reading (and data.limit), keep a seeded sample of this many records per file, "
        "stratified by target, spread over as many groups as it can (0: all); --smoke sets it",
        ge=0,
    )
    augment: dict = _f({}, "train-split augmentation, e.g. {label: '2', copies: 4, pipeline: default} (empty: none)")
    task: str = _f("count", "task name (see `vlmtune ls`); for synth also the generator")
    n: int = _f(2400, "synth: number of examples to generate before splitting", ge=1)
    synth_options: dict = _f(
        {},
        "synth: options of the generator, e.g. {lang: en, modality: caption} for mcq "
        "(each generator's docstring in vlmtune/data/synth/ lists its own)",
    )
    image_size: int = _f(64, "synth: image side in pixels, 8 or more: the scene is a 4x4 grid", ge=8, le=4096)
    seed: int = _f(0, "seed of the synthetic generator and of the split", ge=0)
    path: str | None = _f(None, "files: one file (or folder) to split, or null when train/val/test are given")
    train: str | None = _f(None, "files: train file (already split); hf: the dataset's split to train on")
    val: str | None = _f(None, "files: validation file (already split); hf: the dataset's validation split")
    test: str | None = _f(None, "files: test file (already split); hf: the dataset's test split")
    split: dict = _f({"train": 0.75, "val": 0.125, "test": 0.125}, "fractions used when one file is split")
    stratify: bool = _f(True, "stratify the split by target label")
    dedup: str = _f(
        "warn",
        "near-duplicate images across splits (perceptual hash): error (stop) | warn (log and "
        "report them) | group (merge them into one group before splitting)",
    )
    dedup_distance: int = _f(
        20,
        "near-duplicate threshold: differing bits of the 189-bit image hash (0: identical "
        "hashes only); re-encoded, resized or 2%-cropped copies differ by up to ~20, "
        "distinct scenes by 36 or more",
        ge=0,
        le=189,
    )
    hf_name: str | None = _f(
        None,
        "hf: a hub dataset id (owner/name) or a local folder laid out as a hub dataset "
        "repo (parquet/JSON files + README.md)",
    )
    hf_config: str | None = _f(None, "hf: the dataset's configuration (subset) name, if it has several")
    hf_split: str = _f(
        "train",
        "hf: the split read and then split by data.split (data.train/val/test, when "
        "given, name the dataset's own splits instead, e.g. train / validation / test)",
    )
    hf_revision: str | None = _f(None, "hf: a branch, tag or commit of the hub dataset (default: main)")
    hf_streaming: bool = _f(False, "hf: stream rows as they are read (no local arrow copy of the dataset)")
    hf_columns: dict = _f(
        {},
        "hf: the dataset's column names: {image, question, answer, options, label, id, group} "
        "(defaults image/question/answer), or {messages, images, system} with hf_formatting",
    )
    hf_prompt: str = _f(
        "{question}",
        "hf: the user message, filled from the row's columns, e.g. "
        "'{question} Answer with a number.' or a fixed question",
    )
    hf_formatting: str | None = _f(
        None,
        "hf: sharegpt | openai for conversation columns (mapped as the sharegpt "
        "reader maps them; hf_columns.messages names the column)",
    )


@dataclass
class ModelConfig:
    name: str = _f(
        "tiny",
        "'tiny' (the built-in base VLM, built and cached on first use), 'gemma3-270m' "
        "(a real text model, extra vlmtune[gemma]) or a .gguf file, a local directory, or a hub "
        "id such as llava-hf/llava-1.5-7b-hf",
    )
    dtype: str = _f("auto", "auto | float32 | bfloat16 | float16 (auto: bf16 on a GPU that supports it, else fp32)")
    load_in_4bit: bool = _f(False, "QLoRA: load the base in 4-bit nf4 with double quantization (bitsandbytes)")
    load_in_8bit: bool = _f(False, "load the base in 8-bit (bitsandbytes LLM.int8)")
    device: str = _f("auto", "auto | cpu | cuda | mps")
    tiny_pretrain_examples: int = _f(4000, "tiny: captions the base is pretrained on (enters the cache key)", ge=1)
    tiny_pretrain_epochs: int = _f(3, "tiny: pretraining epochs (enters the cache key)", ge=1)


@dataclass
class TrainConfig:
    method: str = _f("lora", "lora | full")
    epochs: float = _f(3.0, "training epochs; fractions allowed", gt=0)
    max_steps: int = _f(-1, "stop after this many optimizer steps (-1: use epochs)", ge=-1, not_zero=True)
    lr: float = _f(2e-4, "peak learning rate", gt=0)
    batch_size: int = _f(16, "per-device batch size", ge=1)
    grad_accum: int = _f(1, "gradient accumulation steps", ge=1)
    warmup_ratio: float = _f(0.05, "fraction of steps for linear warm-up", ge=0, le=1)
    warmup_steps: int = _f(0, "warm-up steps; > 0 overrides warmup_ratio", ge=0)
    optim: str = _f("adamw_torch", "transformers optimizer name: adamw_torch | adamw_bnb_8bit | paged_adamw_8bit ...")
    weight_decay: float = _f(0.0, "AdamW weight decay", ge=0)
    lr_scheduler: str = _f("linear", "transformers scheduler name: linear | cosine | constant ...")
    freeze_vision: bool = _f(True, "method=full: keep the vision tower frozen (as LLaVA-style recipes do)")
    lora_r: int = _f(16, "LoRA rank", ge=1)
    lora_alpha: int = _f(32, "LoRA alpha", ge=1)
    lora_dropout: float = _f(0.05, "LoRA dropout probability", ge=0, lt=1)
    lora_target: str = _f(
        "language",
        "which parts get LoRA: language | language+projector | all (+ vision tower); a projector "
        "without linear layers (Gemma-3) is trained in full",
    )
    lora_modules: str = _f("attention+mlp", "attention | mlp | attention+mlp")
    loss_on: str = _f(
        "assistant",
        "assistant (loss on answer tokens only) | all (prompt and answer; image "
        "and padding tokens are always excluded)",
    )
    max_length: int = _f(256, "maximum tokens per example; cutting an image's tokens is an error", ge=1)
    eval_steps: int = _f(0, "validate every N steps (0: once per epoch); validation generates and scores", ge=0)
    val_max_examples: int = _f(64, "validation examples generated during training (keeps it quick)", ge=0)
    save_steps: int = _f(0, "checkpoint every N steps (0: once per epoch)", ge=0)
    logging_steps: int = _f(10, "log the loss every N steps", ge=1)
    gradient_checkpointing: bool = _f(False, "trade compute for memory")
    answer_only_logits: bool = _f(
        True,
        "compute the LM head and loss only at the positions that carry loss (equal "
        "loss and gradients, far less compute and memory for large vocabularies)",
    )
    group_by_length: bool = _f(
        True,
        "batch examples of similar length together (mega-batches sorted by length with a jitter of a "
        "quarter of the median length, so lengths that differ only by the answer's label stay mixed), "
        "so less of each batch is padding",
    )
    length_tolerance: int = _f(
        -1,
        "group_by_length: tokens within which lengths are not told apart (random order among them); -1: a "
        "quarter of the median length, at least 32; 0: transformers' exact sort (batches can then hold one "
        "label only, when the answers' length follows the label)",
        ge=-1,
    )
    seed: int = _f(0, "training seed (data order, dropout, LoRA init)", ge=0)
    report_to: list = _f(["tensorboard"], "loggers: tensorboard, and/or others transformers supports; [] for none")


@dataclass
class EvalConfig:
    batch_size: int = _f(32, "generation batch size", ge=1)
    max_new_tokens: int = _f(16, "greedy decoding budget per answer", ge=1)
    mode: str = _f(
        "generate",
        "generate (greedy answers, parsed) | loglik (pick the most likely option: closed "
        "sets only) | both (generate, and record option scores for ranking metrics)",
    )
    zero_shot: bool = _f(True, "evaluate the base model before fine-tuning")
    n_boot: int = _f(2000, "bootstrap resamples for confidence intervals", ge=10)
    backend: str = _f(
        "hf",
        "who answers: hf (vlmtune loads the model with transformers and generates) | openai (an "
        "OpenAI-compatible server answers: vLLM, SGLang, Ollama, an API model, `vlmtune serve`; "
        "`vlmtune eval` only, a run evaluates the model it trains with hf)",
    )
    endpoint: str = _f(
        "http://localhost:8000/v1",
        "openai: the server's /v1 URL (vLLM and `vlmtune serve` listen on "
        "port 8000 by default; Ollama: http://localhost:11434/v1)",
    )
    model: str = _f("", "openai: the model name the server serves (empty: the only model its /v1/models lists)")
    api_key_env: str = _f(
        "OPENAI_API_KEY",
        "openai: the environment variable holding the API key (the key itself "
        "is never written to a recipe or an evaluation directory)",
    )
    concurrency: int = _f(8, "openai: requests in flight at once", ge=1)
    rpm: float = _f(0.0, "openai: at most this many requests per minute (0: no limit)", ge=0)
    tpm: float = _f(0.0, "openai: at most this many tokens (prompt + completion) per minute (0: no limit)", ge=0)
    timeout: float = _f(120.0, "openai: seconds per request before it is retried", gt=0)
    max_retries: int = _f(5, "openai: retries of a request after 429, 5xx, a timeout or a malformed answer", ge=0)
    context_tokens: int = _f(
        0,
        "openai: the server's context size (Ollama's num_ctx) to check prompt_tokens against "
        "(0: unknown; a prompt_tokens far below the input's length is flagged anyway)",
        ge=0,
    )
    cache: str | None = _f(
        None,
        "openai: the response cache (JSONL; null: responses.jsonl in the evaluation "
        "directory); rerunning an evaluation sends only what the cache lacks",
    )


@dataclass
class TeachConfig:
    target: str = _f(
        "none",
        "training targets written by a teacher before training: none (the gold answers) | "
        "reminder+gold (<reminder>teacher</reminder> then the gold answer) | reminder+teacher "
        "(the teacher's answer too); see `vlmtune teach --help`",
    )
    backend: str = _f(
        "openai",
        "openai (any OpenAI-compatible endpoint: Ollama's /v1, vLLM, SGLang, an API model, "
        "`vlmtune serve`) | local (vlmtune loads teach.model itself and generates greedily)",
    )
    model: str = _f(
        "gemma3-270m", "the teacher: the endpoint's model name (openai), or a vlmtune model name or directory (local)"
    )
    base_url: str = _f(
        "http://localhost:11434/v1", "openai: the endpoint (Ollama's default shown; vLLM: http://localhost:8000/v1)"
    )
    api_key_env: str = _f(
        "OPENAI_API_KEY",
        "openai: the environment variable holding the API key (the key itself "
        "is never written to a recipe or a run directory)",
    )
    prompt: str = _f("reminder", "a shipped template (reminder | reasoning | reminder_base) or a Jinja2 file of yours")
    rationalize: bool = _f(
        False,
        "give the template the gold answer of the asked round (`gold_answer`); off, a check "
        "refuses any teacher input that depends on it",
    )
    temperature: float = _f(0.0, "sampling temperature (enters the cache key; local: 0 only, greedy)", ge=0, le=2)
    max_tokens: int = _f(256, "the teacher's answer budget in tokens", ge=1)
    seed: int = _f(0, "sampling seed sent with each request (enters the cache key)", ge=0)
    concurrency: int = _f(8, "openai: requests in flight at once", ge=1)
    rpm: float = _f(0.0, "openai: at most this many requests per minute (0: no limit)", ge=0)
    tpm: float = _f(0.0, "openai: at most this many tokens (prompt + completion) per minute (0: no limit)", ge=0)
    timeout: float = _f(120.0, "openai: seconds per request before it is retried", gt=0)
    max_retries: int = _f(5, "openai: retries of a request after 429, 5xx, a timeout or a malformed answer", ge=0)
    context_tokens: int = _f(
        0,
        "openai: the server's context size (Ollama's num_ctx) to check prompt_tokens against "
        "(0: unknown; a prompt_tokens far below the input's length is flagged anyway)",
        ge=0,
    )
    batch_size: int = _f(8, "local: generation batch size", ge=1)
    cache: str | None = _f(None, "the response cache (JSONL; null: $VLMTUNE_CACHE/teacher/<model>.jsonl)")
    filters: dict = _f(
        {},
        "quality filters and their bounds (`vlmtune ls` lists them under teach filters), e.g. "
        "{min_relevance: 1.0, language: ko}",
    )
    on_reject: str = _f(
        "gold",
        "an example the filters reject: gold (keep it with its gold-only target, so the "
        "training set keeps its size) | drop",
    )


@dataclass
class MemoryConfig:
    enabled: bool = _f(
        False,
        "long-horizon memory (vlmtune.memory): each example with meta.episode gets a reminder of "
        "what its episode said before it, retrieved from a memory bank",
    )
    episodes: str | None = _f(
        None,
        "the episodes file (JSONL) that examples' meta.episode names; default: the "
        "synthesized one (data.source=synth), else episodes.jsonl beside the data file",
    )
    text_encoder: str = _f(
        "minilm", "minilm (all-MiniLM-L6-v2, offline) | bm25 (no model) | clip:PATH | siglip:PATH | precomputed:DIR"
    )
    image_encoder: str = _f(
        "vision_tower", "vision_tower (the VLM's own, pooled) | none | clip:PATH | siglip:PATH | precomputed:DIR"
    )
    caption_images: bool = _f(True, "key expansion: the VLM's own caption of each image is an extra retrieval key")
    caption_tokens: int = _f(48, "key expansion: greedy tokens per caption", ge=1)
    method: str = _f(
        "combined", "retrieval for training and the with-memory evaluation: combined | relevance | recency | oracle"
    )
    compare: list = _f(
        ["none", "truncated", "full", "recency", "relevance", "combined", "oracle", "capped"],
        "methods evaluated side by side after fine-tuning (accuracy by distance, one curve each)",
    )
    k: int = _f(5, "items injected at most", ge=1)
    token_budget: int = _f(320, "tokens the reminder may take (its images included)", ge=1)
    max_images: int = _f(2, "raw images re-attached at most", ge=0)
    window: int = _f(0, "truncated/full context: tokens of history that fit (0: the model's positions minus 64)", ge=0)
    weights: dict = _f(
        {"relevance": 1.0, "recency": 0.25, "frequency": 0.1, "saliency": 0.1},
        "weights of the score's min-max scaled parts",
    )
    hybrid: float = _f(0.5, "share of the dense cosine in relevance (the rest is BM25)", ge=0, le=1)
    decay: float = _f(50.0, "initial recency strength S in turns: retention exp(-age/S)", gt=0)
    growth: float = _f(1.0, "S grows by decay x growth per recall", ge=0)
    superseded_penalty: float = _f(0.5, "subtracted from the score of an item a later one superseded", ge=0)
    capacity: int = _f(0, "live items kept by the bank (0: no limit)", ge=0)
    capped_capacity: int = _f(64, "the capacity of the 'capped' method's bank", ge=2)
    policy: str = _f("merge", "at capacity: merge (MA-LMM: the most similar adjacent items) | evict (lowest retention)")
    index: str = _f("exact", "dense candidate search: exact (numpy) | faiss | usearch (extra memory-index)")
    mix: dict = _f(
        {"retrieved": 0.6, "oracle": 0.2, "removed": 0.2},
        "training examples: shares with retrieved evidence, oracle evidence, and evidence removed (target: "
        "the abstain answer)",
    )
    abstain: str = _f("unknown", "the answer of a training example whose evidence was removed")
    seed: int = _f(0, "seed of the training mix", ge=0)


@dataclass
class ConnectorConfig:
    enabled: bool = _f(
        False,
        "a trainable memory connector (vlmtune.models.connector): each earlier turn of a conversation "
        "becomes a memory item (its image's and its text's stored embeddings, its turn position), "
        "turned into soft prompt tokens of the frozen LM; only the connector trains",
    )
    image_encoder: str = _f(
        "vision_tower",
        "the items' image embeddings: vision_tower (the model's own, pooled) | pixels "
        "(downscaled pixels, no model) | clip:PATH | siglip:PATH | precomputed:DIR "
        "(e.g. ImageBind vectors made elsewhere)",
    )
    text_encoder: str = _f(
        "minilm",
        "the items' text embeddings: minilm | hashing (word and word-pair hashing, no model) "
        "| clip:PATH | siglip:PATH | precomputed:DIR",
    )
    fusion: str = _f(
        "linear",
        "fusion of [image emb; text emb]: linear (the seed's Linear(2048 -> 1024)) | mlp (two layers with a GELU)",
    )
    fusion_dim: int = _f(0, "width of the fused item vector (0: the LM's hidden size)", ge=0, le=65536)
    position: bool = _f(True, "add a learned turn-position embedding to each item (the seed's Embedding(11, d))")
    max_turns: int = _f(
        11,
        "turn positions the position embedding knows (VisDial: caption + 10 rounds = 11); an item "
        "beyond them is an error",
        ge=1,
        le=4096,
    )
    tokens_per_item: int = _f(1, "soft tokens per memory item (without the query block)", ge=1, le=64)
    queries: int = _f(
        0,
        "0: one group of soft tokens per item; > 0: a Q-Former-like block whose learned queries "
        "cross-attend to the items gives this many soft tokens, however many items there are",
        ge=0,
        le=256,
    )
    query_layers: int = _f(1, "layers of the query block", ge=1, le=12)
    query_heads: int = _f(4, "attention heads of the query block (must divide the fused width)", ge=1, le=64)
    dropout: float = _f(0.0, "dropout inside the connector", ge=0, lt=1)
    lora: bool = _f(False, "ablation: LoRA on the LM too (train.lora_* settings), trained with the connector")
    baseline: str = _f(
        "question",
        "what the no-connector (zero-shot) evaluation sees: question (the current question "
        "alone) | history (the whole conversation as text, without images)",
    )


@dataclass
class RunConfig:
    name: str = _f("run", "run name: results go to <output_dir>/<name>/")
    output_dir: str = _f("runs", "parent directory of run directories")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    teach: TeachConfig = field(default_factory=TeachConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# `vlmtune quickstart` = the defaults plus these (recipes/quickstart.yaml spells the result out; a test
# keeps them equal). The tiny model trains from a higher learning rate than a 7B model would.
QUICKSTART_OVERRIDES = ["name=quickstart", "train.epochs=4", "train.lr=2e-3", "train.lora_target=language+projector"]

SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "teach": TeachConfig,
    "memory": MemoryConfig,
    "connector": ConnectorConfig,
}
CHOICES = {
    ("data", "source"): ("synth", "files", "jsonl", "hf"),
    ("data", "dedup"): ("error", "warn", "group"),
    ("model", "dtype"): ("auto", "float32", "bfloat16", "float16"),
    ("model", "device"): ("auto", "cpu", "cuda", "mps"),
    ("train", "method"): ("lora", "full"),
    ("train", "lora_target"): ("language", "language+projector", "all"),
    ("train", "lora_modules"): ("attention", "mlp", "attention+mlp"),
    ("train", "loss_on"): ("assistant", "all"),
    ("eval", "mode"): ("generate", "loglik", "both"),
    ("eval", "backend"): ("hf", "openai"),
    ("teach", "target"): ("none", "reminder+gold", "reminder+teacher"),
    ("teach", "backend"): ("openai", "local"),
    ("teach", "on_reject"): ("gold", "drop"),
    ("memory", "method"): ("combined", "relevance", "recency", "oracle"),
    ("memory", "policy"): ("merge", "evict"),
    ("memory", "index"): ("exact", "faiss", "usearch"),
    ("connector", "fusion"): ("linear", "mlp"),
    ("connector", "baseline"): ("question", "history"),
}
MEMORY_METHODS = ("none", "truncated", "full", "recency", "relevance", "combined", "oracle", "capped")
