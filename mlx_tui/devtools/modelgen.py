"""Synthetic MLX language models for tests, fault drills and benchmarks.

Everything here works offline: the tokenizer is either copied from the bundled
demo model or trained on text that ships with Python, and the weights are
random (with a fixed seed), so a model of any size can be built in seconds.

Every folder written here loads with the real ``mlx_lm.load`` as a ``llama``
(or, when asked, ``qwen2``) model, the same way a model from the Hugging Face
cache does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Final, Literal, cast, get_args

import mlx.core as mx
from mlx.utils import tree_flatten

__all__ = [
    "Architecture",
    "CHAT_TEMPLATE",
    "CORRUPTIONS",
    "DEMO_MODEL_DIR",
    "TOKENIZER_FILES",
    "Corruption",
    "corrupt_model",
    "llama_config",
    "save_weights",
    "train_tokenizer",
    "write_config",
    "write_random_model",
    "write_tokenizer",
]

DEMO_MODEL_DIR: Final = Path(__file__).resolve().parent.parent / "demo_model"
"""The bundled demo model (written by ``scripts/train_demo_model.py``)."""

PAD_TOKEN: Final = "<|endoftext|>"
BOS_TOKEN: Final = "<|startoftext|>"
TURN_START: Final = "<|im_start|>"
TURN_END: Final = "<|im_end|>"
EOS_TOKEN: Final = TURN_END
SPECIAL_TOKENS: Final = (PAD_TOKEN, BOS_TOKEN, TURN_START, TURN_END)
"""Special tokens, in id order: they take ids 0-3 of every tokenizer built here."""

CHAT_TEMPLATE: Final = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML-style Jinja template: one ``<|im_start|>role ... <|im_end|>`` block a message."""

TOKENIZER_FILES: Final = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
DEFAULT_VOCAB_SIZE: Final = 1024
DEFAULT_SHARD_BYTES: Final = 512 * 1024**2
"""Weights above this size are split into ``model-0000N-of-0000M.safetensors`` files."""

_MAX_LAYERS: Final = 32
_HIDDEN_LADDER: Final = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
_DTYPES: Final = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}

Architecture = Literal["llama", "qwen2"]
_ARCHITECTURES: Final[tuple[str, ...]] = get_args(Architecture)

Corruption = Literal["no_config", "bad_safetensors", "bad_arch", "missing_weights"]
CORRUPTIONS: Final[tuple[str, ...]] = get_args(Corruption)


# --------------------------------------------------------------------------- tokenizer


def _tokenizer_corpus() -> list[str]:
    """Python's own help topics (``pydoc_data``), in a fixed order."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def train_tokenizer(dest: Path, vocab_size: int = DEFAULT_VOCAB_SIZE) -> None:
    """Train a byte-level BPE tokenizer on Python's help topics and save it in ``dest``.

    Writes ``tokenizer.json``, ``tokenizer_config.json`` (a
    ``PreTrainedTokenizerFast`` with :data:`CHAT_TEMPLATE`) and
    ``special_tokens_map.json``. Deterministic: the same ``vocab_size`` always
    gives byte-identical files on a given Python version (the help text
    changes a little between versions). Takes well under a second.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer)

    dest.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(dest / "tokenizer.json"))
    special_map = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "additional_special_tokens": [TURN_START, TURN_END],
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_map,
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    _write_json(dest / "tokenizer_config.json", tokenizer_config)
    _write_json(dest / "special_tokens_map.json", special_map)


def write_tokenizer(dest: Path) -> None:
    """Write a working Hugging Face fast tokenizer with a chat template into ``dest``.

    Copies the demo model's tokenizer when it is bundled (so every model built
    anywhere shares one vocabulary), otherwise trains one with
    :func:`train_tokenizer`. Needs no network.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if all((DEMO_MODEL_DIR / name).is_file() for name in TOKENIZER_FILES):
        for name in TOKENIZER_FILES:
            shutil.copyfile(DEMO_MODEL_DIR / name, dest / name)
    else:
        train_tokenizer(dest)


def _tokenizer_vocab_size(folder: Path) -> int:
    """Vocabulary size (special tokens included) of the tokenizer in ``folder``."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size()


# --------------------------------------------------------------------------- config and weights


def llama_config(
    *,
    hidden_size: int,
    num_hidden_layers: int,
    intermediate_size: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    vocab_size: int,
    dtype: str = "float32",
    max_position_embeddings: int = 2048,
) -> dict[str, object]:
    """A Hugging Face style ``config.json`` for a llama model using this module's tokenizer."""
    if hidden_size % num_attention_heads or num_attention_heads % num_key_value_heads:
        raise ValueError(
            "hidden_size must be divisible by num_attention_heads, "
            "and num_attention_heads by num_key_value_heads"
        )
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "intermediate_size": intermediate_size,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "head_dim": hidden_size // num_attention_heads,
        "vocab_size": vocab_size,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": max_position_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "pad_token_id": SPECIAL_TOKENS.index(PAD_TOKEN),
        "bos_token_id": SPECIAL_TOKENS.index(BOS_TOKEN),
        "eos_token_id": SPECIAL_TOKENS.index(EOS_TOKEN),
        "torch_dtype": dtype,
    }


def write_config(dest: Path, config: dict[str, object]) -> None:
    """Write ``config`` as ``dest/config.json``."""
    dest.mkdir(parents=True, exist_ok=True)
    _write_json(dest / "config.json", config)


def save_weights(
    dest: Path,
    weights: list[tuple[str, mx.array]],
    *,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> None:
    """Save named tensors as ``model.safetensors``, or as shards plus an index when large.

    Shards are named ``model-00001-of-0000M.safetensors`` and listed in
    ``model.safetensors.index.json``, like Hugging Face checkpoints. The list is
    emptied while saving so each (lazy) tensor is freed once it is on disk:
    peak memory is about one shard.
    """
    total = sum(array.nbytes for _, array in weights)
    groups: list[list[str]] = [[]]
    group_bytes = 0
    for name, array in weights:
        if groups[-1] and group_bytes + array.nbytes > max_shard_bytes:
            groups.append([])
            group_bytes = 0
        groups[-1].append(name)
        group_bytes += array.nbytes

    dest.mkdir(parents=True, exist_ok=True)
    weights.reverse()  # pop() from the end walks the tensors in their original order
    weight_map: dict[str, str] = {}
    for number, names in enumerate(groups, start=1):
        filename = (
            "model.safetensors"
            if len(groups) == 1
            else f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        )
        shard = dict(weights.pop() for _ in names)
        mx.save_safetensors(str(dest / filename), shard, metadata={"format": "mlx"})
        weight_map.update(dict.fromkeys(names, filename))
        del shard
    if len(groups) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        _write_json(dest / "model.safetensors.index.json", index)


def _parameter_count(
    vocab: int, hidden: int, layers: int, intermediate: int, heads: int, kv_heads: int
) -> int:
    """Parameters of a tied-embedding llama model (mirrors ``mlx_lm.models.llama``)."""
    head_dim = hidden // heads
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    per_layer = attention + 3 * hidden * intermediate + 2 * hidden
    return vocab * hidden + layers * per_layer + hidden


def _bytes_per_weight(itemsize: int, bits: int | None, group_size: int) -> float:
    """Bytes one weight takes: ``itemsize``, or when quantized ``bits / 8`` plus its share of
    its group's scale and bias (two values of ``itemsize`` per ``group_size`` weights)."""
    return itemsize if bits is None else bits / 8 + 2 * itemsize / group_size


def _shape_for_bytes(
    target_bytes: int, vocab: int, itemsize: float, multiple: int = 8
) -> dict[str, int]:
    """Pick a llama shape whose weights take about ``target_bytes``.

    Takes the smallest hidden size (from a ladder of common widths) that needs
    at most 32 layers at an MLP width of ``2 * hidden``, then tunes the MLP
    width (a multiple of ``multiple``: a quantization group divides every
    matrix row) so the total lands within a fraction of a percent of the target.
    """
    budget = int(target_bytes // itemsize)
    for hidden in _HIDDEN_LADDER:
        heads = hidden // (32 if hidden < 512 else 64)
        kv_heads = max(1, heads // 2)
        embed = _parameter_count(vocab, hidden, 0, 0, heads, kv_heads)
        per_layer = _parameter_count(vocab, hidden, 1, 2 * hidden, heads, kv_heads) - embed
        layers = max(1, (budget - embed) // per_layer)
        if layers <= _MAX_LAYERS:
            break
    without_mlp = _parameter_count(vocab, hidden, layers, 0, heads, kv_heads)
    width = (budget - without_mlp) / (3 * hidden * layers)
    intermediate = max(multiple, round(width / multiple) * multiple)
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": intermediate,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
    }


def write_random_model(
    dest: Path,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    intermediate_size: int = 128,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    vocab_size: int | None = None,
    dtype: str = "float32",
    seed: int = 0,
    target_bytes: int | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    architecture: Architecture = "llama",
    tie_word_embeddings: bool = True,
    weight_scale: float = 1.0,
    quantize_bits: int | None = None,
    quantize_group_size: int = 64,
) -> Path:
    """Write a complete ``mlx_lm`` llama model folder with random weights; return ``dest``.

    The folder holds ``config.json``, the weights (``model.safetensors``, or
    shards plus ``model.safetensors.index.json`` above ``max_shard_bytes``) and
    the tokenizer from :func:`write_tokenizer`. ``vocab_size`` defaults to the
    tokenizer's. With ``target_bytes`` the shape arguments are ignored and a
    shape is chosen so the weights take about that many bytes (1 GB builds in
    seconds, holding about one shard in memory). The defaults give a ~560 KB
    float32 model. Weights depend only on the shape and ``seed`` (this seeds
    MLX's global random generator).

    ``architecture="qwen2"`` writes the same shape as a ``qwen2`` model (llama plus
    attention biases), which mlx-lm can split by layers across machines (pipeline
    parallel; its llama cannot). Random weights with a tied head mostly repeat the
    last token; ``tie_word_embeddings=False`` with ``weight_scale`` around 3 (the
    layers' matrices multiplied by it) gives replies whose every token depends on
    the context, which a test comparing two ways of generating needs.

    With ``quantize_bits`` (2, 3, 4, 6 or 8) the model is quantized with
    ``mlx.nn.quantize`` (``quantize_group_size`` weights per scale and bias, kept
    in ``dtype``) and ``config.json`` gets the ``quantization`` entry mlx-lm
    reads, like an ``mlx-community`` 4-bit model; ``target_bytes`` then counts
    the quantized size. Quantization stays lazy, so even a 20 GB model is built
    holding about one shard in memory.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
    if quantize_bits is not None and weight_scale != 1.0:
        raise ValueError("weight_scale scales float weights; it cannot be combined with quantize_bits")
    from mlx_lm.models.llama import Model, ModelArgs

    write_tokenizer(dest)
    for stale in [*dest.glob("model*.safetensors"), dest / "model.safetensors.index.json"]:
        stale.unlink(missing_ok=True)
    tokenizer_vocab = _tokenizer_vocab_size(dest)
    vocab = tokenizer_vocab if vocab_size is None else vocab_size
    if vocab < tokenizer_vocab:
        raise ValueError(f"vocab_size {vocab} is smaller than the tokenizer's {tokenizer_vocab}")

    shape = {
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "intermediate_size": intermediate_size,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
    }
    if target_bytes is not None:
        itemsize = _bytes_per_weight(_DTYPES[dtype].size, quantize_bits, quantize_group_size)
        multiple = 8 if quantize_bits is None else quantize_group_size
        shape = _shape_for_bytes(target_bytes, vocab, itemsize, multiple)
    config = llama_config(**shape, vocab_size=vocab, dtype=dtype)
    if architecture not in _ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(_ARCHITECTURES)}, not {architecture!r}")
    if architecture == "qwen2":
        from mlx_lm.models.qwen2 import Model, ModelArgs  # type: ignore[assignment]

        config.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    config["tie_word_embeddings"] = tie_word_embeddings

    mx.random.seed(seed)
    model = Model(ModelArgs.from_dict(config))
    model.set_dtype(_DTYPES[dtype])
    if quantize_bits is not None:
        import mlx.nn as nn

        nn.quantize(model, group_size=quantize_group_size, bits=quantize_bits)
        config["quantization"] = {"group_size": quantize_group_size, "bits": quantize_bits}
    weights = cast(list[tuple[str, mx.array]], tree_flatten(model.parameters()))
    if weight_scale != 1.0:
        weights = [(k, v * weight_scale if v.ndim == 2 and "embed_tokens" not in k else v)
                   for k, v in weights]
    del model  # the lazy parameters now live only in ``weights``, freed shard by shard
    save_weights(dest, weights, max_shard_bytes=max_shard_bytes)
    write_config(dest, config)
    return dest


# --------------------------------------------------------------------------- fault injection


def _weight_files(dest: Path) -> list[Path]:
    """The safetensors weight files of a model folder, in name order."""
    files = sorted(dest.glob("model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {dest}")
    return files


def corrupt_model(dest: Path, how: Corruption) -> None:
    """Break the model folder ``dest`` in place so that ``mlx_lm.load`` raises.

    ``how`` is one of :data:`CORRUPTIONS`:

    * ``"no_config"``: delete ``config.json``;
    * ``"bad_safetensors"``: cut the first weights file to half its size;
    * ``"bad_arch"``: set ``model_type`` to an architecture no library knows;
    * ``"missing_weights"``: drop one tensor from the middle of the model, so
      loading fails after the weights were read.
    """
    if how == "no_config":
        (dest / "config.json").unlink()
    elif how == "bad_safetensors":
        first = _weight_files(dest)[0]
        with first.open("r+b") as handle:
            handle.truncate(first.stat().st_size // 2)
    elif how == "bad_arch":
        config = json.loads((dest / "config.json").read_text(encoding="utf-8"))
        config["model_type"] = "no_such_architecture"
        config["architectures"] = ["NoSuchArchitectureForCausalLM"]
        _write_json(dest / "config.json", config)
    elif how == "missing_weights":
        _drop_middle_tensor(dest)
    else:
        raise ValueError(f"unknown corruption {how!r}; expected one of {CORRUPTIONS}")


def _tensor_names(path: Path) -> list[str]:
    """Tensor names in a safetensors file, read from its header only."""
    with path.open("rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size))
    return [name for name in header if name != "__metadata__"]


def _drop_middle_tensor(dest: Path) -> None:
    """Remove the middle tensor (by name) from whichever weights file holds it."""
    located = {name: path for path in _weight_files(dest) for name in _tensor_names(path)}
    victim = sorted(located)[len(located) // 2]
    path = located[victim]
    tensors = cast(dict[str, mx.array], mx.load(str(path)))
    del tensors[victim]
    partial = path.with_name(".partial-" + path.name)  # not matched by "model*.safetensors"
    mx.save_safetensors(str(partial), tensors, metadata={"format": "mlx"})
    del tensors
    partial.replace(path)
    index_path = dest / "model.safetensors.index.json"
    if index_path.exists():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        index["weight_map"].pop(victim, None)
        _write_json(index_path, index)


def _write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented UTF-8 JSON."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
