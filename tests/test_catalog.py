"""The model registry: the packaged models.toml, name resolution, user files, strict checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qaudio_local.errors import CatalogError, QAudioError, UnknownModelError
from qaudio_local.models.catalog import LOCAL_REPO, Catalog, find_projector, find_quant
from qaudio_local.models.registry import load_catalog

REPO = Path(__file__).resolve().parents[1]
NAME = "qwen2-audio-7b-instruct"
QUANTS = ("Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")

# A complete new model, used as the base of the error cases below.
NEW_MODEL = """
[models.tiny]
description = "a tiny model"
repo = "me/tiny-GGUF"

[models.tiny.dims]
n_layers = 2
hidden_size = 64
n_heads = 4
n_kv_heads = 2
max_context = 512
vocab_size = 1000

[[models.tiny.quants]]
name = "F16"
filename = "tiny.F16.gguf"
size = 1000
bits_per_weight = 16

[[models.tiny.projectors]]
name = "f16"
filename = "tiny.mmproj-f16.gguf"
size = 500
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def catalog() -> Catalog:
    return load_catalog()


# --- the packaged registry -------------------------------------------------------------------


def test_root_registry_matches_packaged() -> None:
    """The root models.toml (what the issue asks for) is a byte copy of the shipped one."""
    root = (REPO / "models.toml").read_bytes()
    assert root == (REPO / "qaudio_local" / "models.toml").read_bytes(), (
        "models.toml and qaudio_local/models.toml differ; edit qaudio_local/models.toml and "
        "copy it to the repository root"
    )


def test_the_base_model_is_its_own_entry(catalog: Catalog) -> None:
    """qwen2-audio-7b is Qwen2-Audio-7B (base), with its own files and prompt format."""
    for name in ("qwen2-audio-7b", "Qwen2-Audio-7B", "qwen2-audio-base"):
        entry = catalog.get(name)
        assert entry.name == "qwen2-audio-7b" and entry.prompt_format == "base"
    assert [q.name for q in entry.quants] == ["Q4_K_M", "Q5_K_S", "Q6_K", "Q8_0"]
    assert [p.name for p in entry.projectors] == ["f16", "q8_0"]
    for f in [*(q.file for q in entry.quants), *(p.file for p in entry.projectors)]:
        assert f.repo == "mradermacher/Qwen2-Audio-7B-GGUF"
        assert f.filename.startswith("Qwen2-Audio-7B.") and "Instruct" not in f.filename


def test_a_registry_prompt_format_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[models.qwen2-audio]\nprompt = "whisper"\n', encoding="utf-8")
    with pytest.raises(CatalogError, match="prompt"):
        load_catalog(extra=[bad])


def test_packaged_registry_has_the_model_the_issue_asks_for(catalog: Catalog) -> None:
    assert catalog.default == NAME
    entry = catalog.get()
    assert entry.name == NAME and "qwen2-audio" in entry.aliases
    assert "qwen2-audio-7b" not in entry.aliases  # that name is the base model's
    assert entry.prompt_format == "chat"
    d = entry.dims
    assert (d.n_layers, d.hidden_size, d.n_heads, d.n_kv_heads) == (32, 4096, 32, 32)
    assert (d.max_context, d.vocab_size) == (8192, 156032)
    assert tuple(q.name for q in entry.quants) == QUANTS  # best (largest) last
    sizes = [q.file.size for q in entry.quants]
    assert sizes == sorted(sizes) and sizes[0] == 3_900_000_000 and sizes[-1] == 8_200_000_000
    for q in entry.quants:
        assert q.file.repo == "mradermacher/Qwen2-Audio-7B-Instruct-GGUF"
        assert q.file.filename == f"Qwen2-Audio-7B-Instruct.{q.name}.gguf"
        assert q.file.revision == "main" and q.local_path is None
        assert 3 < q.bits_per_weight < 9
    assert [p.name for p in entry.projectors] == ["f16", "q8_0"]
    assert entry.projectors[0].file.filename == "Qwen2-Audio-7B-Instruct.mmproj-f16.gguf"
    assert entry.projectors[0].file.size > entry.projectors[1].file.size > 0


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "quant"),
    [
        (None, "auto"),
        ("", "auto"),
        (NAME, "auto"),
        ("qwen2-audio", "auto"),
        ("QWEN2-Audio-Instruct", "auto"),
        ("qwen2-audio:q4_k_m", "Q4_K_M"),
        ("qwen2-audio-7b-instruct:Q8_0", "Q8_0"),
        (f"{NAME}:auto", "auto"),
        (":q6_k", "Q6_K"),
        (" qwen2-audio : Q5_K_M ", "Q5_K_M"),
    ],
)
def test_resolve(catalog: Catalog, spec: str | None, quant: str) -> None:
    entry, q = catalog.resolve(spec)
    assert entry.name == NAME and q == quant


def test_unknown_model_lists_the_valid_names(catalog: Catalog) -> None:
    with pytest.raises(UnknownModelError) as info:
        catalog.resolve("whisper-large:Q4_K_M")
    err = info.value
    assert isinstance(err, LookupError) and isinstance(err, QAudioError)
    assert (
        err.kind == "model"
        and err.name == "whisper-large"
        and err.valid == (NAME, "qwen2-audio-7b")
    )
    assert NAME in str(err) and "qaudio list" in str(err)


def test_unknown_quant_lists_the_valid_quants(catalog: Catalog) -> None:
    with pytest.raises(UnknownModelError) as info:
        catalog.resolve("qwen2-audio:Q2_K")
    err = info.value
    assert err.kind == "quant" and err.valid == QUANTS and err.model == NAME
    assert all(q in str(err) for q in QUANTS)


def test_find_quant_and_projector(catalog: Catalog) -> None:
    entry = catalog.get()
    assert find_quant(entry, "q5_k_m").name == "Q5_K_M"
    assert find_projector(entry, "Q8_0").name == "q8_0"
    with pytest.raises(UnknownModelError, match="valid: f16, q8_0"):
        find_projector(entry, "bf16")


def test_find_file_tells_the_family_of_a_gguf(catalog: Catalog, tmp_path: Path) -> None:
    """What `qaudio serve --model-file` accepts as model names besides the file's stem."""
    hub = tmp_path / "dl" / "qwen2-audio-7b-instruct.q4_k_m.gguf"  # a hub file, any case
    assert catalog.find_file(hub) is catalog.get(NAME)
    assert catalog.find_file(tmp_path / "tiny-qwen2-audio.F32.gguf") is None
    home = Path(os.environ["QAUDIO_HOME"])
    write(home / "m.toml", NEW_MODEL.replace('filename = "tiny.F16.gguf"', 'path = "w/t.gguf"'))
    write(home / "w" / "t.gguf", "x" * 10)
    mine = load_catalog([home / "m.toml"])
    assert mine.find_file(home / "w" / ".." / "w" / "t.gguf") is mine.get("tiny")  # same file


# --- user files ----------------------------------------------------------------------------


def test_home_file_extends_the_packaged_model_with_a_local_quant(tmp_path: Path) -> None:
    """Same name = merge: new quant added (sorted by bits), alias added, the rest kept."""
    home = Path(os.environ["QAUDIO_HOME"])
    gguf = write(home / "mine" / "qwen.F16.gguf", "x" * 1234)
    write(
        home / "models.toml",
        """
        [models.qwen2-audio]
        aliases = ["qa"]
        description = "with my own F16"
        [[models.qwen2-audio.quants]]
        name = "F16"
        path = "mine/qwen.F16.gguf"
        bits_per_weight = 16
        """,
    )
    catalog = load_catalog()
    entry, quant = catalog.resolve("qa:f16")
    assert entry.name == NAME and quant == "F16"
    assert entry.description == "with my own F16"
    assert tuple(q.name for q in entry.quants) == (*QUANTS, "F16")
    f16 = entry.quants[-1]
    assert f16.local_path == gguf.resolve() and f16.file.repo == LOCAL_REPO
    assert f16.file.size == 1234 and f16.file.filename == gguf.name
    assert entry.dims.n_layers == 32 and len(entry.projectors) == 2
    assert str(home / "models.toml") in catalog.sources


def test_user_file_replaces_a_quant_by_name_and_overrides_dims(tmp_path: Path) -> None:
    user = write(
        tmp_path / "m.toml",
        """
        [models.qwen2-audio-7b-instruct.dims]
        max_context = 4096
        [[models.qwen2-audio-7b-instruct.quants]]
        name = "q4_k_m"
        repo = "me/requant"
        filename = "better.Q4_K_M.gguf"
        size = 4_700_000_000
        bits_per_weight = 4.85
        sha256 = "%s"
        """
        % ("ab" * 32),
    )
    entry = load_catalog([user]).get()
    assert entry.dims.max_context == 4096 and entry.dims.hidden_size == 4096
    assert len(entry.quants) == 5
    q4 = find_quant(entry, "Q4_K_M")
    assert (q4.file.repo, q4.file.filename, q4.file.sha256) == (
        "me/requant",
        "better.Q4_K_M.gguf",
        "ab" * 32,
    )


def test_added_quant_inherits_the_models_repo(tmp_path: Path) -> None:
    user = write(
        tmp_path / "q2.toml",
        '[[models.qwen2-audio.quants]]\nname = "Q2_K"\nfilename = "Q2.gguf"\nsize = 3_000_000_000'
        "\nbits_per_weight = 3.4\n",
    )
    entry = load_catalog([user]).get()
    assert entry.quants[0].name == "Q2_K"
    assert entry.quants[0].file.repo == entry.quants[1].file.repo


def test_qaudio_models_env_adds_models_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write(tmp_path / "a.toml", NEW_MODEL)
    second = write(
        tmp_path / "b.toml", 'default = "tiny"\n[models.tiny]\ndescription = "second wins"\n'
    )
    monkeypatch.setenv("QAUDIO_MODELS", os.pathsep.join([str(first), str(second)]))
    catalog = load_catalog()
    assert catalog.names == (NAME, "qwen2-audio-7b", "tiny") and catalog.default == "tiny"
    entry, quant = catalog.resolve(None)
    assert entry.name == "tiny" and entry.description == "second wins" and quant == "auto"
    assert entry.quants[0].file == entry.quants[0].file.__class__(
        "me/tiny-GGUF", "tiny.F16.gguf", 1000
    )
    assert load_catalog(user_files=False).names == (NAME, "qwen2-audio-7b")


def test_local_file_that_is_missing_needs_a_size(tmp_path: Path) -> None:
    base = NEW_MODEL.replace('filename = "tiny.F16.gguf"', f'path = "{tmp_path}/nope.gguf"')
    entry = load_catalog([write(tmp_path / "ok.toml", base)]).get("tiny")
    assert entry.quants[0].file.size == 1000 and entry.quants[0].local_path is not None
    no_size = base.replace("\nsize = 1000\n", "\n")
    with pytest.raises(CatalogError, match="nope.gguf not found"):
        load_catalog([write(tmp_path / "bad.toml", no_size)])


# --- strict checks -------------------------------------------------------------------------

Q0 = "models.tiny.quants[0]"


@pytest.mark.parametrize(
    ("old", "new", "table", "key", "says"),
    [
        ("[models.tiny]\n", "colour = 1\n[models.tiny]\n", None, "colour", "unknown key"),
        ('description = "a tiny model"\n', "", "models.tiny", "description", "missing"),
        ('description = "a tiny model"\n', "description = 3\n", "models.tiny", "description",
         "expected a string"),
        ('repo = "me/tiny-GGUF"\n', 'repo = "me/tiny-GGUF"\nhomepage = "x"\n', "models.tiny",
         "homepage", "unknown key"),
        ("n_layers = 2\n", "", "models.tiny.dims", "n_layers", "missing"),
        ("n_layers = 2\n", "n_layers = 0\n", "models.tiny.dims", "n_layers", "positive"),
        ("n_layers = 2\n", "n_layers = true\n", "models.tiny.dims", "n_layers", "integer"),
        ("n_layers = 2\n", "n_layers = 2\nn_experts = 8\n", "models.tiny.dims", "n_experts",
         "unknown key"),
        ("\nsize = 1000\n", '\nsize = "1 GB"\n', Q0, "size", "expected an integer"),
        ("\nsize = 1000\n", "\nsize = -5\n", Q0, "size", "positive"),
        ("\nsize = 1000\n", "\n", Q0, "size", "missing"),
        ("bits_per_weight = 16\n", "", Q0, "bits_per_weight", "missing"),
        ("bits_per_weight = 16\n", "bits_per_weight = 0\n", Q0, "bits_per_weight", "positive"),
        ('name = "F16"\n', 'name = "F16"\nquality = "good"\n', Q0, "quality", "unknown key"),
        ('name = "F16"\n', 'name = "auto"\n', Q0, "name", "not a valid name"),
        ('name = "F16"\n', 'name = "F:16"\n', Q0, "name", "not a valid name"),
        ('filename = "tiny.F16.gguf"\n', "", Q0, None, "exactly one of"),
        ('filename = "tiny.F16.gguf"\n', 'filename = "a"\npath = "/b"\n', Q0, None,
         "exactly one of"),
        ('repo = "me/tiny-GGUF"\n', "", Q0, "repo", "missing"),
        ('filename = "tiny.F16.gguf"\n', 'filename = "t"\nsha256 = "abc"\n', Q0, "sha256",
         "64 lowercase hex"),
        ("[[models.tiny.projectors]]\n", "[models.tiny.projectors]\n", "models.tiny",
         "projectors", "array of tables"),
        ("[models.tiny]\n", "[models.qwen2-audio-7b-instruct.quants]\n[models.tiny]\n",
         "models.qwen2-audio-7b-instruct", "quants", "array of tables"),
        ("n_kv_heads = 2\n", "n_kv_heads = 3\n", "models.tiny.dims", None, "divide"),
        ('repo = "me/tiny-GGUF"\n', 'repo = "me/tiny-GGUF"\naliases = ["qwen2-audio"]\n',
         "models.tiny", "aliases", "used by both"),
        ("[models.tiny]\n", 'default = "nope"\n[models.tiny]\n', None, "default",
         "names no known model"),
    ],
)  # fmt: skip
def test_schema_errors_name_file_table_and_key(
    tmp_path: Path, old: str, new: str, table: str | None, key: str | None, says: str
) -> None:
    assert old in NEW_MODEL
    path = write(tmp_path / "user.toml", NEW_MODEL.replace(old, new, 1))
    with pytest.raises(CatalogError) as info:
        load_catalog([path])
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, QAudioError)
    assert err.path == str(path) and err.table == table and err.key == key
    assert says in str(err) and str(path) in str(err)


def test_duplicate_quant_in_one_model(tmp_path: Path) -> None:
    quant = NEW_MODEL[
        NEW_MODEL.index("[[models.tiny.quants]]") : NEW_MODEL.index("[[models.tiny.p")
    ]
    path = write(tmp_path / "dup.toml", NEW_MODEL + quant.replace('"F16"', '"f16"'))
    with pytest.raises(CatalogError, match="'f16' appears twice") as info:
        load_catalog([path])
    assert info.value.table == "models.tiny.quants[1]" and info.value.key == "name"


def test_new_model_needs_quants(tmp_path: Path) -> None:
    text = NEW_MODEL[: NEW_MODEL.index("[[models.tiny.quants]]")]
    text += '[[models.tiny.projectors]]\nname = "f16"\nfilename = "p"\nsize = 1\n'
    with pytest.raises(CatalogError, match="at least one") as info:
        load_catalog([write(tmp_path / "q.toml", text)])
    assert info.value.key == "quants"


def test_not_toml_and_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = write(tmp_path / "bad.toml", "[models.x\n")
    with pytest.raises(CatalogError, match="not valid TOML") as info:
        load_catalog([bad])
    assert info.value.path == str(bad)
    monkeypatch.setenv("QAUDIO_MODELS", str(tmp_path / "missing.toml"))
    with pytest.raises(CatalogError, match="cannot read this models file") as info:
        load_catalog()
    assert info.value.path == str(tmp_path / "missing.toml")
