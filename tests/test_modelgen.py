"""Synthetic and demo models load and chat with the real ``mlx_lm`` (no mocks, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten
from mlx_lm import load, stream_generate
from transformers import AutoTokenizer

from mlx_tui.devtools.modelgen import (
    CORRUPTIONS,
    DEMO_MODEL_DIR,
    TOKENIZER_FILES,
    corrupt_model,
    train_tokenizer,
    write_random_model,
    write_tokenizer,
)

MB = 1024**2


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default (tiny, float32) random model, shared by the read-only tests."""
    return write_random_model(tmp_path_factory.mktemp("tiny") / "model")


def _chat(folder: Path, question: str, max_tokens: int) -> tuple[str, int]:
    """Load ``folder`` with mlx_lm and answer ``question``: (text, tokens generated)."""
    model, tokenizer = load(str(folder))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    responses = list(stream_generate(model, tokenizer, prompt, max_tokens=max_tokens))
    return "".join(r.text for r in responses), responses[-1].generation_tokens


def _weights_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("model*.safetensors"))


def test_tiny_random_model_loads_and_generates(tiny_model: Path) -> None:
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["tie_word_embeddings"] is True
    assert {"bos_token_id", "eos_token_id"} <= config.keys()
    assert _weights_bytes(tiny_model) < 1 * MB

    text, generated = _chat(tiny_model, "What is the for statement?", max_tokens=5)

    assert 1 <= generated <= 5
    assert isinstance(text, str)


def test_tokenizer_renders_the_chat_template(tmp_path: Path) -> None:
    write_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is a lambda?"},
    ]

    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    assert prompt.startswith(tokenizer.bos_token)
    assert prompt.endswith("<|im_start|>assistant\n")
    for message in messages:
        assert f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>" in prompt
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token is not None
    assert 1024 <= len(tokenizer) <= 2048
    assert tokenizer.decode(tokenizer.encode("for x in range(3):")) == "for x in range(3):"


def test_tokenizer_training_is_deterministic(tmp_path: Path) -> None:
    train_tokenizer(tmp_path / "a")
    train_tokenizer(tmp_path / "b")

    for name in TOKENIZER_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_write_tokenizer_reuses_the_demo_model_tokenizer(tmp_path: Path) -> None:
    write_tokenizer(tmp_path)

    for name in TOKENIZER_FILES:
        assert (tmp_path / name).read_bytes() == (DEMO_MODEL_DIR / name).read_bytes()


def test_random_weights_depend_only_on_the_seed(tmp_path: Path) -> None:
    first = write_random_model(tmp_path / "first", seed=1)
    again = write_random_model(tmp_path / "again", seed=1)
    other = write_random_model(tmp_path / "other", seed=2)

    weights = (first / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() != weights


def test_target_bytes_gives_about_the_asked_size(tmp_path: Path) -> None:
    target = 5 * MB

    folder = write_random_model(tmp_path / "model", target_bytes=target)

    assert _weights_bytes(folder) == pytest.approx(target, rel=0.05)
    model, _ = load(str(folder))
    parameters = sum(array.nbytes for _, array in tree_flatten(model.parameters()))
    assert parameters == pytest.approx(target, rel=0.05)


def test_large_weights_are_sharded_with_an_index(tmp_path: Path) -> None:
    folder = write_random_model(tmp_path / "model", target_bytes=3 * MB, max_shard_bytes=1 * MB)

    shards = sorted(path.name for path in folder.glob("model-*.safetensors"))
    index = json.loads((folder / "model.safetensors.index.json").read_text())

    assert len(shards) >= 3
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (folder / "model.safetensors").exists()
    assert set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] <= _weights_bytes(folder)
    _, generated = _chat(folder, "Hello", max_tokens=3)
    assert generated >= 1


def test_bfloat16_model_loads(tmp_path: Path) -> None:
    folder = write_random_model(tmp_path / "model", dtype="bfloat16")

    model, _ = load(str(folder))

    assert {array.dtype for _, array in tree_flatten(model.parameters())} == {mx.bfloat16}


EXPECTED_ERRORS: dict[str, type[Exception]] = {
    "no_config": FileNotFoundError,
    "bad_safetensors": RuntimeError,
    "bad_arch": ValueError,
    "missing_weights": ValueError,
}


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_each_corruption_makes_load_raise(tmp_path: Path, how: str) -> None:
    folder = write_random_model(tmp_path / "model")
    load(str(folder))  # sound before

    corrupt_model(folder, how)  # type: ignore[arg-type]

    with pytest.raises(EXPECTED_ERRORS[how]):
        load(str(folder))


def test_corruptions_work_on_sharded_models(tmp_path: Path) -> None:
    folder = write_random_model(tmp_path / "model", target_bytes=2 * MB, max_shard_bytes=MB // 2)

    corrupt_model(folder, "missing_weights")

    with pytest.raises(ValueError, match="Missing 1 parameters"):
        load(str(folder))


def test_unknown_corruption_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt_model(tmp_path, "sideways")  # type: ignore[arg-type]


def test_demo_model_is_small_and_chats() -> None:
    assert (DEMO_MODEL_DIR / "README.md").is_file()
    assert 1 * MB < _weights_bytes(DEMO_MODEL_DIR) < 10 * MB

    text, generated = _chat(DEMO_MODEL_DIR, "What is the for statement?", max_tokens=40)

    assert generated >= 5
    words = text.split()
    assert len(words) >= 3
    assert sum(word.strip('".,;:()*').isalpha() for word in words) >= len(words) // 2
