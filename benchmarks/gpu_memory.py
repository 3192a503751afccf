"""The cache on a GPU's own memory (MLX's CUDA backend): ``python -m benchmarks.gpu_memory --run``.

Needs MLX's CUDA build (``pip install 'mlx-tui[cuda13]'``) and an NVIDIA GPU. It builds a 4-bit
random llama of 8B and one of 32B parameters with :mod:`mlx_tui.devtools.modelgen` (in a child
process, so this one starts with an empty GPU), runs a real :class:`~mlx_tui.core.cache.ModelCache`
(``build_runtime`` with the auto-detecting :class:`~mlx_tui.core.memory.SystemMemoryProbe`, which
reads device memory there) and walks four steps, reading the probe, NVML, MLX's device info and
MLX's own figures after each:

A. **Admission on device memory**: the warning threshold sits between "32B alone" and "both";
   loading the 32B with the 8B resident unloads the 8B first.
B. **The seed's scenario 1** (normal clean-up keeps the most used): thresholds above "both", the
   32B used 50 times and the 8B 5 times, both loaded; another process (a second MLX process)
   takes 4 GiB of the GPU, so device memory crosses the warning threshold; one monitor step
   (``check_memory()``) keeps the 32B and unloads the 8B.
C. **The seed's scenario 2** (emergency unloads all): both loaded again, the other process takes
   8 GiB, past the emergency threshold; one monitor step unloads every model.
D. **MLX's buffer pool on CUDA**: a model dropped without ``mx.clear_cache()`` stays in MLX's pool
   (and on the device); clearing the pool gives it back to the driver.

Where no CUDA device is present (``make bench`` on a CPU machine or a Mac) the benchmark does not
run: :func:`skip_reason` says why and the last recorded section (``gpu_memory_recorded.md``
beside this file) is kept in the report. ``--small`` runs the same steps with two tiny models on
whatever memory this machine has (a smoke test of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GIB = 1024**3
HERE = Path(__file__).resolve().parent
RECORDED = HERE / "gpu_memory_recorded.md"
"""The section measured last on a GPU machine, kept in BENCHMARKS.md by runs elsewhere."""

SHAPES: dict[str, dict[str, Any]] = {
    # Llama-3-8B's shape (untied head) and a 32B shape (Qwen2.5-32B's widths), 4-bit, group 64.
    "llama-8b-4bit": dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336,
                          num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
    "llama-32b-4bit": dict(hidden_size=5120, num_hidden_layers=64, intermediate_size=27648,
                           num_attention_heads=40, num_key_value_heads=8, vocab_size=152064),
}
SMALL_SHAPES: dict[str, dict[str, Any]] = {
    "tiny-small-4bit": dict(hidden_size=256, num_hidden_layers=2, intermediate_size=512,
                            num_attention_heads=4, num_key_value_heads=2),
    "tiny-large-4bit": dict(hidden_size=512, num_hidden_layers=4, intermediate_size=1024,
                            num_attention_heads=8, num_key_value_heads=2),
}


def log(message: str) -> None:
    print(f"[gpu_memory] {message}", file=sys.stderr, flush=True)


def cuda_available() -> bool:
    """True when MLX's CUDA backend runs here."""
    import mlx.core as mx

    return bool(mx.cuda.is_available())


def skip_reason() -> str | None:
    """Why this benchmark cannot run on this machine (None when it can)."""
    return None if cuda_available() else "no CUDA device (MLX's CUDA build and an NVIDIA GPU)"


def recorded_section() -> str:
    """The last section measured on a GPU machine, for reports written elsewhere."""
    if RECORDED.exists():
        return RECORDED.read_text(encoding="utf-8")
    return "## GPU device memory\n\nNot measured yet: needs an NVIDIA GPU and MLX's CUDA build.\n"


# --------------------------------------------------------------------------- models


def parameter_count(shape: dict[str, Any]) -> int:
    """Parameters of an untied llama of ``shape`` (embedding, layers, norm, head)."""
    h, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    head_dim = h // shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * head_dim
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h
    return 2 * shape.get("vocab_size", 1024) * h + layers * per_layer + h


def build_models(root: Path, shapes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Write each model in a child process (its GPU memory goes away with it); their facts."""
    built: dict[str, dict[str, Any]] = {}
    for name, shape in shapes.items():
        dest = root / name
        code = ("import json, sys; from pathlib import Path; "
                "from mlx_tui.devtools.modelgen import write_random_model; "
                "write_random_model(Path(sys.argv[1]), dtype='bfloat16', quantize_bits=4, "
                "tie_word_embeddings=False, **json.loads(sys.argv[2]))")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, str(dest), json.dumps(shape)], check=True,
                       cwd=HERE.parent)
        seconds = time.perf_counter() - started
        disk = sum(p.stat().st_size for p in dest.glob("model*.safetensors"))
        built[name] = {"path": dest, "disk_bytes": disk, "build_seconds": seconds,
                       "parameters": parameter_count(shape)}
        log(f"built {name}: {disk / GIB:.2f} GiB in {seconds:.1f} s")
    return built


# --------------------------------------------------------------------------- another GPU user


class OtherProcess:
    """A second MLX process holding ``nbytes`` on the default device until :meth:`stop`: another
    job on the same GPU (or, on a Mac or a CPU, in the same memory)."""

    CODE = ("import sys, mlx.core as mx; x = mx.ones((int(sys.argv[1]) // 4096, 4096), dtype=mx.uint8); "
            "mx.eval(x); mx.synchronize(); print('ready', flush=True); sys.stdin.read()")

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self._proc = subprocess.Popen([sys.executable, "-c", self.CODE, str(nbytes)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"the other process did not take {nbytes} bytes")

    def stop(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        self._proc.wait(timeout=60)


# --------------------------------------------------------------------------- figures


@dataclass
class Row:
    step: str
    loaded: list[str]
    used: int
    total: int
    zone: str
    source: str
    nvml_used: int | None
    mlx_device_used: int | None
    mlx_active: int
    mlx_cache: int
    system_used: int
    at: float = field(default_factory=time.perf_counter)

    @property
    def fraction(self) -> float:
        return self.used / self.total if self.total else 0.0


class Recorder:
    """Reads every figure after each step: the probe the cache uses, NVML and MLX's device info
    beside it (to compare), MLX's own figures and system memory."""

    def __init__(self, probe: Any, cache_view: Callable[[], tuple[list[str], Any]]) -> None:
        from mlx_tui.core.memory import NvmlReader, mlx_device_memory

        self.probe = probe
        self.cache_view = cache_view
        self.nvml = NvmlReader()
        self.mlx_device = mlx_device_memory
        self.rows: list[Row] = []

    def __call__(self, step: str) -> Row:
        loaded, thresholds = self.cache_view()
        snap = self.probe.snapshot()
        nvml = self.nvml() if snap.kind == "device" else None
        mlx_dev = self.mlx_device() if snap.kind == "device" else None
        row = Row(step, loaded, snap.used_bytes, snap.total_bytes,
                  thresholds.zone(snap.used_fraction) if thresholds else "-", snap.source,
                  nvml.used_bytes if nvml else None, mlx_dev.used_bytes if mlx_dev else None,
                  snap.mlx_active_bytes, snap.mlx_cache_bytes, snap.system_used_bytes)
        self.rows.append(row)
        log(f"{step}: {row.used / GIB:.2f}/{row.total / GIB:.1f} GiB ({row.fraction:.2%}, "
            f"{row.zone}) active {row.mlx_active / GIB:.2f} pool {row.mlx_cache / GIB:.2f} "
            f"loaded {loaded}")
        return row


def _gb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e9:.2f}"


# --------------------------------------------------------------------------- the walk


def measure(work: Path, small: bool) -> dict[str, Any]:
    """Build the models, run the four steps, return every figure (see the module docstring)."""
    import mlx.core as mx

    from mlx_tui.core.chat import ChatMessage, GenerationParams
    from mlx_tui.core.memory import SystemMemoryProbe
    from mlx_tui.core.runtime import build_runtime
    from mlx_tui.core.settings import parse_settings, write_settings

    shapes = SMALL_SHAPES if small else SHAPES
    margin = (GIB // 4) if small else 2 * GIB  # scale of the steps' gaps (tiny models: tiny gaps)
    models = build_models(work / "models", shapes)
    small_name, large_name = list(shapes)
    s_small, s_large = models[small_name]["disk_bytes"], models[large_name]["disk_bytes"]

    probe = SystemMemoryProbe()
    runtime = None
    events: list[str] = []
    facts: dict[str, Any] = {"models": models, "events": events}

    def view() -> tuple[list[str], Any]:
        if runtime is None:
            return [], None
        return runtime.cache.loaded_names(), runtime.cache.thresholds

    # What the first load and reply add outside any model (the CUDA context, cuBLAS's workspace,
    # mlx_lm's imports) comes before the baseline, so the thresholds sit where they are meant to.
    import mlx_lm  # noqa: F401

    warm = mx.ones((1024, 1024)) @ mx.ones((1024, 1024))
    mx.eval(warm)
    del warm
    mx.clear_cache()
    rec = Recorder(probe, view)
    start = rec("start: nothing loaded")
    facts["kind"], facts["device"] = probe.kind, probe.snapshot().device_name
    base, total = start.used, start.total

    def fraction(nbytes: float) -> float:
        return round(nbytes / total, 4)

    settings = parse_settings({
        "models": {small_name: str(models[small_name]["path"]),
                   large_name: str(models[large_name]["path"])},
        "catalog": {"dirs": [], "huggingface_cache": False},
        "cache": {"preload": [], "policy": "frequency"},
        "memory": {"warning_threshold": fraction(base + s_large + s_small / 2),
                   "emergency_threshold": min(0.95, fraction(base + s_large + s_small) + 0.3),
                   "cleanup": "keep_best", "keep_on_cleanup": 1},
        "prompt_cache": {"enabled": False},
    })
    write_settings(settings, work / "settings.toml")
    runtime = build_runtime(work / "settings.toml", db_path=work / "usage.db", probe=probe)
    cache = runtime.cache
    t0 = time.perf_counter()
    cache.subscribe(lambda e: events.append(f"{time.perf_counter() - t0:7.2f} s  {e.kind.value}: {e.message}")
                    if e.kind.value not in ("memory", "used", "released") else None)

    def pressed(step: str, nbytes: int, level: str) -> None:
        """Another process takes ``nbytes``; one monitor step; the other process ends."""
        other = OtherProcess(nbytes)
        rec(f"{step}. another process takes {nbytes / GIB:g} GiB of the same memory")
        started = time.perf_counter()
        cache.check_memory()
        facts[f"{step}_seconds"] = time.perf_counter() - started
        facts[step] = rec(f"{step}. one monitor step: {level} clean-up")
        other.stop()
        rec(f"{step}. the other process ends")

    def set_thresholds(warning: float, emergency: float) -> None:
        runtime.settings_store.update({"memory": {"warning_threshold": warning,
                                                  "emergency_threshold": emergency}})
        if (cache.thresholds.warning, cache.thresholds.emergency) != (warning, emergency):
            raise RuntimeError(f"the cache did not take the new thresholds: {cache.thresholds}")

    def load(name: str) -> float:
        view_ = cache.load(name, "benchmark").result(timeout=600)
        log(f"{name} loaded in {view_.load_time_seconds:.2f} s ({view_.resident_bytes / GIB:.2f} GiB)")
        facts.setdefault("loads", []).append({"model": name, "seconds": view_.load_time_seconds,
                                              "resident_bytes": view_.resident_bytes})
        return view_.load_time_seconds

    def use(name: str, times: int) -> None:
        for _ in range(times):
            with cache.acquire(name):
                pass

    def generate(name: str) -> None:
        try:
            _, stats = runtime.chat.complete(name, [ChatMessage("user", "Say something.")],
                                             GenerationParams(max_tokens=32, temperature=0.0))
            facts.setdefault("generation", {})[name] = {
                "tokens": stats.tokens, "tokens_per_second": stats.tokens_per_second}
        except Exception as exc:  # noqa: BLE001 - reported in the section, the walk goes on
            facts.setdefault("generation", {})[name] = {"error": f"{type(exc).__name__}: {exc}"}

    try:
        # A. admission on device memory
        load(small_name)
        generate(small_name)
        rec(f"A. {small_name} loaded")
        load(large_name)
        facts["A"] = rec(f"A. {large_name} loaded: the warning threshold made room first")
        # B. scenario 1: thresholds from the figure with both loaded, so the other process's
        # share (2 margins) crosses the warning (1 margin up) but not the emergency (2.5 up)
        set_thresholds(0.9, 0.95)
        use(large_name, 50)
        generate(large_name)
        load(small_name)
        use(small_name, 5)
        both = probe.snapshot().used_bytes
        w_b, e_b = fraction(both + margin), fraction(both + 2.5 * margin)
        set_thresholds(w_b, e_b)
        facts["thresholds_B"] = (w_b, e_b)
        cache.check_memory()
        rec(f"B. both loaded ({large_name} used 50x, {small_name} 5x): under the warning")
        pressed("B", 2 * margin, "normal")
        # C. scenario 2
        load(small_name)
        rec("C. both loaded again")
        pressed("C", 4 * margin, "emergency")
    finally:
        runtime.close()
        runtime = None

    # D. the buffer pool, without the cache; bare mlx_lm.load (weights evaluated, as the cache's
    # loader does) is also the baseline of the cache's load seconds, same files, same run
    from mlx_lm import load as mlx_load

    for name in (large_name, small_name):
        started = time.perf_counter()
        model, tokenizer = mlx_load(str(models[name]["path"]))
        mx.eval(model.parameters())
        models[name]["bare_load_seconds"] = time.perf_counter() - started
        if name == large_name:
            del model, tokenizer
            gc.collect()
            mx.clear_cache()
    rec(f"D. {small_name} loaded with mlx_lm.load")
    del model, tokenizer
    gc.collect()
    facts["D_dropped"] = rec("D. dropped + gc.collect(): MLX keeps it in its pool")
    mx.clear_cache()
    facts["D_cleared"] = rec("D. mx.clear_cache()")
    mx.synchronize()
    time.sleep(0.5)
    facts["D_synced"] = rec("D. mx.synchronize() + 0.5 s")
    facts["rows"] = rec.rows
    facts["holds"] = {
        "A": facts["A"].loaded == [large_name],
        "B": facts["B"].loaded == [large_name],
        "C": facts["C"].loaded == [],
    }
    return facts


# --------------------------------------------------------------------------- report


def _machine() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    return (f"{out or 'no nvidia-smi'}; {os.cpu_count()} CPU cores; {platform.platform()}; "
            f"Python {platform.python_version()}; mlx {version('mlx')}, mlx-cuda-13 "
            f"{version('mlx-cuda-13')}, mlx-lm {version('mlx-lm')}, nvidia-ml-py "
            f"{version('nvidia-ml-py')}")


def render(facts: dict[str, Any], machine: str, when: str, command: str) -> str:
    models, rows = facts["models"], facts["rows"]
    out = ["## GPU device memory (MLX's CUDA backend)", "",
           f"Machine: {machine}. Date (UTC): {when}. Command: `{command}`.", "",
           f"The probe read **{facts['kind']}** memory ({rows[0].source}; device "
           f"{facts['device'] or '-'}). Figures in GB (10^9 bytes); *probe* is the budget the "
           "thresholds compare (what the cache sees), *NVML* and *MLX dev* the driver's and MLX's "
           "`device_info()` device-wide figures beside it, *active* and *pool* MLX's own "
           "(`get_active_memory`, `get_cache_memory`), *system* host memory in use.", "",
           "| model | parameters | on disk | build s | cache load s (each load) | bare "
           "`mlx_lm.load` s | cache / bare (median) |", "|---|---:|---:|---:|---|---:|---:|"]
    for name, m in models.items():
        loads = sorted(x["seconds"] for x in facts.get("loads", []) if x["model"] == name)
        bare = m.get("bare_load_seconds", 0.0)
        median = loads[len(loads) // 2] if loads else 0.0
        out.append(f"| `{name}` | {m['parameters'] / 1e9:.2f} B | {m['disk_bytes'] / 1e9:.2f} GB | "
                   f"{m['build_seconds']:.1f} | {', '.join(f'{x:.2f}' for x in loads)} | "
                   f"{bare:.2f} | {median / bare if bare else 0:.2f}x |")
    out += ["", "| step | loaded | probe used | of total | zone | NVML | MLX dev | active | pool "
            "| system |", "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r.step} | {', '.join(r.loaded) or '-'} | {_gb(r.used)} | {r.fraction:.2%} "
                   f"| {r.zone} | {_gb(r.nvml_used)} | {_gb(r.mlx_device_used)} | "
                   f"{_gb(r.mlx_active)} | {_gb(r.mlx_cache)} | {_gb(r.system_used)} |")
    holds = facts["holds"]
    out += ["", f"- A (admission on device memory, warning between 32B alone and both): "
            f"{'held' if holds['A'] else 'NOT HELD'}.",
            f"- Seed scenario 1 (normal clean-up keeps the most used), thresholds "
            f"{facts['thresholds_B'][0]:.2%} / {facts['thresholds_B'][1]:.2%}: "
            f"{'held' if holds['B'] else 'NOT HELD'} (monitor step {facts['B_seconds']:.2f} s).",
            f"- Seed scenario 2 (emergency unloads all): {'held' if holds['C'] else 'NOT HELD'} "
            f"(monitor step {facts['C_seconds']:.2f} s)."]
    for name, g in facts.get("generation", {}).items():
        out.append(f"- One reply from `{name}` through the cache's chat engine: "
                   + (g["error"] if "error" in g else
                      f"{g['tokens']} tokens at {g['tokens_per_second']:.1f} tokens/s."))
    out += ["", "<details><summary>Cache events</summary>", "", "```text", *facts["events"], "```",
            "", "</details>", ""]
    return "\n".join(out)


def run(quick: bool = False) -> str:
    """``python -m benchmarks`` entry: the recorded section unless CUDA is here (then measure)."""
    if skip_reason():
        return recorded_section()
    return _measure_and_render(Path(os.environ.get("TMPDIR", "/tmp")) / "mlx-tui-gpu-memory",
                               small=quick, command="python -m benchmarks --only gpu_memory")


def _measure_and_render(work: Path, small: bool, command: str) -> str:
    work.mkdir(parents=True, exist_ok=True)
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    facts = measure(work, small)
    return render(facts, _machine(), when, command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_memory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="measure (needs a CUDA device)")
    parser.add_argument("--small", action="store_true",
                        help="tiny models on any machine: a smoke test of the steps, no figures")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mlx-tui-gpu-memory"),
                        help="where models and settings are written")
    parser.add_argument("--out", type=Path, help="also write the Markdown section here")
    args = parser.parse_args(argv)
    if not (args.run or args.small):
        parser.error("pass --run (on a CUDA machine) or --small")
    if args.run and not args.small and skip_reason():
        print(f"gpu_memory: not run: {skip_reason()}", file=sys.stderr)
        return 2
    command = "python -m benchmarks.gpu_memory " + " ".join(sys.argv[1:] if argv is None else argv)
    section = _measure_and_render(args.work, args.small, command.strip())
    print(section)
    if args.out:
        args.out.write_text(section, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
