"""Train the bundled demo model: a toy llama that chats about Python's help topics.

The demo model lets a fresh install of mlx-tui chat offline at once. It is
trained here, for real, with MLX, on text that ships with every Python:
``pydoc_data.topics.topics`` (the pages behind ``help("for")``). Each topic
becomes chat examples in which the user asks about it ("What is the for
statement?", "Explain lambdas.") and the assistant answers with the start of
that topic's text. The model learns next-token prediction on the assistant
part only, formatted with the tokenizer's chat template.

Everything is seeded. The default run takes about seven minutes on a 2-core
CPU and writes a 2.1 MB float32 model. Run it with mlx-tui installed
(``pip install -e .``)::

    python scripts/train_demo_model.py            # writes mlx_tui/demo_model/
    python scripts/train_demo_model.py --steps 50 --out /tmp/demo  # a quick try
"""

from __future__ import annotations

import argparse
import keyword
import os
import platform
import random
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from functools import cache, partial
from importlib.metadata import version
from pathlib import Path
from typing import cast

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten
from mlx_lm import load, stream_generate
from mlx_lm.models.llama import Model, ModelArgs
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mlx_tui.devtools.modelgen import (
    DEMO_MODEL_DIR,
    llama_config,
    save_weights,
    train_tokenizer,
    write_config,
)

SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a helpful assistant that answers questions about Python.",
    "Answer briefly.",
)
"""Some examples start with one of these, so a system message does not derail the model."""

SMALL_TALK = {
    (
        "Hello",
        "Hello!",
        "Hi",
        "Hi!",
        "Hey there",
        "Good morning",
    ): "Hello! I am a tiny demo model trained on Python's help topics. Ask me about "
    "a part of the Python language, for example: What is the for statement?",
    (
        "Who are you?",
        "What are you?",
        "What can you do?",
        "Are you a real model?",
    ): "I am the tiny demo model bundled with mlx-tui. I was trained for a few "
    "minutes on Python's built-in help topics, so I only know a little about "
    "the Python language. Load a real model for real answers.",
}

ANSWER_START_TOKENS = 6
ANSWER_START_WEIGHT = 4.0
"""The first tokens of an answer pick the topic; the rest mostly follows by rote.
Weighting them up makes the model learn sooner to read the question."""

SAMPLE_QUESTIONS = (
    "What is the for statement?",
    "What does lambda do in Python?",
    "Tell me about exceptions.",
    "Hello!",
    "How do I sort a list?",
)


@dataclass(frozen=True)
class TrainingRun:
    """What a training run did, for the README."""

    parameters: int
    vocab_size: int
    tokens: int
    seconds: float
    curve: list[tuple[int, float]]


@dataclass(frozen=True)
class Topic:
    """One help topic: how users name it and how the answer starts."""

    subjects: tuple[str, ...]
    keywords: tuple[str, ...]
    answer: str


# --------------------------------------------------------------------------- data


def _prose_paragraphs(body: str) -> Iterator[str]:
    """Unwrapped prose paragraphs of a help page; headings, grammar rules and code skipped.

    A paragraph counts as prose when it starts like a sentence, has a few
    words and ends like one. Method descriptions are indented under their
    signature, so indentation alone does not mark code.
    """
    for block in body.split("\n\n"):
        lines = [line.strip() for line in block.strip("\n").split("\n")]
        while lines and set(lines[0]) <= set("=-*"):  # a stray rule line
            lines.pop(0)
        if len(lines) >= 2 and lines[1] and set(lines[1]) <= set("=-*"):  # a heading
            lines = lines[2:]
        text = " ".join(lines)
        if (
            re.match(r"[A-Z\"]|\*[a-z]", text)
            and len(text.split()) >= 5
            and text[-1] in ".:!?"
            and "::=" not in text
        ):
            yield text


def _answer(body: str, max_chars: int) -> str:
    """The first whole sentences of a page's prose, at most ``max_chars`` long."""
    sentences: list[str] = []
    for paragraph in _prose_paragraphs(body):
        split = re.split(r"(?<=[.!?:])\s+(?=[A-Z\"*])", paragraph)
        if split[-1].endswith(":"):  # it introduced a grammar rule or code we dropped
            if len(split) > 1:
                split.pop()
            else:
                split[-1] = split[-1][:-1] + "."
        for sentence in split:
            if sentences and len(" ".join([*sentences, sentence])) > max_chars:
                return " ".join(sentences)
            sentences.append(sentence)
    return " ".join(sentences)


def _unquote_keywords(text: str) -> str:
    """``The "for" statement`` -> ``The for statement``: keywords as people type them.

    Then the keyword in an answer is the very token the user typed, which a
    tiny model learns to copy much sooner than to translate.
    """
    return re.sub(r'"(\w+)"', lambda m: m[1] if keyword.iskeyword(m[1]) else m[0], text)


def load_topics(max_answer_chars: int) -> list[Topic]:
    """Python's help topics (pages shared by several keys are merged), sorted by key."""
    from pydoc_data.topics import topics

    keys_by_text: dict[str, list[str]] = {}
    for key in sorted(topics):
        keys_by_text.setdefault(topics[key], []).append(key)
    result = []
    for text, keys in keys_by_text.items():
        title, _stars, body = text.split("\n", 2)
        subject = title.split(" — ")[0].replace('"', "")
        lowered = "the" + subject[3:] if subject.startswith("The ") else subject.lower()
        answer = _unquote_keywords(_answer(body, max_answer_chars))
        words = tuple(key for key in keys if keyword.iskeyword(key))
        result.append(Topic(tuple(sorted({subject, lowered})), words, answer))
    return result


def _questions(topic: Topic) -> list[str]:
    """Ways a user might ask about ``topic``."""
    questions = []
    for subject in topic.subjects:
        verb = "are" if subject.endswith("s") and not subject.endswith("ss") else "is"
        questions += [
            f"What {verb} {subject}?",
            f"Tell me about {subject}.",
            f"Explain {subject}.",
            f"Can you explain {subject}?",
            f"What should I know about {subject}?",
            subject,
        ]
    for word in topic.keywords:
        questions += [
            f"What does {word} do in Python?",
            f"How do I use {word} in Python?",
            f"Explain the {word} keyword.",
            f"What is {word}?",
            word,
        ]
    return questions


def build_conversations(topics: list[Topic]) -> list[tuple[tuple[str, ...], str]]:
    """(questions, answer) groups: each topic with all its phrasings, plus small talk."""
    groups = [(tuple(_questions(topic)), topic.answer) for topic in topics]
    return groups + list(SMALL_TALK.items())


def _vary(question: str, rng: random.Random) -> str:
    """Randomly lower-case the first letter or drop the final punctuation, as people type."""
    if rng.random() < 0.25:
        question = question[0].lower() + question[1:]
    if rng.random() < 0.15:
        question = question.rstrip("?.!")
    return question


def encode(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    answer: str,
    system: str | None,
) -> tuple[list[int], int]:
    """Token ids of one chat-formatted conversation and where the assistant's answer starts."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    prompt = cast(
        str, tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    )
    full = cast(
        str,
        tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": answer}], tokenize=False
        ),
    )
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    ids = tokenizer.encode(full.rstrip("\n"), add_special_tokens=False)  # ends with <|im_end|>
    assert ids[: len(prompt_ids)] == prompt_ids, "the prompt must tokenize as a prefix"
    return ids, len(prompt_ids)


def _answer_weights(start: int, length: int) -> list[float]:
    """Loss weights of a conversation's tokens: 0 on the prompt, more on the answer's start."""
    answer = length - start
    head = min(answer, ANSWER_START_TOKENS)
    return [0.0] * start + [ANSWER_START_WEIGHT] * head + [1.0] * (answer - head)


def batches(
    tokenizer: PreTrainedTokenizerBase,
    groups: list[tuple[tuple[str, ...], str]],
    rows: int,
    width: int,
    rng: random.Random,
) -> Iterator[tuple[mx.array, mx.array]]:
    """Endless batches of ``rows`` x ``width`` token ids packed with random conversations.

    Each conversation picks a group (a topic, or small talk) uniformly, then
    one of its questions, so topics with many phrasings are not favoured.
    Conversations are laid end to end (each starts with the BOS token); one
    that does not fit in the rest of a row opens the next row, and the gap is
    padded. Also yields the loss weight of every token (see
    :func:`_answer_weights`).
    """
    encoded = cache(partial(encode, tokenizer))
    pending: tuple[list[int], int] | None = None
    while True:
        tokens: list[list[int]] = []
        weights: list[list[float]] = []
        for _ in range(rows):
            row: list[int] = []
            row_weights: list[float] = []
            while True:
                if pending is None:
                    questions, answer = rng.choice(groups)
                    question = rng.choice(questions)
                    system = rng.choice(SYSTEM_PROMPTS) if rng.random() < 0.3 else None
                    pending = encoded(_vary(question, rng), answer, system)
                ids, start = pending
                if len(row) + len(ids) > width:
                    if not row:
                        raise ValueError(
                            f"a conversation of {len(ids)} tokens exceeds --seq-len {width}"
                        )
                    break
                row += ids
                row_weights += _answer_weights(start, len(ids))
                pending = None
            gap = width - len(row)
            tokens.append(row + [tokenizer.pad_token_id] * gap)
            weights.append(row_weights + [0.0] * gap)
        yield mx.array(tokens), mx.array(weights, dtype=mx.float32)


# --------------------------------------------------------------------------- training


def loss_fn(model: Model, tokens: mx.array, weights: mx.array) -> tuple[mx.array, mx.array]:
    """Weighted next-token cross-entropy (to minimize) and the plain mean over the answers."""
    logits = model(tokens[:, :-1])
    losses = nn.losses.cross_entropy(logits, tokens[:, 1:])
    weights = weights[:, 1:]
    answer = (weights > 0).astype(mx.float32)
    answer_tokens = answer.sum()
    return (losses * weights).sum() / answer_tokens, (losses * answer).sum() / answer_tokens


def _named_parameters(model: Model) -> list[tuple[str, mx.array]]:
    """The model's parameters as (dotted name, array) pairs, as safetensors stores them."""
    return cast(list[tuple[str, mx.array]], tree_flatten(model.parameters()))


def train(args: argparse.Namespace, out: Path) -> TrainingRun:
    """Train the model, save it in ``out``; return the numbers the README reports."""
    mx.random.seed(args.seed)
    rng = random.Random(args.seed)

    train_tokenizer(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    topics = load_topics(args.max_answer_chars)
    groups = build_conversations(topics)
    questions = sum(len(group) for group, _ in groups)
    print(f"{len(topics)} help topics, {len(groups)} answers to {questions} questions")

    config = llama_config(
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        intermediate_size=args.intermediate_size,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
    )
    model = Model(ModelArgs.from_dict(config))
    parameters = sum(array.size for _, array in _named_parameters(model))
    print(f"model: {parameters:,} parameters ({parameters * 4 / 1e6:.1f} MB float32)")

    warmup = max(1, args.steps // 20)
    schedule = optim.join_schedules(
        [
            optim.linear_schedule(args.lr / warmup, args.lr, warmup),
            optim.cosine_decay(args.lr, args.steps - warmup, args.lr / 10),
        ],
        [warmup],
    )
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=0.01)
    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(tokens: mx.array, weights: mx.array) -> mx.array:
        (_, loss), grads = nn.value_and_grad(model, loss_fn)(model, tokens, weights)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        optimizer.update(model, grads)
        return loss

    start = time.perf_counter()
    curve: list[tuple[int, float]] = []
    window: list[float] = []
    seen_tokens = 0
    data = batches(tokenizer, groups, args.batch_rows, args.seq_len, rng)
    for number in range(1, args.steps + 1):
        tokens, weights = next(data)
        loss = step(tokens, weights)
        mx.eval(state, loss)
        window.append(float(loss))
        seen_tokens += tokens.size
        if number % args.log_every == 0 or number == args.steps:
            mean = sum(window) / len(window)
            curve.append((number, mean))
            window.clear()
            elapsed = time.perf_counter() - start
            print(
                f"step {number:4d}/{args.steps}  loss {mean:.3f}  "
                f"{seen_tokens / elapsed:5.0f} tok/s  {elapsed:5.0f} s",
                flush=True,
            )
    seconds = time.perf_counter() - start

    save_weights(out, _named_parameters(model))
    write_config(out, config)
    return TrainingRun(parameters, len(tokenizer), seen_tokens, seconds, curve)


# --------------------------------------------------------------------------- report


def sample_answers(folder: Path, max_tokens: int = 100) -> list[tuple[str, str]]:
    """Greedy answers of the saved model, loaded back the way the app loads models."""
    model, tokenizer = load(str(folder))
    answers = []
    for question in SAMPLE_QUESTIONS:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        text = "".join(
            r.text for r in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens)
        )
        answers.append((question, text))
    return answers


def write_readme(
    folder: Path, args: argparse.Namespace, run: TrainingRun, samples: list[tuple[str, str]]
) -> None:
    """Describe the demo model: what it is, how it was made, how well it learned."""
    weights = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    shown = dict(run.curve[:: max(1, len(run.curve) // 10)] + run.curve[-1:])
    curve_lines = "\n".join(f"| {step} | {loss:.3f} |" for step, loss in shown.items())
    sample_lines = "\n\n".join(f"> **{q}**\n>\n> {a.strip() or '(empty)'}" for q, a in samples)
    command = "python scripts/train_demo_model.py " + " ".join(
        f"--{name.replace('_', '-')} {value}" for name, value in vars(args).items() if name != "out"
    )
    facts = {
        "Architecture": f"llama, {args.layers} layers, hidden {args.hidden_size}, "
        f"MLP {args.intermediate_size}, {args.heads} heads ({args.kv_heads} KV)",
        "Parameters": f"{run.parameters:,}",
        "Weights": f"{weights / 1e6:.1f} MB, float32 (`model.safetensors`)",
        "Tokenizer": f"byte-level BPE, {run.vocab_size} tokens, trained on the same help "
        "topics; ChatML-style chat template",
        "Data": f"the help topics of Python {platform.python_version()}, as chat: a question "
        "about a topic, the start of its page as the answer",
        "Training": f"{args.steps} steps of {args.batch_rows} x {args.seq_len} tokens "
        f"({run.tokens:,} tokens), {run.seconds:.0f} s on a {os.cpu_count()}-core CPU, "
        f"MLX {version('mlx')}",
        "Final loss": f"{run.curve[-1][1]:.3f} (mean cross-entropy on the assistant's tokens)",
        "Date": date.today().isoformat(),
    }
    facts_table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in facts.items())
    text = f"""# mlx-tui demo model

A **toy** language model bundled with mlx-tui so that a fresh install can chat
offline at once. It is *not* a useful assistant: it is a tiny llama trained for
a few minutes on a CPU, on Python's built-in help topics
(`pydoc_data.topics`, the pages behind `help("for")`), to answer questions such
as "What is the for statement?" with the start of the matching help page.
Expect vaguely topical, English-looking text, often wrong.

Real models come from the Hugging Face cache (`~/.cache/huggingface/hub`) or
from local model folders.

{facts_table}

Rebuild it (seeded: the data order and the initial weights are fixed; short
runs repeat bit for bit, long ones may drift apart slightly, so expect a
similar rather than identical model):

    {command}

## Loss curve

| step | loss |
|---|---|
{curve_lines}

## Sample answers (greedy)

{sample_lines}
"""
    (folder / "README.md").write_text(text, encoding="utf-8")


def parse_args() -> argparse.Namespace:
    """The command line: training length, model shape and output folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=450, help="optimizer steps")
    parser.add_argument(
        "--batch-rows", type=int, default=3, help="rows of packed conversations a step"
    )
    parser.add_argument("--seq-len", type=int, default=256, help="tokens a row")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--intermediate-size", type=int, default=384)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument(
        "--max-answer-chars", type=int, default=180, help="longest answer, in characters"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10, help="steps between loss lines")
    parser.add_argument("--out", type=Path, default=DEMO_MODEL_DIR, help="output folder")
    return parser.parse_args()


def main() -> None:
    """Train, check and describe the demo model, then swap it into ``--out``."""
    args = parse_args()
    total_start = time.perf_counter()
    # Build next to the output and swap it in at the end, so an interrupted
    # run never leaves a half-written model behind.
    scratch = args.out.with_name(f".{args.out.name}-partial")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        run = train(args, scratch)
        samples = sample_answers(scratch)
        write_readme(scratch, args, run, samples)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    shutil.rmtree(args.out, ignore_errors=True)
    scratch.rename(args.out)
    for question, answer in samples:
        print(f"\nQ: {question}\nA: {answer.strip()}")
    print(f"\nwrote {args.out} in {time.perf_counter() - total_start:.0f} s")


if __name__ == "__main__":
    main()
