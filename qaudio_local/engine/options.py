"""How a model is loaded and how tokens are chosen: the options and their vocabulary.

:class:`ModelOptions` and :class:`SamplingOptions` are frozen dataclasses whose docstrings
list every default and whose constructors refuse out-of-range values (ValueError); the
tables beside them name the choices (and the llama.cpp enum each name maps to).
"""

from __future__ import annotations

from dataclasses import dataclass

AUDIO_PATHS = ("faithful", "mtmd")
KV_TYPES = {"f32": 0, "f16": 1, "q8_0": 8}  # name -> ggml_type
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}  # name -> llama_flash_attn_type
CPU_KERNELS = ("auto", "fast", "portable")
PROMPT_FORMATS = ("auto", "chat", "base")
MAX_PARALLEL = 64  # n_parallel + prefix_cache stays well under llama.cpp's 256 sequences


@dataclass(frozen=True)
class ModelOptions:
    """How the model is loaded.

    Attributes:
        n_gpu_layers: Text-model layers offloaded to the GPU; 0 = CPU only (default),
            -1 = all of them.
        n_ctx: Context window in tokens (default 4096; 30 s of audio takes 750).
        n_threads: CPU threads (default: one per physical core this process may use).
        n_batch: Prompt tokens per llama_decode call (default 512).
        mmproj_on_gpu: Run the audio encoder on the GPU when one is available (default True).
        audio_path: ``"faithful"`` (default): the project's reference-exact audio path (own
            log-mel, <= 30 s windows, masked-equivalent encoder, only valid audio tokens
            reach the text model); ``"mtmd"``: llama.cpp's own libmtmd path, for comparison.
        kv_type: KV cache storage: ``"f16"`` (default, 0.5 MiB/token for the 7B),
            ``"q8_0"`` (about half) or ``"f32"`` (twice; exact, for reference comparisons).
        flash_attn: ``"auto"`` (default: llama.cpp decides; off with an f32 KV cache, since
            its CPU kernel rounds queries to F16 and costs ~1e-3 in the logits), ``"on"``,
            ``"off"``.
        cpu_kernels: For quantized weights on the CPU: ``"auto"`` (default: llama.cpp's fast
            repacked/AMX kernels unless a one-time probe found that they fault on this
            machine; see :mod:`qaudio_local.engine.cpu_probe`), ``"fast"`` (always, no probe)
            or ``"portable"`` (never).
        n_parallel: Generations decoded at once in one batch (default 1); more wait their
            turn. They share the ``n_ctx`` cells of one KV cache (llama.cpp's unified cache).
        prefix_cache: Finished sequences whose KV cells are kept, beyond the running ones,
            so that a prompt starting the same way (the next turn of a conversation, another
            question about the same clip) only computes what is new (default 4). Cells are
            dropped least recently used first when new work needs them.
        encoder_cache_mb: MiB of audio embeddings kept by clip digest, so that the same clip
            is encoded once (default 256; 0 turns it off).
        allow_long_context: Accept an ``n_ctx`` beyond the context the model was trained for
            (default False: that is refused, since answers get worse past it).
        prompt_format: ``"auto"`` (default: what the text GGUF's metadata says, see
            :func:`qaudio_local.engine.gguf.schema.prompt_format`), ``"chat"``
            (Qwen2-Audio-7B-Instruct's chat template) or ``"base"`` (Qwen2-Audio-7B: the
            audio, then a task prompt; one turn, no system prompt).
    """

    n_gpu_layers: int = 0
    n_ctx: int = 4096
    n_threads: int | None = None
    n_batch: int = 512
    mmproj_on_gpu: bool = True
    audio_path: str = "faithful"
    kv_type: str = "f16"
    flash_attn: str = "auto"
    cpu_kernels: str = "auto"
    n_parallel: int = 1
    prefix_cache: int = 4
    encoder_cache_mb: float = 256.0
    allow_long_context: bool = False
    prompt_format: str = "auto"

    @property
    def resolved_flash_attn(self) -> str:
        """``auto`` means off with an f32 KV cache (exactness asked for), else llama.cpp's."""
        if self.flash_attn == "auto" and self.kv_type == "f32":
            return "off"
        return self.flash_attn

    def __post_init__(self) -> None:
        if self.flash_attn not in FLASH_ATTN:
            raise ValueError(f"flash_attn must be one of {', '.join(FLASH_ATTN)}")
        if self.kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {', '.join(KV_TYPES)}")
        if self.cpu_kernels not in CPU_KERNELS:
            raise ValueError(f"cpu_kernels must be one of {', '.join(CPU_KERNELS)}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}")
        if self.audio_path not in AUDIO_PATHS:
            raise ValueError(f"audio_path must be one of {', '.join(AUDIO_PATHS)}")
        if not 16 <= self.n_ctx <= 1 << 22 or not 1 <= self.n_batch <= 1 << 16:
            raise ValueError("n_ctx must be 16..4194304 and n_batch 1..65536")
        if self.n_threads is not None and not 1 <= self.n_threads <= 1024:
            raise ValueError("n_threads must be 1..1024")
        if not -1 <= self.n_gpu_layers <= 4096:
            raise ValueError("n_gpu_layers must be -1..4096")
        if not 1 <= self.n_parallel <= MAX_PARALLEL or self.n_parallel > self.n_batch:
            raise ValueError(f"n_parallel must be 1..{MAX_PARALLEL} and at most n_batch")
        if not 0 <= self.prefix_cache <= MAX_PARALLEL:
            raise ValueError(f"prefix_cache must be 0..{MAX_PARALLEL}")
        if not 0 <= self.encoder_cache_mb <= 1 << 20:
            raise ValueError("encoder_cache_mb must be >= 0")


@dataclass(frozen=True)
class SamplingOptions:
    """How tokens are chosen.

    Attributes:
        temperature: 0 (default) is greedy decoding, which is deterministic.
        top_p: Nucleus sampling mass (default 1.0 = off).
        top_k: Keep the k most likely tokens (default 0 = off).
        repetition_penalty: >1 discourages repeats (default 1.0 = off).
        seed: Random seed for sampling (default 0).
        max_tokens: Most tokens to generate (default 256).
        stop_at_end_of_turn: Stop at ``<|im_end|>`` and other end tokens (default True).
        stop: Strings that end the answer when generated (not included in the text;
            default none).
        logprobs: Report each token's log-probability under the model (default False).
        stop_loops: End the answer once it has turned into a loop, one phrase over and over
            (``finish_reason="loop"``; see :mod:`~qaudio_local.engine.loops`). Default
            False; transcription turns it on.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int = 0
    max_tokens: int = 256
    stop_at_end_of_turn: bool = True
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    stop_loops: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str) or not all(isinstance(x, str) for x in self.stop):
            raise ValueError("stop must be a tuple of strings")
        if not 0 <= self.temperature <= 100:  # NaN fails every comparison
            raise ValueError("temperature must be a finite number in 0..100")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not 0 <= self.top_k <= 1 << 20:
            raise ValueError("top_k must be 0..1048576")
        if not 0 < self.repetition_penalty <= 100:
            raise ValueError("repetition_penalty must be a finite number in (0, 100]")
        if not 1 <= self.max_tokens <= 1 << 24:
            raise ValueError("max_tokens must be 1..16777216")
