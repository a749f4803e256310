"""Tiny random-weight stand-ins for real model families: same architecture class, processor type and
chat-template turn syntax as the real checkpoint, shrunk so a build takes a second or two.

    path = build_standin("gemma3", "/tmp/gemma3")        # Gemma3ForConditionalGeneration + Gemma3Processor
    model, processor = load_model(ModelConfig(name=str(path)))

Families: llava, llava_next, gemma3, qwen2_5_vl (needs torchvision: its processor requires a video
processor), idefics3, and the text-only llama and gemma3_text (Gemma-3 270M / 1B: Gemma3ForCausalLM).
`family_of` maps a hub id or config to one of them.

They let tests exercise each family's code path (chat template, image-token expansion, loss mask,
LoRA targets, generation, merge, 4-bit) offline. The templates are written here in each family's own
turn format (not downloaded), and each tokenizer is a small byte-level BPE trained locally with the
family's special tokens. Text widths are 64 so bitsandbytes' CPU 4-bit kernels (block size 64) work.
"""

from __future__ import annotations

import re
from pathlib import Path

from vlmtune.errors import ConfigError
from vlmtune.models.gguf import GEMMA3_TEXT_TEMPLATE  # the turn format the Gemma-3 270M cache gets, too

STANDIN_FAMILIES = ("llava", "llava_next", "gemma3", "qwen2_5_vl", "idefics3", "llama", "gemma3_text")
TEXT_ONLY = ("llama", "gemma3_text")   # families without a vision tower

TEXT_HIDDEN = 64      # bitsandbytes' CPU 4-bit matmul needs widths divisible by 64
VISION_HIDDEN = 32
HEADS = 2
VOCAB = 400
SEED = 0

# --- chat templates, one per family, in the family's own turn syntax --------------------------------
# Content may be a string or a list of {"type": "image"|"text"} parts (what collate.to_chat produces).

_PARTS = ("{% if message['content'] is string %}{{ message['content'] }}"
          "{% else %}{% for part in message['content'] %}"
          "{% if part['type'] == 'image' %}IMAGE{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
          "{% endfor %}{% endif %}")


def _parts(image: str) -> str:
    return _PARTS.replace("IMAGE", image)


# LLaVA-1.5 / LLaVA-NeXT (vicuna/mistral style): "USER: <image>\n... ASSISTANT: answer</s>"
LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}" + _parts("") + "\n"
    "{% elif message['role'] == 'user' %}USER: " + _parts("<image>\n") + " "
    "{% else %}ASSISTANT: " + _parts("") + "</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
# Gemma 3: "<bos><start_of_turn>user\n<start_of_image>...<end_of_turn>\n<start_of_turn>model\n"
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    + _parts("<start_of_image>") + "<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
# Qwen2.5-VL: ChatML with a default system turn and <|vision_start|><|image_pad|><|vision_end|>
QWEN2_5_VL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n" + _parts("<|vision_start|><|image_pad|><|vision_end|>")
    + "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Idefics3 / SmolVLM: "User:<image>...<end_of_utterance>\nAssistant: answer<end_of_utterance>\n"
IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is not string and message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    + _parts("<image>") + "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
# Llama 3: header ids and <|eot_id|>
LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n" + _parts("") + "<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

# family -> (special tokens, {bos, eos, pad, unk}, extra_special_tokens, template, end-of-turn token)
_TOKENS = {
    "llava": (["<unk>", "<s>", "</s>", "<pad>", "<image>"],
              dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"),
              {"image_token": "<image>"}, LLAVA_TEMPLATE, "</s>"),
    "gemma3": (["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                "<end_of_image>", "<image_soft_token>"],
               dict(bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"),
               {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
               GEMMA3_TEMPLATE, "<end_of_turn>"),
    "qwen2_5_vl": (["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"],
                   dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"),
                   {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                    "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"},
                   QWEN2_5_VL_TEMPLATE, "<|im_end|>"),
    "idefics3": (["<|begin_of_text|>", "<|end_of_text|>", "<fake_token_around_image>", "<image>", "<global-img>",
                  "<end_of_utterance>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
                 dict(bos_token="<|begin_of_text|>", eos_token="<end_of_utterance>", pad_token="<|end_of_text|>"),
                 {"image_token": "<image>"}, IDEFICS3_TEMPLATE, "<end_of_utterance>"),
    "llama": (["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
               "<|finetune_right_pad_id|>"],
              dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|finetune_right_pad_id|>"),
              {}, LLAMA3_TEMPLATE, "<|eot_id|>"),
}
_TOKENS["llava_next"] = _TOKENS["llava"]
_TOKENS["gemma3_text"] = (_TOKENS["gemma3"][0], _TOKENS["gemma3"][1], {}, GEMMA3_TEXT_TEMPLATE, "<end_of_turn>")


def end_of_turn_token(family: str) -> str:
    """The token a family's template closes an assistant turn with (what the loss mask must include)."""
    return _TOKENS[_check(family)][4]


def _check(family: str) -> str:
    if family not in STANDIN_FAMILIES:
        import difflib

        near = difflib.get_close_matches(family, STANDIN_FAMILIES, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ConfigError(f"no stand-in for model family '{family}'; {hint}available: {', '.join(STANDIN_FAMILIES)}")
    return family


# hub-id / model_type patterns -> family, most specific first
_PATTERNS = [
    (r"llava[-_]?next|llava[-_]v1\.6|llava-1\.6", "llava_next"),
    (r"llava", "llava"),
    (r"gemma[-_]?3[-_]?text|gemma[-_]?3[-_](270m|1b)\b", "gemma3_text"),  # the text-only Gemma 3 sizes
    (r"gemma[-_]?3", "gemma3"),
    (r"qwen2[._]5[-_]?vl", "qwen2_5_vl"),
    (r"idefics3|smolvlm", "idefics3"),
    (r"llama", "llama"),
]


def family_of(model: object) -> str:
    """Family of a hub id, a local path, a config object or a model_type string.

    family_of("llava-hf/llava-v1.6-mistral-7b-hf") == "llava_next"; family_of(cfg) uses cfg.model_type.
    """
    text = getattr(model, "model_type", None) or str(model)
    key = text.lower()
    for pat, fam in _PATTERNS:
        if re.search(pat, key):
            return fam
    raise ConfigError(f"cannot tell the model family of '{text}'; known families: {', '.join(STANDIN_FAMILIES)}")


# --- builders ----------------------------------------------------------------------------------------

def build_tokenizer(family: str):
    """Small byte-level BPE trained locally on the shapes-world corpus, with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vlmtune.models.tiny import tokenizer_corpus

    specials, named, extra, template, _ = _TOKENS[family]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tokenizer_corpus() + ["USER: ASSISTANT: user model assistant system"], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **named, extra_special_tokens=extra,
                                   padding_side="left", chat_template=template)
    # The templates write the BOS themselves (or have none); the tokenizer adds nothing.
    fast.add_bos_token = False
    return fast


def _text_kw(tok) -> dict:
    return dict(vocab_size=len(tok), hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_HIDDEN * 2, num_hidden_layers=1,
                num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=1024,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _clip(image_size: int, patch: int):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=VISION_HIDDEN, intermediate_size=VISION_HIDDEN * 2, num_hidden_layers=1,
                            num_attention_heads=HEADS, image_size=image_size, patch_size=patch,
                            projection_dim=VISION_HIDDEN)


def _llava(tok):
    from transformers import CLIPImageProcessor, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    size, patch = 32, 16  # 2x2 patches -> 4 image tokens
    ip = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    config = LlavaConfig(vision_config=_clip(size, patch), text_config=LlamaConfig(**_text_kw(tok)),
                         image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
                         vision_feature_select_strategy="default", image_seq_length=(size // patch) ** 2,
                         pad_token_id=tok.pad_token_id)
    return LlavaForConditionalGeneration(config), proc


def _llava_next(tok):
    from transformers import (LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessor, LlavaNextProcessor)

    size, patch = 32, 16
    grid = [[size, size], [size, 2 * size], [2 * size, size], [2 * size, 2 * size]]  # anyres kept tiny
    ip = LlavaNextImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                 image_grid_pinpoints=grid)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=patch,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              chat_template=LLAVA_TEMPLATE)
    # The real 1.6 checkpoints use a Mistral/Vicuna text model; Llama layers are the same shape class-wise.
    config = LlavaNextConfig(vision_config=_clip(size, patch), text_config=LlamaConfig(**_text_kw(tok)),
                             image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
                             vision_feature_select_strategy="default", image_grid_pinpoints=grid,
                             image_seq_length=(size // patch) ** 2, pad_token_id=tok.pad_token_id)
    return LlavaNextForConditionalGeneration(config), proc


def _gemma3(tok):
    from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor,
                              Gemma3TextConfig, SiglipVisionConfig)

    size, patch, n_img = 32, 8, 4  # 4x4 SigLIP patches, average-pooled to 2x2 = 4 soft tokens
    ip = Gemma3ImageProcessor(size={"height": size, "width": size})
    proc = Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=n_img, chat_template=GEMMA3_TEMPLATE)
    vc = SiglipVisionConfig(hidden_size=VISION_HIDDEN, intermediate_size=VISION_HIDDEN * 2, num_hidden_layers=1,
                            num_attention_heads=HEADS, image_size=size, patch_size=patch, vision_use_head=False)
    kw = _text_kw(tok)
    tc = Gemma3TextConfig(**kw, head_dim=TEXT_HIDDEN // HEADS, sliding_window=64, layer_types=["full_attention"])
    config = Gemma3Config(text_config=tc, vision_config=vc, mm_tokens_per_image=n_img,
                          boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                          eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
                          image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
                          pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = Gemma3ForConditionalGeneration(config)
    # Gemma-3 initialises its projector matrix to zeros (the real checkpoints are trained): left so, the
    # stand-in's images would reach the language model as zeros and nothing upstream of it could learn.
    import torch

    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.2)
    return model, proc


def torchvision_problem() -> str | None:
    """Why torchvision cannot be used here (None when it imports). A torchvision built for another torch is
    installed but fails at import ('operator torchvision::nms does not exist'), so presence is not enough."""
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # ImportError, or RuntimeError from a build that does not match torch
        return f"{type(e).__name__}: {e}"
    return None


def _qwen2_5_vl(tok):
    problem = torchvision_problem()
    if problem:
        # transformers' Qwen2.5-VL processor cannot be built or loaded without its video processor, which needs it.
        raise ConfigError(f"the qwen2_5_vl stand-in needs a working torchvision ({problem}): Qwen2_5_VLProcessor "
                          "requires a video processor; install the torchvision build that matches your torch "
                          "(torch 2.13 <-> torchvision 0.28; see the README)")
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    side = 56  # 56x56 -> 4x4 patches of 14 -> 2x2 = 4 merged image tokens
    pixels = dict(min_pixels=side * side, max_pixels=side * side, patch_size=14, merge_size=2, temporal_patch_size=2)
    ip = Qwen2VLImageProcessor(**pixels)
    # The processor requires its video processor (the stand-in is used for images; the settings match).
    vp = Qwen2VLVideoProcessor(size={"shortest_edge": side * side, "longest_edge": side * side},
                               patch_size=14, merge_size=2, temporal_patch_size=2)
    proc = Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp,
                               chat_template=QWEN2_5_VL_TEMPLATE)
    head_dim = TEXT_HIDDEN // HEADS
    text = dict(_text_kw(tok), rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]})  # sums to head_dim/2
    assert sum(text["rope_scaling"]["mrope_section"]) == head_dim // 2, head_dim
    vision = dict(depth=1, hidden_size=VISION_HIDDEN, intermediate_size=VISION_HIDDEN * 2, num_heads=HEADS,
                  out_hidden_size=TEXT_HIDDEN, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                  window_size=56, fullatt_block_indexes=[0])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                              image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
                              video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
                              vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
                              vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
                              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return Qwen2_5_VLForConditionalGeneration(config), proc


def _idefics3(tok):
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor,
                              Idefics3Processor, Idefics3VisionConfig, LlamaConfig)

    size, patch, scale = 32, 8, 2  # 4x4 patches, pixel-shuffled by 2 -> 4 image tokens; no image splitting
    n_img = (size // patch) ** 2 // scale ** 2
    ip = Idefics3ImageProcessor(size={"longest_edge": size}, max_image_size={"longest_edge": size},
                                do_image_splitting=False)
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=n_img, chat_template=IDEFICS3_TEMPLATE)
    vc = Idefics3VisionConfig(hidden_size=VISION_HIDDEN, intermediate_size=VISION_HIDDEN * 2, num_hidden_layers=1,
                              num_attention_heads=HEADS, image_size=size, patch_size=patch)
    config = Idefics3Config(vision_config=vc, text_config=LlamaConfig(**_text_kw(tok)), scale_factor=scale,
                            image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id)
    return Idefics3ForConditionalGeneration(config), proc


def _llama(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**_text_kw(tok), tie_word_embeddings=True)), tok


def _gemma3_text(tok):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    kw = _text_kw(tok)
    return Gemma3ForCausalLM(Gemma3TextConfig(**kw, head_dim=TEXT_HIDDEN // HEADS, sliding_window=64,
                                              layer_types=["full_attention"])), tok


_BUILDERS = {"llava": _llava, "llava_next": _llava_next, "gemma3": _gemma3, "qwen2_5_vl": _qwen2_5_vl,
             "idefics3": _idefics3,
             "llama": _llama, "gemma3_text": _gemma3_text}


def build_standin(family: str, out_dir: str | Path) -> Path:
    """Build a seeded tiny random-weight model + processor of `family` and save_pretrained both to out_dir."""
    import torch

    _check(family)
    out = Path(out_dir)
    tok = build_tokenizer(family)
    torch.manual_seed(SEED)
    model, proc = _BUILDERS[family](tok)
    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id, gc.bos_token_id = tok.eos_token_id, tok.pad_token_id, tok.bos_token_id
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out
